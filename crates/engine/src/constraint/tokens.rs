//! llguidance's view of our vocabulary: each token's bytes (what it adds to the
//! output), special tokens marked so that grammar text never matches them, the
//! end-of-generation tokens as the EOS set, and our tokenizer for text llguidance needs
//! tokenized.

use std::sync::Arc;

use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use text::Tokenizer;

use crate::EngineError;

struct OurTokens {
    trie: TokTrie,
    tok: Tokenizer,
}

impl TokenizerEnv for OurTokens {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    /// Our tokenizer on UTF-8 input (it matches the model's own tokenization); bytes
    /// that are not UTF-8 go through the trie's greedy match.
    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        match std::str::from_utf8(s)
            .ok()
            .map(|t| self.tok.encode(t, false))
        {
            Some(Ok(ids)) => ids,
            _ => self.trie.greedy_tokenize(s),
        }
    }
}

/// The bytes llguidance sees for each token id: the decoded piece, behind the `0xFF`
/// marker for control and unknown tokens (they are not text; llguidance's convention).
pub(super) fn token_words(tok: &Tokenizer) -> Vec<Vec<u8>> {
    (0..tok.vocab_size() as u32)
        .map(|id| {
            let piece = tok.token_to_piece(id);
            if tok.is_special(id) {
                let mut w = Vec::with_capacity(piece.len() + 1);
                w.push(TokTrie::SPECIAL_TOKEN_MARKER);
                w.extend_from_slice(piece);
                w
            } else {
                piece.to_vec()
            }
        })
        .collect()
}

/// The tokenizer environment for `tok`.
pub(super) fn token_env(tok: &Tokenizer) -> Result<TokEnv, EngineError> {
    let words = token_words(tok);
    let vocab = words.len() as u32;
    let eog: Vec<u32> = tok
        .eog_ids()
        .iter()
        .copied()
        .filter(|&t| t < vocab)
        .collect();
    let Some(&first) = eog.first() else {
        return Err(EngineError::Input(
            "constrained decoding needs an end-of-generation token and this vocabulary has none"
                .into(),
        ));
    };
    let info = TokRxInfo {
        vocab_size: vocab,
        tok_eos: first,
        tok_bos: tok.bos_id().filter(|&t| t < vocab),
        tok_pad: tok.pad_id().filter(|&t| t < vocab),
        tok_unk: None,
        tok_end_of_turn: tok.eot_id().filter(|&t| t < vocab),
    };
    let trie = TokTrie::from(&info, &words).with_eos_tokens(&eog);
    Ok(Arc::new(OurTokens {
        trie,
        tok: tok.clone(),
    }))
}
