//! The hot-path rule "no allocation in a steady-state step", for the scheduler: once 4
//! sequences are decoding, a step (forward pass, sampling, end and stop checks,
//! detokenizing, streaming the text to the sinks, the shared counters) must not touch the
//! allocator. A counting global allocator checks it over a window of whole steps, opened
//! and closed from a sink (so the window is exact); this is its own test binary so
//! nothing else allocates meanwhile.
//!
//! The forward pass's own allocations (if any) are measured by replaying the very same
//! forward passes on the model alone — the scheduler's batches are deterministic: the
//! same prompts admitted at known steps, greedy tokens, a fresh activation state — and
//! subtracted: the engine's share must be exactly zero. Once the forward pass allocates
//! nothing (issue 15, the model stages), the replay counts 0 and the window's total is
//! asserted to be zero as it stands.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use engine::scheduler::{Event, Job, Scheduler, SchedulerConfig};
use engine::{Engine, GenerateRequest, LoadOptions, Sampler, SamplingParams};
use model::{BatchSeq, Logits};

mod common {
    pub mod counting_alloc;
}
use common::counting_alloc::{Counting, ALLOCS, ARMED};

#[global_allocator]
static GLOBAL: Counting = Counting;

const MODEL: &str = "tiny/qwen3moe-tiny/qwen3moe-tiny-Q4_K_M.gguf";
const PROMPTS: [&str; 4] = ["Once upon a time", "1, 2, 3,", "The capital of", "Hello"];
const N_CTX: usize = 512;
/// Text events of the first job before the window opens, and inside it.
const WARM_UP: usize = 24;
const WINDOW: usize = 48;

fn load() -> Arc<Engine> {
    let path = testutil::data_dir().join(MODEL);
    Arc::new(
        Engine::load(
            &path,
            &LoadOptions {
                threads: Some(2),
                ..Default::default()
            },
            &mut |_| {},
        )
        .unwrap(),
    )
}

/// Allocations of each of the first `n` forward passes the scheduler ran (index k: the
/// (k+1)-th), replayed on the model alone: job i's prompt enters the batch at forward
/// `first[i]` (1-based), then its greedy tokens, one per forward.
fn replay_forward_allocs(
    engine: &Engine,
    prompts: &[Vec<u32>],
    first: &[u64],
    n: u64,
) -> Vec<usize> {
    let mut seqs: Vec<_> = prompts
        .iter()
        .map(|_| engine.sequence(N_CTX).unwrap())
        .collect();
    let mut samplers: Vec<_> = prompts
        .iter()
        .map(|_| Sampler::new(SamplingParams::greedy()))
        .collect();
    let mut next = vec![[0u32; 1]; prompts.len()];
    let mut state = engine.new_state();
    let vocab = engine.model.config.n_vocab;
    let mut counts = Vec::new();
    for k in 1..=n {
        let joined: Vec<usize> = (0..prompts.len()).filter(|&i| first[i] <= k).collect();
        let mut batch: Vec<BatchSeq> = Vec::new();
        for (i, s) in seqs.iter_mut().enumerate() {
            if first[i] > k {
                continue;
            }
            let tokens: &[u32] = if first[i] == k { &prompts[i] } else { &next[i] };
            batch.push(BatchSeq {
                kv: &mut s.kv,
                tokens,
                logits: Logits::Last,
            });
        }
        ALLOCS.store(0, Ordering::SeqCst);
        ARMED.store(true, Ordering::SeqCst);
        let logits = engine.forward_batch(&mut state, &mut batch).unwrap();
        ARMED.store(false, Ordering::SeqCst);
        counts.push(ALLOCS.load(Ordering::SeqCst));
        let rows: Vec<Vec<f32>> = logits.chunks_exact(vocab).map(<[f32]>::to_vec).collect();
        for (&i, row) in joined.iter().zip(&rows) {
            let fed: &[u32] = if first[i] == k { &prompts[i] } else { &next[i] };
            seqs[i].tokens.extend_from_slice(fed);
            next[i] = [samplers[i].sample(row, &seqs[i].tokens)];
        }
    }
    counts
}

#[test]
fn steady_state_scheduler_steps_do_not_allocate() {
    let engine = load();
    let tok = engine.tokenizer.clone().unwrap();
    let prompts: Vec<Vec<u32>> = PROMPTS
        .iter()
        .map(|p| tok.encode(p, false).unwrap())
        .collect();
    let sched = Arc::new(Scheduler::start(
        engine.clone(),
        SchedulerConfig::new(PROMPTS.len(), N_CTX),
    ));

    // Each sink notes the forward passes run before its job was admitted; job 0's sink
    // opens the window at its WARM_UP-th text event and closes it WINDOW events later,
    // noting the forward passes run by then.
    let admitted_after: Arc<Vec<AtomicU64>> =
        Arc::new(PROMPTS.iter().map(|_| AtomicU64::new(u64::MAX)).collect());
    let events = Arc::new(AtomicUsize::new(0));
    let (steps_at_open, steps_at_close) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let closed = Arc::new(AtomicBool::new(false));
    let text_bytes = Arc::new(AtomicUsize::new(0));
    let mut tickets = Vec::new();
    for (i, prompt) in prompts.iter().enumerate() {
        let request = GenerateRequest {
            max_new_tokens: 400,
            sampling: SamplingParams::greedy(),
            stop: vec!["a stop string that never comes".into()],
            ignore_eos: true,
        };
        let weak: Weak<Scheduler> = Arc::downgrade(&sched);
        let steps = move || weak.upgrade().map_or(0, |s| s.status().steps);
        let (admitted_after, events, at_open, at_close, closed, text_bytes) = (
            admitted_after.clone(),
            events.clone(),
            steps_at_open.clone(),
            steps_at_close.clone(),
            closed.clone(),
            text_bytes.clone(),
        );
        let sink = move |ev: Event<&str>| {
            match ev {
                Event::Started { .. } => admitted_after[i].store(steps(), Ordering::SeqCst),
                Event::Text(t) => {
                    text_bytes.fetch_add(t.len(), Ordering::Relaxed);
                    let n = if i == 0 {
                        events.fetch_add(1, Ordering::SeqCst) + 1
                    } else {
                        0
                    };
                    if n == WARM_UP {
                        at_open.store(steps(), Ordering::SeqCst);
                        ALLOCS.store(0, Ordering::SeqCst);
                        ARMED.store(true, Ordering::SeqCst);
                    } else if n == WARM_UP + WINDOW {
                        ARMED.store(false, Ordering::SeqCst);
                        at_close.store(steps(), Ordering::SeqCst);
                        closed.store(true, Ordering::SeqCst);
                    }
                }
                _ => {}
            }
            true
        };
        tickets.push(
            sched
                .submit(Job::new(prompt.clone(), request, sink))
                .unwrap(),
        );
    }
    let start = std::time::Instant::now();
    while !closed.load(Ordering::SeqCst) {
        assert!(start.elapsed().as_secs() < 120, "the window never closed");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let allocs = ALLOCS.load(Ordering::SeqCst);
    let (open, close) = (
        steps_at_open.load(Ordering::SeqCst),
        steps_at_close.load(Ordering::SeqCst),
    );
    let status = sched.status();
    drop(tickets);
    drop(sched);

    assert_eq!(
        status.completed, 0,
        "a job ended before the window closed: {status:?}"
    );
    assert!(text_bytes.load(Ordering::Relaxed) > 0);
    assert!(
        close - open >= WINDOW as u64,
        "{} forward passes for {WINDOW} text events",
        close - open
    );
    let first: Vec<u64> = admitted_after
        .iter()
        .map(|a| a.load(Ordering::SeqCst) + 1)
        .collect();
    assert!(
        first.iter().all(|&f| f < open),
        "every job decodes in the window: {first:?}, open at {open}"
    );

    // The forward passes inside the window are numbers open+1 ..= close.
    let model = replay_forward_allocs(&engine, &prompts, &first, close);
    let model_in_window: usize = model[open as usize..close as usize].iter().sum();
    eprintln!(
        "window: forward passes {}..={close}, {allocs} allocations, {model_in_window} of them the forward pass's",
        open + 1
    );
    assert_eq!(
        allocs as i64 - model_in_window as i64,
        0,
        "the engine allocated in steady-state scheduler steps ({allocs} allocations in the window, \
         {model_in_window} by the forward pass replayed alone)"
    );
}
