//! What MTP drafting costs a server's step: the drafts of N sequences made one sequence
//! after the other (each pass of the block and the head reads their weights for one
//! sequence) against one batch of passes for all N (`engine::mtp::draft_batch`, what
//! `serve --spec-type mtp` runs), on a file with an MTP block. Each round feeds every
//! sequence one token through the trunk (not timed), hands its hidden state to both
//! drafters, then times the two ways of drafting `--draft` tokens each, alternating which
//! goes first. The drafts are checked equal.
//!
//! `cargo bench -p engine --bench mtp_draft -- MODEL.gguf [--seqs 8] [--draft 3]
//! [--rounds 8] [--prompt 64] [--threads 2]`

use std::time::{Duration, Instant};

use engine::mtp::{draft_batch, DraftJob, MtpDrafter};
use engine::{Engine, LoadOptions};
use model::Logits;

fn arg(args: &[String], name: &str, default: usize) -> usize {
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} N")),
        None => default,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .iter()
        .find(|a| a.ends_with(".gguf"))
        .expect("a model file with an MTP block (.gguf)");
    let (n, want, rounds) = (
        arg(&args, "--seqs", 8),
        arg(&args, "--draft", 3),
        arg(&args, "--rounds", 8),
    );
    let (prompt_len, threads) = (arg(&args, "--prompt", 64), arg(&args, "--threads", 2));
    let opts = LoadOptions {
        threads: Some(threads),
        mtp: true,
        ..Default::default()
    };
    let e = Engine::load(std::path::Path::new(path), &opts, &mut |_| {}).expect("load");
    let (vocab, n_ctx) = (e.model.config.n_vocab as u32, prompt_len + rounds + 16);
    let types = model::KvTypes::default();
    let mut solo_pass = e.mtp_pass(1, n_ctx).expect("MTP scratch");
    let mut batch_pass = e.mtp_pass(n, n_ctx).expect("MTP scratch");
    let (mut seqs, mut solo, mut batched) = (vec![], vec![], vec![]);
    for s in 0..n {
        // Different prompts (the tokens do not matter for the cost).
        let prompt: Vec<u32> = (0..prompt_len as u32)
            .map(|i| (i * 7919 + s as u32 * 104729) % vocab)
            .collect();
        let mut seq = e.sequence(n_ctx).expect("sequence");
        let mut a = MtpDrafter::new(&e.model, types, n_ctx).expect("drafter");
        let mut b = MtpDrafter::new(&e.model, types, n_ctx).expect("drafter");
        seq.prefill_observed(&prompt, |h, t| {
            a.observe(&mut solo_pass, h, t)?;
            b.observe(&mut batch_pass, h, t)
        })
        .expect("prefill");
        seqs.push(seq);
        solo.push(a);
        batched.push(b);
    }
    let (mut t_solo, mut t_batch) = (Duration::ZERO, Duration::ZERO);
    let (mut out_solo, mut out_batch) = (vec![Vec::new(); n], vec![Vec::new(); n]);
    for r in 0..rounds {
        // One trunk step per sequence; both drafters take its hidden state.
        for (i, seq) in seqs.iter_mut().enumerate() {
            let tok = (r as u32 * 31 + i as u32) % vocab;
            seq.feed_with_history(&[tok], Logits::All).expect("step");
            let (h, t) = (seq.hidden(), &seq.tokens);
            solo[i].observe(&mut solo_pass, h, t).expect("observe");
            batched[i].observe(&mut batch_pass, h, t).expect("observe");
        }
        let next = |i: usize| (r as u32 * 17 + i as u32) % vocab;
        let mut run_solo = || {
            let t = Instant::now();
            for i in 0..n {
                let toks = &seqs[i].tokens;
                solo[i]
                    .draft(&mut solo_pass, toks, next(i), want, &mut out_solo[i])
                    .expect("draft");
            }
            t.elapsed()
        };
        let mut run_batch = || {
            let mut jobs: Vec<DraftJob> = batched
                .iter_mut()
                .zip(&mut out_batch)
                .enumerate()
                .map(|(i, (drafter, out))| DraftJob {
                    drafter,
                    tokens: &seqs[i].tokens,
                    next: next(i),
                    want,
                    out,
                })
                .collect();
            let t = Instant::now();
            draft_batch(&mut batch_pass, &mut jobs).expect("draft");
            t.elapsed()
        };
        if r % 2 == 0 {
            t_solo += run_solo();
            t_batch += run_batch();
        } else {
            t_batch += run_batch();
            t_solo += run_solo();
        }
        assert_eq!(out_solo, out_batch, "round {r}: the drafts differ");
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3 / rounds as f64;
    println!(
        "{n} sequences, {want} draft tokens each, {threads} threads, {rounds} rounds: \
         one after the other {:.1} ms per step, batched {:.1} ms per step: {:.2}×",
        ms(t_solo),
        ms(t_batch),
        t_solo.as_secs_f64() / t_batch.as_secs_f64()
    );
}
