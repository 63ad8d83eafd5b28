//! Split sets through the CLI, as a user runs them: the set llama.cpp's `llama-gguf-split`
//! made of deepseek-v3-tiny (tests/data/split) gives the unsplit file's logits from any part;
//! `inspect` lists the parts; a set with a part missing is refused with its name; `synth
//! --split-max-size` writes a set that loads.

use std::path::{Path, PathBuf};
use std::process::Command;

use testutil::{data_dir, read_npy_f32};

fn ferromoe(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ferromoe"))
        .args(args)
        .output()
        .expect("run ferromoe")
}

fn part(i: usize) -> PathBuf {
    data_dir().join(gguf::split_path("split/deepseek-v3-tiny-Q4_K_M", i, 3))
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ferromoe-cli-split-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// All-position logits of `model` for a fixed prompt (production kernels, repacked).
fn logits(model: &Path, out: &Path) -> Vec<f32> {
    let o = ferromoe(&[
        "logits",
        "-m",
        model.to_str().unwrap(),
        "--tokens",
        "51,353,612,332,962,69,92",
        "--all",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (shape, v) = read_npy_f32(out);
    assert_eq!(shape, vec![7, 1000]);
    v
}

#[test]
fn llama_cpp_split_set_gives_the_whole_files_logits_from_any_part() {
    let dir = scratch("logits");
    let whole = logits(
        &data_dir().join("tiny/deepseek-v3-tiny/deepseek-v3-tiny-Q4_K_M.gguf"),
        &dir.join("whole.npy"),
    );
    for i in [0, 2] {
        let set = logits(&part(i), &dir.join(format!("set{i}.npy")));
        assert!(
            set == whole,
            "part {i}: logits differ from the unsplit file's"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn inspect_lists_the_parts_with_their_bytes() {
    let o = ferromoe(&["inspect", part(1).to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = String::from_utf8(o.stdout).unwrap();
    assert!(s.contains("parts:         3 (split set)"), "{s}");
    for i in 0..3 {
        let line = s
            .lines()
            .find(|l| l.ends_with(part(i).to_str().unwrap()))
            .unwrap_or_else(|| panic!("no line for part {i} in\n{s}"));
        assert!(
            line.trim_start().starts_with(&(i + 1).to_string()),
            "{line}"
        );
        assert!(line.contains("KiB") && line.contains("tensors"), "{line}");
    }
    assert!(s.contains("tensors:       34"), "{s}");

    let o = ferromoe(&["inspect", "--json", "--tensors", part(2).to_str().unwrap()]);
    assert!(o.status.success());
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let parts = j["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    let mut total = 0;
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(p["file"], part(i).to_str().unwrap());
        let bytes = std::fs::metadata(part(i)).unwrap().len();
        assert_eq!(p["bytes"], bytes);
        total += bytes;
    }
    assert_eq!(j["file_size"], total);
    let in_part = |n: u64| {
        j["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["part"] == n)
            .count() as u64
    };
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(p["tensors"], in_part(i as u64 + 1));
    }
}

#[test]
fn a_set_with_a_missing_part_is_refused_naming_it() {
    let dir = scratch("missing");
    for i in [0, 2] {
        std::fs::copy(part(i), dir.join(part(i).file_name().unwrap())).unwrap();
    }
    let missing = dir.join(part(1).file_name().unwrap());
    let first = dir.join(part(0).file_name().unwrap());
    for args in [
        vec!["inspect", first.to_str().unwrap()],
        vec![
            "logits",
            "-m",
            first.to_str().unwrap(),
            "--tokens",
            "1",
            "-o",
            "/dev/null",
        ],
        vec![
            "tensor",
            first.to_str().unwrap(),
            "output.weight",
            "-o",
            "/dev/null",
        ],
    ] {
        let o = ferromoe(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(&format!(
                "{}: part 2 of the 3-part split set is missing",
                missing.display()
            )),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tensor_reads_from_any_part() {
    let dir = scratch("tensor");
    let name = "blk.1.ffn_down_exps.weight";
    let a = dir.join("a.npy");
    let b = dir.join("b.npy");
    let whole = data_dir().join("tiny/deepseek-v3-tiny/deepseek-v3-tiny-Q4_K_M.gguf");
    for (file, out) in [(whole.as_path(), &a), (part(0).as_path(), &b)] {
        let o = ferromoe(&[
            "tensor",
            file.to_str().unwrap(),
            name,
            "-o",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert_eq!(read_npy_f32(&a), read_npy_f32(&b));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn synth_writes_a_split_set_that_loads() {
    let dir = scratch("synth");
    let out = dir.join("v2.gguf");
    let o = ferromoe(&[
        "synth",
        "--shape",
        "v2-lite",
        "--layers",
        "2",
        "--dense-layers",
        "1",
        "--experts",
        "4",
        "--vocab",
        "1000",
        "--type",
        "Q8_0",
        "--split-max-size",
        "40M",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut parts: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    parts.sort();
    assert!(parts.len() >= 2, "{parts:?}");
    let n = parts.len();
    let names: Vec<String> = (0..n).map(|i| gguf::split_path("v2", i, n)).collect();
    assert_eq!(parts, names);
    let last = dir.join(&names[n - 1]);
    let set = gguf::Gguf::open(&last).unwrap();
    assert_eq!(set.parts().len(), n);
    for p in set.parts() {
        assert!(
            p.data_bytes() <= 40_000_000,
            "{} {}",
            p.name(),
            p.data_bytes()
        );
    }
    let v = logits(&last, &dir.join("l.npy"));
    assert!(v.iter().all(|x| x.is_finite()));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn load_summary_shows_tiers_and_a_tight_budget_keeps_experts_mapped() {
    let dir = scratch("budget");
    let first = part(0);
    let run = |extra: &[&str]| {
        let out = dir.join("l.npy");
        let mut args = vec!["logits", "-m", first.to_str().unwrap(), "--tokens", "1,2,3"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["-o", out.to_str().unwrap()]);
        let o = ferromoe(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let (_, v) = read_npy_f32(&out);
        assert!(v.iter().all(|x| x.is_finite()));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let roomy = run(&[]);
    assert!(roomy.contains("in 3 parts (usable memory"), "{roomy}");
    assert!(
        roomy.contains("  repacked (anonymous memory): 22 tensors"),
        "{roomy}"
    );
    assert!(roomy.contains("  mapped (page cache): "), "{roomy}");
    assert!(!roomy.contains("warning:"), "{roomy}");
    // 24 MiB: ~10.7 MiB reserved, a 12 MiB margin, room for part of the 2.1 MiB repack.
    let tight = run(&["--memory-budget", "24M"]);
    assert!(
        tight.contains("warning: memory: repacking every weight needs")
            && tight.contains("routed experts")
            && tight.contains("--memory-budget 24.00 MiB"),
        "{tight}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_plan_reserves_the_ctx_asked_for_and_warns_when_it_does_not_fit() {
    let first = part(0);
    let run = |ctx: &str| {
        let o = ferromoe(&[
            "run",
            "-m",
            first.to_str().unwrap(),
            "-p",
            "hello",
            "-n",
            "2",
            "--ctx",
            ctx,
            "--memory-budget",
            "64M",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    // deepseek-v3-tiny caches 2 layers × (256 latent + 32 RoPE) floats = 2304 bytes per
    // position: 200 positions fit in 64 MiB, 100 000 (220 MiB) do not.
    let small = run("200");
    assert!(
        small.contains(
            "  reserved: KV cache 450.0 KiB (200 positions; latent f32: 2.2 KiB per position)"
        ),
        "{small}"
    );
    assert!(!small.contains("warning:"), "{small}");
    let large = run("100000");
    assert!(
        large.contains(
            "  reserved: KV cache 219.73 MiB (100000 positions; latent f32: 2.2 KiB per position)"
        ) && large.contains("warning: memory: the KV cache (0.2 GiB)")
            && large.contains("use a smaller --ctx"),
        "{large}"
    );
}
