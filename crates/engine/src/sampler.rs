//! Turning logits into the next token: repetition penalties, temperature, top-k,
//! top-p, min-p, then a seeded draw (or argmax when the temperature is 0).

use rand::{Rng, SeedableRng};

/// Sampling settings (llama.cpp's names and defaults where they exist).
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches `top_p` (1 = all).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` × the best one (0 = none).
    pub min_p: f32,
    /// Divide positive (multiply negative) logits of tokens seen in the last
    /// `repeat_last_n` tokens by this (1 = off).
    pub repeat_penalty: f32,
    pub repeat_last_n: usize,
    /// OpenAI-style penalties: `presence` once per seen token, `frequency` per occurrence.
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// Seed of the random draw.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding (temperature 0, no penalties).
    pub fn greedy() -> SamplingParams {
        SamplingParams {
            temperature: 0.0,
            ..Default::default()
        }
    }

    /// Checks the ranges, naming the offending setting.
    pub fn validate(&self) -> Result<(), String> {
        let finite = |name: &str, v: f32| {
            if v.is_finite() {
                Ok(())
            } else {
                Err(format!("{name} must be a finite number"))
            }
        };
        finite("temperature", self.temperature)?;
        finite("top_p", self.top_p)?;
        finite("min_p", self.min_p)?;
        finite("repeat_penalty", self.repeat_penalty)?;
        finite("presence_penalty", self.presence_penalty)?;
        finite("frequency_penalty", self.frequency_penalty)?;
        if self.temperature < 0.0 {
            return Err(format!("temperature must be ≥ 0, got {}", self.temperature));
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return Err(format!("top_p must be in [0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(format!("min_p must be in [0, 1], got {}", self.min_p));
        }
        if self.repeat_penalty <= 0.0 {
            return Err(format!(
                "repeat_penalty must be > 0, got {}",
                self.repeat_penalty
            ));
        }
        Ok(())
    }
}

/// A sampler with its own random state and buffers (reused: sampling allocates nothing
/// once they have grown).
pub struct Sampler {
    pub params: SamplingParams,
    rng: rand::rngs::StdRng,
    candidates: Vec<(u32, f32)>,
    counts: std::collections::HashMap<u32, u32>,
    /// The logits with the penalties applied (the caller's stay untouched).
    penalized: Vec<f32>,
}

impl Sampler {
    /// A sampler seeded from `params.seed`.
    pub fn new(params: SamplingParams) -> Sampler {
        let rng = rand::rngs::StdRng::seed_from_u64(params.seed);
        Sampler {
            params,
            rng,
            candidates: Vec::new(),
            counts: std::collections::HashMap::new(),
            penalized: Vec::new(),
        }
    }

    /// Picks the next token from `logits` given the tokens so far (`history`, for the
    /// penalties). The penalties are applied to a copy, only when some are set.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        self.sample_inner(logits, history, None)
    }

    /// [`sample`](Self::sample) where `draft` was guessed (speculative decoding): keeps
    /// `draft` with the probability `p(draft)` the sampler gives it, else draws from the
    /// same distribution without `draft`, renormalised. The result is distributed exactly
    /// as `sample`'s: `p(draft)` for the draft, `(1 − p(draft)) · p(x) / (1 − p(draft)) =
    /// p(x)` for any other `x` (the rejection rule of speculative sampling, for a draft
    /// that is a single token with certainty). Greedy: the argmax, as `sample`.
    pub fn sample_with_draft(&mut self, logits: &[f32], history: &[u32], draft: u32) -> u32 {
        self.sample_inner(logits, history, Some(draft))
    }

    fn sample_inner(&mut self, logits: &[f32], history: &[u32], draft: Option<u32>) -> u32 {
        let p = &self.params;
        let logits: &[f32] =
            if p.repeat_penalty != 1.0 || p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
                self.counts.clear();
                let recent = &history[history.len().saturating_sub(p.repeat_last_n.max(1))..];
                let window: &[u32] = if p.repeat_penalty != 1.0 {
                    recent
                } else {
                    history
                };
                for &t in window {
                    *self.counts.entry(t).or_insert(0) += 1;
                }
                self.penalized.clear();
                self.penalized.extend_from_slice(logits);
                for (&t, &n) in &self.counts {
                    let Some(l) = self.penalized.get_mut(t as usize) else {
                        continue;
                    };
                    if p.repeat_penalty != 1.0 {
                        *l = if *l > 0.0 {
                            *l / p.repeat_penalty
                        } else {
                            *l * p.repeat_penalty
                        };
                    }
                    *l -= p.presence_penalty + p.frequency_penalty * n as f32;
                }
                &self.penalized
            } else {
                logits
            };
        if p.temperature == 0.0 {
            return argmax(logits);
        }

        // Candidates sorted by logit, best first (ties: lower id first).
        self.candidates.clear();
        self.candidates
            .extend(logits.iter().enumerate().map(|(i, &l)| (i as u32, l)));
        let k = if p.top_k == 0 {
            self.candidates.len()
        } else {
            p.top_k.min(self.candidates.len())
        };
        let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if k < self.candidates.len() {
            self.candidates.select_nth_unstable_by(k - 1, by_logit);
            self.candidates.truncate(k);
        }
        self.candidates.sort_unstable_by(by_logit);

        // Softmax with temperature.
        let max = self.candidates[0].1;
        let mut sum = 0.0f32;
        for c in self.candidates.iter_mut() {
            c.1 = ((c.1 - max) / p.temperature).exp();
            sum += c.1;
        }
        for c in self.candidates.iter_mut() {
            c.1 /= sum;
        }
        // min-p, then top-p (always keeping the best token).
        let floor = p.min_p * self.candidates[0].1;
        let mut keep = self
            .candidates
            .iter()
            .take_while(|c| c.1 >= floor)
            .count()
            .max(1);
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            for (i, c) in self.candidates[..keep].iter().enumerate() {
                acc += c.1;
                if acc >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
        }
        let kept = &self.candidates[..keep];
        let total: f32 = kept.iter().map(|c| c.1).sum();
        let Some(draft) = draft else {
            let mut r = self.rng.random::<f32>() * total;
            for c in kept {
                r -= c.1;
                if r <= 0.0 {
                    return c.0;
                }
            }
            return kept[kept.len() - 1].0;
        };
        let p_draft = kept.iter().find(|c| c.0 == draft).map_or(0.0, |c| c.1);
        if p_draft > 0.0 && self.rng.random::<f32>() * total < p_draft {
            return draft;
        }
        // Rejected: draw from the kept tokens but the draft.
        let rest = total - p_draft;
        let mut r = self.rng.random::<f32>() * rest;
        let mut last = None;
        for c in kept.iter().filter(|c| c.0 != draft) {
            r -= c.1;
            last = Some(c.0);
            if r <= 0.0 {
                return c.0;
            }
        }
        // Only the draft was left (rounding): it is the only possible token.
        last.unwrap_or(draft)
    }
}

/// Index of the largest logit (lowest index on ties; NaNs ignored, 0 if there is none).
pub fn argmax(logits: &[f32]) -> u32 {
    kernels::vector::argmax(logits).unwrap_or(0) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_argmax_and_lowest_id_on_ties() {
        let mut s = Sampler::new(SamplingParams::greedy());
        assert_eq!(s.sample(&[0.1, 2.0, -1.0, 2.0], &[]), 1);
    }

    #[test]
    fn same_seed_same_draws_and_top_k_1_is_greedy() {
        let logits: Vec<f32> = (0..100).map(|i| ((i * 37) % 17) as f32 * 0.3).collect();
        let params = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 7,
            ..Default::default()
        };
        let draw = |p: SamplingParams| {
            let mut s = Sampler::new(p);
            (0..50).map(|_| s.sample(&logits, &[])).collect::<Vec<_>>()
        };
        assert_eq!(draw(params.clone()), draw(params.clone()));
        let other = draw(SamplingParams {
            seed: 8,
            ..params.clone()
        });
        assert_ne!(draw(params.clone()), other);
        let top1 = draw(SamplingParams { top_k: 1, ..params });
        assert!(top1.iter().all(|&t| t == argmax(&logits)));
    }

    #[test]
    fn top_p_and_min_p_cut_the_tail() {
        // Token 0 holds ~88% of the mass at temperature 1.
        let logits = [4.0f32, 2.0, 0.0, -2.0];
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.5,
            min_p: 0.0,
            seed: 1,
            ..Default::default()
        });
        assert!((0..200).all(|_| s.sample(&logits, &[]) == 0));
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.1,
            seed: 1,
            ..Default::default()
        });
        let draws: Vec<u32> = (0..500).map(|_| s.sample(&logits, &[])).collect();
        assert!(
            draws.iter().all(|&t| t <= 1),
            "min_p 0.1 keeps tokens 0 (p .87) and 1 (p .12) only"
        );
        assert!(draws.contains(&1));
    }

    #[test]
    fn repeat_penalty_discourages_seen_tokens() {
        let mut s = Sampler::new(SamplingParams {
            repeat_penalty: 2.0,
            ..SamplingParams::greedy()
        });
        assert_eq!(s.sample(&[1.0, 0.9, -3.0], &[0]), 1);
        let mut s = Sampler::new(SamplingParams {
            frequency_penalty: 0.5,
            ..SamplingParams::greedy()
        });
        assert_eq!(s.sample(&[1.0, 0.9], &[0]), 1);
    }

    /// Goodness of fit of `counts` to the probabilities `p`: the chi-square statistic's
    /// Wilson–Hilferty z-score (≈ N(0, 1) when the draws follow `p`).
    fn fit_z(counts: &[f64], p: &[f64]) -> f64 {
        let n: f64 = counts.iter().sum();
        let chi2: f64 = counts
            .iter()
            .zip(p)
            .map(|(c, q)| (c - n * q).powi(2) / (n * q))
            .sum();
        let k = (counts.len() - 1) as f64;
        ((chi2 / k).cbrt() - (1.0 - 2.0 / (9.0 * k))) / (2.0 / (9.0 * k)).sqrt()
    }

    #[test]
    fn a_draft_leaves_the_distribution_unchanged() {
        let logits = [2.0f32, 1.0, 0.5, 0.0, -1.0];
        let z: f64 = logits.iter().map(|&l| (l as f64).exp()).sum();
        let p: Vec<f64> = logits.iter().map(|&l| (l as f64).exp() / z).collect();
        let params = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: 3,
            ..Default::default()
        };
        for draft in [0u32, 1, 4] {
            let mut s = Sampler::new(params.clone());
            let mut counts = [0f64; 5];
            for _ in 0..40_000 {
                counts[s.sample_with_draft(&logits, &[], draft) as usize] += 1.0;
            }
            let z = fit_z(&counts, &p);
            assert!(z < 3.7, "draft {draft}: {counts:?} vs {p:?} (z = {z:.2})");
        }
        // A draft outside the kept tokens (top-k 2) is never returned.
        let mut s = Sampler::new(SamplingParams { top_k: 2, ..params });
        let mut counts = [0f64; 2];
        for _ in 0..20_000 {
            let t = s.sample_with_draft(&logits, &[], 4);
            assert!(t < 2, "{t}");
            counts[t as usize] += 1.0;
        }
        let q = [p[0] / (p[0] + p[1]), p[1] / (p[0] + p[1])];
        assert!(fit_z(&counts, &q) < 3.7, "{counts:?} vs {q:?}");
        // Greedy: the argmax, whatever the draft.
        let mut g = Sampler::new(SamplingParams::greedy());
        assert_eq!(g.sample_with_draft(&logits, &[], 3), 0);
    }

    #[test]
    fn validation_names_the_setting() {
        assert!(SamplingParams {
            temperature: -1.0,
            ..Default::default()
        }
        .validate()
        .unwrap_err()
        .contains("temperature"));
        assert!(SamplingParams {
            top_p: 1.5,
            ..Default::default()
        }
        .validate()
        .unwrap_err()
        .contains("top_p"));
        assert!(SamplingParams {
            temperature: f32::NAN,
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(SamplingParams::default().validate().is_ok());
    }
}
