//! The generation loop: prompt (reusing whatever prefix the session already holds),
//! then sample, decode, stream and stop.

use std::time::Instant;

use model::{Logits, ModelError};

use crate::stop::StopMatcher;
use crate::{Engine, Sampler, SamplingParams, Session};

/// Prompt tokens processed per forward pass (bounds the activation buffers).
pub const PREFILL_CHUNK: usize = 512;

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateRequest {
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    /// Stop strings (never included in the output).
    pub stop: Vec<String>,
    /// Keep generating past end-of-generation tokens.
    pub ignore_eos: bool,
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// `max_new_tokens` reached, or the context is full.
    Length,
    /// The caller asked to stop (Ctrl-C, client gone).
    Cancelled,
}

/// Counts and timings of one generation.
#[derive(Clone, Debug)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    /// Prompt tokens whose KV was already in the session (prefix reuse).
    pub cached_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
    pub finish: FinishReason,
}

impl GenerationStats {
    /// Prompt tokens per second (of the tokens actually processed).
    pub fn prefill_tps(&self) -> f64 {
        (self.prompt_tokens - self.cached_tokens) as f64 / self.prefill_seconds.max(1e-9)
    }
    /// Generated tokens per second (first token excluded: it comes from the prefill).
    pub fn decode_tps(&self) -> f64 {
        self.generated_tokens.saturating_sub(1) as f64 / self.decode_seconds.max(1e-9)
    }
}

impl Session {
    /// Makes the session hold exactly `prompt`, reusing the longest common prefix of what
    /// it holds, and returns the last position's logits and the number of reused tokens.
    pub fn prefill(&mut self, prompt: &[u32]) -> Result<(Vec<f32>, usize), ModelError> {
        if prompt.is_empty() {
            return Err(ModelError::Input("the prompt is empty".into()));
        }
        if prompt.len() > self.kv.n_ctx() {
            return Err(ModelError::Input(format!(
                "the prompt has {} tokens, more than the context size {}",
                prompt.len(),
                self.kv.n_ctx()
            )));
        }
        let common = self
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count();
        // The last prompt token is always run again: its logits are needed.
        let reuse = common.min(prompt.len() - 1);
        self.truncate(reuse);
        let mut logits = Vec::new();
        for chunk in prompt[reuse..].chunks(PREFILL_CHUNK) {
            logits = self.feed(chunk, Logits::Last)?.to_vec();
        }
        Ok((logits, reuse))
    }
}

impl Engine {
    /// Generates after `prompt`, calling `on_text` with each piece of text as it becomes
    /// final (complete UTF-8, no stop strings); `on_text` returns `false` to cancel.
    pub fn generate(
        &self,
        session: &mut Session,
        prompt: &[u32],
        req: &GenerateRequest,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<GenerationStats, ModelError> {
        let tok = self
            .tokenizer
            .as_ref()
            .ok_or_else(|| ModelError::Input("this file has no tokenizer".into()))?;
        req.sampling.validate().map_err(ModelError::Input)?;
        let t0 = Instant::now();
        let (mut logits, cached) = session.prefill(prompt)?;
        let prefill_seconds = t0.elapsed().as_secs_f64();

        let mut sampler = Sampler::new(req.sampling.clone());
        let mut decoder = tok.stream_decoder(true);
        let mut stops = StopMatcher::new(&req.stop);
        let t1 = Instant::now();
        let mut generated = 0;
        let mut finish = FinishReason::Length;
        let mut stopped_by_string = false;
        while generated < req.max_new_tokens {
            let next = sampler.sample(&mut logits, &session.tokens);
            generated += 1;
            if !req.ignore_eos && tok.is_eog(next) {
                finish = FinishReason::Stop;
                break;
            }
            let (text, stopped) = stops.push(&decoder.push(next));
            if !text.is_empty() && !on_text(&text) {
                finish = FinishReason::Cancelled;
                break;
            }
            if stopped {
                finish = FinishReason::Stop;
                stopped_by_string = true;
                break;
            }
            if generated == req.max_new_tokens || session.remaining() == 0 {
                break;
            }
            logits.clear();
            logits.extend_from_slice(session.feed(&[next], Logits::Last)?);
        }
        // Text held back (an unfinished character, a possible stop-string start) is
        // final now, unless a stop string ended the output or the caller cancelled.
        if finish != FinishReason::Cancelled && !stopped_by_string {
            let (mut rest, stopped) = stops.push(&decoder.flush());
            if !stopped {
                rest += &stops.flush();
            }
            if !rest.is_empty() {
                on_text(&rest);
            }
        }
        Ok(GenerationStats {
            prompt_tokens: prompt.len(),
            cached_tokens: cached,
            generated_tokens: generated,
            prefill_seconds,
            decode_seconds: t1.elapsed().as_secs_f64(),
            finish,
        })
    }
}
