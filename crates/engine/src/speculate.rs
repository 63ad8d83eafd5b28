//! Speculative decoding with prompt-lookup drafts: guess the next tokens from the context
//! (the prompt and what was generated so far), feed the sampled token and the guesses in
//! ONE forward pass, and keep the guesses the model confirms. One pass over the weights
//! then yields several tokens where the context repeats itself (code edits, summaries,
//! retrieval answers), at the price of a slightly longer step where it does not.
//!
//! Lossless: a k-token step gives bit for bit the logits of k one-token steps
//! (`model::VERIFY_STEP_MAX`), each position is sampled by the one state machine
//! ([`crate::Generation`]) exactly as without drafts, and the cache is truncated back past
//! the first guess the model did not confirm. Greedy output is therefore byte-identical;
//! with sampling, a guess is kept with the probability the sampler gives it and otherwise
//! the token is drawn from the rest ([`crate::Sampler::sample_with_draft`]), which leaves
//! each token's distribution unchanged.
//!
//! Adaptive ([`Drafter`]): the length of a draft follows the measured acceptance, through a
//! cost model of the verification step, and drafting pauses (backing off exponentially,
//! with one-token probes) when it does not pay.

/// Which drafts to make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecType {
    /// No speculation: one token per forward pass.
    Off,
    /// Prompt lookup: the tokens that followed the latest earlier occurrence of the
    /// context's last n-gram.
    Ngram,
    /// The model's own next-token-prediction (MTP) layer (DeepSeek-V3/R1, GLM-4.5),
    /// chained for the length of the draft (`crate::mtp`).
    Mtp,
}

impl std::str::FromStr for SpecType {
    type Err = String;
    fn from_str(s: &str) -> Result<SpecType, String> {
        match s {
            "off" | "none" => Ok(SpecType::Off),
            "ngram" => Ok(SpecType::Ngram),
            "mtp" => Ok(SpecType::Mtp),
            other => Err(format!(
                "unknown speculation type '{other}' (ngram, mtp or off)"
            )),
        }
    }
}

/// Speculative decoding settings (llama.cpp's `--spec-type`, `--draft-max`, `--draft-min`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Speculation {
    pub kind: SpecType,
    /// Most tokens drafted per step (at most [`DRAFT_MAX`]).
    pub draft_max: usize,
    /// Fewer drafted tokens than this are not worth a verification: no draft then.
    pub draft_min: usize,
}

/// The longest draft: one verification step holds the sampled token and the draft, and
/// gives one-token-step logits bit for bit only up to `model::VERIFY_STEP_MAX` tokens.
pub const DRAFT_MAX: usize = model::VERIFY_STEP_MAX - 1;

impl Default for Speculation {
    /// Prompt lookup, drafts of 1 to [`DRAFT_MAX`] tokens, the length chosen by the
    /// acceptance.
    fn default() -> Speculation {
        Speculation {
            kind: SpecType::Ngram,
            draft_max: DRAFT_MAX,
            draft_min: 1,
        }
    }
}

impl Speculation {
    /// No speculation.
    pub fn off() -> Speculation {
        Speculation {
            kind: SpecType::Off,
            ..Speculation::default()
        }
    }

    /// Checks the draft lengths, naming the offending setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.draft_max > DRAFT_MAX {
            return Err(format!(
                "draft-max must be at most {DRAFT_MAX}, got {}",
                self.draft_max
            ));
        }
        if self.draft_min > self.draft_max {
            return Err(format!(
                "draft-min ({}) must not exceed draft-max ({})",
                self.draft_min, self.draft_max
            ));
        }
        Ok(())
    }

    /// Checks that `model` can draft this way: MTP drafts need the file's
    /// next-token-prediction layer (the error says why it cannot).
    pub fn check_model(&self, model: &model::Model) -> Result<(), String> {
        match self.kind {
            SpecType::Mtp if self.is_on() => model
                .nextn()
                .map(|_| ())
                .map_err(|e| format!("--spec-type mtp: {e}")),
            _ => Ok(()),
        }
    }

    /// Whether drafts come from the model's MTP block.
    pub fn drafts_with_mtp(&self) -> bool {
        self.is_on() && self.kind == SpecType::Mtp
    }

    /// Whether any draft can be made.
    pub fn is_on(&self) -> bool {
        self.kind != SpecType::Off && self.draft_max > 0
    }
}

/// The n-grams looked up, longest first: a longer match predicts better, a shorter one
/// matches more often.
const NGRAM_MAX: usize = 4;
const NGRAM_MIN: usize = 2;

/// The cost of a verification step of `1 + d` tokens relative to a one-token step is
/// modelled as `1 + c · d`. For a dense model `c` is this: decoding reads every weight
/// once per step, so extra tokens cost only their arithmetic and their share of attention
/// (Qwen2.5-0.5B Q4_K_M, 2 threads, `bench --steps`: 1.08 for 2 tokens, 1.43 for 4, 1.74
/// for 8, see `bench/RESULTS.md`). A mixture of experts adds the experts the extra tokens
/// route to ([`step_cost_per_token`]).
pub const DENSE_STEP_COST_PER_TOKEN: f32 = 0.1;

/// The extra cost `c` per draft token of a model whose routed experts are `routed_share`
/// of the bytes a one-token step reads, `used` of `n_expert` experts per token: with
/// independent routing a second token reads `n·(1 − (1 − used/n)²) − used` more experts
/// (V2-Lite, 6 of 64, half its bytes routed: ≈ 0.45 of a step more).
pub fn step_cost_per_token(routed_share: f32, used: usize, n_expert: usize) -> f32 {
    if used == 0 || n_expert == 0 {
        return DENSE_STEP_COST_PER_TOKEN;
    }
    let (u, n) = (used as f32, n_expert as f32);
    let distinct_two = n * (1.0 - (1.0 - u / n).powi(2));
    let extra = routed_share.clamp(0.0, 1.0) * (distinct_two - u) / u;
    DENSE_STEP_COST_PER_TOKEN + extra
}

/// Weight of the past in the acceptance estimate, per verified draft token.
const DECAY: f32 = 0.9;

/// The acceptance estimate's starting counts (hits, trials): 0.6 as if from 2 tokens.
const PRIOR: (f32, f32) = (1.2, 2.0);

/// Longest pause between probes when drafting does not pay, in steps.
const MAX_BACKOFF: usize = 64;

/// Prompt-lookup drafts and the acceptance statistics that size them. Its buffers are
/// reserved once; drafting allocates nothing.
#[derive(Clone, Debug)]
pub struct Drafter {
    spec: Speculation,
    /// Decayed counts of draft tokens confirmed and of draft tokens judged (a rejected
    /// draft judges its confirmed prefix and the first miss, an accepted one all of it).
    hits: f32,
    trials: f32,
    /// Steps left without drafting, and the next pause when drafting stops paying.
    cooldown: usize,
    backoff: usize,
    /// The length of the last draft when it was confirmed whole, else 0: the text is being
    /// copied (a function rewritten, a quote), so the next draft may be longer than the
    /// overall acceptance rate, which mixes copied and new text, would choose.
    copy_run: usize,
    /// Extra cost of a step per draft token, relative to a one-token step.
    cost_per_token: f32,
    /// Tokens drafted and confirmed in this generation, and verification steps with a draft.
    pub drafted: usize,
    pub accepted: usize,
    pub steps: usize,
}

impl Drafter {
    /// A drafter for these settings (an acceptance prior of 0.6: a first draft of 2 tokens).
    pub fn new(spec: Speculation) -> Drafter {
        Drafter {
            spec,
            hits: PRIOR.0,
            trials: PRIOR.1,
            cooldown: 0,
            backoff: 1,
            copy_run: 0,
            cost_per_token: DENSE_STEP_COST_PER_TOKEN,
            drafted: 0,
            accepted: 0,
            steps: 0,
        }
    }

    /// The settings.
    pub fn speculation(&self) -> Speculation {
        self.spec
    }

    /// Sets the model's extra cost per draft token ([`step_cost_per_token`]).
    pub fn set_step_cost(&mut self, cost_per_token: f32) {
        if cost_per_token.is_finite() && cost_per_token >= 0.0 {
            self.cost_per_token = cost_per_token;
        }
    }

    /// The estimated probability that a draft token is confirmed.
    pub fn acceptance(&self) -> f32 {
        self.hits / self.trials.max(1e-6)
    }

    /// The draft length with the most tokens per unit of step cost at acceptance `a`
    /// (0: drafting does not pay): a draft of `d` tokens yields `1 + a + … + a^d`
    /// tokens on average for a step costing `1 + cost · d`.
    pub fn best_length(a: f32, max: usize, cost: f32) -> usize {
        let (mut best, mut best_rate) = (0, 1.0f32);
        let (mut expected, mut term) = (1.0f32, 1.0f32);
        for d in 1..=max {
            term *= a;
            expected += term;
            let rate = expected / (1.0 + cost * d as f32);
            if rate > best_rate * 1.0001 {
                (best, best_rate) = (d, rate);
            }
        }
        best
    }

    /// How many tokens the next draft should hold, at most `limit`: 0 when speculation is
    /// off or paused (a pause counts down one step per call), else the length the
    /// acceptance and the step cost favour, at least `--draft-min`.
    pub fn wanted(&mut self, limit: usize) -> usize {
        let limit = limit.min(self.spec.draft_max);
        if !self.spec.is_on() || limit == 0 || limit < self.spec.draft_min {
            return 0;
        }
        if self.cooldown > 0 {
            self.cooldown -= 1;
            return 0;
        }
        // After a pause the best length is 0: probe with the shortest draft. While whole
        // drafts are confirmed, each next one may be twice as long.
        Drafter::best_length(self.acceptance(), limit, self.cost_per_token)
            .max(2 * self.copy_run)
            .max(self.spec.draft_min)
            .max(1)
            .min(limit)
    }

    /// Writes into `out` (cleared first) the prompt-lookup draft to verify after `last`,
    /// the token about to be fed after `history`: at most `limit` tokens, none when
    /// speculation is off, paused, or finds nothing.
    pub fn draft(&mut self, history: &[u32], last: u32, limit: usize, out: &mut Vec<u32>) {
        out.clear();
        let want = self.wanted(limit);
        if want == 0 {
            return;
        }
        lookup(history, last, want, out);
        if out.len() < self.spec.draft_min {
            out.clear();
        }
    }

    /// Records a verification: `drafted` tokens guessed, the first `accepted` of them
    /// confirmed. Pauses drafting when it stops paying.
    pub fn record(&mut self, drafted: usize, accepted: usize) {
        if drafted == 0 {
            return;
        }
        self.drafted += drafted;
        self.accepted += accepted;
        self.steps += 1;
        self.copy_run = if accepted == drafted { drafted } else { 0 };
        // A draft confirmed whole after a poor stretch (the context started repeating
        // itself): start from the prior again rather than climb out of the stretch's
        // estimate probe by probe.
        if accepted == drafted && self.acceptance() < PRIOR.0 / PRIOR.1 {
            (self.hits, self.trials) = PRIOR;
        }
        let judged = accepted + usize::from(accepted < drafted);
        for _ in 0..judged {
            self.hits *= DECAY;
            self.trials *= DECAY;
        }
        self.hits += accepted as f32;
        self.trials += judged as f32;
        if Drafter::best_length(self.acceptance(), self.spec.draft_max, self.cost_per_token) == 0 {
            self.cooldown = self.backoff;
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        } else {
            self.backoff = 1;
        }
    }
}

/// Prompt lookup: in the context `history` followed by `last`, finds the latest earlier
/// occurrence of its last n tokens (n from [`NGRAM_MAX`] down to [`NGRAM_MIN`]) and writes
/// the tokens that followed it, at most `max`, into `out` (cleared first).
pub fn lookup(history: &[u32], last: u32, max: usize, out: &mut Vec<u32>) {
    out.clear();
    let len = history.len() + 1;
    let at = |i: usize| if i < history.len() { history[i] } else { last };
    for n in (NGRAM_MIN..=NGRAM_MAX).rev() {
        if len < n + 1 {
            continue;
        }
        let key = len - n;
        // Candidate starts, latest first; the match must leave a token after it.
        for s in (0..key).rev() {
            if at(s + n - 1) == last && (0..n - 1).all(|j| at(s + j) == at(key + j)) {
                let end = (s + n + max).min(len);
                out.extend((s + n..end).map(at));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_finds_the_latest_longest_match() {
        let mut out = Vec::new();
        // ... 1 2 3 [4 5 6] ... 1 2 3 [7 8] ... 2 3 → the latest "2 3" is followed by 7 8.
        let h = [1, 2, 3, 4, 5, 6, 9, 1, 2, 3, 7, 8, 9, 2];
        lookup(&h, 3, 4, &mut out);
        assert_eq!(out, [7, 8, 9, 2]);
        // A longer match wins over a later shorter one: "9 1 2 3" occurs once, at 6..10.
        let h = [9, 1, 2, 3, 4, 5, 0, 2, 3, 6, 9, 1, 2];
        lookup(&h, 3, 2, &mut out);
        assert_eq!(out, [4, 5]);
        // The continuation may run into the key itself (a repeating pattern), and stops at
        // the end of the context.
        lookup(&[7, 7, 7], 7, 8, &mut out);
        assert_eq!(out, [7]);
        // No match of at least NGRAM_MIN tokens: nothing.
        lookup(&[1, 2, 3, 4], 5, 4, &mut out);
        assert!(out.is_empty());
        lookup(&[], 5, 4, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn length_follows_acceptance_and_cost() {
        let c = DENSE_STEP_COST_PER_TOKEN;
        assert_eq!(Drafter::best_length(0.0, DRAFT_MAX, c), 0);
        assert_eq!(Drafter::best_length(0.05, DRAFT_MAX, c), 0);
        assert!(Drafter::best_length(0.3, DRAFT_MAX, c) >= 1);
        let (mid, high) = (
            Drafter::best_length(0.7, DRAFT_MAX, c),
            Drafter::best_length(0.97, DRAFT_MAX, c),
        );
        assert!(mid >= 2 && high > mid, "{mid} {high}");
        assert_eq!(Drafter::best_length(0.999, 5, c), 5);
        // A costlier step (a mixture of experts) needs a higher acceptance.
        let moe = step_cost_per_token(0.5, 6, 64);
        assert!((0.5..0.6).contains(&moe), "{moe}");
        assert_eq!(Drafter::best_length(0.3, DRAFT_MAX, moe), 0);
        assert!(Drafter::best_length(0.9, DRAFT_MAX, moe) >= 2);
        assert_eq!(step_cost_per_token(0.0, 6, 64), c);
        assert_eq!(step_cost_per_token(0.7, 0, 0), c);
    }

    #[test]
    fn drafting_pauses_when_nothing_is_accepted_and_resumes_when_it_pays() {
        let spec = Speculation::default();
        let mut d = Drafter::new(spec);
        let history: Vec<u32> = (0..60).map(|i| i % 20).collect();
        let mut out = Vec::new();
        let (mut steps, mut drafted) = (0, 0);
        // Every draft rejected: the drafter soon drafts only every so often.
        for _ in 0..400 {
            d.draft(&history, 0, 8, &mut out);
            steps += 1;
            if !out.is_empty() {
                drafted += 1;
                d.record(out.len(), 0);
            }
        }
        assert!(drafted < 40, "{drafted} drafts in {steps} steps");
        assert!(d.acceptance() < 0.1);
        // Then everything accepted: drafts come back and grow.
        let mut lengths = Vec::new();
        for _ in 0..200 {
            d.draft(&history, 0, DRAFT_MAX, &mut out);
            if !out.is_empty() {
                lengths.push(out.len());
                d.record(out.len(), out.len());
            }
        }
        assert!(lengths.len() > 120, "{}", lengths.len());
        assert!(*lengths.last().unwrap() >= 8, "{lengths:?}");
    }

    #[test]
    fn a_draft_confirmed_whole_doubles_the_next_until_one_misses() {
        let mut d = Drafter::new(Speculation::default());
        // Half of every 2-token draft confirmed: the estimate settles near 0.5, 2 tokens.
        for _ in 0..8 {
            d.record(2, 1);
        }
        let history: Vec<u32> = (0..60).map(|i| i % 20).collect();
        let mut out = Vec::new();
        d.draft(&history, 0, DRAFT_MAX, &mut out);
        let base = out.len();
        assert_eq!(base, 2, "acceptance {}", d.acceptance());
        // Confirmed whole: each next draft at least twice as long (or the longest).
        let mut len = base;
        for _ in 0..2 {
            d.record(len, len);
            d.draft(&history, 0, DRAFT_MAX, &mut out);
            assert!(
                out.len() >= (2 * len).min(DRAFT_MAX),
                "{} after {len}",
                out.len()
            );
            len = out.len();
        }
        // A miss: back to the length the acceptance estimate chooses.
        d.record(len, 1);
        d.draft(&history, 0, DRAFT_MAX, &mut out);
        let c = DENSE_STEP_COST_PER_TOKEN;
        assert_eq!(
            out.len(),
            Drafter::best_length(d.acceptance(), DRAFT_MAX, c).max(1)
        );
        assert!(out.len() < len, "{} after a miss of {len}", out.len());
    }

    #[test]
    fn settings_are_checked_and_parsed() {
        assert!(Speculation::default().validate().is_ok());
        let too_long = Speculation {
            draft_max: DRAFT_MAX + 1,
            ..Default::default()
        };
        assert!(too_long.validate().unwrap_err().contains("draft-max"));
        let inverted = Speculation {
            draft_min: 3,
            draft_max: 2,
            ..Default::default()
        };
        assert!(inverted.validate().unwrap_err().contains("draft-min"));
        assert_eq!("ngram".parse::<SpecType>(), Ok(SpecType::Ngram));
        assert_eq!("off".parse::<SpecType>(), Ok(SpecType::Off));
        assert_eq!("mtp".parse::<SpecType>(), Ok(SpecType::Mtp));
        assert!("eagle".parse::<SpecType>().is_err());
        assert!(!Speculation::off().is_on());
    }
}
