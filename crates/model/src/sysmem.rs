//! The machine's memory, so that a size that cannot be allocated is refused with a message
//! (which size, how much there is) instead of an aborted allocation, and so that the load
//! plans against the memory this process can really use: `MemAvailable`, and the limit of
//! its cgroup (v1 or v2) when it runs in a container or a systemd slice — an anonymous
//! allocation beyond that limit gets the process OOM-killed, whatever the host has free.
//!
//! Every file format is parsed from a string, so the parsers are tested without the files.

use std::path::Path;

/// RAM + swap in bytes (Linux: `/proc/meminfo`); `None` where unknown.
pub fn total_bytes() -> Option<u64> {
    let m = parse_meminfo(&std::fs::read_to_string("/proc/meminfo").ok()?)?;
    Some(m.total.saturating_add(m.swap_total))
}

/// What `/proc/meminfo` says, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemInfo {
    pub total: u64,
    /// `MemAvailable`: free memory plus what the kernel can reclaim (page cache) without
    /// swapping (kernels before 3.14 lack it: then free + buffers + cached).
    pub available: u64,
    pub swap_total: u64,
}

/// Parses `/proc/meminfo`; `None` without `MemTotal`.
pub fn parse_meminfo(text: &str) -> Option<MemInfo> {
    let kib = |name: &str| {
        text.lines().find_map(|l| {
            let v = l.strip_prefix(name)?.trim().strip_suffix("kB")?;
            v.trim().parse::<u64>().ok().map(|k| k.saturating_mul(1024))
        })
    };
    let total = kib("MemTotal:")?;
    let available = kib("MemAvailable:").unwrap_or_else(|| {
        ["MemFree:", "Buffers:", "Cached:"]
            .iter()
            .filter_map(|k| kib(k))
            .sum()
    });
    Some(MemInfo {
        total,
        available,
        swap_total: kib("SwapTotal:").unwrap_or(0),
    })
}

/// A cgroup's memory limit and what its processes already hold that cannot be reclaimed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupMemory {
    /// 1 or 2.
    pub version: u8,
    /// The smallest limit of the cgroup and its ancestors, in bytes.
    pub limit: u64,
    /// Anonymous memory already charged (v2 `anon`, v1 `total_rss`): the page cache is
    /// reclaimable and does not count.
    pub anon: u64,
}

impl CgroupMemory {
    /// Bytes of anonymous memory the cgroup can still take.
    pub fn room(&self) -> u64 {
        self.limit.saturating_sub(self.anon)
    }
}

/// The memory cgroup paths of `/proc/self/cgroup`: the v2 (unified, `0::PATH`) path and
/// the v1 `memory` controller's path, where present.
pub fn parse_self_cgroup(text: &str) -> (Option<String>, Option<String>) {
    let (mut v2, mut v1) = (None, None);
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            v2 = Some(path.to_string());
        } else if controllers.split(',').any(|c| c == "memory") {
            v1 = Some(path.to_string());
        }
    }
    (v2, v1)
}

/// A limit file's value: `max` (v2) or a value of 2⁶² and more (v1's "unlimited",
/// 9223372036854771712) is no limit.
pub fn parse_limit(text: &str) -> Option<u64> {
    let t = text.trim();
    if t == "max" {
        return None;
    }
    t.parse::<u64>().ok().filter(|&v| v < 1 << 62)
}

/// A `key value` line of a `memory.stat` file.
pub fn parse_stat(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// The memory limit of the cgroup at `rel` (as `/proc/self/cgroup` names it) under the
/// hierarchy mounted at `mount`, for cgroup `version` 1 or 2, walking up to the root
/// (the tightest limit wins). Inside a container the process's own cgroup is usually the
/// mount's root, whatever path `/proc/self/cgroup` shows: that is tried as well.
/// `None`: no limit, or nothing readable.
pub fn cgroup_memory_at(mount: &Path, rel: &str, version: u8) -> Option<CgroupMemory> {
    let read = |dir: &Path, f: &str| std::fs::read_to_string(dir.join(f)).ok();
    let (limit_file, anon_key) = match version {
        2 => ("memory.max", "anon"),
        _ => ("memory.limit_in_bytes", "total_rss"),
    };
    let mut dirs = Vec::new();
    let mut p = mount.join(rel.trim_start_matches('/'));
    loop {
        if p.is_dir() {
            dirs.push(p.clone());
        }
        if p == mount || !p.pop() || !p.starts_with(mount) {
            break;
        }
    }
    if dirs.is_empty() {
        dirs.push(mount.to_path_buf());
    }
    let mut limit = dirs
        .iter()
        .filter_map(|d| read(d, limit_file).as_deref().and_then(parse_limit))
        .min();
    // v1 states the effective (hierarchical) limit in memory.stat.
    let stat = read(&dirs[0], "memory.stat").unwrap_or_default();
    if version == 1 {
        if let Some(h) = parse_stat(&stat, "hierarchical_memory_limit").filter(|&h| h < 1 << 62) {
            limit = Some(limit.map_or(h, |l| l.min(h)));
        }
    }
    let limit = limit?;
    let anon = parse_stat(&stat, anon_key)
        .or_else(|| {
            let usage = if version == 2 {
                "memory.current"
            } else {
                "memory.usage_in_bytes"
            };
            read(&dirs[0], usage).and_then(|t| t.trim().parse().ok())
        })
        .unwrap_or(0);
    Some(CgroupMemory {
        version,
        limit,
        anon,
    })
}

/// This process's cgroup memory limit (v2 first, then v1), or `None`.
pub fn cgroup_memory() -> Option<CgroupMemory> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let (v2, v1) = parse_self_cgroup(&text);
    let root = Path::new("/sys/fs/cgroup");
    if let Some(rel) = v2 {
        // Pure v2 mounts the hierarchy at the root; hybrid systems under `unified`.
        for mount in [root.to_path_buf(), root.join("unified")] {
            if mount.join("cgroup.controllers").exists() {
                if let Some(m) = cgroup_memory_at(&mount, &rel, 2) {
                    return Some(m);
                }
            }
        }
    }
    cgroup_memory_at(&root.join("memory"), &v1?, 1)
}

/// The memory a load can plan with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryBudget {
    pub meminfo: MemInfo,
    pub cgroup: Option<CgroupMemory>,
}

impl MemoryBudget {
    /// This machine and process, or `None` where `/proc/meminfo` cannot be read.
    pub fn current() -> Option<MemoryBudget> {
        let meminfo = parse_meminfo(&std::fs::read_to_string("/proc/meminfo").ok()?)?;
        Some(MemoryBudget {
            meminfo,
            cgroup: cgroup_memory(),
        })
    }

    /// Bytes this process can still allocate without swapping or being OOM-killed: the
    /// smaller of `MemAvailable` and the cgroup's room.
    pub fn usable(&self) -> u64 {
        let avail = self.meminfo.available;
        self.cgroup.map_or(avail, |c| avail.min(c.room()))
    }

    /// Where the limit comes from, for messages: "MemAvailable 23.1 GiB" or "cgroup v2
    /// limit 16.0 GiB (2.1 GiB in use)".
    pub fn describe(&self) -> String {
        let gib = |b: u64| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64);
        match self.cgroup {
            Some(c) if c.room() < self.meminfo.available => format!(
                "cgroup v{} memory limit {} ({} already in use)",
                c.version,
                gib(c.limit),
                gib(c.anon)
            ),
            _ => format!("MemAvailable {}", gib(self.meminfo.available)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn reads_this_machines_memory() {
        let b = super::total_bytes().expect("/proc/meminfo");
        // More than 256 MiB and less than 1 PiB on any machine that runs the tests.
        assert!(b > 1 << 28 && b < 1 << 50, "{b}");
        let budget = MemoryBudget::current().unwrap();
        assert!(budget.usable() <= budget.meminfo.total);
    }

    #[test]
    fn meminfo_with_and_without_mem_available() {
        let m = parse_meminfo(
            "MemTotal:       24683784 kB\nMemFree:        20000000 kB\nMemAvailable:   23985748 kB\nBuffers: 10 kB\nCached: 100 kB\nSwapTotal:      1024 kB\n",
        )
        .unwrap();
        assert_eq!(
            m,
            MemInfo {
                total: 24683784 * 1024,
                available: 23985748 * 1024,
                swap_total: 1 << 20
            }
        );
        let old = parse_meminfo("MemTotal: 100 kB\nMemFree: 10 kB\nBuffers: 1 kB\nCached: 2 kB\n")
            .unwrap();
        assert_eq!((old.available, old.swap_total), (13 * 1024, 0));
        assert_eq!(parse_meminfo("garbage"), None);
    }

    #[test]
    fn self_cgroup_v1_v2_and_hybrid() {
        let v1 = "9:systemd:/\n4:memory:/process_api/6e93\n3:cpuset:/\n0::/\n";
        assert_eq!(
            parse_self_cgroup(v1),
            (Some("/".into()), Some("/process_api/6e93".into()))
        );
        assert_eq!(
            parse_self_cgroup("0::/user.slice/app.scope\n"),
            (Some("/user.slice/app.scope".into()), None)
        );
        assert_eq!(
            parse_self_cgroup("5:cpu,memory:/docker/abc\n"),
            (None, Some("/docker/abc".into()))
        );
    }

    #[test]
    fn limits_and_stats() {
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None);
        assert_eq!(parse_limit("17179869184\n"), Some(16 << 30));
        assert_eq!(parse_limit("junk"), None);
        let stat = "cache 10989568\nrss 6156288\ntotal_rss 200335360\nanon 42\n";
        assert_eq!(parse_stat(stat, "total_rss"), Some(200335360));
        assert_eq!(parse_stat(stat, "rss"), Some(6156288));
        assert_eq!(parse_stat(stat, "anon"), Some(42));
        assert_eq!(parse_stat(stat, "file"), None);
    }

    fn tree(name: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
        let root = std::env::temp_dir().join(format!("sysmem-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (path, text) in files {
            let p = root.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        root
    }

    #[test]
    fn cgroup_v2_takes_the_tightest_ancestor_limit() {
        let root = tree(
            "v2",
            &[
                ("memory.max", "max\n"),
                ("user.slice/memory.max", "8589934592\n"),
                ("user.slice/app.scope/memory.max", "max\n"),
                (
                    "user.slice/app.scope/memory.stat",
                    "anon 1073741824\nfile 5\n",
                ),
            ],
        );
        let m = cgroup_memory_at(&root, "/user.slice/app.scope", 2).unwrap();
        assert_eq!(
            m,
            CgroupMemory {
                version: 2,
                limit: 8 << 30,
                anon: 1 << 30
            }
        );
        assert_eq!(m.room(), 7 << 30);
        // No limit anywhere: none.
        std::fs::write(root.join("user.slice/memory.max"), "max\n").unwrap();
        assert_eq!(cgroup_memory_at(&root, "/user.slice/app.scope", 2), None);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn cgroup_v1_in_a_container_reads_the_mount_root() {
        // The container sees its own cgroup at the mount root, whatever path
        // /proc/self/cgroup names.
        let root = tree(
            "v1",
            &[
                ("memory.limit_in_bytes", "4294967296\n"),
                (
                    "memory.stat",
                    "total_rss 1073741824\nhierarchical_memory_limit 9223372036854771712\n",
                ),
            ],
        );
        let m = cgroup_memory_at(&root, "/docker/abc", 1).unwrap();
        assert_eq!(
            m,
            CgroupMemory {
                version: 1,
                limit: 4 << 30,
                anon: 1 << 30
            }
        );
        // The hierarchical limit (a parent's) is tighter.
        std::fs::write(
            root.join("memory.stat"),
            "total_rss 0\nhierarchical_memory_limit 2147483648\n",
        )
        .unwrap();
        assert_eq!(cgroup_memory_at(&root, "/", 1).unwrap().limit, 2 << 30);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn the_budget_is_the_smaller_of_available_and_the_cgroup_room() {
        let meminfo = MemInfo {
            total: 64 << 30,
            available: 60 << 30,
            swap_total: 0,
        };
        let free = MemoryBudget {
            meminfo,
            cgroup: None,
        };
        assert_eq!(free.usable(), 60 << 30);
        assert_eq!(free.describe(), "MemAvailable 60.0 GiB");
        let boxed = MemoryBudget {
            meminfo,
            cgroup: Some(CgroupMemory {
                version: 2,
                limit: 16 << 30,
                anon: 2 << 30,
            }),
        };
        assert_eq!(boxed.usable(), 14 << 30);
        assert_eq!(
            boxed.describe(),
            "cgroup v2 memory limit 16.0 GiB (2.0 GiB already in use)"
        );
    }
}
