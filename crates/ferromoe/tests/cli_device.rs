//! `--device`, `--gpu-memory` and `ferromoe devices`, run as a user would: on the CPU, on
//! the test adapter (lavapipe in CI; skipped elsewhere when there is none), and with a
//! device that does not exist.

use std::path::PathBuf;
use std::process::{Command, Output};

use testutil::{data_dir, read_npy_f32};

fn ferromoe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferromoe"))
        .args(args)
        .output()
        .expect("run ferromoe")
}

fn model() -> String {
    data_dir()
        .join("tiny/deepseek-v3-tiny/deepseek-v3-tiny-Q4_K_M.gguf")
        .to_str()
        .unwrap()
        .to_string()
}

fn ok(out: &Output) -> (String, String) {
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert!(out.status.success(), "{stderr}");
    (stdout, stderr)
}

/// The adapter the tests use, as `--device` spells it (`None`: skipped, after saying why).
fn test_device() -> Option<String> {
    drop(accel::testing::test_gpu()?);
    Some(std::env::var("FERROMOE_TEST_DEVICE").unwrap_or_else(|_| "gpu:0".to_string()))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferromoe-device-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Exact-mode last-position logits of a fixed prompt on `device`, and stderr.
fn logits(dir: &std::path::Path, device: &str, extra: &[&str]) -> (Vec<f32>, String) {
    let out_path = dir.join(format!("{}.npy", device.replace(':', "_")));
    let m = model();
    let mut args = vec![
        "logits",
        "-m",
        &m,
        "--tokens",
        "51,353,612,332,962,69,92",
        "--exact",
        "-t",
        "2",
        "--device",
        device,
        "-o",
        out_path.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (_, stderr) = ok(&ferromoe(&args));
    (read_npy_f32(&out_path).1, stderr)
}

#[test]
fn cpu_and_gpu_give_the_same_logits_and_say_where_they_ran() {
    let dir = scratch("logits");
    let (cpu, stderr) = logits(&dir, "cpu", &[]);
    assert!(stderr.contains("device: cpu (--device cpu)"), "{stderr}");
    assert!(stderr.contains("gpu tier: none (no GPU open"), "{stderr}");
    // auto picks no software adapter: the same CPU run (lavapipe is not a discrete GPU).
    let (auto, stderr) = logits(&dir, "auto", &[]);
    if stderr.contains("device: cpu (--device auto: no") {
        assert_eq!(cpu, auto);
    } else {
        assert!(stderr.contains("device: gpu:"), "{stderr}");
    }
    let Some(device) = test_device() else { return };
    let (gpu, stderr) = logits(&dir, &device, &[]);
    for want in [
        "device: gpu:",
        "GPU tier budget",
        "gpu (uploaded): 21 tensors",
        "runs 2 attention(s) with their KV cache, 1 dense FFN(s), 1 shared-expert FFN(s), the output head",
        "KV cache (f32, 2 layer(s))",
        "dense FFN: gpu · uploaded · 3 tensor(s)",
        "shared experts: gpu · uploaded · 3 tensor(s)",
        "routed experts: cpu · mapped (exact mode)",
        "attention: gpu · uploaded · 12 tensor(s)",
        "attention: gpu · computed at load, uploaded · 2 tensor(s)",
    ] {
        assert!(stderr.contains(want), "{want}\n{stderr}");
    }
    let max = cpu
        .iter()
        .zip(&gpu)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(max <= 1e-3, "max |Δ| {max}");
    // A budget too small for the GPU tier keeps layers on the CPU, and says so.
    let (small, stderr) = logits(&dir, &device, &["--gpu-memory", "1M"]);
    assert!(
        stderr.contains("warning: GPU memory plan: ") && stderr.contains("--gpu-memory SIZE"),
        "{stderr}"
    );
    assert_eq!(small, cpu);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn devices_lists_the_adapters_and_inspect_plan_shows_the_gpu_tier() {
    let Some(device) = test_device() else {
        let (stdout, _) = ok(&ferromoe(&["devices"]));
        assert!(stdout.contains("--device auto picks") || stdout.contains("no GPU adapter"));
        return;
    };
    let (stdout, _) = ok(&ferromoe(&["devices"]));
    assert!(stdout.starts_with("gpu:0  "), "{stdout}");
    assert!(stdout.contains("plan budget"), "{stdout}");
    assert!(stdout.contains("--device auto picks"), "{stdout}");
    let (plan, _) = ok(&ferromoe(&[
        "inspect",
        "--plan",
        &model(),
        "--device",
        &device,
    ]));
    for want in [
        "default for deepseek2 with a GPU",
        "dense FFN: gpu · uploaded · 3 tensor(s)",
        "output: gpu · uploaded · 1 tensor(s)",
        "routed experts: cpu · repacked · 3 tensor(s)",
        "gpu tier: 21 tensors",
    ] {
        assert!(plan.contains(want), "{want}\n{plan}");
    }
    // Asking for what the GPU cannot run yet keeps it on the CPU, with a note naming the rule.
    let (plan, _) = ok(&ferromoe(&[
        "inspect",
        "--plan",
        &model(),
        "--device",
        &device,
        "-ot",
        "exps=gpu",
    ]));
    assert!(
        plan.contains(
            "--override-tensor 'exps=gpu': 3 tensor(s) stay on the CPU: the GPU tier does not run routed experts"
        ),
        "{plan}"
    );
}

#[test]
fn a_device_that_does_not_exist_is_refused_with_the_adapters() {
    for (device, want) in [
        (
            "gpu:no-such-adapter",
            "error: no GPU adapter matches --device gpu:no-such-adapter",
        ),
        ("gpu:99", "no GPU adapter matches --device gpu:99"),
    ] {
        let out = ferromoe(&[
            "logits",
            "-m",
            &model(),
            "--tokens",
            "1",
            "-o",
            "/dev/null",
            "--device",
            device,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(want), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let out = ferromoe(&["run", "-m", &model(), "-p", "x", "--device", "tpu"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("bad --device value"), "{stderr}");
    // A GPU rule without a GPU is refused by name.
    let out = ferromoe(&[
        "inspect",
        "--plan",
        &model(),
        "--device",
        "cpu",
        "-ot",
        "ffn_down=gpu",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("'ffn_down=gpu': no GPU is open"),
        "{stderr}"
    );
}
