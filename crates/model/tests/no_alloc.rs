//! The hot-path rule "no allocation inside a forward pass", for the whole model: after a
//! warm-up step of each kind, steady-state decode steps, a prompt (prefill) step and a
//! mixed batch (a prompt and a decode step together) of the tiny DeepSeek-V3 (MLA, grouped
//! sigmoid routing, shared expert), Qwen3-MoE (GQA with q/k norms, softmax routing) and
//! gpt-oss (sinks, a sliding layer whose cache is a wrapping ring, biases, MXFP4 experts)
//! models must not touch the allocator, on any thread (the counter is global, so the
//! pool's workers count). Production matmuls on file-order and repacked weights, and the
//! exact reference. Its own test binary with one test, so nothing else allocates meanwhile.

mod common;

use kernels::ThreadPool;
use model::{BatchSeq, KvCache, Logits, MatmulMode, MlaForm, Model, RunState};
use testutil::counting_alloc::{count_allocs, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

const PROMPT: [u32; 9] = [5, 17, 300, 42, 9, 600, 13, 841, 7];

/// Allocations of (decode steps, a prefill step, a mixed batch step) after warm-up.
fn steady_state_allocs(
    m: &Model,
    pool: &ThreadPool,
    mode: MatmulMode,
    form: MlaForm,
) -> [usize; 3] {
    let mut st = RunState::new(mode);
    st.set_mla_form(form);
    // (gpt-oss: its sliding layer's cache a ring of 8 − 1 + 4 positions, which wraps.)
    let new_kv = || KvCache::with_ring_step(&m.config, 64, 4).unwrap();
    let (mut kv, mut kv_prompt, mut kv_mixed) = (new_kv(), new_kv(), new_kv());
    let decode = |st: &mut RunState, kv: &mut KvCache, tok: u32| {
        let logits = m.forward(pool, st, kv, &[tok], Logits::Last).unwrap();
        assert!(logits[0].is_finite());
    };
    let prefill = |st: &mut RunState, kv: &mut KvCache| {
        kv.truncate(0);
        let logits = m.forward(pool, st, kv, &PROMPT, Logits::Last).unwrap();
        assert!(logits[0].is_finite());
    };
    let mixed = |st: &mut RunState, kv_a: &mut KvCache, kv_b: &mut KvCache| {
        kv_a.truncate(0);
        let mut seqs = [
            BatchSeq {
                kv: kv_a,
                tokens: &PROMPT[..5],
                logits: Logits::All,
            },
            BatchSeq {
                kv: kv_b,
                tokens: &[99],
                logits: Logits::Last,
            },
        ];
        let logits = m.forward_batch(pool, st, &mut seqs).unwrap();
        assert!(logits[0].is_finite());
    };

    // Warm-up: one step of each kind sizes every buffer.
    prefill(&mut st, &mut kv);
    decode(&mut st, &mut kv, 1);
    prefill(&mut st, &mut kv_prompt);
    mixed(&mut st, &mut kv_mixed, &mut kv);

    let decodes = count_allocs(|| {
        for tok in 2..10 {
            decode(&mut st, &mut kv, tok);
        }
    });
    let prefills = count_allocs(|| prefill(&mut st, &mut kv_prompt));
    let mixes = count_allocs(|| mixed(&mut st, &mut kv_mixed, &mut kv));
    [decodes, prefills, mixes]
}

#[test]
fn forward_steps_do_not_allocate_after_warm_up() {
    let pool = ThreadPool::new(2);
    let mut failures = Vec::new();
    for (model, variant) in [
        ("deepseek-v3-tiny", "Q4_K_M"),
        ("qwen3moe-tiny", "Q4_K_M"),
        ("gpt-oss-tiny", "MXFP4_MOE"),
    ] {
        let plain = common::load(model, variant);
        let mut packed = common::load(model, variant);
        packed.weights.repack().unwrap();
        let forms: &[MlaForm] = if model.starts_with("deepseek") {
            &[MlaForm::Auto, MlaForm::Absorbed, MlaForm::Decompressed]
        } else {
            &[MlaForm::Auto]
        };
        let runs = forms
            .iter()
            .map(|&f| ("file order", &plain, MatmulMode::Quantized, f))
            .chain([
                ("repacked", &packed, MatmulMode::Quantized, MlaForm::Auto),
                ("exact", &plain, MatmulMode::Exact, MlaForm::Auto),
            ]);
        for (what, m, mode, form) in runs {
            let counts = steady_state_allocs(m, &pool, mode, form);
            if counts != [0, 0, 0] {
                failures.push(format!(
                    "{model} {what} {form:?}: allocations in decode / prefill / mixed steps {counts:?}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
