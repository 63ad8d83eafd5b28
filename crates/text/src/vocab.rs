//! The vocabulary as a GGUF file stores it: token texts, token types, scores, special
//! token ids; plus the raw bytes each token stands for (its "piece").

use gguf::Metadata;

use crate::bytelevel::ByteDecoder;
use crate::TextError;

/// How llama.cpp's converter classified a token (`tokenizer.ggml.token_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenType {
    /// 0: not classified.
    Undefined,
    /// 1: an ordinary vocabulary entry.
    Normal,
    /// 2: the unknown token (`<unk>`).
    Unknown,
    /// 3: a control token (BOS, EOS, `<|im_start|>`, ...).
    Control,
    /// 4: a user-defined added token (matched as a whole in input, printed verbatim).
    UserDefined,
    /// 5: a padding/unused slot.
    Unused,
    /// 6: a SentencePiece byte-fallback token `<0xXX>`.
    Byte,
}

impl TokenType {
    /// The type for a GGUF `token_type` value; out-of-range values are `Undefined`
    /// (as llama.cpp treats them).
    pub fn from_gguf(v: i32) -> TokenType {
        match v {
            1 => TokenType::Normal,
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => TokenType::Undefined,
        }
    }

    /// Tokens matched as whole strings in input text before the tokenizer model runs
    /// (llama.cpp's `parse_special`, HF's added tokens).
    pub fn is_added(self) -> bool {
        matches!(
            self,
            TokenType::Control | TokenType::UserDefined | TokenType::Unknown
        )
    }

    /// Tokens dropped by `decode(.., skip_special = true)`.
    pub fn is_special(self) -> bool {
        matches!(self, TokenType::Control | TokenType::Unknown)
    }
}

/// The tokenizer families this crate implements (`tokenizer.ggml.model`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// "gpt2": byte-level BPE with merges and a regex pre-tokenizer.
    BytePairBpe,
    /// "llama": SentencePiece BPE with scores, `▁` for spaces and `<0xXX>` byte fallback.
    SentencePiece,
}

impl ModelKind {
    pub(crate) const SUPPORTED: &'static str = "gpt2 (byte-level BPE), llama (SentencePiece BPE)";

    pub(crate) fn from_name(name: &str) -> Option<ModelKind> {
        match name {
            "gpt2" => Some(ModelKind::BytePairBpe),
            "llama" => Some(ModelKind::SentencePiece),
            _ => None,
        }
    }
}

/// Special token ids read from the file (or recognised by their text, as llama.cpp does).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpecialIds {
    /// Beginning of sequence.
    pub bos: Option<u32>,
    /// End of sequence.
    pub eos: Option<u32>,
    /// End of turn (`<|im_end|>`, `<|eot_id|>`, ...).
    pub eot: Option<u32>,
    /// End of message (`<|eom_id|>`).
    pub eom: Option<u32>,
    /// Padding.
    pub pad: Option<u32>,
    /// Unknown token.
    pub unk: Option<u32>,
    /// Every id that ends generation, sorted.
    pub eog: Vec<u32>,
}

pub(crate) struct Vocab {
    pub file: String,
    pub kind: ModelKind,
    pub tokens: Vec<String>,
    pub types: Vec<TokenType>,
    pub scores: Option<Vec<f32>>,
    pub special: SpecialIds,
    /// Concatenated token pieces; token `i` is `piece_bytes[piece_ends[i-1]..piece_ends[i]]`.
    piece_bytes: Vec<u8>,
    piece_ends: Vec<u32>,
    /// Bytes of the longest piece (what a streaming decoder must hold at most).
    pub max_piece_len: usize,
}

const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_TYPES: &str = "tokenizer.ggml.token_type";
const KEY_SCORES: &str = "tokenizer.ggml.scores";

/// Texts llama.cpp recognises as end-of-turn when `eot_token_id` is absent, in the
/// order we prefer them (so Qwen's `<|im_end|>` wins over `<|endoftext|>`).
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<EOT>",
    "<｜end▁of▁sentence｜>",
];
/// Texts llama.cpp treats as end-of-generation whatever the keys say.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    // gpt-oss (harmony): the end of the reply, and of a tool call.
    "<|return|>",
    "<|call|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
];
/// Fill-in-the-middle pad / repo / file-separator tokens, which llama.cpp also treats
/// as end-of-generation (a FIM completion must stop at them).
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<PAD>"];
const FIM_REP_TEXTS: &[&str] = &["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>"];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];

impl Vocab {
    pub(crate) fn from_metadata(meta: &Metadata, kind: ModelKind) -> Result<Vocab, TextError> {
        let file = meta.file().to_string();
        let bad = |msg: String| TextError::BadVocab {
            file: file.clone(),
            msg,
        };

        let tokens: Vec<String> = meta
            .str_array(KEY_TOKENS)?
            .into_iter()
            .map(str::to_owned)
            .collect();
        let n = tokens.len();
        if n == 0 {
            return Err(bad(format!("{KEY_TOKENS} is empty")));
        }
        if n > u32::MAX as usize {
            return Err(bad(format!(
                "{KEY_TOKENS} has {n} entries, more than a u32 id can address"
            )));
        }
        let types = match meta.opt_i32_array(KEY_TYPES)? {
            Some(t) if t.len() != n => {
                return Err(bad(format!(
                    "{KEY_TYPES} has {} entries but {KEY_TOKENS} has {n}",
                    t.len()
                )))
            }
            Some(t) => t.into_iter().map(TokenType::from_gguf).collect(),
            None => vec![TokenType::Normal; n],
        };
        let scores = match meta.opt_f32_array(KEY_SCORES)? {
            Some(s) if s.len() != n => {
                return Err(bad(format!(
                    "{KEY_SCORES} has {} entries but {KEY_TOKENS} has {n}",
                    s.len()
                )))
            }
            other => other,
        };

        let id_key = |key: &str| -> Result<Option<u32>, TextError> {
            match meta.opt_u32(key)? {
                Some(id) if id as usize >= n => Err(bad(format!(
                    "{key} = {id} is outside the vocabulary ({n} tokens)"
                ))),
                other => Ok(other),
            }
        };
        let find = |texts: &[&str]| -> Option<u32> {
            texts
                .iter()
                .find_map(|t| tokens.iter().position(|tok| tok == t).map(|i| i as u32))
        };

        let mut special = SpecialIds {
            bos: id_key("tokenizer.ggml.bos_token_id")?,
            eos: id_key("tokenizer.ggml.eos_token_id")?,
            eot: id_key("tokenizer.ggml.eot_token_id")?,
            eom: id_key("tokenizer.ggml.eom_token_id")?,
            pad: id_key("tokenizer.ggml.padding_token_id")?,
            unk: id_key("tokenizer.ggml.unknown_token_id")?,
            eog: Vec::new(),
        };
        if special.eot.is_none() {
            special.eot = find(EOT_TEXTS);
        }
        if special.eom.is_none() {
            special.eom = find(&["<|eom_id|>"]);
        }
        if special.unk.is_none() {
            special.unk = types
                .iter()
                .position(|t| *t == TokenType::Unknown)
                .map(|i| i as u32);
        }
        let fim_pad = id_key("tokenizer.ggml.fim_pad_token_id")?.or_else(|| find(FIM_PAD_TEXTS));
        let fim_rep = id_key("tokenizer.ggml.fim_rep_token_id")?.or_else(|| find(FIM_REP_TEXTS));
        let fim_sep = id_key("tokenizer.ggml.fim_sep_token_id")?.or_else(|| find(FIM_SEP_TEXTS));

        let mut eog: Vec<u32> = tokens
            .iter()
            .enumerate()
            .filter(|(_, t)| EOG_TEXTS.contains(&t.as_str()))
            .map(|(i, _)| i as u32)
            .collect();
        eog.extend(
            [
                special.eos,
                special.eot,
                special.eom,
                fim_pad,
                fim_rep,
                fim_sep,
            ]
            .into_iter()
            .flatten(),
        );
        // o200k_harmony (gpt-oss): an answer ends with `<|return|>` (`<|call|>` for a tool
        // call), while `<|end|>` only closes one message of it (the analysis before the final
        // answer): end at the first two, not at `<|end|>` (llama.cpp does the same).
        let harmony: Vec<u32> = ["<|return|>", "<|call|>"]
            .iter()
            .filter_map(|t| tokens.iter().position(|x| x == t).map(|i| i as u32))
            .collect();
        if harmony.len() == 2 {
            eog.extend(&harmony);
            eog.retain(|&id| tokens[id as usize] != "<|end|>");
        }
        eog.sort_unstable();
        eog.dedup();
        special.eog = eog;

        let mut vocab = Vocab {
            file,
            kind,
            tokens,
            types,
            scores,
            special,
            piece_bytes: Vec::new(),
            piece_ends: Vec::with_capacity(n),
            max_piece_len: 0,
        };
        vocab.build_pieces()?;
        Ok(vocab)
    }

    pub(crate) fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Fills the piece table: the bytes each token contributes to decoded text.
    fn build_pieces(&mut self) -> Result<(), TextError> {
        let bytes_dec = ByteDecoder::new();
        let mut out = Vec::with_capacity(self.tokens.iter().map(|t| t.len()).sum());
        for (i, (text, ty)) in self.tokens.iter().zip(&self.types).enumerate() {
            match ty {
                // Added tokens print as their text, whatever the model family.
                TokenType::Control | TokenType::UserDefined | TokenType::Unknown => {
                    out.extend_from_slice(text.as_bytes())
                }
                // Padding slots and unclassified entries print nothing (as in llama.cpp).
                TokenType::Unused | TokenType::Undefined => {}
                TokenType::Normal | TokenType::Byte => {
                    match self.kind {
                        ModelKind::BytePairBpe => bytes_dec.decode(text, &mut out),
                        ModelKind::SentencePiece => {
                            if *ty == TokenType::Byte {
                                let b = parse_byte_token(text).ok_or_else(|| TextError::BadVocab {
                                file: self.file.clone(),
                                msg: format!("token {i} has type BYTE but its text {text:?} is not <0xXX>"),
                            })?;
                                out.push(b);
                            } else {
                                // `▁` (U+2581) is how SentencePiece stores a space.
                                out.extend_from_slice(text.replace('\u{2581}', " ").as_bytes());
                            }
                        }
                    }
                }
            }
            if out.len() > u32::MAX as usize {
                return Err(TextError::BadVocab {
                    file: self.file.clone(),
                    msg: "token texts exceed 4 GiB".into(),
                });
            }
            let start = self.piece_ends.last().map_or(0, |&e| e as usize);
            self.max_piece_len = self.max_piece_len.max(out.len() - start);
            self.piece_ends.push(out.len() as u32);
        }
        self.piece_bytes = out;
        Ok(())
    }

    /// The raw bytes of token `id`; empty for ids outside the vocabulary.
    pub(crate) fn piece(&self, id: u32) -> &[u8] {
        let i = id as usize;
        if i >= self.piece_ends.len() {
            return &[];
        }
        let start = if i == 0 {
            0
        } else {
            self.piece_ends[i - 1] as usize
        };
        &self.piece_bytes[start..self.piece_ends[i] as usize]
    }

    pub(crate) fn token_type(&self, id: u32) -> Option<TokenType> {
        self.types.get(id as usize).copied()
    }
}

/// `<0x4A>` -> 0x4A.
pub(crate) fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}
