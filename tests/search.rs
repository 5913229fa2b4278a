//! Pattern search and evaluation: the kernel cost model against the index, the scores
//! against the float64 reference, recognition of the structured generator's heads, and the
//! `gen-capture` / `search` / `eval` / `run --config` round trip.

use minference::generate::{random_qkv, structured_qkv, HeadKind};
use minference::index::build_index;
use minference::io::StFile;
use minference::search::{
    candidates, choose, index_head_pairs, sample_rows, score_patterns, search, Capture, HeadData,
    HeadScore, SearchOptions,
};
use minference::{reference, AttnShape, DType, LayerConfig, Pattern};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_minference"))
}

fn ok(out: Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "command failed: {err}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn head_of(shape: &AttnShape, q: &[f64], k: &[f64], v: &[f64], b: usize, h: usize) -> HeadData {
    let (n, d) = (shape.seq_len, shape.head_dim);
    let (qo, kvo) = (shape.q_offset(b, h), shape.kv_offset(b, h));
    HeadData {
        n,
        d,
        q: q[qo..qo + n * d].to_vec(),
        k: k[kvo..kvo + n * d].to_vec(),
        v: v[kvo..kvo + n * d].to_vec(),
    }
}

#[test]
fn cost_model_counts_exactly_the_keys_the_kernel_attends() {
    for (n, seed) in [(1, 1), (63, 2), (65, 3), (200, 4), (777, 5)] {
        let shape = AttnShape::new(2, 4, 2, n, 64).unwrap();
        let (q, k, _) = structured_qkv(
            2,
            2,
            n,
            64,
            &HeadKind::CYCLE[..2].repeat(2),
            DType::F32,
            seed,
        )
        .unwrap();
        let (q, k) = (q.to_f64(), k.to_f64());
        let patterns: Vec<Pattern> = [
            "vertical-slash:40,60",
            "block-sparse:3",
            "vertical-slash:5,500",
            "block-sparse:100",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let ix = build_index(&shape, &q, &k, &patterns).unwrap();
        for b in 0..2 {
            for h in 0..4 {
                let want: u64 = (0..n).map(|i| ix.keys_of_row(b, h, i).len() as u64).sum();
                assert_eq!(index_head_pairs(&ix, b, h), want, "n={n} b={b} h={h}");
            }
        }
    }
}

#[test]
fn candidates_cost_about_the_budget() {
    let n = 2048;
    let kinds = [HeadKind::VerticalSlash];
    let (q, k, v) = structured_qkv(1, 1, n, 64, &kinds, DType::F32, 9).unwrap();
    let shape = AttnShape::new(1, 1, 1, n, 64).unwrap();
    let head = head_of(&shape, &q.to_f64(), &k.to_f64(), &v.to_f64(), 0, 0);
    for budget in [0.15, 0.3] {
        let cands = candidates(&head, budget);
        assert!(cands.len() >= 3, "{cands:?}");
        let scores = score_patterns(std::slice::from_ref(&head), &cands, &[n - 1]).unwrap();
        for s in &scores {
            println!("budget {budget}: {} density {:.4}", s.pattern, s.density);
            // Within the budget, and short of it by at most one 64-key block per row
            // (block-sparse's step; 128 / N of the causal pairs).
            let step = 2.0 * 64.0 / n as f64;
            assert!(
                s.density <= budget + 1e-9 && s.density >= budget - step,
                "{} has density {} at budget {budget}",
                s.pattern,
                s.density
            );
        }
    }
}

#[test]
fn sample_rows_are_the_last_rows_plus_a_stride() {
    assert_eq!(sample_rows(100, 0), (0..100).collect::<Vec<_>>());
    assert_eq!(sample_rows(100, 500), (0..100).collect::<Vec<_>>());
    let r = sample_rows(10_000, 512);
    assert_eq!(r.len(), 512);
    assert!(r.windows(2).all(|w| w[0] < w[1]));
    assert!(((10_000 - 64)..10_000).all(|i| r.contains(&i)));
    assert!(r[0] < 20, "the stride starts near row 0: {}", r[0]);
}

#[test]
fn scores_match_the_float64_reference() {
    // All rows scored: recall 1 and no error for dense; the output error equals the
    // reference layer's error against dense attention.
    let (b, hq, hkv, n, d) = (2, 2, 1, 300, 64);
    let (q, k, v) = random_qkv(b, hq, hkv, n, d, DType::F32, 11).unwrap();
    let (q, k, v) = (q.to_f64(), k.to_f64(), v.to_f64());
    let shape = AttnShape::new(b, hq, hkv, n, d).unwrap();
    let dense = reference::dense(&shape, &q, &k, &v).unwrap();
    let patterns: Vec<Pattern> = ["a-shape:16,64", "vertical-slash:40,60", "block-sparse:2"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let rows: Vec<usize> = (0..n).collect();
    for h in 0..hq {
        let batches: Vec<HeadData> = (0..b)
            .map(|bi| head_of(&shape, &q, &k, &v, bi, h))
            .collect();
        let s = score_patterns(&batches, &[Pattern::Dense], &rows).unwrap();
        assert!(
            (s[0].recall - 1.0).abs() < 1e-12 && s[0].rel_err < 1e-12,
            "{s:?}"
        );
        assert!((s[0].density - 1.0).abs() < 1e-12);
        for &p in &patterns {
            let (out, _) = reference::layer(&shape, &q, &k, &v, &[p; 2]).unwrap();
            let (mut got, mut want) = (Vec::new(), Vec::new());
            for bi in 0..b {
                let o = shape.q_offset(bi, h);
                got.extend_from_slice(&out[o..o + n * d]);
                want.extend_from_slice(&dense[o..o + n * d]);
            }
            let err = reference::rel_error(&got, &want);
            let s = score_patterns(&batches, &[p], &rows).unwrap();
            assert!(
                (s[0].rel_err - err).abs() < 1e-9 * (1.0 + err),
                "{p}: rel err {} want {err}",
                s[0].rel_err
            );
            assert!(
                s[0].recall > 0.0 && s[0].recall < 1.0,
                "{p}: recall {}",
                s[0].recall
            );
        }
    }
}

#[test]
fn structured_heads_are_recognised() {
    let kinds: Vec<HeadKind> = (0..6).map(|h| HeadKind::CYCLE[h % 3]).collect();
    let (q, k, v) = structured_qkv(1, 3, 2048, 64, &kinds, DType::F16, 2024).unwrap();
    let capture = Capture::from_tensors(vec![(q, k, v)]).unwrap();
    // At N = 2048 the default budget (0.1) is below the cheapest vertical-slash (its 30
    // forced columns and 100 forced offsets); 0.15 leaves every family room.
    let options = SearchOptions {
        budget: 0.15,
        ..SearchOptions::default()
    };
    let report = search(&capture, &options, &|_, _| {}).unwrap();
    println!("{}", report.table());
    for (h, r) in report.layers[0].iter().enumerate() {
        let want = minference::search::kind_family(kinds[h]);
        assert_eq!(
            r.chosen.pattern.family(),
            want,
            "head {h} generated {want}, chose {} (recall {:.4})",
            r.chosen.pattern,
            r.chosen.recall
        );
        assert!(
            r.chosen.recall > 0.5,
            "head {h}: recall {}",
            r.chosen.recall
        );
    }
}

#[test]
fn search_eval_and_run_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("cap.safetensors");
    let cfg = dir.path().join("cfg.json");
    let ev = dir.path().join("eval.json");
    let out = dir.path().join("o.safetensors");
    let p = |x: &std::path::Path| x.to_str().unwrap().to_string();
    ok(bin()
        .args([
            "gen-capture",
            "--heads",
            "4",
            "--seq-len",
            "512",
            "--head-dim",
            "64",
        ])
        .args(["--layers", "2", "--dtype", "f32", "--output", &p(&cap)])
        .output()
        .unwrap());
    let table = ok(bin()
        .args([
            "search",
            "--input",
            &p(&cap),
            "--output",
            &p(&cfg),
            "--budget",
            "0.25",
        ])
        .output()
        .unwrap());
    assert!(
        table.contains("chosen") && table.contains("a-shape"),
        "{table}"
    );
    let text = std::fs::read_to_string(&cfg).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        json.as_array().unwrap().len(),
        2,
        "one entry per layer: {text}"
    );
    let file = StFile::read(&cap).unwrap();
    assert_eq!(file.float("q").unwrap().dims, vec![2, 1, 4, 512, 64]);
    // eval scores every row at N = 512 (the default sample is larger), as search did:
    // its recall is the score search wrote.
    ok(bin()
        .args([
            "eval",
            "--input",
            &p(&cap),
            "--config",
            &p(&cfg),
            "--json",
            &p(&ev),
        ])
        .output()
        .unwrap());
    let evj: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ev).unwrap()).unwrap();
    for l in 0..2 {
        let cfg_l = LayerConfig::from_minference_json(&text, l, 4, "cfg").unwrap();
        for h in 0..4 {
            let e = &evj["layers"][l]["heads"][h];
            assert_eq!(e["pattern"], cfg_l.heads[h].to_string());
            let score = json[l][h.to_string()][3].as_f64().unwrap();
            let recall = e["recall"].as_f64().unwrap();
            assert!(
                (score - recall).abs() < 1e-12,
                "layer {l} head {h}: {score} vs {recall}"
            );
        }
    }
    // One file per layer gives the same search as the rank-5 capture.
    let q = file.float("q").unwrap();
    let (k, v) = (file.float("k").unwrap(), file.float("v").unwrap());
    let layer = |t: &minference::HostTensor, l: usize| {
        let per: usize = t.dims[1..].iter().product();
        let x = t.to_f64();
        minference::HostTensor::from_f64(&t.dims[1..], &x[l * per..(l + 1) * per], DType::F32)
            .unwrap()
    };
    let mut paths = Vec::new();
    for l in 0..2 {
        let mut f = StFile::default();
        f.put_float("q", layer(q, l));
        f.put_float("k", layer(k, l));
        f.put_float("v", layer(v, l));
        let path = dir.path().join(format!("layer{l}.safetensors"));
        f.write(&path).unwrap();
        paths.push(path);
    }
    let cfg2 = dir.path().join("cfg2.json");
    ok(bin()
        .args(["search", "--input", &p(&paths[0]), "--input", &p(&paths[1])])
        .args(["--output", &p(&cfg2), "--budget", "0.25"])
        .output()
        .unwrap());
    assert_eq!(std::fs::read_to_string(&cfg2).unwrap(), text);
    // run --config reads the config back: layer 1 matches the float64 reference layer.
    ok(bin()
        .args([
            "run",
            "--input",
            &p(&paths[1]),
            "--config",
            &p(&cfg),
            "--layer",
            "1",
        ])
        .args(["--backend", "cpu", "--output", &p(&out)])
        .output()
        .unwrap());
    let o = StFile::read(&out).unwrap().float("o").unwrap().to_f64();
    let cfg_1 = LayerConfig::from_minference_json(&text, 1, 4, "cfg").unwrap();
    let (q1, k1, v1) = (
        layer(q, 1).to_f64(),
        layer(k, 1).to_f64(),
        layer(v, 1).to_f64(),
    );
    let shape = AttnShape::new(1, 4, 2, 512, 64).unwrap();
    let (want, _) = reference::layer(&shape, &q1, &k1, &v1, &cfg_1.heads).unwrap();
    let err = reference::rel_error(&o, &want);
    assert!(
        err < 1e-5,
        "run --config against the reference: rel err {err}"
    );
}

#[test]
fn bad_options_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("cap.safetensors");
    let p = cap.to_str().unwrap();
    ok(bin()
        .args([
            "gen-capture",
            "--heads",
            "2",
            "--seq-len",
            "64",
            "--head-dim",
            "32",
        ])
        .args(["--output", p])
        .output()
        .unwrap());
    let cfg = dir.path().join("c.json");
    for (args, want) in [
        (vec!["--budget", "0"], "--budget"),
        (vec!["--budget", "1.5"], "--budget"),
        (vec!["--tie=-1"], "--tie"),
    ] {
        let out = bin()
            .args(["search", "--input", p, "--output", cfg.to_str().unwrap()])
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        assert!(!cfg.exists(), "no config written on error");
    }
    let out = bin()
        .args(["eval", "--input", p, "--config", "/nonexistent.json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn choice_prefers_cheaper_index_within_tie_and_respects_the_budget() {
    let sc = |p: &str, density: f64, recall: f64| HeadScore {
        pattern: p.parse().unwrap(),
        density,
        recall,
        rel_err: 0.0,
        err_sq: 0.0,
        norm_sq: 1.0,
    };
    let scores = [
        sc("a-shape:10,40", 0.1, 0.950),
        sc("vertical-slash:30,50", 0.1, 0.955),
        sc("block-sparse:3", 0.1, 0.940),
    ];
    let pick = |tie: f64, budget: f64| choose(&scores, tie, budget).unwrap().pattern.to_string();
    assert_eq!(pick(0.0, 0.1), "vertical-slash:30,50");
    assert_eq!(pick(0.01, 0.1), "a-shape:10,40");
    assert_eq!(pick(0.02, 0.1), "a-shape:10,40");
    let over = [
        sc("vertical-slash:30,50", 0.5, 1.0),
        sc("a-shape:1,4", 0.1, 0.3),
    ];
    assert_eq!(
        choose(&over, 0.0, 0.1).unwrap().pattern.to_string(),
        "a-shape:1,4"
    );
    assert_eq!(
        choose(&over, 0.0, 0.5).unwrap().pattern.to_string(),
        "vertical-slash:30,50"
    );
    assert!(choose(&[], 0.0, 0.1).is_none());
}
