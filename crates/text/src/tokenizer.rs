//! The public tokenizer: encode text to ids, decode ids to text, special tokens.

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use gguf::Metadata;
use tokenizers::Tokenizer as HfTokenizer;

use crate::stream::StreamDecoder;
use crate::vocab::{ModelKind, SpecialIds, TokenType, Vocab};
use crate::{hf, pretok, TextError};

/// A tokenizer built from a GGUF file's `tokenizer.*` metadata.
///
/// Cheap to clone (the tables are shared). Encoding matches the Hugging Face tokenizer
/// the GGUF was converted from, with special-token text in the input matched as
/// special tokens (HF's default, llama.cpp's `parse_special = true`).
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<Inner>,
}

struct Inner {
    vocab: Vocab,
    hf: HfTokenizer,
    pre: Option<&'static str>,
    add_bos: bool,
    add_eos: bool,
    /// SentencePiece with the `▁` prefix: decoding drops the one leading space the
    /// prefix introduced (HF's `Strip` decoder).
    strip_leading_space: bool,
    /// For [`Tokenizer::encode_with_text_spans`], built on first use: `hf` with special
    /// tokens encoded as plain text, and the special tokens to look for.
    as_text: OnceLock<(HfTokenizer, SpecialTexts)>,
}

/// The special (control and unknown) tokens' texts, by first byte, longest first: what
/// a leftmost-longest scan of a text needs.
struct SpecialTexts {
    by_first_byte: Vec<Vec<(String, u32)>>,
}

impl SpecialTexts {
    fn new(vocab: &Vocab) -> SpecialTexts {
        let mut by_first_byte = vec![Vec::new(); 256];
        for (id, (text, ty)) in vocab.tokens.iter().zip(&vocab.types).enumerate() {
            if let (Some(&b), true) = (text.as_bytes().first(), ty.is_special()) {
                by_first_byte[b as usize].push((text.clone(), id as u32));
            }
        }
        for list in &mut by_first_byte {
            list.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        }
        SpecialTexts { by_first_byte }
    }

    /// The longest special token whose text starts at byte `at` of `text`.
    fn longest_at(&self, text: &str, at: usize) -> Option<(usize, u32)> {
        let rest = &text.as_bytes()[at..];
        let list = &self.by_first_byte[*rest.first()? as usize];
        list.iter()
            .find(|(t, _)| rest.starts_with(t.as_bytes()))
            .map(|(t, id)| (t.len(), *id))
    }
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("file", &self.inner.vocab.file)
            .field("kind", &self.inner.vocab.kind)
            .field("pre", &self.inner.pre)
            .field("vocab_size", &self.vocab_size())
            .field("add_bos", &self.inner.add_bos)
            .field("add_eos", &self.inner.add_eos)
            .field("special", &self.inner.vocab.special)
            .finish()
    }
}

impl Tokenizer {
    /// Builds the tokenizer described by `tokenizer.ggml.*`: model "gpt2" (byte-level
    /// BPE, pre-tokenizer chosen by `tokenizer.ggml.pre`) or "llama" (SentencePiece
    /// BPE with scores). Unknown models or pre-tokenizers are errors listing the
    /// supported ones.
    pub fn from_gguf(meta: &Metadata) -> Result<Tokenizer, TextError> {
        let model = meta.str("tokenizer.ggml.model")?;
        let kind = ModelKind::from_name(model).ok_or_else(|| TextError::UnsupportedModel {
            model: model.to_owned(),
            supported: ModelKind::SUPPORTED.to_owned(),
        })?;
        let vocab = Vocab::from_metadata(meta, kind)?;
        let add_bos_key = meta.opt_bool("tokenizer.ggml.add_bos_token")?;
        let add_eos = meta
            .opt_bool("tokenizer.ggml.add_eos_token")?
            .unwrap_or(false);

        let (hf, pre, add_bos, strip_leading_space) = match kind {
            ModelKind::BytePairBpe => {
                let pre_name = meta.opt_str("tokenizer.ggml.pre")?.unwrap_or("");
                let (name, cfg) =
                    pretok::lookup(pre_name).ok_or_else(|| TextError::UnsupportedPre {
                        pre: pre_name.to_owned(),
                        supported: pretok::supported_names(),
                    })?;
                let merges = meta.str_array("tokenizer.ggml.merges")?;
                let hf = hf::build_byte_level(&vocab, &merges, &cfg)?;
                (
                    hf,
                    Some(name),
                    add_bos_key.unwrap_or(cfg.default_add_bos),
                    false,
                )
            }
            ModelKind::SentencePiece => {
                let add_space_prefix = meta
                    .opt_bool("tokenizer.ggml.add_space_prefix")?
                    .unwrap_or(true);
                let hf = hf::build_sentencepiece(&vocab, add_space_prefix)?;
                (hf, None, add_bos_key.unwrap_or(true), add_space_prefix)
            }
        };
        if add_bos && vocab.special.bos.is_none() {
            return Err(TextError::MissingSpecial { which: "BOS" });
        }
        if add_eos && vocab.special.eos.is_none() {
            return Err(TextError::MissingSpecial { which: "EOS" });
        }
        Ok(Tokenizer {
            inner: Arc::new(Inner {
                vocab,
                hf,
                pre,
                add_bos,
                add_eos,
                strip_leading_space,
                as_text: OnceLock::new(),
            }),
        })
    }

    /// Token ids for `text`. With `add_special`, BOS/EOS are added as the file's
    /// `add_bos_token` / `add_eos_token` say. Special-token text inside `text` (e.g.
    /// `<|im_start|>`) becomes that special token.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>, TextError> {
        let inner = &*self.inner;
        let enc = inner
            .hf
            .encode_fast(text, false)
            .map_err(|e| TextError::Encode(e.to_string()))?;
        let body = enc.get_ids();
        let mut ids = Vec::with_capacity(body.len() + 2);
        if add_special && inner.add_bos {
            ids.extend(inner.vocab.special.bos);
        }
        ids.extend_from_slice(body);
        if add_special && inner.add_eos {
            ids.extend(inner.vocab.special.eos);
        }
        Ok(ids)
    }

    /// Like [`encode`](Self::encode), but special-token text that overlaps one of the
    /// byte ranges `text_spans` of `text` is encoded as ordinary text: a chat prompt whose
    /// messages' contents are those spans gets its template's control tokens while a
    /// user's `<|im_end|>` stays five plain tokens and cannot forge a turn.
    ///
    /// When no special-token text overlaps a span the ids are exactly `encode`'s.
    /// Otherwise the text is cut at the special tokens that stay (found leftmost-longest,
    /// as HF does) and each stretch between them is encoded on its own with special
    /// tokens as text, which is how HF encodes the stretches between added tokens.
    pub fn encode_with_text_spans(
        &self,
        text: &str,
        add_special: bool,
        text_spans: &[Range<usize>],
    ) -> Result<Vec<u32>, TextError> {
        let (plain_hf, specials) = self.as_text();
        // The special tokens a leftmost-longest scan finds, with whether each may stay.
        let overlaps = |r: &Range<usize>| {
            text_spans
                .iter()
                .any(|s| s.start < r.end && r.start < s.end)
        };
        let mut kept = Vec::new();
        let mut in_span = false;
        let mut at = 0;
        while at < text.len() {
            match specials.longest_at(text, at) {
                Some((len, id)) if !overlaps(&(at..at + len)) => {
                    kept.push((at..at + len, id));
                    at += len;
                }
                found => {
                    in_span |= found.is_some();
                    at += text[at..].chars().next().map_or(1, char::len_utf8);
                }
            }
        }
        if !in_span {
            return self.encode(text, add_special);
        }
        let inner = &*self.inner;
        let mut ids = Vec::new();
        if add_special && inner.add_bos {
            ids.extend(inner.vocab.special.bos);
        }
        let stretch = |piece: &str, ids: &mut Vec<u32>| -> Result<(), TextError> {
            if !piece.is_empty() {
                let enc = plain_hf
                    .encode_fast(piece, false)
                    .map_err(|e| TextError::Encode(e.to_string()))?;
                ids.extend_from_slice(enc.get_ids());
            }
            Ok(())
        };
        let mut from = 0;
        for (range, id) in kept {
            stretch(&text[from..range.start], &mut ids)?;
            ids.push(id);
            from = range.end;
        }
        stretch(&text[from..], &mut ids)?;
        if add_special && inner.add_eos {
            ids.extend(inner.vocab.special.eos);
        }
        Ok(ids)
    }

    fn as_text(&self) -> &(HfTokenizer, SpecialTexts) {
        self.inner.as_text.get_or_init(|| {
            let mut hf = self.inner.hf.clone();
            hf.set_encode_special_tokens(true);
            (hf, SpecialTexts::new(&self.inner.vocab))
        })
    }

    /// Whether `text` holds the text of a special (control or unknown) token.
    pub fn contains_special_text(&self, text: &str) -> bool {
        let (_, specials) = self.as_text();
        (0..text.len())
            .any(|at| text.is_char_boundary(at) && specials.longest_at(text, at).is_some())
    }

    /// Text for `ids`. With `skip_special`, control and unknown tokens are left out.
    /// Byte sequences that are not valid UTF-8 become U+FFFD as in
    /// `String::from_utf8_lossy` (HF's SentencePiece byte-fallback decoder instead turns
    /// every byte of an invalid run of byte tokens into U+FFFD; the two differ only on
    /// text that is not valid UTF-8, and this rule is the one a stream can follow); ids outside the
    /// vocabulary contribute nothing. For SentencePiece vocabularies with the space
    /// prefix, one leading space of the result is dropped (as HF does).
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            if !(skip_special && self.is_special(id)) {
                bytes.extend_from_slice(self.token_to_piece(id));
            }
        }
        let mut text = String::from_utf8_lossy(&bytes).into_owned();
        if self.inner.strip_leading_space && text.starts_with(' ') {
            text.remove(0);
        }
        text
    }

    /// A streaming decoder: feed ids one at a time, get back only complete UTF-8 text.
    pub fn stream_decoder(&self, skip_special: bool) -> StreamDecoder {
        StreamDecoder::new(self.clone(), skip_special)
    }

    /// The raw bytes token `id` stands for in decoded text (a UTF-8 fragment for byte
    /// tokens); special tokens give their text. Empty for ids outside the vocabulary
    /// and for unused/padding slots.
    pub fn token_to_piece(&self, id: u32) -> &[u8] {
        self.inner.vocab.piece(id)
    }

    /// The token's text as stored in the vocabulary (byte-level or `▁` encoded).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.inner.vocab.tokens.get(id as usize).map(String::as_str)
    }

    /// The id of the vocabulary entry whose stored text is exactly `text`.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.inner.hf.token_to_id(text)
    }

    /// How the file classifies token `id`.
    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        self.inner.vocab.token_type(id)
    }

    /// Whether `decode(.., skip_special = true)` leaves token `id` out.
    pub fn is_special(&self, id: u32) -> bool {
        self.token_type(id).is_some_and(TokenType::is_special)
    }

    /// Number of tokens in the vocabulary (the length of `tokenizer.ggml.tokens`).
    pub fn vocab_size(&self) -> usize {
        self.inner.vocab.len()
    }

    /// Bytes of the longest token piece (to size streaming buffers once).
    pub fn max_piece_len(&self) -> usize {
        self.inner.vocab.max_piece_len
    }

    /// Beginning-of-sequence id, if the file defines one.
    pub fn bos_id(&self) -> Option<u32> {
        self.inner.vocab.special.bos
    }

    /// End-of-sequence id, if the file defines one.
    pub fn eos_id(&self) -> Option<u32> {
        self.inner.vocab.special.eos
    }

    /// End-of-turn id: `tokenizer.ggml.eot_token_id`, else the first of llama.cpp's
    /// end-of-turn texts present (`<|eot_id|>`, `<|im_end|>`, ...).
    pub fn eot_id(&self) -> Option<u32> {
        self.inner.vocab.special.eot
    }

    /// Padding id, if the file defines one.
    pub fn pad_id(&self) -> Option<u32> {
        self.inner.vocab.special.pad
    }

    /// All special ids read or recognised.
    pub fn special_ids(&self) -> &SpecialIds {
        &self.inner.vocab.special
    }

    /// Every end-of-generation id (sorted): EOS, EOT, EOM, the tokens llama.cpp
    /// recognises by text (`<|im_end|>`, `<|endoftext|>`, `<|eot_id|>`, ...) and the
    /// FIM pad/repo/file-separator tokens.
    pub fn eog_ids(&self) -> &[u32] {
        &self.inner.vocab.special.eog
    }

    /// Whether generating `id` ends generation.
    pub fn is_eog(&self, id: u32) -> bool {
        self.inner.vocab.special.eog.binary_search(&id).is_ok()
    }

    /// Whether `encode(.., add_special = true)` prepends BOS.
    pub fn add_bos(&self) -> bool {
        self.inner.add_bos
    }

    /// Whether `encode(.., add_special = true)` appends EOS.
    pub fn add_eos(&self) -> bool {
        self.inner.add_eos
    }

    /// The tokenizer family.
    pub fn model_kind(&self) -> ModelKind {
        self.inner.vocab.kind
    }

    /// The `tokenizer.ggml.pre` value in use (byte-level BPE only).
    pub fn pre(&self) -> Option<&str> {
        self.inner.pre
    }

    /// Whether decoding drops one leading space (SentencePiece space prefix).
    pub(crate) fn strips_leading_space(&self) -> bool {
        self.inner.strip_leading_space
    }
}
