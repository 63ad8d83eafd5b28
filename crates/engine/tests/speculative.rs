//! Speculative decoding (prompt lookup) is lossless: greedy output with drafts is
//! byte-identical to the output without, on the tiny models of every architecture and on
//! the real Qwen2.5-Coder-0.5B, together with stop strings, the length and context
//! limits, repetition penalties, logit bias, constrained decoding and log-probabilities,
//! alone and batched in the scheduler; and sampling with drafts leaves the distribution of
//! the sampled tokens unchanged (a chi-square test over many seeds).

use std::sync::mpsc;
use std::sync::Arc;

use engine::scheduler::{Event, Job, Scheduler, SchedulerConfig};
use engine::{
    ConstraintSpec, Engine, FinishReason, GenerateRequest, Generation, GenerationStats,
    LoadOptions, SamplingParams, SpecType, Speculation, Step, TokenLogprobs,
};
use model::Logits;
use serde_json::json;

fn load(path: &std::path::Path) -> Engine {
    load_on(path, accel::DeviceChoice::Auto)
}

fn load_on(path: &std::path::Path, device: accel::DeviceChoice) -> Engine {
    Engine::load(
        path,
        &LoadOptions {
            threads: Some(2),
            device,
            ..Default::default()
        },
        &mut |_| {},
    )
    .unwrap()
}

fn tiny(rel: &str) -> Engine {
    load(&testutil::data_dir().join("tiny").join(rel))
}

fn greedy(n: usize) -> GenerateRequest {
    GenerateRequest {
        max_new_tokens: n,
        sampling: SamplingParams::greedy(),
        ignore_eos: true,
        ..Default::default()
    }
}

/// Text and stats of one generation in a fresh sequence of `n_ctx` positions.
fn generate(
    e: &Engine,
    prompt: &[u32],
    req: &GenerateRequest,
    n_ctx: usize,
) -> (String, GenerationStats) {
    let mut seq = e.sequence(n_ctx).unwrap();
    let mut out = String::new();
    let stats = e
        .generate(&mut seq, prompt, req, &mut |t| {
            out += t;
            true
        })
        .unwrap();
    assert_eq!(seq.tokens.len(), seq.kv.len(), "tokens and cache agree");
    (out, stats)
}

/// Generates with speculation off and on; asserts the same text, token count, finish and
/// stop string; returns (text, stats with drafts).
fn same_with_and_without(
    e: &Engine,
    prompt: &[u32],
    req: &GenerateRequest,
    n_ctx: usize,
    what: &str,
) -> (String, GenerationStats) {
    same_with_and_without_spec(e, prompt, req, n_ctx, what, Speculation::default())
}

/// [`same_with_and_without`] with drafts of `spec`'s kind.
fn same_with_and_without_spec(
    e: &Engine,
    prompt: &[u32],
    req: &GenerateRequest,
    n_ctx: usize,
    what: &str,
    spec: Speculation,
) -> (String, GenerationStats) {
    let off = GenerateRequest {
        speculation: Some(Speculation::off()),
        ..req.clone()
    };
    let on = GenerateRequest {
        speculation: Some(spec),
        ..req.clone()
    };
    let (a, sa) = generate(e, prompt, &off, n_ctx);
    let (b, sb) = generate(e, prompt, &on, n_ctx);
    assert_eq!(a, b, "{what}: the text differs with speculation");
    assert_eq!(
        (sa.generated_tokens, sa.finish, sa.stop_string),
        (sb.generated_tokens, sb.finish, sb.stop_string),
        "{what}: the counts differ with speculation"
    );
    assert_eq!(sa.drafted_tokens, 0);
    (b, sb)
}

const PROMPTS: [&str; 3] = [
    "Once upon a time there was a cat. Once upon a time there was a dog. Once upon a time",
    "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13,",
    "def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n\ndef add(",
];

/// Every feature that touches a step, on one model; returns (drafted, accepted) in all.
fn check_model(rel: &str) -> (usize, usize) {
    check_engine(rel, &tiny(rel))
}

/// [`check_model`] on a loaded engine.
fn check_engine(rel: &str, e: &Engine) -> (usize, usize) {
    check_engine_spec(rel, e, Speculation::default())
}

/// [`check_engine`] with drafts of `spec`'s kind.
fn check_engine_spec(rel: &str, e: &Engine, spec: Speculation) -> (usize, usize) {
    let same_with_and_without =
        |e: &Engine, prompt: &[u32], req: &GenerateRequest, n_ctx, what: &str| {
            same_with_and_without_spec(e, prompt, req, n_ctx, what, spec)
        };
    // Extra tokens route to more experts: a step costs more per draft token than a dense
    // model's.
    assert!(
        e.step_cost_per_token > engine::speculate::DENSE_STEP_COST_PER_TOKEN,
        "{rel}: {}",
        e.step_cost_per_token
    );
    let tok = e.tokenizer.clone().unwrap();
    let (mut drafted, mut accepted) = (0, 0);
    let mut count = |s: &GenerationStats| {
        drafted += s.drafted_tokens;
        accepted += s.accepted_tokens;
    };
    for (i, p) in PROMPTS.iter().enumerate() {
        let prompt = tok.encode(p, false).unwrap();
        let what = |case: &str| format!("{rel}, prompt {i}, {case}");
        let (text, s) = same_with_and_without(e, &prompt, &greedy(80), 256, &what("greedy"));
        count(&s);
        // max_tokens inside a draft.
        for n in [1, 2, 7] {
            let (_, s) = same_with_and_without(e, &prompt, &greedy(n), 256, &what("max"));
            count(&s);
            assert_eq!(s.generated_tokens, n);
        }
        // The context fills up inside a draft.
        let (_, s) =
            same_with_and_without(e, &prompt, &greedy(80), prompt.len() + 9, &what("context"));
        assert_eq!(s.finish, FinishReason::Length);
        count(&s);
        // A stop string taken from the middle of the output ends it there.
        let chars: Vec<char> = text.chars().collect();
        if chars.len() > 30 {
            let stop: String = chars[20..23].iter().collect();
            let req = GenerateRequest {
                stop: vec!["never".into(), stop],
                ..greedy(80)
            };
            let (_, s) = same_with_and_without(e, &prompt, &req, 256, &what("stop"));
            assert_eq!((s.finish, s.stop_string), (FinishReason::Stop, Some(1)));
            count(&s);
        }
        // End-of-generation tokens honoured, penalties and bias on.
        let req = GenerateRequest {
            ignore_eos: false,
            sampling: SamplingParams {
                repeat_penalty: 1.2,
                frequency_penalty: 0.3,
                ..SamplingParams::greedy()
            },
            logit_bias: vec![(prompt[1], 2.0), (prompt[0], -100.0)],
            ..greedy(80)
        };
        let (_, s) = same_with_and_without(e, &prompt, &req, 256, &what("penalties"));
        count(&s);
        // Constrained: a JSON object whose values repeat the prompt's words.
        let schema = json!({
            "type": "object",
            "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
            "required": ["a", "b"]
        });
        let req = GenerateRequest {
            constraint: Some(
                e.compile_constraint(&ConstraintSpec::JsonSchema(schema))
                    .unwrap(),
            ),
            ..greedy(80)
        };
        let (text, s) = same_with_and_without(e, &prompt, &req, 256, &what("constrained"));
        if s.finish == FinishReason::Stop {
            serde_json::from_str::<serde_json::Value>(&text)
                .unwrap_or_else(|err| panic!("{}: {err}: {text:?}", what("constrained")));
        }
        count(&s);
    }
    (drafted, accepted)
}

#[test]
fn greedy_is_byte_identical_on_the_tiny_models() {
    for rel in [
        "qwen2moe-tiny/qwen2moe-tiny-Q8_0.gguf",
        "qwen3moe-tiny/qwen3moe-tiny-Q4_K_M.gguf",
        "deepseek-v3-tiny/deepseek-v3-tiny-Q4_K_M.gguf",
        "deepseek-v2-lite-tiny/deepseek-v2-lite-tiny-Q4_K_M.gguf",
        "mixtral-tiny/mixtral-tiny-Q4_0.gguf",
        "gpt-oss-tiny/gpt-oss-tiny-MXFP4_MOE.gguf",
        "glm4moe-tiny/glm4moe-tiny-Q4_K_M.gguf",
    ] {
        let (drafted, accepted) = check_model(rel);
        // The tiny models repeat themselves under greedy decoding: drafts are confirmed
        // (so the test exercises verification) and rejected (so it exercises rollback).
        assert!(
            accepted > 0 && accepted < drafted,
            "{rel}: {accepted} of {drafted} drafted tokens accepted"
        );
    }
}

/// Drafts from the model's own MTP layer.
fn mtp() -> Speculation {
    Speculation {
        kind: SpecType::Mtp,
        ..Speculation::default()
    }
}

/// A tiny model loaded with its MTP block `prepared` for drafting (repacked) or not.
fn load_mtp(rel: &str, prepared: bool) -> Engine {
    let opts = LoadOptions {
        threads: Some(2),
        mtp: prepared,
        ..Default::default()
    };
    let path = testutil::data_dir().join("tiny").join(rel);
    let e = Engine::load(&path, &opts, &mut |_| {}).unwrap();
    let block = e.model.weights.nextn.as_ref().unwrap();
    // (`eh_proj` or the attention's output: one has a type with a layout in each file.)
    let wo = match &block.layer.attn {
        model::weights::Attention::Gqa(a) => &a.wo,
        model::weights::Attention::Mla(a) => &a.wo,
    };
    assert_eq!(
        block.eh_proj.is_packed() || wo.is_packed(),
        prepared,
        "{rel}"
    );
    e
}

/// Both ways the block can be held: mapped from the file (a command that does not draft
/// with it), and repacked at load like a trunk layer (`LoadOptions::mtp`).
#[test]
fn mtp_drafts_are_lossless_on_glm4moe() {
    for rel in [
        "glm4moe-tiny/glm4moe-tiny-Q8_0.gguf",
        "glm4moe-tiny/glm4moe-tiny-Q4_K_M.gguf",
    ] {
        for prepared in [false, true] {
            let e = load_mtp(rel, prepared);
            assert!(e.mtp_cost_per_token > 0.0 && e.mtp_cost_per_token < 1.0);
            let (drafted, accepted) = check_engine_spec(rel, &e, mtp());
            // Random weights: the block's drafts are mostly wrong, so verification rejects
            // them (the output above is the same all the same); acceptance means nothing
            // here.
            eprintln!(
                "{rel} (block repacked: {prepared}): MTP drafts: {accepted} of {drafted} accepted"
            );
            assert!(
                drafted > 0 && accepted < drafted,
                "{rel}: {accepted} of {drafted}"
            );
        }
    }
}

/// A block made to compute the trunk's own function one position ahead
/// (`tests/data/tiny/make_glm4moe_mtp_copy.py`): most of its drafts are confirmed, which
/// they would not be if the block paired a hidden state with the wrong token; the output
/// stays the same as without drafts, with the block mapped and repacked.
#[test]
fn mtp_drafts_of_a_block_that_copies_the_trunk_are_confirmed() {
    let rel = "glm4moe-tiny/glm4moe-tiny-mtp-copy-Q8_0.gguf";
    for prepared in [false, true] {
        let e = load_mtp(rel, prepared);
        let (drafted, accepted) = check_engine_spec(rel, &e, mtp());
        eprintln!(
            "{rel} (block repacked: {prepared}): MTP drafts: {accepted} of {drafted} accepted"
        );
        assert!(
            drafted >= 20 && 2 * accepted > drafted,
            "{rel}: {accepted} of {drafted} drafted tokens accepted"
        );
    }
}

/// The MTP block's cache after steps whose drafts are partly right (0, 1, 2, 3 tokens
/// confirmed, then a wrong one, rejected) holds what a drafter fed the whole sequence at
/// once holds: its next draft is the same.
#[test]
fn mtp_cache_follows_partly_accepted_drafts() {
    use engine::mtp::MtpDrafter;
    let e = tiny("glm4moe-tiny/glm4moe-tiny-Q8_0.gguf");
    let (dim, n_ctx, n_vocab) = (e.model.config.dim, 128, e.model.config.n_vocab as u32);
    let tok = e.tokenizer.as_ref().unwrap();
    let prompt = tok.encode(PROMPTS[0], false).unwrap();
    let off = GenerateRequest {
        speculation: Some(Speculation::off()),
        ..greedy(40)
    };
    let mut seq = e.sequence(n_ctx).unwrap();
    e.generate(&mut seq, &prompt, &off, &mut |_| true).unwrap();
    let path = seq.tokens[prompt.len()..].to_vec();

    let drafter = || {
        let types = model::KvTypes::default();
        MtpDrafter::new(&e.model, types, n_ctx).unwrap()
    };
    let mut pass = e.mtp_pass(1, n_ctx).unwrap();
    let mut drafts = drafter();
    let req = GenerateRequest {
        speculation: Some(mtp()),
        ..greedy(40)
    };
    let mut gen = Generation::new(tok, &req, true);
    let mut seq = e.sequence(n_ctx).unwrap();
    let (logits, history, _) = seq
        .prefill_observed(&prompt, |h, t| drafts.observe(&mut pass, h, t))
        .unwrap();
    let mut v = gen.verify(logits, history, n_ctx, &mut |_| true);
    let mut draft = Vec::new();
    for step in 0..8 {
        let Step::Next(next) = v.step else {
            panic!("finished early")
        };
        let at = seq.tokens.len() - prompt.len();
        assert_eq!(next, path[at]);
        // The drafter drafts (and forgets its chained positions), then the step carries
        // `right` tokens of the greedy path and one wrong one instead.
        drafts
            .draft(&mut pass, &seq.tokens, next, 3, &mut draft)
            .unwrap();
        assert_eq!(draft.len(), 3);
        let right = step % 4;
        let mut ours = path[at + 1..at + 1 + right].to_vec();
        ours.push((path[at + 1 + right] + 1) % n_vocab);
        let fed = seq.tokens.len();
        let tokens = gen.propose(next, &ours).to_vec();
        let (logits, history) = seq.feed_with_history(&tokens, Logits::All).unwrap();
        v = gen.verify(logits, history, n_ctx, &mut |_| true);
        assert_eq!(v.keep, fed + 1 + right, "the wrong token is rejected");
        seq.keep(v.keep).unwrap();
        let kept = (v.keep - fed) * dim;
        drafts
            .observe(&mut pass, &seq.hidden()[..kept], &seq.tokens)
            .unwrap();
    }
    let Step::Next(next) = v.step else {
        panic!("finished early")
    };
    assert_eq!(
        seq.tokens[prompt.len()..],
        path[..seq.tokens.len() - prompt.len()]
    );

    let mut fresh = drafter();
    let mut whole = e.sequence(n_ctx).unwrap();
    let held = seq.tokens.clone();
    whole
        .prefill_observed(&held, |h, t| fresh.observe(&mut pass, h, t))
        .unwrap();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    drafts
        .draft(&mut pass, &seq.tokens, next, 4, &mut a)
        .unwrap();
    fresh.draft(&mut pass, &held, next, 4, &mut b).unwrap();
    assert_eq!(a, b);
    assert_eq!(drafts.cached(), fresh.cached());
    assert_eq!(drafts.cached(), held.len());
}

/// Drafts of several sequences in one batch of MTP passes (a server's step) are the drafts
/// each sequence gets alone, and leave each block cache where drafting alone leaves it:
/// over steps mixing prompts of different lengths, draft lengths 0 to 4 and drafts
/// partly confirmed (the block copying the trunk's function gets many right; it reads
/// only the token, so the random block checks that each chained row reads its own
/// sequence's hidden state).
#[test]
fn batched_mtp_drafts_equal_solo_drafts() {
    let confirmed = batched_vs_solo_drafts("glm4moe-tiny/glm4moe-tiny-mtp-copy-Q8_0.gguf");
    assert!(confirmed > 5, "only {confirmed} draft tokens confirmed");
    batched_vs_solo_drafts("glm4moe-tiny/glm4moe-tiny-Q8_0.gguf");
}

/// [`batched_mtp_drafts_equal_solo_drafts`] on one file: the draft tokens confirmed.
fn batched_vs_solo_drafts(rel: &str) -> usize {
    use engine::mtp::{draft_batch, DraftJob, MtpDrafter};
    use engine::sampler::argmax;
    let e = load_mtp(rel, true);
    let (dim, vocab, n_ctx) = (e.model.config.dim, e.model.config.n_vocab, 128);
    let tok = e.tokenizer.as_ref().unwrap();
    let types = model::KvTypes::default();
    let n = PROMPTS.len();
    let (mut solo_pass, mut batch_pass) =
        (e.mtp_pass(1, n_ctx).unwrap(), e.mtp_pass(n, n_ctx).unwrap());
    let (mut seqs, mut solo, mut batched, mut next) = (vec![], vec![], vec![], vec![]);
    for p in PROMPTS {
        let prompt = tok.encode(p, false).unwrap();
        let mut seq = e.sequence(n_ctx).unwrap();
        let mut a = MtpDrafter::new(&e.model, types, n_ctx).unwrap();
        let mut b = MtpDrafter::new(&e.model, types, n_ctx).unwrap();
        let (logits, _, _) = seq
            .prefill_observed(&prompt, |h, t| {
                a.observe(&mut solo_pass, h, t)?;
                b.observe(&mut batch_pass, h, t)
            })
            .unwrap();
        next.push(argmax(logits));
        seqs.push(seq);
        solo.push(a);
        batched.push(b);
    }
    let (mut confirmed, mut outs) = (0, vec![Vec::new(); n]);
    for step in 0..8 {
        let want: Vec<usize> = (0..n).map(|i| (step + 2 * i) % 5).collect();
        let mut jobs: Vec<DraftJob> = batched
            .iter_mut()
            .zip(&mut outs)
            .enumerate()
            .map(|(i, (drafter, out))| DraftJob {
                drafter,
                tokens: &seqs[i].tokens,
                next: next[i],
                want: want[i],
                out,
            })
            .collect();
        draft_batch(&mut batch_pass, &mut jobs).unwrap();
        for i in 0..n {
            let mut alone = Vec::new();
            solo[i]
                .draft(
                    &mut solo_pass,
                    &seqs[i].tokens,
                    next[i],
                    want[i],
                    &mut alone,
                )
                .unwrap();
            assert_eq!(outs[i], alone, "step {step}, sequence {i}");
            assert_eq!(alone.len(), want[i]);
            assert_eq!(
                batched[i].cached(),
                solo[i].cached(),
                "step {step}, sequence {i}"
            );

            // The step: `next` and the draft, greedy-verified.
            let seq = &mut seqs[i];
            let fed = seq.tokens.len();
            let mut tokens = vec![next[i]];
            tokens.extend_from_slice(&alone);
            let (logits, _) = seq.feed_with_history(&tokens, Logits::All).unwrap();
            let row = |k: usize| argmax(&logits[k * vocab..(k + 1) * vocab]);
            let k = (0..alone.len()).take_while(|&k| row(k) == alone[k]).count();
            confirmed += k;
            next[i] = row(k);
            seq.keep(fed + k + 1).unwrap();
            let kept = &seq.hidden()[..(k + 1) * dim];
            solo[i].observe(&mut solo_pass, kept, &seq.tokens).unwrap();
            batched[i]
                .observe(&mut batch_pass, kept, &seq.tokens)
                .unwrap();
        }
    }
    eprintln!("{rel}: batched MTP drafts: {confirmed} draft tokens confirmed");
    confirmed
}

#[test]
fn mtp_without_an_mtp_layer_is_a_clear_error() {
    let e = tiny("qwen3moe-tiny/qwen3moe-tiny-Q4_K_M.gguf");
    let err = mtp().check_model(&e.model).unwrap_err();
    assert!(
        err.contains("no next-token-prediction (MTP) layers"),
        "{err}"
    );
    let mut seq = e.sequence(64).unwrap();
    let req = GenerateRequest {
        speculation: Some(mtp()),
        ..greedy(4)
    };
    let err = e
        .generate(&mut seq, &[1, 2, 3], &req, &mut |_| true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no next-token-prediction (MTP) layers"),
        "{err}"
    );
    // The batched scheduler refuses such a request up front, with the same reason.
    let sched = Scheduler::start(Arc::new(e), SchedulerConfig::new(1, 64));
    let job = Job::new(vec![1, 2, 3], req, |_| true);
    match sched.submit(job) {
        Err(engine::scheduler::SubmitError::Invalid(m)) => assert!(
            m.contains("mtp") && m.contains("no next-token-prediction (MTP) layers"),
            "{m}"
        ),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("the scheduler accepted MTP drafts on a model without the block"),
    }
}

/// Greedy generation with speculation off and on, on a loaded engine: every prompt
/// continued for 32 tokens, then to the end of a short context (a draft cut by it);
/// returns (drafted, accepted) in all. The short form of [`check_engine`], for the GPU's
/// software-speed CI device.
fn check_greedy(rel: &str, e: &Engine) -> (usize, usize) {
    let tok = e.tokenizer.as_ref().unwrap();
    let (mut drafted, mut accepted) = (0, 0);
    for (i, p) in PROMPTS.iter().enumerate() {
        let prompt = tok.encode(p, false).unwrap();
        let what = |case: &str| format!("{rel}, prompt {i}, {case}");
        let (_, s) = same_with_and_without(e, &prompt, &greedy(32), 256, &what("greedy"));
        drafted += s.drafted_tokens;
        accepted += s.accepted_tokens;
        let (_, s) =
            same_with_and_without(e, &prompt, &greedy(32), prompt.len() + 9, &what("context"));
        assert_eq!(s.finish, FinishReason::Length);
        drafted += s.drafted_tokens;
        accepted += s.accepted_tokens;
    }
    (drafted, accepted)
}

#[test]
fn greedy_is_byte_identical_with_the_gpu_on() {
    // The drafts' verification steps and their rollback on caches in GPU memory: the
    // attention (and its KV cache, MLA's latent cache), the router's logits and the
    // shared experts on the GPU (lavapipe in CI; skipped with a note where no adapter
    // exists).
    if accel::testing::test_gpu().is_none() {
        return;
    }
    let device = std::env::var("FERROMOE_TEST_DEVICE")
        .map(|d| d.parse().expect("FERROMOE_TEST_DEVICE"))
        .unwrap_or(accel::DeviceChoice::GpuIndex(0));
    let (mut drafted, mut accepted) = (0, 0);
    for rel in [
        "qwen2moe-tiny/qwen2moe-tiny-Q8_0.gguf",
        "gpt-oss-tiny/gpt-oss-tiny-MXFP4_MOE.gguf",
        "deepseek-v3-tiny/deepseek-v3-tiny-Q4_K_M.gguf",
    ] {
        let e = load_on(&testutil::data_dir().join("tiny").join(rel), device.clone());
        let stages = &e.load.gpu.as_ref().expect("a GPU plan").stages;
        assert!(stages.contains("attention"), "{rel}: {stages}");
        let (d, a) = check_greedy(rel, &e);
        println!("{rel}: {a} of {d} drafted tokens accepted");
        drafted += d;
        accepted += a;
    }
    // Drafts were both confirmed and rejected (verification and rollback both ran).
    assert!(
        accepted > 0 && accepted < drafted,
        "{accepted} of {drafted} drafted tokens accepted"
    );
}

#[test]
fn greedy_is_byte_identical_on_the_real_model_code_edit() {
    let e = load(&testutil::demo_model());
    assert_eq!(
        e.step_cost_per_token,
        engine::speculate::DENSE_STEP_COST_PER_TOKEN
    );
    let tok = e.tokenizer.clone().unwrap();
    let template = e.template.as_ref().unwrap();
    let code = "def mean(values):\n    total = 0\n    count = 0\n    for v in values:\n        \
                total = total + v\n        count = count + 1\n    if count == 0:\n        \
                return None\n    return total / count\n";
    let text = template
        .render(
            &[engine::ChatMessage::user(format!(
                "Rewrite this function with type hints, keeping the rest as it is:\n\n```python\n{code}```"
            ))],
            true,
        )
        .unwrap();
    let prompt = tok.encode(&text, false).unwrap();
    let req = GenerateRequest {
        ignore_eos: false,
        ..greedy(80)
    };
    let (out, s) = same_with_and_without(&e, &prompt, &req, 1024, "0.5B code edit");
    eprintln!(
        "{out}\n{} of {} drafted tokens accepted",
        s.accepted_tokens, s.drafted_tokens
    );
    assert!(out.contains("def mean("), "{out}");
    // The answer copies the function: most drafts are confirmed.
    assert!(
        s.accepted_tokens * 2 > s.drafted_tokens && s.accepted_tokens >= 20,
        "{} of {} drafted tokens accepted",
        s.accepted_tokens,
        s.drafted_tokens
    );
    // A stop string in the middle of the answer.
    let chars: Vec<char> = out.chars().collect();
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 6].iter().collect();
    let req = GenerateRequest {
        stop: vec![stop],
        ..req
    };
    let (out, s) = same_with_and_without(&e, &prompt, &req, 1024, "0.5B code edit, stop");
    assert_eq!(s.finish, FinishReason::Stop, "{out}");
}

/// Events of one scheduler job: text, per-token log-probabilities, stats.
fn run_job(
    sched: &Scheduler,
    prompt: Vec<u32>,
    req: GenerateRequest,
) -> impl FnOnce() -> (String, Vec<TokenLogprobs>, GenerationStats) {
    let (tx, rx) = mpsc::channel();
    let (ltx, lrx) = mpsc::channel();
    let ticket = sched
        .submit(
            Job::new(prompt, req, move |ev| tx.send(ev.into_owned()).is_ok()).with_token_sink(
                move |lp| {
                    let _ = ltx.send(lp.clone());
                },
            ),
        )
        .unwrap();
    move || {
        let mut text = String::new();
        for ev in rx {
            match ev {
                Event::Text(t) => text += &t,
                Event::Done(s) => {
                    drop(ticket);
                    return (text, lrx.try_iter().collect(), s);
                }
                Event::Error(e) => panic!("{e}"),
                Event::Started { .. } => {}
            }
        }
        panic!("no Done event")
    }
}

#[test]
fn batched_with_drafts_equals_solo_without_and_logprobs_agree() {
    let e = Arc::new(tiny("qwen2moe-tiny/qwen2moe-tiny-Q8_0.gguf"));
    let (_, accepted) = batched_equals_solo(&e, Speculation::default());
    assert!(accepted > 0, "no draft was accepted");
}

/// MTP drafts in the batched scheduler: each sequence's block cache follows its own
/// positions (prompt chunks, confirmed drafts, a reused prefix) while four sequences
/// share each forward pass; the output is the same as solo without drafts.
#[test]
fn batched_mtp_drafts_equal_solo_without() {
    for rel in [
        "glm4moe-tiny/glm4moe-tiny-Q4_K_M.gguf",
        "glm4moe-tiny/glm4moe-tiny-mtp-copy-Q8_0.gguf",
    ] {
        let (drafted, accepted) = batched_equals_solo(&Arc::new(load_mtp(rel, true)), mtp());
        eprintln!("{rel}: batched MTP drafts: {accepted} of {drafted} accepted");
        assert!(drafted > 0, "{rel}: nothing drafted");
        // Random weights: the drafts are wrong; the block that copies the trunk's
        // function has most of them confirmed (each sequence's block cache follows its
        // own positions through the shared steps).
        if rel.contains("mtp-copy") {
            assert!(2 * accepted > drafted, "{rel}: {accepted} of {drafted}");
        }
    }
}

/// Every prompt (and a second turn continuing the first prompt's answer, which reuses its
/// kept sequence) run solo without drafts, then four at a time in a small step budget
/// with `spec`: the same text and log-probabilities. Returns (drafted, accepted) of the
/// batched runs.
fn batched_equals_solo(e: &Arc<Engine>, spec: Speculation) -> (usize, usize) {
    let tok = e.tokenizer.clone().unwrap();
    let prompts: Vec<Vec<u32>> = PROMPTS
        .iter()
        .chain(["Hello"].iter())
        .map(|p| tok.encode(p, false).unwrap())
        .collect();
    let req = GenerateRequest {
        logprobs: Some(3),
        ..greedy(60)
    };
    let mut off = SchedulerConfig::new(1, 256);
    off.speculation = Speculation::off();
    let solo = Scheduler::start(e.clone(), off);
    let want: Vec<_> = prompts
        .iter()
        .map(|p| run_job(&solo, p.clone(), req.clone())())
        .collect();
    // Small step budget: drafts compete with each other and with prompt chunks.
    let mut on = SchedulerConfig::new(4, 256);
    on.step_tokens = 24;
    on.speculation = spec;
    let batched = Scheduler::start(e.clone(), on);
    let waits: Vec<_> = prompts
        .iter()
        .map(|p| run_job(&batched, p.clone(), req.clone()))
        .collect();
    let (mut drafted, mut accepted) = (0, 0);
    for (i, (wait, (text, lps, stats))) in waits.into_iter().zip(&want).enumerate() {
        let (t, l, s) = wait();
        assert_eq!(&t, text, "prompt {i}: text");
        assert_eq!(&l, lps, "prompt {i}: log-probabilities");
        assert_eq!(l.len(), s.generated_tokens);
        assert_eq!(s.generated_tokens, stats.generated_tokens);
        drafted += s.drafted_tokens;
        accepted += s.accepted_tokens;
    }
    let st = batched.status();
    assert!(st.batched_seqs > st.steps, "{st:?}");
    // A second turn: the first prompt, its answer and more text, whose prefix the kept
    // sequence holds (solo and batched alike).
    let mut turn = prompts[0].clone();
    turn.extend(tok.encode(&want[0].0, false).unwrap());
    turn.extend(tok.encode(" And then?", false).unwrap());
    let (t, _, s) = run_job(&batched, turn.clone(), req.clone())();
    assert!(s.cached_tokens > 0, "the second turn reused nothing: {s:?}");
    let (solo_t, _, _) = run_job(&solo, turn, req)();
    assert_eq!(t, solo_t, "second turn: text");
    drafted += s.drafted_tokens;
    accepted += s.accepted_tokens;
    (drafted, accepted)
}

/// Sampling with drafts, driven by hand on a tiny model: after the prompt the first token
/// is sampled; then `next` and a draft of 2 tokens are verified in one step
/// ([`Generation::propose`], [`Generation::verify`]), which ends at the third token. The
/// draft is the greedy continuation for even seeds (often accepted) and two fixed tokens
/// for odd ones (mostly rejected: the rule then draws from the rest). `None`: no drafts.
fn three_tokens(
    e: &Engine,
    seq: &mut engine::Sequence,
    prompt: &[u32],
    params: SamplingParams,
    greedy_path: Option<&[u32]>,
) -> [u32; 3] {
    let tok = e.tokenizer.as_ref().unwrap();
    let req = GenerateRequest {
        max_new_tokens: 3,
        sampling: params.clone(),
        ignore_eos: true,
        // Each step's token is reported (with no alternatives) to `emit`.
        logprobs: Some(0),
        speculation: Some(Speculation::off()),
        ..Default::default()
    };
    let mut gen = Generation::new(tok, &req, true);
    let n_ctx = seq.kv.n_ctx();
    let mut got = Vec::new();
    let mut emit = |g: &Generation| {
        got.push(g.token_logprobs().expect("a token each step").token);
        true
    };
    let (logits, history, _) = seq.prefill(prompt).unwrap();
    let mut v = gen.verify(logits, history, n_ctx, &mut emit);
    let mut steps = 0;
    while let Step::Next(next) = v.step {
        steps += 1;
        let draft: &[u32] = match greedy_path {
            Some(g) if steps == 1 && params.seed.is_multiple_of(2) => &g[1..3],
            Some(_) if steps == 1 => &[7, 8],
            _ => &[],
        };
        let tokens = gen.propose(next, draft).to_vec();
        let (logits, history) = seq.feed_with_history(&tokens, Logits::All).unwrap();
        v = gen.verify(logits, history, n_ctx, &mut emit);
        seq.keep(v.keep).unwrap();
    }
    assert_eq!(v.step, Step::Finished(FinishReason::Length));
    [got[0], got[1], got[2]]
}

/// Two-sample chi-square over the categories both samples (of equal size) fill; rare
/// categories (fewer than 10 in both together) are pooled. Returns the statistic's
/// Wilson–Hilferty z-score (≈ N(0, 1) when the distributions are the same) and the
/// degrees of freedom.
fn chi_square_z(a: &[[u32; 3]], b: &[[u32; 3]]) -> (f64, usize) {
    use std::collections::BTreeMap;
    assert_eq!(a.len(), b.len());
    let mut counts: BTreeMap<[u32; 3], (f64, f64)> = BTreeMap::new();
    for x in a {
        counts.entry(*x).or_default().0 += 1.0;
    }
    for x in b {
        counts.entry(*x).or_default().1 += 1.0;
    }
    let (mut cells, mut pooled) = (Vec::new(), (0.0, 0.0));
    for &(x, y) in counts.values() {
        if x + y >= 10.0 {
            cells.push((x, y));
        } else {
            pooled.0 += x;
            pooled.1 += y;
        }
    }
    if pooled.0 + pooled.1 > 0.0 {
        cells.push(pooled);
    }
    let chi2: f64 = cells.iter().map(|(x, y)| (x - y).powi(2) / (x + y)).sum();
    let df = cells.len() - 1;
    let k = df as f64;
    let z = ((chi2 / k).cbrt() - (1.0 - 2.0 / (9.0 * k))) / (2.0 / (9.0 * k)).sqrt();
    (z, df)
}

#[test]
fn sampling_with_drafts_keeps_the_distribution() {
    let e = tiny("qwen2moe-tiny/qwen2moe-tiny-Q8_0.gguf");
    let tok = e.tokenizer.clone().unwrap();
    let prompt = tok.encode(PROMPTS[0], false).unwrap();
    let mut seq = e.sequence(64).unwrap();
    let greedy_path = {
        let mut g = Vec::new();
        let mut s = e.sequence(64).unwrap();
        let (l, _, _) = s.prefill(&prompt).unwrap();
        let mut t = engine::sampler::argmax(l);
        for _ in 0..3 {
            g.push(t);
            t = engine::sampler::argmax(s.feed(&[t], Logits::Last).unwrap());
        }
        g
    };
    // Four candidates per position at temperature 1: up to 64 outcomes of three tokens.
    let params = |seed| SamplingParams {
        temperature: 1.0,
        top_k: 4,
        top_p: 1.0,
        min_p: 0.0,
        seed,
        ..SamplingParams::default()
    };
    const N: u64 = 2000;
    let plain: Vec<[u32; 3]> = (0..N)
        .map(|s| three_tokens(&e, &mut seq, &prompt, params(s), None))
        .collect();
    let drafted: Vec<[u32; 3]> = (N..2 * N)
        .map(|s| three_tokens(&e, &mut seq, &prompt, params(s), Some(&greedy_path)))
        .collect();
    // The drafts were often confirmed, and often not.
    let even_confirmed = drafted
        .iter()
        .step_by(2)
        .filter(|t| t[1] == greedy_path[1])
        .count();
    assert!(
        even_confirmed > (N / 20) as usize && even_confirmed < (N / 2 - N / 20) as usize,
        "{even_confirmed} of {} greedy drafts confirmed",
        N / 2
    );
    let (z, df) = chi_square_z(&plain, &drafted);
    eprintln!("chi-square over {df} degrees of freedom: z = {z:.2}");
    assert!(df >= 8, "too few outcomes to compare: {df}");
    // z > 3.7 has probability 1e-4 when the distributions agree.
    assert!(
        z < 3.7,
        "the sampled tokens are distributed differently with drafts (z = {z:.2}, {df} df)"
    );
}
