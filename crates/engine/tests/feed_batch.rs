//! `Engine::feed_batch` gives each sequence exactly what it gets alone.

use engine::{Engine, LoadOptions};
use model::Logits;
use testutil::data_dir;

#[test]
fn feed_batch_equals_solo_feeds() {
    let path = data_dir().join("tiny/qwen3moe-tiny/qwen3moe-tiny-Q4_K_M.gguf");
    let engine = Engine::load(
        &path,
        &LoadOptions {
            threads: Some(2),
            ..Default::default()
        },
        &mut |_| {},
    )
    .unwrap();
    let prompts: [&[u32]; 2] = [&[1, 2, 3, 4, 5], &[900, 12]];
    let solo: Vec<Vec<f32>> = prompts
        .iter()
        .map(|p| {
            let mut s = engine.sequence(16).unwrap();
            s.feed(p, Logits::Last).unwrap().to_vec()
        })
        .collect();
    let mut a = engine.sequence(16).unwrap();
    let mut b = engine.sequence(16).unwrap();
    let mut state = engine
        .new_state(model::BatchLimits {
            tokens: 64,
            seqs: 2,
            ctx: 16,
            logit_rows: 0,
        })
        .unwrap();
    let out = engine
        .feed_batch(
            &mut state,
            &mut [(&mut a, prompts[0]), (&mut b, prompts[1])],
        )
        .unwrap();
    assert_eq!(out, solo);
    assert_eq!(a.tokens, prompts[0]);
    assert_eq!(b.tokens, prompts[1]);
    assert_eq!(a.kv.len(), 5);
    // A batch that fails validation leaves nothing half-done.
    let mut c = engine.sequence(2).unwrap();
    let err = engine
        .feed_batch(&mut state, &mut [(&mut c, &[1, 2, 3])])
        .unwrap_err();
    assert!(err.to_string().contains("exceed the context size 2"));
    assert!(c.tokens.is_empty() && c.kv.is_empty());
}
