//! The hot-path rule "no allocation in a steady-state step", for the scheduler: once 4
//! sequences are decoding, a step (forward pass, sampling, end and stop checks,
//! detokenizing, streaming the text to the sinks, the shared counters) must not touch the
//! allocator. A counting global allocator checks it over a window of whole steps, opened
//! and closed from a sink (so the window is exact); this is its own test binary so
//! nothing else allocates meanwhile.
//!
//! The scheduler reserves its activation buffers for its limits when it starts
//! (`Engine::new_state`), so the window's count, forward pass included, must be zero.
//! Speculative decoding is on (the default): drafting, verifying several positions and
//! truncating the caches allocate nothing either (the tiny model repeats itself, so the
//! window holds steps with accepted drafts: fewer forward passes than text events). So do
//! MTP drafts (each sequence's drafter, its block pass and its cache), on the tiny glm4moe
//! whose block copies the trunk one position ahead (its drafts are mostly confirmed).
//! nextest runs each test in its own process, so the counter sees one test at a time.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use engine::scheduler::{Event, Job, Scheduler, SchedulerConfig};
use engine::{Engine, GenerateRequest, LoadOptions, SamplingParams, SpecType, Speculation};

use testutil::counting_alloc::{Counting, ALLOCS, ARMED};

#[global_allocator]
static GLOBAL: Counting = Counting;

const MODEL: &str = "tiny/qwen3moe-tiny/qwen3moe-tiny-Q4_K_M.gguf";
const MTP_MODEL: &str = "tiny/glm4moe-tiny/glm4moe-tiny-mtp-copy-Q8_0.gguf";
const PROMPTS: [&str; 4] = ["Once upon a time", "1, 2, 3,", "The capital of", "Hello"];
const N_CTX: usize = 512;
/// Text events of the first job before the window opens, and inside it.
const WARM_UP: usize = 24;
const WINDOW: usize = 48;

fn load(model: &str, mtp: bool) -> Arc<Engine> {
    let path = testutil::data_dir().join(model);
    Arc::new(
        Engine::load(
            &path,
            &LoadOptions {
                threads: Some(2),
                mtp,
                ..Default::default()
            },
            &mut |_| {},
        )
        .unwrap(),
    )
}

#[test]
fn steady_state_scheduler_steps_do_not_allocate() {
    check_window(load(MODEL, false), Speculation::default());
}

#[test]
fn steady_state_scheduler_steps_with_mtp_drafts_do_not_allocate() {
    let mtp = Speculation {
        kind: SpecType::Mtp,
        ..Speculation::default()
    };
    check_window(load(MTP_MODEL, true), mtp);
}

/// Four sequences decoding with `speculation`: no allocation in a window of whole steps.
fn check_window(engine: Arc<Engine>, speculation: Speculation) {
    let tok = engine.tokenizer.clone().unwrap();
    let prompts: Vec<Vec<u32>> = PROMPTS
        .iter()
        .map(|p| tok.encode(p, false).unwrap())
        .collect();
    let mut config = SchedulerConfig::new(PROMPTS.len(), N_CTX);
    config.speculation = speculation;
    let sched = Arc::new(Scheduler::start(engine.clone(), config));

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
            ..Default::default()
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
    // Speculative decoding (on by default) confirms several tokens in some passes.
    assert!(
        close - open >= (WINDOW / model::VERIFY_STEP_MAX) as u64 && close - open < WINDOW as u64,
        "{} forward passes for {WINDOW} text events: the window should hold steps with \
         accepted drafts",
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

    eprintln!(
        "window: forward passes {}..={close}, {allocs} allocations",
        open + 1
    );
    assert_eq!(
        allocs, 0,
        "steady-state scheduler steps allocated ({allocs} allocations in forward passes {}..={close})",
        open + 1
    );
}
