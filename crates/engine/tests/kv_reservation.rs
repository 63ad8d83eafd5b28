//! The memory plan reserves the KV caches the command will really allocate: its context
//! (`--ctx`, or the model's capped default) times the caches it holds at once, in the bytes
//! `KvCache` allocates; a context whose caches do not fit is warned about.

use engine::{Engine, KvReservation, LoadOptions};
use model::KvCache;
use testutil::data_dir;

fn load(kv: KvReservation, budget: u64) -> Engine {
    let path = data_dir().join("tiny/deepseek-v3-tiny/deepseek-v3-tiny-Q4_K_M.gguf");
    Engine::load(
        &path,
        &LoadOptions {
            threads: Some(1),
            kv,
            memory_budget: Some(budget),
            ..Default::default()
        },
        &mut |_| {},
    )
    .unwrap()
}

const GIB: u64 = 1 << 30;

#[test]
fn the_plan_reserves_the_commands_caches_in_the_bytes_they_allocate() {
    // Default: one cache of the training context (256 positions here), at most 4096.
    let default = load(KvReservation::default(), 8 * GIB);
    let config = &default.model.config;
    assert_eq!(config.n_ctx_train, 256);
    assert_eq!((default.load.kv_ctx, default.load.kv_caches), (256, 1));
    let one = default.sequence(256).unwrap().kv.allocated_bytes() as u64;
    assert_eq!(default.load.kv_bytes, one);
    // The default is capped.
    let capped = KvReservation {
        default_max: 100,
        ..Default::default()
    };
    assert_eq!(capped.ctx_for(config), 100);

    // --ctx 1000 for 3 caches (serve: running + kept sequences): three caches of exactly
    // what a session of that context allocates, and the plan's anonymous memory grows by
    // the difference (everything fits in 8 GiB, so the repack is the same).
    let three = load(
        KvReservation {
            ctx: Some(1000),
            default_max: 4096,
            caches: 3,
            types: Default::default(),
        },
        8 * GIB,
    );
    assert_eq!((three.load.kv_ctx, three.load.kv_caches), (1000, 3));
    let per_cache = three.sequence(1000).unwrap().kv.allocated_bytes() as u64;
    assert_eq!(three.load.kv_bytes, 3 * per_cache);
    assert_eq!(
        three.load.plan.anonymous_bytes - default.load.plan.anonymous_bytes,
        3 * per_cache - one
    );
    assert!(three.load.plan.warnings.is_empty());
    let reserved = three
        .load
        .lines()
        .into_iter()
        .find(|l| l.starts_with("  reserved: KV cache"))
        .unwrap();
    assert!(
        reserved.contains("(3 caches × 1000 positions; "),
        "{reserved}"
    );
}

#[test]
fn a_context_whose_caches_do_not_fit_is_warned_about() {
    let config = load(KvReservation::positions(1), 8 * GIB)
        .model
        .config
        .clone();
    let per_position = KvCache::bytes_for(&config, Default::default(), 1).unwrap() as u64;
    // Caches of 2 × 64 MiB against a 64 MiB budget.
    let ctx = ((64 << 20) / per_position) as usize + 1;
    let e = load(
        KvReservation {
            ctx: Some(ctx),
            default_max: 4096,
            caches: 2,
            types: Default::default(),
        },
        64 << 20,
    );
    assert_eq!(e.load.kv_bytes, 2 * ctx as u64 * per_position);
    let w = e.load.plan.warnings.join("\n");
    assert!(
        w.contains("memory: the KV cache (0.1 GiB)") && w.contains("use a smaller --ctx"),
        "{w}"
    );
    // The same context in one cache of a roomy budget: no warning.
    let fine = load(KvReservation::positions(ctx), 8 * GIB);
    assert!(fine.load.plan.warnings.is_empty());
    // A size that overflows is reserved as "everything", never wrapped around.
    let huge = KvReservation {
        ctx: Some(usize::MAX / 2),
        default_max: 4096,
        caches: 4,
        types: Default::default(),
    };
    assert_eq!(huge.bytes(&config), u64::MAX);
}
