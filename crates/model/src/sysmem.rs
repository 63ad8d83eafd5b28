//! The machine's memory, so that a size that cannot be allocated is refused with a message
//! (which size, how much there is) instead of an aborted allocation.

/// RAM + swap in bytes (Linux: `/proc/meminfo`); `None` where unknown.
pub fn total_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = |name: &str| {
        text.lines().find_map(|l| {
            let v = l.strip_prefix(name)?.trim().strip_suffix("kB")?;
            v.trim().parse::<u64>().ok()
        })
    };
    Some(
        kib("MemTotal:")?
            .saturating_add(kib("SwapTotal:").unwrap_or(0))
            .saturating_mul(1024),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn reads_this_machines_memory() {
        let b = super::total_bytes().expect("/proc/meminfo");
        // More than 256 MiB and less than 1 PiB on any machine that runs the tests.
        assert!(b > 1 << 28 && b < 1 << 50, "{b}");
    }
}
