//! Aggregate decode of B parallel sequences, the measurement behind `ferromoe bench
//! --parallel` (llama.cpp's `llama-batched-bench` is its peer): B sequences, each
//! prefilled with its own P-token prompt, then N decode steps of all B together, each
//! step ONE forward pass of B tokens ([`Engine::forward_batch`], the pass the
//! scheduler runs for its active sequences: every matmul sees the B rows at once and
//! the fused MoE reads each active expert once for all the tokens routed to it;
//! attention reads each token's own sequence). No sampling: the tokens are
//! pseudo-random ids, like llama-bench's.

use std::time::Instant;

use model::{BatchLimits, BatchSeq, Logits};

use crate::{Engine, EngineError, Sequence, PREFILL_CHUNK};

/// Deterministic pseudo-random token ids in `[0, vocab)` (xorshift64*), the first one `bos`.
pub fn random_tokens(n: usize, vocab: usize, bos: u32, seed: u64) -> Vec<u32> {
    let mut s = seed | 1;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        let r = s.wrapping_mul(0x2545_f491_4f6c_dd1d);
        out.push(if i == 0 {
            bos
        } else {
            ((r >> 32) % vocab.max(1) as u64) as u32
        });
    }
    out
}

/// What to measure: `n_seqs` sequences of `n_prompt` prompt tokens, then `n_gen`
/// batched decode steps, `repetitions` times (each truncates back to the prompts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParallelSpec {
    pub n_seqs: usize,
    pub n_prompt: usize,
    pub n_gen: usize,
    pub repetitions: usize,
}

impl ParallelSpec {
    /// Positions each sequence's KV cache needs.
    pub fn n_ctx(&self) -> usize {
        self.n_prompt.saturating_add(self.n_gen)
    }

    /// A clear error for a spec that measures nothing or cannot run.
    pub fn validate(&self) -> Result<(), EngineError> {
        let bad = |m: &str| Err(EngineError::Input(m.to_string()));
        if self.n_seqs == 0 {
            return bad("--parallel: a batch holds at least one sequence");
        }
        if self.n_gen == 0 {
            return bad("--parallel needs decode steps: -n must be at least 1");
        }
        if self.repetitions == 0 {
            return bad("-r must be at least 1");
        }
        Ok(())
    }
}

/// The timings of one [`ParallelSpec`].
#[derive(Clone, Debug, PartialEq)]
pub struct ParallelRun {
    pub spec: ParallelSpec,
    /// Prefill of all the prompts (each in chunks of [`PREFILL_CHUNK`] tokens), once.
    pub prefill_ns: u64,
    /// Per repetition: the `n_gen` batched decode steps.
    pub decode_ns: Vec<u64>,
}

impl ParallelRun {
    /// Tokens decoded per repetition (all sequences).
    pub fn decoded_tokens(&self) -> usize {
        self.spec.n_seqs * self.spec.n_gen
    }

    /// Aggregate decode rate of each repetition, tokens/s over all sequences.
    pub fn decode_ts(&self) -> Vec<f64> {
        self.decode_ns
            .iter()
            .map(|&ns| self.decoded_tokens() as f64 * 1e9 / ns.max(1) as f64)
            .collect()
    }

    /// Prompt tokens per second of the prefill.
    pub fn prefill_ts(&self) -> f64 {
        (self.spec.n_seqs * self.spec.n_prompt) as f64 * 1e9 / self.prefill_ns.max(1) as f64
    }
}

/// Runs `spec` on `engine` (see the module comment); `seed` varies the token ids.
pub fn parallel_decode(
    engine: &Engine,
    spec: ParallelSpec,
    seed: u64,
) -> Result<ParallelRun, EngineError> {
    spec.validate()?;
    let n_ctx = spec.n_ctx();
    let n_ctx_train = engine.model.config.n_ctx_train;
    if n_ctx > n_ctx_train {
        return Err(EngineError::Input(format!(
            "--parallel: -p {} plus -n {} exceed the model's context length {n_ctx_train}",
            spec.n_prompt, spec.n_gen
        )));
    }
    let vocab = engine.model.config.n_vocab;
    let bos = engine
        .tokenizer
        .as_ref()
        .and_then(|t| t.bos_id())
        .unwrap_or(0);
    let mut seqs = (0..spec.n_seqs)
        .map(|_| engine.sequence(n_ctx))
        .collect::<Result<Vec<Sequence>, _>>()?;
    // One set of activation buffers for every pass (the sequences' own stay empty).
    let mut state = engine.new_state(BatchLimits {
        tokens: spec.n_seqs.max(spec.n_prompt.min(PREFILL_CHUNK)),
        seqs: spec.n_seqs,
        ctx: n_ctx,
        logit_rows: 0,
    })?;

    let t = Instant::now();
    for (i, s) in seqs.iter_mut().enumerate() {
        let prompt = random_tokens(spec.n_prompt, vocab, bos, seed ^ (0x9e37 * (i as u64 + 1)));
        for chunk in prompt.chunks(PREFILL_CHUNK) {
            engine.feed_batch(&mut state, &mut [(s, chunk)])?;
        }
    }
    let prefill_ns = t.elapsed().as_nanos() as u64;

    // Step g's token of sequence i: steps[g * n_seqs + i].
    let steps = random_tokens(spec.n_seqs * spec.n_gen + 1, vocab, bos, seed ^ 0x6e7);
    let steps = &steps[1..];
    let mut decode = |seqs: &mut [Sequence], n: usize| -> Result<u64, EngineError> {
        for s in seqs.iter_mut() {
            if s.truncate(spec.n_prompt) != spec.n_prompt {
                return Err(EngineError::Input(format!(
                    "this model's sliding-window KV cache cannot go back {} positions: \
                     use a smaller -n with --parallel",
                    spec.n_gen
                )));
            }
        }
        let t = Instant::now();
        for g in 0..n {
            let toks = &steps[g * spec.n_seqs..(g + 1) * spec.n_seqs];
            let mut batch: Vec<BatchSeq> = seqs
                .iter_mut()
                .zip(toks)
                .map(|(s, tok)| BatchSeq {
                    kv: &mut s.kv,
                    tokens: std::slice::from_ref(tok),
                    logits: Logits::Last,
                })
                .collect();
            std::hint::black_box(engine.forward_batch(&mut state, &mut batch)?);
            drop(batch);
            for (s, &tok) in seqs.iter_mut().zip(toks) {
                s.tokens.push(tok);
            }
        }
        Ok(t.elapsed().as_nanos() as u64)
    };
    decode(&mut seqs, 1)?; // warm-up
    let decode_ns = (0..spec.repetitions)
        .map(|_| decode(&mut seqs, spec.n_gen))
        .collect::<Result<_, _>>()?;
    Ok(ParallelRun {
        spec,
        prefill_ns,
        decode_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LoadOptions;

    fn engine() -> Engine {
        let path = testutil::data_dir().join("tiny/qwen2moe-tiny/qwen2moe-tiny-Q8_0.gguf");
        Engine::load(
            &path,
            &LoadOptions {
                threads: Some(2),
                ..Default::default()
            },
            &mut |_| {},
        )
        .unwrap()
    }

    #[test]
    fn parallel_decode_times_every_repetition() {
        let engine = engine();
        let spec = ParallelSpec {
            n_seqs: 3,
            n_prompt: 20,
            n_gen: 5,
            repetitions: 2,
        };
        let run = parallel_decode(&engine, spec, 1).unwrap();
        assert_eq!(run.spec, spec);
        assert_eq!(run.decode_ns.len(), 2);
        assert!(run.decode_ns.iter().all(|&ns| ns > 0));
        assert!(run.prefill_ns > 0);
        assert_eq!(run.decoded_tokens(), 15);
        assert!(run.decode_ts().iter().all(|&t| t.is_finite() && t > 0.0));
        assert!(run.prefill_ts() > 0.0);
    }

    #[test]
    fn batched_steps_give_each_sequence_its_own_logits() {
        // The pass the bench times: B decode tokens in one forward pass must give each
        // sequence the logits it gets alone (so the bench measures real decode work).
        let engine = engine();
        let vocab = engine.model.config.n_vocab;
        let prompts: Vec<Vec<u32>> = (0..3)
            .map(|i| random_tokens(10 + 3 * i, vocab, 1, 40 + i as u64))
            .collect();
        let next = [7u32, 11, 13];
        let alone: Vec<Vec<f32>> = prompts
            .iter()
            .zip(next)
            .map(|(p, t)| {
                let mut s = engine.sequence(64).unwrap();
                s.feed(p, Logits::Last).unwrap();
                s.feed(&[t], Logits::Last).unwrap().to_vec()
            })
            .collect();
        let mut seqs: Vec<Sequence> = (0..3).map(|_| engine.sequence(64).unwrap()).collect();
        let mut state = engine
            .new_state(BatchLimits {
                tokens: 32,
                seqs: 3,
                ctx: 64,
                logit_rows: 0,
            })
            .unwrap();
        for (s, p) in seqs.iter_mut().zip(&prompts) {
            engine.feed_batch(&mut state, &mut [(s, p)]).unwrap();
        }
        let mut items: Vec<(&mut Sequence, &[u32])> = seqs
            .iter_mut()
            .zip(&next)
            .map(|(s, t)| (s, std::slice::from_ref(t)))
            .collect();
        let batched = engine.feed_batch(&mut state, &mut items).unwrap();
        for (b, a) in batched.iter().zip(&alone) {
            let err = b
                .iter()
                .zip(a)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(err < 1e-3, "batched logits differ from alone by {err}");
        }
    }

    #[test]
    fn bad_specs_are_refused_with_a_message() {
        let engine = engine();
        let spec = |n_seqs, n_gen, repetitions| ParallelSpec {
            n_seqs,
            n_prompt: 4,
            n_gen,
            repetitions,
        };
        for (s, want) in [
            (spec(0, 2, 1), "at least one sequence"),
            (spec(2, 0, 1), "-n must be at least 1"),
            (spec(2, 2, 0), "-r must be at least 1"),
        ] {
            let e = parallel_decode(&engine, s, 0).unwrap_err();
            assert!(e.is_input() && e.to_string().contains(want), "{e}");
        }
        let mut huge = spec(1, 1, 1);
        huge.n_prompt = engine.model.config.n_ctx_train;
        let e = parallel_decode(&engine, huge, 0).unwrap_err();
        assert!(e.to_string().contains("context length"), "{e}");
    }

    #[test]
    fn random_tokens_are_in_range_and_start_with_bos() {
        let t = random_tokens(1000, 37, 3, 9);
        assert_eq!(t[0], 3);
        assert!(t.iter().all(|&x| x < 37));
        assert!(t.iter().collect::<std::collections::HashSet<_>>().len() > 30);
    }
}
