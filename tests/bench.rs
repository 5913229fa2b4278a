//! `minference bench` end to end (JSON fields, PNG) and the counting helpers it relies on.

use minference::bench::{
    index_bytes, index_pairs, time_runs, window_pairs, PatternCase, Stats, MAX_EXTRA_WARMUP_RUNS,
    MIN_WARMUP,
};
use minference::generate::random_qkv;
use minference::{reference, AttnShape, Backend, CpuBackend, DType, Pattern};
use std::process::Command;

#[test]
fn bench_cli_writes_every_field_and_a_plot() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_minference"))
        .current_dir(dir.path())
        .args([
            "bench",
            "--backend",
            "cpu",
            "--seq-lens",
            "256,512",
            "--heads",
            "2",
            "--reps",
            "2",
            "--json",
            "out.json",
            "--plot",
            "out.png",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stderr: {stderr}\nstdout: {stdout}");
    for col in ["TFLOP/s", "density", "vs dense", "index share", "/ fastest"] {
        assert!(stdout.contains(col), "table lacks `{col}`: {stdout}");
    }

    let text = std::fs::read_to_string(dir.path().join("out.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    for key in [
        "crate_version",
        "rustc",
        "machine",
        "backends",
        "skipped",
        "inputs",
        "warmup",
        "reps",
        "rows",
    ] {
        assert!(json.get(key).is_some(), "JSON lacks `{key}`");
    }
    for key in ["hostname", "cpu", "cpu_threads", "os"] {
        assert!(json["machine"].get(key).is_some(), "machine lacks `{key}`");
    }
    assert_eq!(json["backends"][0]["name"], "cpu");
    assert!(json["backends"][0]["device"]
        .as_str()
        .unwrap()
        .contains("CPU"));
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 8, "4 patterns x 2 lengths");
    let row_keys = [
        "backend",
        "pattern",
        "spec",
        "dtype",
        "batch",
        "heads",
        "kv_heads",
        "seq_len",
        "head_dim",
        "pairs",
        "causal_pairs",
        "density",
        "useful_flops",
        "time",
        "tflops",
        "index_time",
        "index_share",
        "speedup_vs_dense",
        "ratio_to_fastest",
        "index_kernel_bytes",
        "index_selection_bytes",
        "tensor_bytes",
        "peak_device_bytes",
    ];
    for r in rows {
        for key in row_keys {
            assert!(r.get(key).is_some(), "row lacks `{key}`: {r}");
        }
        for key in ["median_ms", "min_ms", "max_ms", "p10_ms", "p90_ms"] {
            let t = r["time"][key].as_f64().unwrap();
            assert!(t > 0.0, "{key} = {t}");
        }
        assert_eq!(r["time"]["samples_ms"].as_array().unwrap().len(), 2);
        assert!(r["tflops"].as_f64().unwrap() > 0.0);
        let density = r["density"].as_f64().unwrap();
        assert!(density > 0.0 && density <= 1.0, "density {density}");
        let flops = r["useful_flops"].as_f64().unwrap();
        let pairs = r["pairs"].as_u64().unwrap() as f64;
        assert_eq!(flops, 4.0 * 64.0 * pairs);
        assert!(r["speedup_vs_dense"].as_f64().is_some());
        assert_eq!(r["ratio_to_fastest"].as_f64(), Some(1.0));
        let uses_index = matches!(
            r["pattern"].as_str().unwrap(),
            "vertical-slash" | "block-sparse"
        );
        assert_eq!(r["index_time"].is_object(), uses_index, "{r}");
        assert_eq!(r["index_kernel_bytes"].as_u64().unwrap() > 0, uses_index);
        if r["pattern"] == "dense" {
            assert_eq!(density, 1.0);
            assert_eq!(r["speedup_vs_dense"].as_f64(), Some(1.0));
        }
    }

    let png = std::fs::read(dir.path().join("out.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(png.len() > 10_000, "PNG is only {} bytes", png.len());
}

#[test]
fn bench_cli_rejects_bad_arguments_clearly() {
    for (args, want) in [
        (vec!["--backend", "tpu"], "tpu"),
        (vec!["--patterns", "diagonal"], "diagonal"),
        (vec!["--reps", "0"], "--reps"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_minference"))
            .args(["bench", "--seq-lens", "64", "--heads", "1"])
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(!err.contains("panicked"), "{err}");
        assert!(
            err.contains("error:") && err.contains(want),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn pairs_match_the_index_and_the_windows() {
    let (hq, hkv, n, d) = (3, 1, 333, 32);
    let shape = AttnShape::new(1, hq, hkv, n, d).unwrap();
    let (q, k, _) = random_qkv(1, hq, hkv, n, d, DType::F32, 11).unwrap();
    let cpu = CpuBackend::new();
    let (q, k) = (cpu.upload(&q).unwrap(), cpu.upload(&k).unwrap());
    let pats = [
        Pattern::VerticalSlash {
            vertical: 40,
            slash: 70,
        },
        Pattern::BlockSparse { top_k: 3 },
        Pattern::AShape { sink: 4, local: 9 },
    ];
    let ix = cpu
        .download_index(&cpu.build_index(&q, &k, &pats).unwrap())
        .unwrap();
    assert_eq!(index_pairs(&ix), ix.pairs());
    let (kernel, sel) = index_bytes(shape, &pats).unwrap();
    let m = &ix.meta;
    assert_eq!(
        kernel,
        4 * (ix.block_count.len()
            + ix.block_offset.len()
            + ix.column_count.len()
            + ix.column_index.len()) as u64
    );
    assert_eq!(
        sel,
        4 * (ix.vertical_index.len() + ix.slash_index.len() + ix.block_index.len()) as u64,
        "{m:?}"
    );
    for p in [
        Pattern::Dense,
        Pattern::AShape { sink: 4, local: 9 },
        Pattern::AShape {
            sink: 500,
            local: 1,
        },
    ] {
        let want: u64 = (0..n)
            .map(|i| reference::window_keys(&p, i).len() as u64)
            .sum::<u64>()
            * hq as u64;
        assert_eq!(window_pairs(&shape, &p), want, "{p}");
    }
}

#[test]
fn pattern_lists_and_stats() {
    let cases =
        PatternCase::parse_list("dense, a-shape:64,1024,block-sparse,vertical-slash:8,16").unwrap();
    let labels: Vec<String> = cases.iter().map(PatternCase::label).collect();
    assert_eq!(
        labels,
        [
            "dense",
            "a-shape:64,1024",
            "block-sparse",
            "vertical-slash:8,16"
        ]
    );
    assert_eq!(
        cases[1].at(99),
        Pattern::AShape {
            sink: 64,
            local: 1024
        }
    );
    assert_eq!(cases[2].at(4096), Pattern::BlockSparse { top_k: 8 });
    assert!(PatternCase::parse_list("").is_err());
    assert!(PatternCase::parse_list("dense,sparse").is_err());

    let s = Stats::new(vec![5.0, 1.0, 3.0, 2.0, 4.0]).unwrap();
    assert_eq!((s.median_ms, s.min_ms, s.max_ms), (3.0, 1.0, 5.0));
    assert_eq!((s.p10_ms, s.p90_ms), (1.0, 5.0));
    assert_eq!(Stats::new(vec![1.0, 2.0]).unwrap().median_ms, 1.5);
    assert!(Stats::new(vec![]).is_err());
}

/// Warm-up runs go on until MIN_WARMUP has passed (a GPU leaving idle needs that long to reach
/// its clocks), at most MAX_EXTRA_WARMUP_RUNS beyond those asked for; none when none are asked.
#[test]
fn warm_up_lasts_min_warmup_and_stops() {
    let be = CpuBackend::new();
    let run_with = |warmup: usize, sleep: std::time::Duration| {
        let mut calls = 0usize;
        let t0 = std::time::Instant::now();
        let stats = time_runs(&be, warmup, 3, || {
            calls += 1;
            std::thread::sleep(sleep);
            Ok(())
        })
        .unwrap();
        (calls, t0.elapsed(), stats)
    };
    // 100 ms runs: the first warm-up run, then more until 500 ms have passed.
    let step = std::time::Duration::from_millis(100);
    let (calls, took, stats) = run_with(1, step);
    let warm = calls - 3;
    let least = (MIN_WARMUP.as_millis() / step.as_millis()) as usize;
    assert!(
        (least..=least + 1).contains(&warm),
        "{warm} warm-up runs of 100 ms for {MIN_WARMUP:?}"
    );
    assert!(took >= MIN_WARMUP + 3 * step, "took {took:?}");
    assert_eq!(stats.samples_ms.len(), 3);
    // Runs that take no time: capped.
    let (calls, _, _) = run_with(2, std::time::Duration::ZERO);
    assert_eq!(calls - 3, 2 + MAX_EXTRA_WARMUP_RUNS);
    // None asked: none done, however short the runs.
    let (calls, _, _) = run_with(0, std::time::Duration::from_millis(1));
    assert_eq!(calls, 3);
}
