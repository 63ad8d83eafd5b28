//! The memory plan: before the weights are repacked, decide what will be resident against
//! the memory this process can really use ([`crate::sysmem::MemoryBudget`]).
//!
//! Repacked weights live in anonymous memory, which cannot be reclaimed without swap: more
//! of it than the process can use ends in an OOM kill. Mapped weights live in the page
//! cache, which the kernel reclaims and refills from the file as needed: a model larger
//! than RAM still runs from it, reading from disk what does not stay cached.
//!
//! So the plan reserves the KV cache, the scratch buffers, the weights computed at load and
//! a margin, then repacks what fits in the rest, in order of how often a weight is read:
//! attention, dense FFNs, shared experts and the output projection first (every token reads
//! them), then the routed experts layer by layer; what does not fit stays mapped. The
//! messages say what was left mapped and, for a model larger than the memory, what to
//! expect.

/// What a weight matrix is, in repack priority order (first = repacked first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WeightClass {
    Attention,
    DenseFfn,
    SharedExperts,
    Output,
    RoutedExperts,
}

impl WeightClass {
    pub fn name(self) -> &'static str {
        match self {
            WeightClass::Attention => "attention",
            WeightClass::DenseFfn => "dense FFN",
            WeightClass::SharedExperts => "shared experts",
            WeightClass::Output => "output",
            WeightClass::RoutedExperts => "routed experts",
        }
    }
}

/// One weight matrix as the plan sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanItem {
    pub class: WeightClass,
    /// Layer (`None` for the output projection).
    pub layer: Option<usize>,
    /// Bytes in the file.
    pub bytes: u64,
    /// Bytes of its repacked copy (0: its type or shape has no repacked layout).
    pub packed_bytes: u64,
    /// Whether the placement plan asks for a repacked copy (`false`: a rule keeps it
    /// mapped; see [`crate::placement`]).
    pub wanted: bool,
}

impl PlanItem {
    /// Bytes of the repacked copy asked for (0 when not asked or not possible).
    fn wanted_bytes(&self) -> u64 {
        if self.wanted {
            self.packed_bytes
        } else {
            0
        }
    }
}

/// What the plan starts from.
#[derive(Clone, Debug, Default)]
pub struct PlanInput {
    /// Every matrix the kernels multiply by.
    pub items: Vec<PlanItem>,
    /// Bytes of the file's tensors that are never repacked (embeddings looked up by row,
    /// norms, routers): they stay mapped.
    pub other_mapped_bytes: u64,
    /// Anonymous bytes already committed at load (weights computed from the file's).
    pub derived_bytes: u64,
    /// KV cache at the planned context.
    pub kv_bytes: u64,
    /// Activation scratch (an estimate).
    pub scratch_bytes: u64,
    /// Whether repacking was asked for at all (each item says whether it is asked for).
    pub repack: bool,
    /// Bytes the process can still allocate, and where that limit comes from; `None`
    /// where unknown (then everything is repacked, as before there was a plan).
    pub usable: Option<(u64, String)>,
}

/// The plan and what it says about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Per input item: repack it.
    pub repack: Vec<bool>,
    pub repacked_bytes: u64,
    /// Weights that stay memory-mapped (items not repacked + the other tensors).
    pub mapped_bytes: u64,
    /// Anonymous memory the plan commits: repacked + derived + KV + scratch.
    pub anonymous_bytes: u64,
    /// Margin left for the rest of the process and the system.
    pub margin_bytes: u64,
    /// Everything fits: the mapped weights can stay cached next to the anonymous memory.
    pub fits: bool,
    /// Warnings for the load summary (empty when everything fits as asked).
    pub warnings: Vec<String>,
}

/// A margin of 5% of the usable memory, at least 1 GiB (at most half of it).
pub fn margin(usable: u64) -> u64 {
    (usable / 20).max(1 << 30).min(usable / 2)
}

fn gib(b: u64) -> String {
    format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
}

/// Makes the plan (pure: everything it needs is in `input`).
pub fn plan(input: &PlanInput) -> MemoryPlan {
    let fixed = input.derived_bytes + input.kv_bytes + input.scratch_bytes;
    let weights: u64 = input.items.iter().map(|i| i.bytes).sum::<u64>() + input.other_mapped_bytes;
    let want: u64 = if input.repack {
        input.items.iter().map(|i| i.wanted_bytes()).sum()
    } else {
        0
    };
    let (usable, source) = match &input.usable {
        Some((u, s)) => (*u, s.as_str()),
        None => (u64::MAX, ""),
    };
    let margin_bytes = if input.usable.is_some() {
        margin(usable)
    } else {
        0
    };
    let room = usable.saturating_sub(margin_bytes).saturating_sub(fixed);

    // Repack in priority order while it fits (first fit: a later, smaller matrix may
    // still fit when a larger one did not).
    let mut order: Vec<usize> = (0..input.items.len()).collect();
    order.sort_by_key(|&i| (input.items[i].class, input.items[i].layer, i));
    let mut repack = vec![false; input.items.len()];
    let mut repacked = 0u64;
    if input.repack {
        for i in order {
            let p = input.items[i].wanted_bytes();
            if p > 0 && repacked + p <= room {
                repack[i] = true;
                repacked += p;
            }
        }
    }
    let mapped: u64 = input
        .items
        .iter()
        .zip(&repack)
        .filter(|(_, &r)| !r)
        .map(|(i, _)| i.bytes)
        .sum::<u64>()
        + input.other_mapped_bytes;
    let anonymous = repacked + fixed;
    let fits = anonymous.saturating_add(mapped) <= usable.saturating_sub(margin_bytes);

    let mut warnings = Vec::new();
    if input.usable.is_some() {
        if fixed > usable.saturating_sub(margin_bytes) {
            warnings.push(format!(
                "memory: the KV cache ({}), scratch ({}) and weights computed at load ({}) alone exceed the {} this process can use ({source}) less a {} margin: use a smaller --ctx",
                gib(input.kv_bytes),
                gib(input.scratch_bytes),
                gib(input.derived_bytes),
                gib(usable),
                gib(margin_bytes)
            ));
        }
        if repacked < want {
            let left: Vec<String> = {
                let mut by_class = std::collections::BTreeMap::new();
                for (item, _) in input
                    .items
                    .iter()
                    .zip(&repack)
                    .filter(|(i, &r)| !r && i.wanted_bytes() > 0)
                {
                    *by_class.entry(item.class).or_insert(0u64) += item.bytes;
                }
                by_class
                    .into_iter()
                    .map(|(c, b)| format!("{} {}", gib(b), c.name()))
                    .collect()
            };
            warnings.push(format!(
                "memory: repacking every weight needs {} but this process can use {} ({source}; {} kept for KV cache, scratch and load-time weights, {} margin): repacked {} (attention, dense and shared parts first); left memory-mapped in the file's layout (slower matmuls): {}",
                gib(want),
                gib(usable),
                gib(fixed),
                gib(margin_bytes),
                gib(repacked),
                left.join(", ")
            ));
        }
        if !fits {
            let short = anonymous
                .saturating_add(mapped)
                .saturating_sub(usable.saturating_sub(margin_bytes));
            warnings.push(format!(
                "memory: the model ({} of weights) and its buffers need {} more than the {} this process can use ({source}): it runs from the page cache, reading about {} of mapped weights from disk again as tokens use them. Expect the speed of the storage, not of RAM (each token reads the experts it routes to); it is not killed for lack of memory",
                gib(weights),
                gib(short),
                gib(usable),
                gib(short.min(mapped))
            ));
        }
    }
    MemoryPlan {
        repack,
        repacked_bytes: repacked,
        mapped_bytes: mapped,
        anonymous_bytes: anonymous,
        margin_bytes,
        fits,
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    /// An output projection of 0.5 GiB, then per layer 4 GiB of routed experts, 0.25 GiB
    /// of attention and 0.25 GiB of dense FFN (layer 0) or shared experts.
    fn model(layers: usize) -> Vec<PlanItem> {
        let mut v = vec![PlanItem {
            class: WeightClass::Output,
            layer: None,
            bytes: GIB / 2,
            packed_bytes: GIB / 2,
            wanted: true,
        }];
        for l in 0..layers {
            let item = |class, bytes| PlanItem {
                class,
                layer: Some(l),
                bytes,
                packed_bytes: bytes,
                wanted: true,
            };
            v.push(item(WeightClass::RoutedExperts, 4 * GIB));
            v.push(item(WeightClass::Attention, GIB / 4));
            v.push(item(
                if l == 0 {
                    WeightClass::DenseFfn
                } else {
                    WeightClass::SharedExperts
                },
                GIB / 4,
            ));
        }
        v
    }

    fn input(items: Vec<PlanItem>, usable: Option<u64>) -> PlanInput {
        PlanInput {
            items,
            other_mapped_bytes: GIB,
            derived_bytes: GIB / 4,
            kv_bytes: GIB / 2,
            scratch_bytes: GIB / 4,
            repack: true,
            usable: usable.map(|u| (u, "MemAvailable".to_string())),
        }
    }

    #[test]
    fn everything_is_repacked_when_it_fits() {
        let p = plan(&input(model(3), Some(64 * GIB)));
        assert!(p.repack.iter().all(|&r| r));
        assert_eq!(p.repacked_bytes, GIB / 2 + 3 * (4 * GIB + GIB / 2));
        assert_eq!(p.mapped_bytes, GIB);
        assert_eq!(p.anonymous_bytes, p.repacked_bytes + GIB);
        assert!(p.fits && p.warnings.is_empty(), "{:?}", p.warnings);
        // Unknown memory: everything, silently.
        let p = plan(&input(model(3), None));
        assert!(p.repack.iter().all(|&r| r) && p.warnings.is_empty());
    }

    #[test]
    fn what_does_not_fit_is_experts_and_stays_mapped() {
        // 3 layers want 14 GiB repacked; 12 GiB usable − 1 GiB margin − 1 GiB fixed = 10.
        let items = model(3);
        let p = plan(&input(items.clone(), Some(12 * GIB)));
        for (item, &r) in items.iter().zip(&p.repack) {
            if item.class != WeightClass::RoutedExperts {
                assert!(r, "{item:?} should be repacked first");
            }
        }
        let experts: Vec<bool> = items
            .iter()
            .zip(&p.repack)
            .filter(|(i, _)| i.class == WeightClass::RoutedExperts)
            .map(|(_, &r)| r)
            .collect();
        // Layers in order: 2 GiB of non-experts + 2 expert layers = 10 GiB.
        assert_eq!(experts, [true, true, false]);
        assert_eq!(p.repacked_bytes, 2 * GIB + 8 * GIB);
        assert_eq!(p.anonymous_bytes + p.margin_bytes, 12 * GIB);
        assert_eq!(p.mapped_bytes, 4 * GIB + GIB);
        assert!(!p.fits);
        assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
        assert!(
            p.warnings[0].contains("repacking every weight needs 14.0 GiB but this process can use 12.0 GiB (MemAvailable;")
                && p.warnings[0].contains("repacked 10.0 GiB")
                && p.warnings[0].contains("4.0 GiB routed experts"),
            "{}",
            p.warnings[0]
        );
        assert!(
            p.warnings[1].contains("runs from the page cache"),
            "{}",
            p.warnings[1]
        );
    }

    #[test]
    fn a_model_larger_than_memory_is_planned_without_overcommitting() {
        // 10 layers of 4.5 GiB on 24 GiB: anonymous memory stays under the usable memory.
        let p = plan(&input(model(10), Some(24 * GIB)));
        assert!(p.anonymous_bytes + p.margin_bytes <= 24 * GIB);
        assert!(p.repacked_bytes > 18 * GIB, "{}", p.repacked_bytes);
        assert!(!p.fits);
        let w = p.warnings.last().unwrap();
        assert!(
            w.contains("the model (46.5 GiB of weights)") && w.contains("not killed"),
            "{w}"
        );
    }

    #[test]
    fn mapped_only_models_warn_only_when_larger_than_memory() {
        let mut i = input(model(3), Some(64 * GIB));
        i.repack = false;
        let p = plan(&i);
        assert!(p.repack.iter().all(|&r| !r) && p.warnings.is_empty() && p.fits);
        i.usable = Some((8 * GIB, "cgroup v2 memory limit 8.0 GiB".into()));
        let p = plan(&i);
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        assert!(
            p.warnings[0].contains("(cgroup v2 memory limit 8.0 GiB)"),
            "{}",
            p.warnings[0]
        );
    }

    #[test]
    fn a_kv_cache_larger_than_memory_is_named() {
        let mut i = input(model(1), Some(4 * GIB));
        i.kv_bytes = 8 * GIB;
        let p = plan(&i);
        assert!(p.repack.iter().all(|&r| !r));
        assert!(p.warnings[0].contains("KV cache (8.0 GiB)") && p.warnings[0].contains("--ctx"));
    }

    #[test]
    fn items_the_placement_keeps_mapped_are_not_repacked_nor_counted_as_wanted() {
        // Experts kept mapped by a rule: the rest fits in 12 GiB, no warning of a refusal.
        let items: Vec<PlanItem> = model(3)
            .into_iter()
            .map(|i| PlanItem {
                wanted: i.class != WeightClass::RoutedExperts,
                ..i
            })
            .collect();
        let p = plan(&input(items.clone(), Some(12 * GIB)));
        for (item, &r) in items.iter().zip(&p.repack) {
            assert_eq!(r, item.wanted, "{item:?}");
        }
        assert_eq!(p.repacked_bytes, 2 * GIB);
        assert_eq!(p.mapped_bytes, 12 * GIB + GIB);
        assert!(
            p.warnings
                .iter()
                .all(|w| !w.contains("repacking every weight")),
            "{:?}",
            p.warnings
        );
    }

    #[test]
    fn the_margin_is_5_percent_at_least_1_gib() {
        assert_eq!(margin(100 * GIB), 5 * GIB);
        assert_eq!(margin(8 * GIB), GIB);
        assert_eq!(margin(GIB), GIB / 2);
    }
}
