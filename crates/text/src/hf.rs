//! Builds a Hugging Face `tokenizers::Tokenizer` in code from the GGUF vocabulary, the
//! same pipeline the model's own `tokenizer.json` describes, so encoding matches HF.

use std::collections::HashMap;

use tokenizers::models::bpe::{Merges, Vocab as BpeVocab, BPE};
use tokenizers::normalizers::{
    unicode::NFC, NormalizerWrapper, Prepend, Replace, Sequence as NormSequence,
};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer as HfTokenizer};

use crate::pretok::PreConfig;
use crate::vocab::{TokenType, Vocab};
use crate::TextError;

/// SentencePiece stores spaces as U+2581.
const SPM_SPACE: &str = "\u{2581}";

fn bad(vocab: &Vocab, msg: String) -> TextError {
    TextError::BadVocab {
        file: vocab.file.clone(),
        msg,
    }
}

/// text -> id for every token (a later duplicate wins, as in llama.cpp).
fn vocab_map(vocab: &Vocab) -> BpeVocab {
    vocab
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect()
}

/// Byte-level BPE ("gpt2"): merges from the file, regex splits, byte-level alphabet.
pub(crate) fn build_byte_level(
    vocab: &Vocab,
    merges: &[&str],
    pre: &PreConfig,
) -> Result<HfTokenizer, TextError> {
    let map = vocab_map(vocab);
    let mut pairs: Merges = Vec::with_capacity(merges.len());
    for (rank, m) in merges.iter().enumerate() {
        // The separator is the first space after the first character (a token text
        // itself never starts with a space in a byte-level vocabulary, but be exact).
        let split = m
            .char_indices()
            .skip(1)
            .find(|(_, c)| *c == ' ')
            .map(|(i, _)| i);
        let Some(at) = split else {
            return Err(bad(
                vocab,
                format!("merge {rank} {m:?} has no space separating its two parts"),
            ));
        };
        let (a, b) = (&m[..at], &m[at + 1..]);
        for part in [a, b] {
            if !map.contains_key(part) {
                return Err(bad(
                    vocab,
                    format!("merge {rank} {m:?} uses {part:?}, which is not in the vocabulary"),
                ));
            }
        }
        if !map.contains_key(&format!("{a}{b}")) {
            return Err(bad(
                vocab,
                format!(
                    "merge {rank} {m:?} produces {:?}, which is not in the vocabulary",
                    format!("{a}{b}")
                ),
            ));
        }
        pairs.push((a.to_owned(), b.to_owned()));
    }
    let model = BPE::builder()
        .vocab_and_merges(map, pairs)
        .ignore_merges(pre.ignore_merges)
        .build()
        .map_err(|e| bad(vocab, format!("building the BPE model: {e}")))?;
    let mut hf = HfTokenizer::new(model);

    if pre.nfc {
        hf.with_normalizer(Some(NormalizerWrapper::NFC(NFC)));
    }
    let pre_tok: PreTokenizerWrapper = if pre.regexes.is_empty() {
        // GPT-2: the ByteLevel pre-tokenizer's own regex, then the byte alphabet.
        ByteLevel::new(false, false, true).into()
    } else {
        let mut steps = Vec::with_capacity(pre.regexes.len() + 1);
        for re in pre.regexes {
            let split = Split::new(
                SplitPattern::Regex((*re).to_owned()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| {
                bad(
                    vocab,
                    format!("pre-tokenizer regex {re:?} does not compile: {e}"),
                )
            })?;
            steps.push(PreTokenizerWrapper::Split(split));
        }
        steps.push(ByteLevel::new(false, false, false).into());
        PreSequence::new(steps).into()
    };
    hf.with_pre_tokenizer(Some(pre_tok));
    add_added_tokens(&mut hf, vocab);
    Ok(hf)
}

/// SentencePiece BPE ("llama"): HF's conversion of a SentencePiece BPE model. The
/// merges are derived from the scores: every way of writing a token as the
/// concatenation of two tokens is a merge, ranked by the merged token's score (higher
/// first), ties in token-id order. This reproduces SentencePiece's "merge the adjacent
/// pair whose result has the best score" loop.
pub(crate) fn build_sentencepiece(
    vocab: &Vocab,
    add_space_prefix: bool,
) -> Result<HfTokenizer, TextError> {
    let scores = vocab.scores.as_ref().ok_or_else(|| {
        bad(
            vocab,
            "a SentencePiece (llama) vocabulary needs tokenizer.ggml.scores".into(),
        )
    })?;
    let map = vocab_map(vocab);
    let ids: HashMap<&str, u32> = vocab
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i as u32))
        .collect();

    // (score of the merged token, merged id, left id, right id)
    let mut candidates: Vec<(f32, u32, u32, u32)> = Vec::new();
    for (id, tok) in vocab.tokens.iter().enumerate() {
        if !matches!(vocab.types[id], TokenType::Normal | TokenType::UserDefined) {
            continue;
        }
        for (at, _) in tok.char_indices().skip(1) {
            if let (Some(&l), Some(&r)) = (ids.get(&tok[..at]), ids.get(&tok[at..])) {
                candidates.push((scores[id], id as u32, l, r));
            }
        }
    }
    candidates.sort_by(|x, y| {
        y.0.total_cmp(&x.0)
            .then(x.1.cmp(&y.1))
            .then(x.2.cmp(&y.2))
            .then(x.3.cmp(&y.3))
    });
    let merges: Merges = candidates
        .iter()
        .map(|&(_, _, l, r)| {
            (
                vocab.tokens[l as usize].clone(),
                vocab.tokens[r as usize].clone(),
            )
        })
        .collect();

    let mut builder = BPE::builder()
        .vocab_and_merges(map, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(unk) = vocab.special.unk {
        builder = builder.unk_token(vocab.tokens[unk as usize].clone());
    }
    let model = builder
        .build()
        .map_err(|e| bad(vocab, format!("building the BPE model: {e}")))?;
    let mut hf = HfTokenizer::new(model);

    let replace =
        Replace::new(" ", SPM_SPACE).map_err(|e| bad(vocab, format!("space replacement: {e}")))?;
    let norm: NormalizerWrapper = if add_space_prefix {
        // Prepend runs on every stretch of text between added tokens, so text after a
        // special token gets the `▁` prefix too, exactly as llama.cpp does.
        NormSequence::new(vec![
            Prepend::new(SPM_SPACE.to_owned()).into(),
            replace.into(),
        ])
        .into()
    } else {
        replace.into()
    };
    hf.with_normalizer(Some(norm));
    add_added_tokens(&mut hf, vocab);
    Ok(hf)
}

/// Control and unknown tokens become HF "special" added tokens, user-defined tokens
/// plain added tokens; both are matched verbatim in input text.
fn add_added_tokens(hf: &mut HfTokenizer, vocab: &Vocab) {
    let mut special = Vec::new();
    let mut plain = Vec::new();
    for (text, ty) in vocab.tokens.iter().zip(&vocab.types) {
        // An empty text would match everywhere.
        if text.is_empty() || !ty.is_added() {
            continue;
        }
        if ty.is_special() {
            special.push(AddedToken::from(text.clone(), true));
        } else {
            plain.push(AddedToken::from(text.clone(), false).normalized(false));
        }
    }
    hf.add_special_tokens(&special);
    hf.add_tokens(&plain);
}
