//! `ferromoe bench --parallel`: the aggregate decode of B parallel sequences, run as a user
//! would on the tiny MoE test model: one JSON object (or table row) per B with its
//! lengths and rates, and clear errors for arguments it cannot measure.

use std::process::{Command, Output};

fn bench(args: &[&str]) -> Output {
    let model = testutil::data_dir().join("tiny/qwen2moe-tiny/qwen2moe-tiny-Q8_0.gguf");
    Command::new(env!("CARGO_BIN_EXE_ferromoe"))
        .args(["bench", "-m", model.to_str().unwrap(), "-t", "2"])
        .args(args)
        .output()
        .expect("run ferromoe")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn parallel_reports_one_result_per_batch_size() {
    let out = bench(&[
        "-p",
        "12",
        "-n",
        "4",
        "--parallel",
        "1,3",
        "--steps",
        "1,2",
        "-r",
        "2",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let arr = j.as_array().unwrap();
    // The two step tests, then one object per B; no pp/tg test of one sequence.
    let tests: Vec<&str> = arr.iter().map(|o| o["test"].as_str().unwrap()).collect();
    assert_eq!(tests, ["step1", "step2", "pp12+tg4 ×1", "pp12+tg4 ×3"]);
    for (o, b) in arr[2..].iter().zip([1u64, 3]) {
        assert_eq!(o["n_parallel"], b);
        assert_eq!(o["n_prompt"], 12);
        assert_eq!(o["n_gen"], 4);
        assert_eq!(o["samples_ns"].as_array().unwrap().len(), 2);
        let avg = o["avg_ts"].as_f64().unwrap();
        let per_seq = o["per_seq_ts"].as_f64().unwrap();
        assert!(avg > 0.0 && o["prefill_ts"].as_f64().unwrap() > 0.0);
        assert!((per_seq * b as f64 - avg).abs() < 1e-6 * avg, "{o}");
        // Each repetition's rate is B × N tokens over its time.
        let ns = o["samples_ns"][0].as_f64().unwrap();
        let ts = o["samples_ts"][0].as_f64().unwrap();
        assert!((ts - (b * 4) as f64 * 1e9 / ns).abs() < 1e-6 * ts, "{o}");
    }

    // The table: llama-batched-bench's columns, one row per B.
    let out = bench(&["-p", "8", "-n", "2", "--parallel", "2", "-r", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("| PP | TG | B | T_PP s"), "{table}");
    assert!(table.contains("\n| 8 | 2 | 2 | "), "{table}");
    assert!(!table.contains("| model |"), "{table}");
}

#[test]
fn parallel_refuses_what_it_cannot_measure() {
    for (args, want) in [
        (&["--parallel", "0,2"][..], "at least one sequence"),
        (&["--parallel", "2", "-n", "0"][..], "-n must be at least 1"),
        (&["--parallel", "2", "-d", "16"][..], "without -d"),
        (
            &["--parallel", "2", "-p", "100000000"][..],
            "exceed the model's context length",
        ),
    ] {
        let out = bench(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
    }
}
