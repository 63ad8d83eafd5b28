//! Generation: the one state machine that turns a sequence's logits into text — sample,
//! check for the end (an end-of-generation token, a stop string, the length or context
//! limit), detokenize and flush — used by [`Engine::generate`] (`run`, `chat`) and by the
//! scheduler for every batched request.

use std::time::Instant;

use text::{StreamDecoder, Tokenizer};

use crate::stop::StopMatcher;
use crate::{Engine, EngineError, Sampler, SamplingParams, Sequence};

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateRequest {
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    /// Stop strings (never included in the output).
    pub stop: Vec<String>,
    /// Keep generating past end-of-generation tokens.
    pub ignore_eos: bool,
    /// Special tokens written into the text instead of dropped: the tool-call and
    /// reasoning markers of the model's reply format (`text::ReplyFormat::markers`),
    /// which the caller's reply parser must see.
    pub keep_special: Vec<u32>,
}

impl GenerateRequest {
    /// Checks what the caller asked for (the sampling settings' ranges).
    pub fn validate(&self) -> Result<(), EngineError> {
        self.sampling.validate().map_err(EngineError::Input)
    }
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
    /// Prompt tokens whose KV was already in the sequence (prefix reuse).
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

/// What a generation step decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Feed this token to the sequence, then step again with its logits.
    Next(u32),
    /// Generation is over; call [`Generation::finish`] with this reason.
    Finished(FinishReason),
}

/// One request's generation state: its sampler, streaming decoder and stop matcher, the
/// count of tokens generated and the text that became final at the last step. Its
/// buffers are reused, so a step allocates nothing once they have grown.
pub struct Generation {
    tok: Tokenizer,
    sampler: Sampler,
    decoder: StreamDecoder,
    stops: StopMatcher,
    max_new_tokens: usize,
    ignore_eos: bool,
    generated: usize,
    /// The decoded text of the last token, before the stop matcher.
    piece: String,
    /// Text that became final at the last step (or at the finish).
    text: String,
    /// A stop string ended the output: what it held back is dropped, not flushed.
    stopped_by_string: bool,
}

impl Generation {
    /// A generation for `req` with `tok`'s vocabulary. `continues_prompt`: the output
    /// continues the prompt's text (a completion), so the first token keeps its leading
    /// space (SentencePiece `▁Paris` → " Paris"); a chat answer starts a new text.
    pub fn new(tok: &Tokenizer, req: &GenerateRequest, continues_prompt: bool) -> Generation {
        let decoder = tok.stream_decoder(true).keep_special(&req.keep_special);
        let mut stops = StopMatcher::new(&req.stop);
        // One token's text is at most its piece plus an incomplete character, each byte
        // at worst a 3-byte U+FFFD; the stop matcher holds a stop string's worth more.
        // Sized once, so a step never reallocates.
        let piece_cap = 3 * (tok.max_piece_len() + 4);
        let text_cap = piece_cap + stops.max_stop_len();
        stops.reserve(text_cap);
        Generation {
            tok: tok.clone(),
            sampler: Sampler::new(req.sampling.clone()),
            decoder: if continues_prompt {
                decoder.keep_leading_space()
            } else {
                decoder
            },
            stops,
            max_new_tokens: req.max_new_tokens,
            ignore_eos: req.ignore_eos,
            generated: 0,
            piece: String::with_capacity(piece_cap),
            text: String::with_capacity(text_cap),
            stopped_by_string: false,
        }
    }

    /// Tokens generated so far (an end-of-generation token counts).
    pub fn generated(&self) -> usize {
        self.generated
    }

    /// Nothing may be generated at all (`max_new_tokens` is 0).
    pub fn is_empty_request(&self) -> bool {
        self.max_new_tokens == 0
    }

    /// Samples the next token from `logits`, the last-position logits of a sequence
    /// holding `history` with `room` positions left, and decides: feed it, or stop. The
    /// text that became final is in [`text`](Self::text) (possibly empty).
    pub fn step(&mut self, logits: &[f32], history: &[u32], room: usize) -> Step {
        self.text.clear();
        let next = self.sampler.sample(logits, history);
        self.generated += 1;
        if !self.ignore_eos && self.tok.is_eog(next) {
            return Step::Finished(FinishReason::Stop);
        }
        self.piece.clear();
        self.decoder.push_to(next, &mut self.piece);
        if self.stops.push_to(&self.piece, &mut self.text) {
            self.stopped_by_string = true;
            return Step::Finished(FinishReason::Stop);
        }
        if self.generated >= self.max_new_tokens || room == 0 {
            return Step::Finished(FinishReason::Length);
        }
        Step::Next(next)
    }

    /// The text that became final at the last step or finish: complete UTF-8, never part
    /// of a stop string.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Ends the generation: the text held back (an unfinished character, a possible
    /// stop-string start) becomes final in [`text`](Self::text), unless a stop string
    /// ended the output or the caller cancelled.
    pub fn finish(&mut self, reason: FinishReason) -> &str {
        self.text.clear();
        if reason != FinishReason::Cancelled && !self.stopped_by_string {
            self.piece.clear();
            self.decoder.flush_to(&mut self.piece);
            if !self.stops.push_to(&self.piece, &mut self.text) {
                self.stops.flush_to(&mut self.text);
            }
        }
        &self.text
    }
}

impl Engine {
    /// Generates after `prompt` (reusing whatever prefix `seq` already holds), calling
    /// `on_text` with each piece of text as it becomes final (complete UTF-8, no stop
    /// strings); `on_text` returns `false` to cancel.
    pub fn generate(
        &self,
        seq: &mut Sequence,
        prompt: &[u32],
        req: &GenerateRequest,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<GenerationStats, EngineError> {
        let tok = self.tokenizer.as_ref().ok_or(EngineError::NoTokenizer)?;
        req.validate()?;
        let mut gen = Generation::new(tok, req, false);
        let n_ctx = seq.kv.n_ctx();
        let t0 = Instant::now();
        let (logits, history, cached) = seq.prefill(prompt)?;
        let prefill_seconds = t0.elapsed().as_secs_f64();

        let t1 = Instant::now();
        let finish = if gen.is_empty_request() {
            FinishReason::Length
        } else {
            let mut step = gen.step(logits, history, n_ctx - history.len());
            loop {
                if !gen.text().is_empty() && !on_text(gen.text()) {
                    break FinishReason::Cancelled;
                }
                match step {
                    Step::Finished(reason) => break reason,
                    Step::Next(next) => {
                        let (logits, history) =
                            seq.feed_with_history(&[next], model::Logits::Last)?;
                        step = gen.step(logits, history, n_ctx - history.len());
                    }
                }
            }
        };
        let rest = gen.finish(finish);
        if !rest.is_empty() {
            on_text(rest);
        }
        Ok(GenerationStats {
            prompt_tokens: prompt.len(),
            cached_tokens: cached,
            generated_tokens: gen.generated(),
            prefill_seconds,
            decode_seconds: t1.elapsed().as_secs_f64(),
            finish,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer() -> Tokenizer {
        let path = testutil::data_dir().join("tiny/qwen2moe-tiny/qwen2moe-tiny-Q8_0.gguf");
        let file = gguf::Gguf::open(&path).unwrap();
        Tokenizer::from_gguf(file.metadata()).unwrap()
    }

    fn request(max_new_tokens: usize, stop: &[&str]) -> GenerateRequest {
        GenerateRequest {
            max_new_tokens,
            sampling: SamplingParams::greedy(),
            stop: stop.iter().map(|s| s.to_string()).collect(),
            ignore_eos: false,
            keep_special: vec![],
        }
    }

    /// Drives `gen` as if the model predicted `ids` one after the other (one-hot logits);
    /// returns the text streamed (finish included), the steps and the finish reason.
    fn drive(
        gen: &mut Generation,
        vocab: usize,
        ids: &[u32],
        room: usize,
    ) -> (String, usize, FinishReason) {
        let (mut text, mut history) = (String::new(), vec![1u32]);
        for (i, &id) in ids.iter().enumerate() {
            let mut logits = vec![0f32; vocab];
            logits[id as usize] = 1.0;
            let step = gen.step(&logits, &history, room.saturating_sub(i));
            text += gen.text();
            match step {
                Step::Next(t) => {
                    assert_eq!(t, id);
                    history.push(t);
                }
                Step::Finished(reason) => {
                    text += gen.finish(reason);
                    return (text, i + 1, reason);
                }
            }
        }
        panic!("still running after {} tokens", ids.len())
    }

    #[test]
    fn kept_special_tokens_are_written_others_dropped() {
        let tok = tokenizer();
        let vocab = tok.vocab_size();
        let start = tok.token_id("<|im_start|>").unwrap();
        assert!(tok.is_special(start) && !tok.is_eog(start));
        let mut ids = tok.encode("Hi", false).unwrap();
        ids.push(start);
        ids.extend(tok.encode("there", false).unwrap());
        let mut plain = Generation::new(&tok, &request(ids.len(), &[]), false);
        assert_eq!(drive(&mut plain, vocab, &ids, 100).0, "Hithere");
        let mut req = request(ids.len(), &[]);
        req.keep_special = vec![start];
        let mut kept = Generation::new(&tok, &req, false);
        assert_eq!(drive(&mut kept, vocab, &ids, 100).0, "Hi<|im_start|>there");
    }

    #[test]
    fn stops_at_a_stop_string_across_tokens_and_never_shows_it() {
        let tok = tokenizer();
        let vocab = tok.vocab_size();
        let ids = tok
            .encode("Hello world. STOP and more words", false)
            .unwrap();
        let mut gen = Generation::new(&tok, &request(100, &["STOP"]), false);
        let (text, steps, reason) = drive(&mut gen, vocab, &ids, 100);
        assert_eq!(text, "Hello world. ");
        assert_eq!(reason, FinishReason::Stop);
        assert!(steps < ids.len());
        assert_eq!(gen.generated(), steps);
    }

    #[test]
    fn length_and_context_end_it_and_held_back_text_is_flushed() {
        let tok = tokenizer();
        let vocab = tok.vocab_size();
        let ids = tok.encode("one two three four", false).unwrap();
        // "thr" could start the stop string "three!": held back, then flushed at the end.
        let n = tok.encode("one two three", false).unwrap().len();
        let mut gen = Generation::new(&tok, &request(n, &["three!"]), false);
        let (text, steps, reason) = drive(&mut gen, vocab, &ids, 100);
        assert_eq!(
            (text.as_str(), steps, reason),
            ("one two three", n, FinishReason::Length)
        );
        let mut gen = Generation::new(&tok, &request(100, &[]), false);
        let (_, steps, reason) = drive(&mut gen, vocab, &ids, 2);
        assert_eq!((steps, reason), (3, FinishReason::Length));
    }

    #[test]
    fn end_of_generation_token_stops_unless_ignored() {
        let tok = tokenizer();
        let vocab = tok.vocab_size();
        let eos = tok.eos_id().unwrap();
        let mut ids = tok.encode("Hi", false).unwrap();
        ids.push(eos);
        ids.extend(tok.encode(" there", false).unwrap());
        let mut gen = Generation::new(&tok, &request(100, &[]), false);
        let (text, steps, reason) = drive(&mut gen, vocab, &ids, 100);
        assert_eq!((text.as_str(), reason), ("Hi", FinishReason::Stop));
        assert_eq!(steps, ids.iter().position(|&t| t == eos).unwrap() + 1);
        let mut req = request(ids.len(), &[]);
        req.ignore_eos = true;
        let mut gen = Generation::new(&tok, &req, false);
        let (text, steps, reason) = drive(&mut gen, vocab, &ids, 100);
        assert_eq!(
            (text.as_str(), steps, reason),
            ("Hi there", ids.len(), FinishReason::Length)
        );
    }
}
