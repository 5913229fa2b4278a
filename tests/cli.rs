//! The `minference` program end to end: `run` against an independent float64
//! implementation for every pattern, the saved index against the conversion rule, `check`,
//! `demo`, and a clear error (non-zero exit, no panic, no partial file) for every bad input.

mod common;

use common::independent;
use minference::generate::random_qkv;
use minference::io::{get_index, StFile};
use minference::{AttnShape, DType, HostTensor, IndexMeta, Pattern};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_minference"))
}

fn write_qkv(dir: &Path, name: &str, tensors: &[(&str, HostTensor)]) -> PathBuf {
    let mut f = StFile::default();
    for (n, t) in tensors {
        f.put_float(n, t.clone());
    }
    let p = dir.join(name);
    f.write(&p).unwrap();
    p
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

/// A failing command: non-zero exit, one `error:` line containing `want`, no panic.
fn assert_clear_error(out: &Output, want: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert!(!err.contains("panicked"), "panicked: {err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line in {err}"));
    assert!(
        line.contains(want),
        "error line `{line}` does not mention `{want}`"
    );
}

#[test]
fn run_matches_independent_float64_for_every_pattern() {
    let dir = tempfile::tempdir().unwrap();
    let (b, hq, hkv, n, d) = (2, 4, 2, 333, 64);
    let (q, k, v) = random_qkv(b, hq, hkv, n, d, DType::F32, 4242).unwrap();
    let input = write_qkv(
        dir.path(),
        "in.safetensors",
        &[("q", q.clone()), ("k", k.clone()), ("v", v.clone())],
    );
    let shape = AttnShape::new(b, hq, hkv, n, d).unwrap();
    let (qf, kf, vf) = (q.to_f64(), k.to_f64(), v.to_f64());
    for spec in [
        "dense",
        "a-shape:7,50",
        "vertical-slash:40,90",
        "block-sparse:3",
    ] {
        let output = dir.path().join("out.safetensors");
        let o = run(&[
            "run",
            "--input",
            input.to_str().unwrap(),
            "--pattern",
            spec,
            "--backend",
            "cpu",
            "--output",
            output.to_str().unwrap(),
            "--save-index",
        ]);
        assert!(
            o.status.success(),
            "{spec}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let f = StFile::read(&output).unwrap();
        let got = f.float("o").unwrap();
        assert_eq!(got.dtype(), DType::F32);
        assert_eq!(got.dims, vec![b, hq, n, d]);
        let got = got.to_f64();
        let (mut num, mut den) = (0.0, 0.0);
        for bi in 0..b {
            for h in 0..hq {
                let qo = shape.q_offset(bi, h);
                let ko = shape.kv_offset(bi, h);
                let m = independent::mask(spec, &qf[qo..qo + n * d], &kf[ko..ko + n * d], n, d);
                let want = independent::attend(
                    &m,
                    &qf[qo..qo + n * d],
                    &kf[ko..ko + n * d],
                    &vf[ko..ko + n * d],
                    n,
                    d,
                );
                for (g, w) in got[qo..qo + n * d].iter().zip(&want) {
                    num += (g - w) * (g - w);
                    den += w * w;
                }
            }
        }
        let rel = (num / den).sqrt();
        assert!(
            rel < 1e-4,
            "{spec}: relative error {rel:.3e} against the independent implementation"
        );
        let p: Pattern = spec.parse().unwrap();
        if p.uses_index() {
            let ix = get_index(&f, IndexMeta::new(shape, &vec![p; hq]).unwrap()).unwrap();
            assert_eq!(
                ix.reconverted().unwrap(),
                ix,
                "{spec}: saved index is not the conversion of its saved selections"
            );
            assert!(ix.block_count.iter().all(|&c| c > 0));
        } else {
            assert!(f.i32("block_count").is_err(), "{spec}: no index expected");
        }
    }
}

#[test]
fn run_reads_minference_config_and_keeps_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let (q, k, v) = random_qkv(1, 4, 2, 150, 64, DType::BF16, 5).unwrap();
    let input = write_qkv(
        dir.path(),
        "in.safetensors",
        &[("q", q), ("k", k), ("v", v)],
    );
    let cfg = dir.path().join("cfg.json");
    std::fs::write(&cfg, r#"[{"0": ["stream_llm", 4, 32, 0.9]}, {"0": ["vertical_and_slash", 40, 60, 0.5], "1": ["block_sparse", 2, 0, 0.7], "3": ["stream_llm", 2, 16, 0.1]}]"#).unwrap();
    let output = dir.path().join("o.safetensors");
    let o = run(&[
        "run",
        "--input",
        input.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
        "--layer",
        "1",
        "--backend",
        "cpu",
        "--output",
        output.to_str().unwrap(),
        "--save-index",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let f = StFile::read(&output).unwrap();
    assert_eq!(f.float("o").unwrap().dtype(), DType::BF16);
    // Head 2 is missing from the config: MInference's default vertical-slash 1000/6096.
    assert_eq!(
        f.metadata["patterns"],
        "vertical-slash:40,60;block-sparse:2;vertical-slash:1000,6096;a-shape:2,16"
    );
}

#[test]
fn auto_backend_says_which_it_used() {
    let dir = tempfile::tempdir().unwrap();
    let (q, k, v) = random_qkv(1, 2, 1, 70, 64, DType::F32, 9).unwrap();
    let input = write_qkv(
        dir.path(),
        "in.safetensors",
        &[("q", q), ("k", k), ("v", v)],
    );
    let output = dir.path().join("o.safetensors");
    let o = run(&[
        "run",
        "--input",
        input.to_str().unwrap(),
        "--pattern",
        "dense",
        "--backend",
        "auto",
        "--output",
        output.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("backend: "),
        "auto must say which backend it used"
    );
}

#[test]
fn bad_inputs_get_one_clear_error_and_no_output_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("out.safetensors");
    let (q, k, v) = random_qkv(1, 2, 1, 64, 64, DType::F32, 1).unwrap();
    let good = write_qkv(
        d,
        "good.safetensors",
        &[("q", q.clone()), ("k", k.clone()), ("v", v.clone())],
    );
    let missing = write_qkv(
        d,
        "missing.safetensors",
        &[("q", q.clone()), ("k", k.clone())],
    );
    let rank3 = HostTensor::from_f64(&[2, 64, 64], &q.to_f64()[..2 * 64 * 64], DType::F32).unwrap();
    let bad_rank = write_qkv(
        d,
        "rank.safetensors",
        &[("q", rank3), ("k", k.clone()), ("v", v.clone())],
    );
    let (q3, k3, v3) = random_qkv(1, 3, 2, 64, 64, DType::F32, 1).unwrap();
    let bad_gqa = write_qkv(d, "gqa.safetensors", &[("q", q3), ("k", k3), ("v", v3)]);
    let (qs, _, _) = random_qkv(1, 2, 1, 32, 64, DType::F32, 1).unwrap();
    let bad_n = write_qkv(
        d,
        "n.safetensors",
        &[("q", qs), ("k", k.clone()), ("v", v.clone())],
    );
    let empty = HostTensor::from_f64(&[1, 2, 0, 64], &[], DType::F32).unwrap();
    let empty_kv = HostTensor::from_f64(&[1, 1, 0, 64], &[], DType::F32).unwrap();
    let bad_empty = write_qkv(
        d,
        "empty.safetensors",
        &[("q", empty), ("k", empty_kv.clone()), ("v", empty_kv)],
    );
    let mut qnan = q.to_f64();
    qnan[77] = f64::NAN;
    let nan = write_qkv(
        d,
        "nan.safetensors",
        &[
            (
                "q",
                HostTensor::from_f64(&q.dims, &qnan, DType::F32).unwrap(),
            ),
            ("k", k.clone()),
            ("v", v.clone()),
        ],
    );
    let garbage = d.join("garbage.safetensors");
    std::fs::write(&garbage, b"this is not a safetensors file").unwrap();
    let cfg = d.join("bad.json");
    std::fs::write(&cfg, r#"[{"0": ["mystery_pattern", 1, 2, 0.0]}]"#).unwrap();
    let cfg_json = d.join("notjson.json");
    std::fs::write(&cfg_json, "{ not json").unwrap();
    let s = |p: &PathBuf| p.to_str().unwrap().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![s(&missing), "--pattern".into(), "dense".into()],
            "missing tensor `v`",
        ),
        (
            vec![s(&bad_rank), "--pattern".into(), "dense".into()],
            "rank",
        ),
        (
            vec![s(&bad_gqa), "--pattern".into(), "dense".into()],
            "not a multiple",
        ),
        (
            vec![s(&bad_n), "--pattern".into(), "dense".into()],
            "do not match",
        ),
        (
            vec![s(&bad_empty), "--pattern".into(), "dense".into()],
            "empty",
        ),
        (
            vec![s(&good), "--pattern".into(), "diagonal:3".into()],
            "unknown pattern",
        ),
        (
            vec![s(&good), "--pattern".into(), "block-sparse:0".into()],
            "top_k",
        ),
        (
            vec![s(&good), "--pattern".into(), "a-shape:4".into()],
            "takes 2 number",
        ),
        (
            vec![s(&garbage), "--pattern".into(), "dense".into()],
            "not a safetensors file",
        ),
        (
            vec![
                s(&good),
                "--config".into(),
                s(&cfg),
                "--layer".into(),
                "0".into(),
            ],
            "unknown type `mystery_pattern`",
        ),
        (
            vec![
                s(&good),
                "--config".into(),
                s(&cfg_json),
                "--layer".into(),
                "0".into(),
            ],
            "not JSON",
        ),
        (
            vec![
                s(&good),
                "--config".into(),
                s(&cfg),
                "--layer".into(),
                "5".into(),
            ],
            "layer 5 requested",
        ),
        (
            vec![
                s(&nan),
                "--pattern".into(),
                "dense".into(),
                "--check-finite".into(),
            ],
            "not finite",
        ),
        (
            vec![
                s(&good),
                "--pattern".into(),
                "dense".into(),
                "--backend".into(),
                "tpu".into(),
            ],
            "not one of cpu, wgpu, cuda, auto",
        ),
        (
            vec![
                s(&d.join("nope.safetensors")),
                "--pattern".into(),
                "dense".into(),
            ],
            "nope.safetensors",
        ),
    ];
    for (args, want) in cases {
        let _ = std::fs::remove_file(&out);
        let mut full = vec!["run".to_string(), "--input".into()];
        full.extend(args.iter().cloned());
        if !full.contains(&"--backend".to_string()) {
            full.extend(["--backend".into(), "cpu".into()]);
        }
        full.extend(["--output".into(), s(&out)]);
        let o = bin().args(&full).output().unwrap();
        assert_clear_error(&o, want);
        assert!(!out.exists(), "{args:?}: an output file was left behind");
        assert!(
            !d.join("out.safetensors.partial").exists(),
            "partial file left"
        );
    }
    // Writing into a folder that does not exist: clear error, nothing left.
    let o = run(&[
        "run",
        "--input",
        &s(&good),
        "--pattern",
        "dense",
        "--backend",
        "cpu",
        "--output",
        &s(&d.join("no/such/dir/o.safetensors")),
    ]);
    assert_clear_error(&o, "no/such/dir");
}

#[test]
fn check_passes_all_vectors_on_cpu() {
    let o = bin()
        .args([
            "check",
            "--backend",
            "cpu",
            "--vectors",
            common::vectors_dir().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        text.lines().filter(|l| l.starts_with("PASS")).count() >= 20,
        "{text}"
    );
    assert!(text.contains(" passed, 0 failed"), "{text}");
}

#[test]
fn demo_prints_its_table() {
    let o = bin()
        .args([
            "demo",
            "--backend",
            "cpu",
            "--seq-len",
            "512",
            "--heads",
            "2",
            "--head-dim",
            "64",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for p in [
        "dense",
        "a-shape",
        "vertical-slash",
        "block-sparse",
        "density",
        "speed-up",
        "rel err",
    ] {
        assert!(text.contains(p), "demo output lacks `{p}`:\n{text}");
    }
}

#[cfg(feature = "wgpu")]
#[test]
fn a_bad_wgpu_variant_name_is_a_clear_error() {
    // Parsed before any adapter is opened: the same error with or without a GPU.
    let out = bin()
        .args(["check", "--backend", "wgpu"])
        .env(minference::wgpu_backend::VARIANT_ENV, "fastest")
        .output()
        .expect("the binary runs");
    assert_clear_error(&out, "MINFERENCE_WGPU_VARIANT");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("fastest"), "{err}");
}
