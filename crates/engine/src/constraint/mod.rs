//! Constrained decoding: the output must match a JSON schema, a Lark grammar, a GBNF
//! grammar (llama.cpp's syntax) or a regular expression. The grammar engine is
//! [llguidance](https://github.com/guidance-ai/llguidance), the library llama.cpp and vLLM
//! use: an Earley parser over a lazily built lexer that computes, per step, the set of
//! vocabulary tokens that keep the output inside the grammar (the *mask*) in well under
//! a millisecond for a 150k vocabulary. We do not keep a grammar engine of our own.
//!
//! How it is driven (as llama.cpp's `common/llguidance.cpp` does): a
//! [`ConstraintCompiler`] is built once per tokenizer (a token trie of every token's
//! bytes, special tokens behind llguidance's `0xFF` marker so grammar text never matches
//! them, the end-of-generation tokens as its EOS set); each request compiles its
//! [`ConstraintSpec`] into a [`Constraint`] (a parser state); each generation step asks it
//! for the allowed tokens, the sampler only sees those, and the sampled token is
//! committed. End-of-generation tokens are allowed only once the grammar may end, and
//! generation also ends when the grammar cannot go on.

mod gbnf;
mod tokens;

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::SimpleVob;
use llguidance::{Matcher, ParserFactory};
use serde_json::Value;
use text::Tokenizer;

pub use gbnf::gbnf_to_lark;

use crate::EngineError;

/// What the output must match.
#[derive(Clone, Debug, PartialEq)]
pub enum ConstraintSpec {
    /// Any JSON object (OpenAI `response_format: json_object`, Ollama `format: "json"`).
    JsonObject,
    /// A JSON schema (draft 2020-12 subset llguidance supports).
    JsonSchema(Value),
    /// A grammar in llguidance's Lark syntax.
    Lark(String),
    /// A grammar in llama.cpp's GBNF (translated to Lark; the root rule is `root`).
    Gbnf(String),
    /// A regular expression (Rust `regex` syntax) the whole output must match.
    Regex(String),
}

impl ConstraintSpec {
    /// A `grammar` field as llama-server takes it: GBNF (`root ::= ...`), or Lark when it
    /// starts with `%llguidance` (llama.cpp's marker) or defines no `::=` rule.
    pub fn grammar(text: &str) -> ConstraintSpec {
        let trimmed = text.trim_start();
        if !trimmed.starts_with("%llguidance") && gbnf::looks_like_gbnf(text) {
            ConstraintSpec::Gbnf(text.to_string())
        } else {
            ConstraintSpec::Lark(text.to_string())
        }
    }

    /// llguidance's grammar for this spec. JSON is compact by default (`", "` and `": "`
    /// as separators, no other whitespace): flexible whitespace lets a model emit
    /// newlines forever without breaking the grammar. A schema's own `x-guidance`
    /// options (llguidance's) take precedence.
    fn grammar_for(&self) -> Result<TopLevelGrammar, String> {
        let json = |mut schema: Value| {
            if let Value::Object(map) = &mut schema {
                map.entry("x-guidance").or_insert_with(|| {
                    serde_json::json!({
                        "whitespace_flexible": false,
                        "item_separator": ", ",
                        "key_separator": ": ",
                    })
                });
            }
            TopLevelGrammar::from_json_schema(schema)
        };
        Ok(match self {
            ConstraintSpec::JsonObject => json(serde_json::json!({"type": "object"})),
            ConstraintSpec::JsonSchema(schema) => {
                if !schema.is_object() && !schema.is_boolean() {
                    return Err("a JSON schema must be an object".into());
                }
                json(schema.clone())
            }
            ConstraintSpec::Lark(text) => TopLevelGrammar::from_lark(text.clone()),
            ConstraintSpec::Gbnf(text) => TopLevelGrammar::from_lark(gbnf_to_lark(text)?),
            ConstraintSpec::Regex(rx) => TopLevelGrammar::from_regex(rx),
        })
    }
}

/// Compiles constraints for one tokenizer (build once per model: the token trie and
/// llguidance's per-vocabulary tables are shared by every request).
pub struct ConstraintCompiler {
    factory: ParserFactory,
}

impl ConstraintCompiler {
    /// The compiler for `tok`'s vocabulary. Fails only for a vocabulary without an
    /// end-of-generation token (a grammar could never let generation end).
    pub fn new(tok: &Tokenizer) -> Result<ConstraintCompiler, EngineError> {
        let env = tokens::token_env(tok)?;
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| EngineError::Input(format!("constrained decoding: {e}")))?;
        factory.quiet();
        Ok(ConstraintCompiler { factory })
    }

    /// A fresh constraint for `spec`; an invalid schema or grammar is an input error
    /// with llguidance's message.
    pub fn compile(&self, spec: &ConstraintSpec) -> Result<Constraint, EngineError> {
        let invalid = |m: String| EngineError::Input(format!("invalid grammar: {m}"));
        let grammar = spec.grammar_for().map_err(invalid)?;
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| invalid(e.to_string()))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(invalid(e));
        }
        Ok(Constraint {
            matcher,
            vocab: self.factory.tok_env().tok_trie().vocab_size(),
        })
    }
}

/// One request's grammar state. Cloning gives an independent copy at the same point
/// (the compiled grammar's tables are shared).
#[derive(Clone)]
pub struct Constraint {
    matcher: Matcher,
    /// Tokens the mask covers (the tokenizer's vocabulary; logits past it are banned).
    vocab: usize,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint")
            .field("stopped", &self.matcher.is_stopped())
            .field("error", &self.matcher.get_error())
            .finish()
    }
}

impl Constraint {
    /// The tokens allowed next (end-of-generation ones only where the grammar may end).
    pub fn allowed(&mut self) -> Result<SimpleVob, String> {
        let mask = self
            .matcher
            .compute_mask_or_eos()
            .map_err(|e| e.to_string())?;
        if mask.is_zero() {
            return Err("the grammar allows no token here".into());
        }
        Ok(mask)
    }

    /// Writes `logits` to `out` with every token the grammar forbids next at −∞; an
    /// error when the grammar is in an error state or allows nothing.
    pub fn mask_into(&mut self, logits: &[f32], out: &mut Vec<f32>) -> Result<(), String> {
        let mask = self.allowed()?;
        self.apply(&mask, logits, out);
        Ok(())
    }

    /// Writes `logits` to `out` with the tokens `mask` leaves out at −∞, 32 at a time (a
    /// word of the mask): whole words allowed are copied, whole words forbidden filled;
    /// one pass over the row, the cost of a copy.
    pub fn apply(&self, mask: &SimpleVob, logits: &[f32], out: &mut Vec<f32>) {
        const BANNED: f32 = f32::NEG_INFINITY;
        let words = mask.as_slice();
        let n = self.vocab.min(logits.len()).min(mask.len());
        out.clear();
        out.reserve(logits.len());
        for (k, chunk) in logits[..n].chunks(32).enumerate() {
            match words.get(k).copied().unwrap_or(0) {
                u32::MAX if chunk.len() == 32 => out.extend_from_slice(chunk),
                0 => out.extend(std::iter::repeat_n(BANNED, chunk.len())),
                w => out.extend(chunk.iter().enumerate().map(|(b, &l)| {
                    if w >> b & 1 == 1 {
                        l
                    } else {
                        BANNED
                    }
                })),
            }
        }
        out.extend(std::iter::repeat_n(BANNED, logits.len() - n));
    }

    /// Advances the grammar by the sampled `token`.
    pub fn commit(&mut self, token: u32) -> Result<(), String> {
        self.matcher.consume_token(token).map_err(|e| e.to_string())
    }

    /// The grammar cannot go on (complete, or an end-of-generation token was
    /// committed).
    pub fn is_stopped(&self) -> bool {
        self.matcher.is_stopped()
    }

    /// Whether the output so far is a complete match (end-of-generation allowed).
    pub fn is_accepting(&mut self) -> bool {
        self.matcher.is_accepting().unwrap_or(false)
    }
}

/// A compiler built on first use (the token trie of a large vocabulary takes a moment),
/// shared by every request of an engine.
#[derive(Default)]
pub(crate) struct LazyCompiler(std::sync::OnceLock<Result<Arc<ConstraintCompiler>, EngineError>>);

impl LazyCompiler {
    pub(crate) fn get(&self, tok: &Tokenizer) -> Result<Arc<ConstraintCompiler>, EngineError> {
        self.0
            .get_or_init(|| ConstraintCompiler::new(tok).map(Arc::new))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_tokenizer() -> Tokenizer {
        let path = testutil::data_dir().join("tiny/qwen2moe-tiny/qwen2moe-tiny-Q8_0.gguf");
        let file = gguf::Gguf::open(&path).unwrap();
        Tokenizer::from_gguf(file.metadata()).unwrap()
    }

    /// The word-at-a-time mask equals the one-token-at-a-time reference, for masks of
    /// whole, empty and mixed words, and logits rows longer than the vocabulary.
    #[test]
    fn apply_matches_the_per_token_reference() {
        let tok = tiny_tokenizer();
        let c = ConstraintCompiler::new(&tok)
            .unwrap()
            .compile(&ConstraintSpec::JsonObject)
            .unwrap();
        let vocab = tok.vocab_size();
        let mut out = Vec::new();
        for (seed, extra) in [(1u64, 0usize), (2, 5), (3, 37)] {
            let mut mask = SimpleVob::alloc(vocab);
            let mut x = seed;
            for t in 0..vocab {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                // Runs of allowed and forbidden words, and mixed ones.
                let allowed = match (t / 32) % 3 {
                    0 => true,
                    1 => false,
                    _ => x >> 63 == 1,
                };
                if allowed {
                    mask.allow_token(t as u32);
                }
            }
            let logits: Vec<f32> = (0..vocab + extra).map(|i| i as f32 * 0.5 - 7.0).collect();
            c.apply(&mask, &logits, &mut out);
            assert_eq!(out.len(), logits.len());
            for (i, (&o, &l)) in out.iter().zip(&logits).enumerate() {
                let want = if i < vocab && mask.is_allowed(i as u32) {
                    l
                } else {
                    f32::NEG_INFINITY
                };
                assert_eq!(o, want, "token {i}, seed {seed}");
            }
        }
    }
}
