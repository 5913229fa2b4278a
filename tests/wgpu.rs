//! The generic backend suite on the wgpu backend.
//!
//! Without an adapter the tests print a loud SKIPPED line and pass, unless
//! `MINFERENCE_REQUIRE_WGPU=1` (CI, with Mesa lavapipe installed): then they fail.
mod common;

use minference::wgpu_backend::{Variant, WgpuBackend};
use minference::Backend;
use std::io::Write;
use std::sync::{Arc, Mutex};

/// The backends this test process has opened, one per forced variant (`None`: the default),
/// shared by every test (the backend is `Sync`; tests run on several threads). One Vulkan
/// device per test ran the NVIDIA driver out of resources after about 40 devices in one
/// process on the H100 ("vulkan drivers/libraries could not be loaded" in the last tests of
/// the suite, a segfault with two test threads).
static OPENED: Mutex<Vec<(Option<Variant>, Arc<WgpuBackend>)>> = Mutex::new(Vec::new());

/// The shared backend of `variant` (`None`: the default one), opened on first use.
fn shared(variant: Option<Variant>) -> minference::Result<Arc<WgpuBackend>> {
    let mut opened = OPENED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, b)) = opened.iter().find(|(v, _)| *v == variant) {
        return Ok(b.clone());
    }
    let b = Arc::new(match variant {
        None => WgpuBackend::new()?,
        Some(v) => WgpuBackend::with_variant(v)?,
    });
    opened.push((variant, b.clone()));
    Ok(b)
}

/// The backend, or `None` (after saying why) when no adapter is found and none is required.
fn wgpu() -> Option<Arc<WgpuBackend>> {
    match shared(None) {
        Ok(b) => Some(b),
        Err(e) => {
            if std::env::var("MINFERENCE_REQUIRE_WGPU").as_deref() == Ok("1") {
                panic!("MINFERENCE_REQUIRE_WGPU=1 but the wgpu backend did not open: {e}");
            }
            eprintln!("\n**********\nSKIPPED: no wgpu adapter: {e}\n**********\n");
            None
        }
    }
}

macro_rules! or_skip {
    () => {
        match wgpu() {
            Some(b) => b,
            None => return,
        }
    };
}

backend_suite!(or_skip!());

/// The backend forced to `variant`, or `None` (after a loud SKIPPED line) when there is no
/// adapter or the adapter cannot run that variant. `MINFERENCE_REQUIRE_WGPU_VARIANTS`
/// (comma-separated names, e.g. `rowwise,tiled,coop` on a GPU with cooperative matrices) turns
/// those skips into failures.
pub fn variant(v: Variant) -> Option<Arc<WgpuBackend>> {
    wgpu()?;
    match shared(Some(v)) {
        Ok(b) => Some(b),
        Err(e) => {
            let required = std::env::var("MINFERENCE_REQUIRE_WGPU_VARIANTS").unwrap_or_default();
            if required.split(',').any(|s| s.trim() == v.name()) {
                panic!("MINFERENCE_REQUIRE_WGPU_VARIANTS names `{v}` but it does not open: {e}");
            }
            let _ = writeln!(
                std::io::stderr(),
                "\n**********\nSKIPPED: wgpu variant `{v}`: {e}\n**********\n"
            );
            None
        }
    }
}

/// Instantiate the generic suite in a module for one forced [`Variant`].
macro_rules! variant_suite {
    ($module:ident, $variant:expr) => {
        mod $module {
            use super::common;
            macro_rules! variant_or_skip {
                () => {
                    match super::variant($variant) {
                        Some(b) => b,
                        None => return,
                    }
                };
            }
            crate::backend_suite!(variant_or_skip!());
        }
    };
}

variant_suite!(rowwise, super::Variant::Rowwise);
variant_suite!(tiled, super::Variant::Tiled);

#[test]
fn the_default_variant_is_the_fastest_available_one() {
    if std::env::var(minference::wgpu_backend::VARIANT_ENV).is_ok() {
        return; // forced by the environment
    }
    let Some(b) = wgpu() else { return };
    let available = b.available_variants();
    assert!(available.contains(&Variant::Rowwise), "{available:?}");
    // Variant::ALL runs from the slowest to the fastest: coop where the adapter has
    // cooperative matrices, else tiled, else rowwise.
    assert_eq!(Some(&b.variant()), available.last(), "{available:?}");
    assert!(
        b.info().notes.contains(&format!("variant {}", b.variant())),
        "{}",
        b.info().notes
    );
}

#[test]
fn info_names_the_adapter() {
    let b = or_skip!();
    let info = b.info();
    eprintln!(
        "wgpu: {} | {:?} | D {:?} | {}",
        info.device, info.dtypes, info.head_dims, info.notes
    );
    assert_eq!(info.name, "wgpu");
    assert!(info.dtypes.contains(&minference::DType::F32));
}

#[test]
fn buffers_over_the_binding_limit_are_errors() {
    let b = or_skip!();
    // 2^36 bytes: beyond any adapter's max_storage_buffer_binding_size; checked before allocating.
    let e = b
        .empty(&[1, 1, 1 << 22, 1 << 12], minference::DType::F32)
        .expect_err("a 64 GiB tensor must be refused");
    let msg = e.to_string();
    assert!(
        matches!(e, minference::Error::Unsupported { .. })
            && msg.contains("max_storage_buffer_binding_size"),
        "{msg}"
    );
}

/// The WGSL index pipeline at lengths the shared suite does not reach: many key tiles
/// (a partial last one), slash budgets far beyond the 100 forced offsets (the diagonal sums
/// split over two tiles), offset lists longer than one staged chunk of the conversion
/// (2048), a column list too long to stage (over 1536: read from storage), top-k lists
/// longer than one compaction pass and lists short enough to be staged (the exact-tie case
/// at N = 2000), GQA, batch 2, mixed kinds. Selections against float64
/// with a tolerance 50x tighter than the suite's, and the kernel index exactly the
/// conversion of its own selections.
#[test]
fn index_at_longer_lengths_matches_the_reference() {
    use minference::generate::{random_qkv, structured_qkv, HeadKind};
    use minference::index::vertical_slash_scores;
    use minference::pattern::{FORCED_COLUMNS, FORCED_OFFSETS};
    use minference::vectors::{check_index_against_reference, same_top_k};
    use minference::{AttnShape, DType, Pattern};
    let b = or_skip!();
    let vs = |vertical, slash| Pattern::VerticalSlash { vertical, slash };
    // Inputs: random, structured, or random with q = 0 (every score equal: the column sums
    // of the keys all rows see tie exactly, in float64 and on the GPU alike, so the top-k's
    // tie rule (smaller index) decides, over several compaction steps).
    let cases = [
        (
            AttnShape::new(2, 2, 1, 4500, 64).unwrap(),
            DType::F16,
            vec![vs(300, 2500); 2],
            "random",
        ),
        (
            AttnShape::new(1, 3, 3, 2113, 128).unwrap(),
            DType::F32,
            vec![
                vs(1600, 700),
                Pattern::BlockSparse { top_k: 5 },
                vs(40, 4000),
            ],
            "structured",
        ),
        (
            AttnShape::new(1, 1, 1, 4500, 64).unwrap(),
            DType::F32,
            vec![vs(3000, 3000)],
            "zero q",
        ),
        // The same on lists short enough for the staged top-k (up to 2048 keys): one
        // compaction step of 32 keys per invocation.
        (
            AttnShape::new(1, 1, 1, 2000, 64).unwrap(),
            DType::F32,
            vec![vs(1500, 1900)],
            "zero q",
        ),
        // Every column and offset: the conversion's longest walks (about 16000 loop
        // iterations per invocation; llvmpipe's limit is 65535).
        (
            AttnShape::new(1, 1, 1, 8000, 64).unwrap(),
            DType::F16,
            vec![vs(8000, 8000)],
            "random",
        ),
    ];
    for (seed, (shape, dtype, patterns, inputs)) in cases.into_iter().enumerate() {
        let (bs, hq, hkv, n, d) = (
            shape.batch,
            shape.q_heads,
            shape.kv_heads,
            shape.seq_len,
            shape.head_dim,
        );
        let (q, k, v) = match inputs {
            "structured" => {
                let kinds: Vec<HeadKind> = (0..hq).map(|h| HeadKind::CYCLE[h % 3]).collect();
                structured_qkv(bs, hkv, n, d, &kinds, dtype, seed as u64).unwrap()
            }
            _ => random_qkv(bs, hq, hkv, n, d, dtype, seed as u64).unwrap(),
        };
        let q = if inputs == "zero q" {
            minference::HostTensor::filled(&shape.q_dims(), 0.0, dtype)
        } else {
            q
        };
        let ix = b
            .build_index(&b.upload(&q).unwrap(), &b.upload(&k).unwrap(), &patterns)
            .unwrap();
        let got = b.download_index(&ix).unwrap();
        let what = format!("{shape:?} {dtype} {patterns:?}");
        check_index_against_reference(&shape, &q, &k, &v, &patterns, &got)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let (qf, kf) = (q.to_f64(), k.to_f64());
        let m = &got.meta;
        for bh in 0..bs * hq {
            let (bi, h) = (bh / hq, bh % hq);
            let Pattern::VerticalSlash { vertical, slash } = patterns[h] else {
                continue;
            };
            let (mut vsc, mut ssc) = vertical_slash_scores(
                &qf[shape.q_offset(bi, h)..shape.q_offset(bi, h) + n * d],
                &kf[shape.kv_offset(bi, h)..shape.kv_offset(bi, h) + n * d],
                n,
                d,
                shape.scale(),
            );
            vsc.iter_mut()
                .take(FORCED_COLUMNS)
                .for_each(|x| *x = f64::INFINITY);
            ssc.iter_mut()
                .take(FORCED_OFFSETS)
                .for_each(|x| *x = f64::INFINITY);
            let (nv, ns) = Pattern::vertical_slash_budgets(vertical, slash, n);
            let (wv, ws) = (m.nv, m.ns);
            for (name, got_sel, scores, budget) in [
                (
                    "vertical_index",
                    &got.vertical_index[bh * wv..(bh + 1) * wv],
                    &vsc,
                    nv,
                ),
                (
                    "slash_index",
                    &got.slash_index[bh * ws..(bh + 1) * ws],
                    &ssc,
                    ns,
                ),
            ] {
                let want_sel = minference::index::select_top(scores, budget);
                if inputs == "zero q" && name == "vertical_index" {
                    let got_valid: Vec<i32> = got_sel.iter().copied().filter(|&x| x >= 0).collect();
                    assert_eq!(
                        got_valid, want_sel,
                        "{what}: exact ties must go to the smaller index"
                    );
                }
                assert!(
                    same_top_k(got_sel, &want_sel, scores, 2e-5),
                    "{what}: b{bi} h{h} {name}: {got_sel:?} != {want_sel:?} beyond 2e-5 near-ties"
                );
            }
        }
    }
}

/// The block-sparse index (pooling, tiled scores, staged top-k) at sizes the shared suite
/// does not reach: R over one 64 x 64 score tile and not a multiple of it, a partial last
/// row block, batch 2, GQA 2 and 4 (k pooled once per kv head, one kv head serving no
/// block-sparse head), both head dims and storage dtypes, top_k up to R and beyond, mixed
/// with vertical-slash heads. Selections against float64 (tie-tolerant), and, where the keys
/// repeat every 3 blocks (so every row block's scores take 3 values, each many times, with
/// exact ties in float64 and on the GPU alike), exactly the reference's: the best blocks, ties
/// to the smaller index.
#[test]
fn block_sparse_index_matches_the_reference() {
    use minference::generate::random_qkv;
    use minference::vectors::check_index_against_reference;
    use minference::{AttnShape, DType, HostTensor, Pattern};
    let b = or_skip!();
    let bs = |top_k| Pattern::BlockSparse { top_k };
    let vs = Pattern::VerticalSlash {
        vertical: 40,
        slash: 60,
    };
    let cases = [
        // R = 150: three tile rows, the last partial; the last row block has 47 rows.
        (
            AttnShape::new(2, 4, 2, 150 * 64 - 17, 64).unwrap(),
            DType::F16,
            vec![bs(100), bs(3), Pattern::Dense, bs(40)],
            false,
        ),
        // R = 70 exactly (full last block), GQA 4, D = 128; kv head 0 serves all.
        (
            AttnShape::new(1, 4, 1, 70 * 64, 128).unwrap(),
            DType::F32,
            vec![bs(100), vs, bs(10), bs(69)],
            false,
        ),
        // Kv head 1 serves no block-sparse head (its pooling is skipped).
        (
            AttnShape::new(1, 4, 2, 65 * 64 + 1, 128).unwrap(),
            DType::F16,
            vec![bs(20), bs(200), Pattern::Dense, vs],
            false,
        ),
        // Keys repeating every 3 blocks: exact ties across tiles and within lists.
        (
            AttnShape::new(1, 2, 1, 130 * 64 + 5, 64).unwrap(),
            DType::F32,
            vec![bs(100), bs(40)],
            true,
        ),
    ];
    for (seed, (shape, dtype, patterns, periodic)) in cases.into_iter().enumerate() {
        let (bsz, hq, hkv, n, d) = (
            shape.batch,
            shape.q_heads,
            shape.kv_heads,
            shape.seq_len,
            shape.head_dim,
        );
        let (q, k, v) = random_qkv(bsz, hq, hkv, n, d, dtype, 40 + seed as u64).unwrap();
        let k = if periodic {
            // Row i of every kv head takes the values of row i mod (3 * 64).
            let mut kf = k.to_f32();
            for head in kf.chunks_mut(n * d) {
                for i in 3 * 64..n {
                    let src = i % (3 * 64);
                    head.copy_within(src * d..(src + 1) * d, i * d);
                }
            }
            HostTensor::from_f32(&shape.kv_dims(), &kf, dtype).unwrap()
        } else {
            k
        };
        let ix = b
            .build_index(&b.upload(&q).unwrap(), &b.upload(&k).unwrap(), &patterns)
            .unwrap();
        let got = b.download_index(&ix).unwrap();
        let what = format!("{shape:?} {dtype} {patterns:?}");
        check_index_against_reference(&shape, &q, &k, &v, &patterns, &got)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        // Every block-sparse row block has min(top_k, m + 1) blocks, the diagonal last;
        // heads of another kind have all -1 rows (written on the GPU, never uploaded).
        let m = &got.meta;
        for bh in 0..bsz * hq {
            let rows_of = |sel: &[i32], width: usize| sel[bh * width..(bh + 1) * width].to_vec();
            if !matches!(patterns[bh % hq], Pattern::VerticalSlash { .. }) {
                for (name, row) in [
                    ("vertical_index", rows_of(&got.vertical_index, m.nv)),
                    ("slash_index", rows_of(&got.slash_index, m.ns)),
                ] {
                    assert!(
                        row.iter().all(|&x| x == -1),
                        "{what}: bh {bh} {name} {row:?}"
                    );
                }
            }
            let Pattern::BlockSparse { top_k } = patterns[bh % hq] else {
                let row = rows_of(&got.block_index, m.rows * m.top_k);
                assert!(
                    row.iter().all(|&x| x == -1),
                    "{what}: bh {bh} block_index {row:?}"
                );
                continue;
            };
            for row in 0..m.rows {
                let sel = &got.block_index[(bh * m.rows + row) * m.top_k..][..m.top_k];
                let valid: Vec<i32> = sel.iter().copied().filter(|&c| c >= 0).collect();
                assert_eq!(
                    valid.len(),
                    top_k.min(row + 1),
                    "{what}: bh {bh} row block {row}: {sel:?}"
                );
                assert_eq!(
                    valid.last(),
                    Some(&(row as i32)),
                    "{what}: bh {bh} row {row}"
                );
            }
        }
        if periodic {
            let want = minference::index::build_index(&shape, &q.to_f64(), &k.to_f64(), &patterns)
                .unwrap();
            for (at, (g, w)) in got.block_index.iter().zip(&want.block_index).enumerate() {
                assert_eq!(
                    g,
                    w,
                    "{what}: block_index entry {at} (bh {}, row block {}): got {:?} want {:?}",
                    at / (m.rows * m.top_k),
                    at / m.top_k % m.rows,
                    &got.block_index[at - at % m.top_k..][..m.top_k],
                    &want.block_index[at - at % m.top_k..][..m.top_k],
                );
            }
        }
    }
}

/// Timing of dense vs sparse prefill (run by hand on a GPU: `--ignored bench --nocapture`).
/// H = 8, D = 128, f16; medians after `bench::time_runs`'s warm-up, each run followed by a
/// device synchronize.
/// TFLOP/s count useful work (4 D per attended pair). `MINFERENCE_WGPU_VARIANT` picks the variant.
/// `MINFERENCE_BENCH_N` picks the lengths (comma-separated; default 4096,16384),
/// `MINFERENCE_BENCH_H` the number of heads (default 8; issue #7's target shape is H = 32).
#[test]
#[ignore]
fn bench_dense_vs_sparse() {
    use minference::{AttnShape, DType, Pattern};
    let b = or_skip!();
    eprintln!("device: {}", b.info().device);
    let ns = bench_lengths();
    let h = bench_env("MINFERENCE_BENCH_H", 8);
    let d = 128;
    for n in ns {
        let shape = AttnShape::new(1, h, h, n, d).unwrap();
        let (q, k, v) = minference::generate::random_qkv(1, h, h, n, d, DType::F16, 1).unwrap();
        let (q, k, v) = (
            b.upload(&q).unwrap(),
            b.upload(&k).unwrap(),
            b.upload(&v).unwrap(),
        );
        let mut out = b.empty(&shape.q_dims(), DType::F16).unwrap();
        let reps = if n >= 32768 { 2 } else { 5 };
        // The library's harness: warm-up for at least bench::MIN_WARMUP, then the median.
        let time = |f: &mut dyn FnMut()| -> f64 {
            minference::bench::time_runs(b.as_ref(), 1, reps, || {
                f();
                Ok(())
            })
            .unwrap()
            .median_ms
        };
        let dense = time(&mut || b.dense_attention(&q, &k, &v, &mut out).unwrap());
        let dense_tflops = 4.0 * d as f64 * shape.causal_pairs() as f64 / (dense * 1e-3) / 1e12;
        for pat in [
            Pattern::VerticalSlash {
                vertical: 1000,
                slash: 6096,
            },
            Pattern::BlockSparse { top_k: 100 },
        ] {
            let pats = vec![pat; h];
            let build = time(&mut || {
                b.build_index(&q, &k, &pats).unwrap();
            });
            let ix = b.build_index(&q, &k, &pats).unwrap();
            let sparse = time(&mut || b.sparse_attention(&q, &k, &v, &ix, &mut out).unwrap());
            // Useful work: 4 D per attended (query, key) pair.
            let pairs = minference::bench::index_pairs(&b.download_index(&ix).unwrap());
            let sparse_tflops = 4.0 * d as f64 * pairs as f64 / (sparse * 1e-3) / 1e12;
            eprintln!(
                "wgpu/f16/H={h}/N={n}: dense {dense:.2} ms ({dense_tflops:.2} TFLOP/s) | {pat}: index {build:.2} ms + sparse {sparse:.2} ms ({sparse_tflops:.2} TFLOP/s) = {:.2} ms, speedup {:.2}x",
                build + sparse,
                dense / (build + sparse)
            );
        }
    }
}

/// The sequence lengths of the by-hand benchmarks: `MINFERENCE_BENCH_N` (comma-separated),
/// default 4096,16384.
fn bench_lengths() -> Vec<usize> {
    std::env::var("MINFERENCE_BENCH_N")
        .unwrap_or_else(|_| "4096,16384".into())
        .split(',')
        .filter_map(|x| x.trim().parse().ok())
        .collect()
}

/// A count of the by-hand benchmarks from the environment variable `name`, else `default`.
fn bench_env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Where the index time goes (run by hand on a GPU: `--ignored bench_index_stages
/// --nocapture`): D = 128, f16, every head with one pattern; per pattern the median of a plain
/// `build_index` (timed by `bench::time_runs`, warm-up included; then again with each index
/// kept until its work is done), then the median time of every kernel submitted alone (each includes one
/// submit-to-completion round trip). `MINFERENCE_BENCH_PATTERNS` picks the patterns (the
/// bench's list syntax, default `vertical-slash:1000,6096,block-sparse:100`; a bare family
/// scales with N), `MINFERENCE_BENCH_H` the heads (default 8), `MINFERENCE_BENCH_N` the
/// lengths (default 4096,16384), `MINFERENCE_BENCH_REPS` the repetitions (default 5).
#[test]
#[ignore]
fn bench_index_stages() {
    use minference::bench::PatternCase;
    use minference::{AttnShape, DType};
    use std::time::Instant;
    let Some(b) = wgpu() else { return };
    eprintln!("device: {}", b.info().device);
    let ns = bench_lengths();
    let reps = bench_env("MINFERENCE_BENCH_REPS", 5).max(1);
    let h = bench_env("MINFERENCE_BENCH_H", 8);
    let d = 128;
    let spec = std::env::var("MINFERENCE_BENCH_PATTERNS")
        .unwrap_or_else(|_| "vertical-slash:1000,6096,block-sparse:100".into());
    let cases = PatternCase::parse_list(&spec)
        .unwrap_or_else(|e| panic!("MINFERENCE_BENCH_PATTERNS=`{spec}`: {e}"));
    let median = |mut t: Vec<f64>| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    };
    for n in ns {
        AttnShape::new(1, h, h, n, d).unwrap();
        let (q, k, _) = minference::generate::random_qkv(1, h, h, n, d, DType::F16, 1).unwrap();
        let (q, k) = (b.upload(&q).unwrap(), b.upload(&k).unwrap());
        for case in &cases {
            let pattern = case.at(n);
            let pats = vec![pattern; h];
            // The library's harness: warm-up runs for at least bench::MIN_WARMUP first (a GPU
            // that was idle runs its first work slowly), the index dropped before the wait.
            let total = minference::bench::time_runs(b.as_ref(), 1, reps, || {
                b.build_index(&q, &k, &pats).map(|_| ())
            })
            .unwrap();
            // The same with each index kept until its work is done.
            let kept = median(
                (0..reps)
                    .map(|_| {
                        let t0 = Instant::now();
                        let ix = b.build_index(&q, &k, &pats).unwrap();
                        b.synchronize().unwrap();
                        let ms = t0.elapsed().as_secs_f64() * 1e3;
                        drop(ix);
                        ms
                    })
                    .collect(),
            );
            let runs: Vec<Vec<(String, f64)>> = (0..reps)
                .map(|_| b.index_stage_times(&q, &k, &pats).unwrap())
                .collect();
            eprintln!(
                "wgpu/f16/N={n}/H={h}/{pattern}: build_index {:.3} ms (p10-p90 {:.3}-{:.3}), \
                 {kept:.3} ms with the index kept until the wait; stages (each submitted alone):",
                total.median_ms, total.p10_ms, total.p90_ms
            );
            for (i, (name, _)) in runs[0].iter().enumerate() {
                let t = median(runs.iter().map(|r| r[i].1).collect());
                eprintln!("  {name:<50} {t:9.3} ms");
            }
        }
    }
}

/// A built index's buffers go back to a pool when it is dropped and the next index of the
/// same sizes takes them: that index must equal one built on fresh buffers, though the
/// reused ones hold another input's entries and another head layout's selections (the two
/// heads swap kinds, so stale vertical-slash lists sit where the new index has none).
#[test]
fn reused_index_buffers_keep_no_stale_entries() {
    use minference::generate::random_qkv;
    use minference::{DType, Pattern};
    if wgpu().is_none() {
        return;
    }
    let open = || WgpuBackend::with_variant(Variant::Rowwise).unwrap();
    let (reusing, fresh) = (open(), open());
    let (h, n, d) = (2, 700, 64);
    let vs = Pattern::VerticalSlash {
        vertical: 40,
        slash: 90,
    };
    let bs = Pattern::BlockSparse { top_k: 4 };
    let (q1, k1, _) = random_qkv(1, h, h, n, d, DType::F16, 11).unwrap();
    let (q2, k2, _) = random_qkv(1, h, h, n, d, DType::F16, 12).unwrap();
    let build = |b: &WgpuBackend, q, k, pats: &[Pattern]| {
        let ix = b
            .build_index(&b.upload(q).unwrap(), &b.upload(k).unwrap(), pats)
            .unwrap();
        let host = b.download_index(&ix).unwrap();
        (ix, host)
    };
    let (first, first_host) = build(&reusing, &q1, &k1, &[vs, bs]);
    assert_eq!(reusing.pooled_buffers(), 0);
    drop(first);
    assert_eq!(
        reusing.pooled_buffers(),
        5,
        "the dropped index's five arrays"
    );
    let (second, got) = build(&reusing, &q2, &k2, &[bs, vs]);
    assert_eq!(
        reusing.pooled_buffers(),
        0,
        "the second index took every buffer"
    );
    let (_, want) = build(&fresh, &q2, &k2, &[bs, vs]);
    assert_ne!(
        got, first_host,
        "the two indexes differ, so stale entries would show"
    );
    assert_eq!(
        got, want,
        "an index on reused buffers differs from one on fresh buffers"
    );
    drop(second);
    assert_eq!(reusing.pooled_buffers(), 5);
}

variant_suite!(coop, super::Variant::CoopMatrix);

/// Every cooperative-matrix WGSL module parses, validates with the capabilities the coop
/// variant opens the device with (cooperative matrices, f16, subgroups), declares its
/// `{stem}_f16` entry point and, specialised with the backend's pipeline constants for each
/// head dim and tile width (as wgpu does when it builds the pipeline), fits the workgroup
/// memory the backend checks for and compiles to SPIR-V. Needs no GPU: lavapipe cannot run
/// cooperative matrices, so this is what CI checks.
#[test]
fn coop_shaders_validate_and_compile_to_spirv() {
    use minference::wgpu_backend::{
        coop_constants, coop_workgroup_bytes, COOP_BLOCK_NS, COOP_SOURCES, COOP_SPLIT_BYTES,
        COOP_SPLIT_CONSTANTS,
    };
    use naga::valid::{Capabilities, ShaderStages, SubgroupOperationSet, ValidationFlags};
    for (stem, source) in COOP_SOURCES {
        let module = naga::front::wgsl::parse_str(source)
            .unwrap_or_else(|e| panic!("{stem}: WGSL parse error:\n{}", e.emit_to_string(source)));
        let caps = Capabilities::COOPERATIVE_MATRIX
            | Capabilities::SHADER_FLOAT16
            | Capabilities::SHADER_FLOAT16_IN_FLOAT32
            | Capabilities::SUBGROUP;
        let info = naga::valid::Validator::new(ValidationFlags::all(), caps)
            .subgroup_stages(ShaderStages::COMPUTE)
            .subgroup_operations(SubgroupOperationSet::all())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{stem}: validation error:\n{}", e.emit_to_string(source)));
        let entry = format!("{stem}_f16");
        assert!(
            module.entry_points.iter().any(|e| e.name == entry),
            "{stem}: no entry point `{entry}`"
        );
        // (d, block_n, split): every head dim and tile width, and the split dense kernel.
        let configs = [64, 128]
            .into_iter()
            .flat_map(|d| COOP_BLOCK_NS.map(|n| (d, n, false)))
            .chain((stem == "dense_attention_coop").then_some((128, 32, true)));
        for (d, block_n, split) in configs {
            let constants = if split {
                COOP_SPLIT_CONSTANTS
            } else {
                coop_constants(d, block_n)
            };
            let constants = constants
                .iter()
                .map(|&(k, v)| (k.to_string(), f64::from(v)))
                .collect();
            let (m, i) = naga::back::pipeline_constants::process_overrides(
                &module,
                &info,
                Some((naga::ShaderStage::Compute, &entry)),
                &constants,
            )
            .unwrap_or_else(|e| panic!("{stem} D={d} BLOCK_N={block_n}: pipeline constants: {e}"));
            let workgroup_bytes: u32 = m
                .global_variables
                .iter()
                .filter(|(_, g)| g.space == naga::AddressSpace::WorkGroup)
                .map(|(_, g)| m.types[g.ty].inner.size(m.to_ctx()))
                .sum();
            if split {
                assert_eq!(
                    workgroup_bytes, COOP_SPLIT_BYTES,
                    "{stem} split: workgroup memory of the WGSL vs COOP_SPLIT_BYTES"
                );
            } else if d == 128 {
                assert_eq!(
                    workgroup_bytes,
                    coop_workgroup_bytes(block_n),
                    "{stem} BLOCK_N={block_n}: workgroup memory of the WGSL vs coop_workgroup_bytes"
                );
            }
            let bound = if split {
                COOP_SPLIT_BYTES
            } else {
                coop_workgroup_bytes(block_n)
            };
            assert!(
                workgroup_bytes <= bound,
                "{stem} D={d} BLOCK_N={block_n}: {workgroup_bytes} bytes"
            );
            let options = naga::back::spv::Options {
                lang_version: (1, 3),
                ..Default::default()
            };
            let pipeline = naga::back::spv::PipelineOptions {
                shader_stage: naga::ShaderStage::Compute,
                entry_point: entry.clone(),
            };
            let words = naga::back::spv::write_vec(&m, &i, &options, Some(&pipeline))
                .unwrap_or_else(|e| panic!("{stem} D={d} BLOCK_N={block_n}: SPIR-V error: {e}"));
            assert!(words.len() > 100, "{stem}: {} SPIR-V words", words.len());
        }
    }
}

/// The three coop kernels one by one on f16 (the dtype they serve), awkward shapes, both head
/// dims, GQA and batch 2, against float64 with the suite's tolerance rule; the sparse kernel on
/// the reference index. A failure names the kernel, the case and the element (batch, head,
/// row, column). Skipped (loudly) where the coop variant does not open, unless
/// `MINFERENCE_REQUIRE_WGPU_VARIANTS` names `coop`.
#[test]
fn coop_kernels_one_by_one_f16() {
    use minference::generate::{random_qkv, rising_scores_qkv};
    use minference::vectors::reference_and_tolerance;
    use minference::{AttnShape, DType, HostTensor, Pattern};
    let Some(b) = variant(Variant::CoopMatrix) else {
        return;
    };
    eprintln!("{} | {}", b.info().device, b.info().notes);
    let mut seed = 900;
    // The `rising` cases have scores that climb along the keys, so the lazy O rescale (rare
    // on Gaussian data) runs many times.
    for &(batch, hq, hkv, n, d, rising) in &[
        (1, 1, 1, 1, 64, false),
        (2, 4, 2, 63, 128, false),
        (1, 2, 1, 65, 64, false),
        (2, 4, 1, 200, 128, false),
        (1, 2, 2, 333, 64, false),
        (1, 2, 1, 1000, 128, false),
        (1, 2, 1, 1000, 64, true),
        (2, 2, 1, 700, 128, true),
    ] {
        seed += 1;
        let shape = AttnShape::new(batch, hq, hkv, n, d).unwrap();
        let generate = if rising {
            rising_scores_qkv
        } else {
            random_qkv
        };
        let (q, k, v) = generate(batch, hq, hkv, n, d, DType::F16, seed).unwrap();
        let (qd, kd, vd) = (
            b.upload(&q).unwrap(),
            b.upload(&k).unwrap(),
            b.upload(&v).unwrap(),
        );
        let case = format!(
            "B={batch} Hq={hq} Hkv={hkv} N={n} D={d} f16{}",
            if rising { " rising scores" } else { "" }
        );
        let check = |kernel: &str, pats: &[Pattern], ix: Option<&minference::HostIndex>, out| {
            let got = b
                .download(&out)
                .unwrap_or_else(|e| panic!("coop {kernel} {case}: download: {e}"))
                .to_f64();
            let (want, tol) =
                reference_and_tolerance(&shape, [&q, &k, &v], DType::F16, pats, ix).unwrap();
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let (bh, rest) = (i / (n * d), i % (n * d));
                assert!(
                    (g - w).abs() <= tol,
                    "coop {kernel} {case}: element {i} (batch {}, head {}, row {}, col {}): \
                     got {g} want {w} (tol {tol:.3e})",
                    bh / hq,
                    bh % hq,
                    rest / d,
                    rest % d
                );
            }
            eprintln!("coop {kernel} {case}: ok (tol {tol:.2e})");
        };
        let poisoned = || {
            b.upload(&HostTensor::filled(&shape.q_dims(), f64::NAN, DType::F16))
                .unwrap()
        };

        let mut out = poisoned();
        b.dense_attention(&qd, &kd, &vd, &mut out)
            .unwrap_or_else(|e| panic!("coop dense_attention {case}: {e}"));
        check("dense_attention", &vec![Pattern::Dense; hq], None, out);

        let (sink, local) = (4, 45);
        let mut out = poisoned();
        b.a_shape_attention(&qd, &kd, &vd, &vec![Some((sink, local)); hq], &mut out)
            .unwrap_or_else(|e| panic!("coop a_shape_attention {case}: {e}"));
        check(
            "a_shape_attention",
            &vec![Pattern::AShape { sink, local }; hq],
            None,
            out,
        );

        let pats: Vec<Pattern> = (0..hq)
            .map(|h| match h % 2 {
                0 => Pattern::VerticalSlash {
                    vertical: 30,
                    slash: 70,
                },
                _ => Pattern::BlockSparse { top_k: 3 },
            })
            .collect();
        let ix = minference::index::build_index(&shape, &q.to_f64(), &k.to_f64(), &pats).unwrap();
        let dix = b.upload_index(&ix).unwrap();
        let mut out = poisoned();
        b.sparse_attention(&qd, &kd, &vd, &dix, &mut out)
            .unwrap_or_else(|e| panic!("coop sparse_attention {case}: {e}"));
        check("sparse_attention", &pats, Some(&ix), out);
    }
}

/// llvmpipe (lavapipe) silently ends an invocation's loops after 65535 iterations in all:
/// kernels whose key loops would pass that are refused with an error naming the limit, never
/// run into an output with rows left unwritten. (On other adapters: nothing to check.)
#[test]
fn llvmpipe_loop_limit_is_an_error_not_missing_rows() {
    use minference::generate::random_qkv;
    use minference::{AttnShape, DType, HostTensor};
    let Some(rowwise) = variant(Variant::Rowwise) else {
        return;
    };
    if !rowwise.info().device.contains("llvmpipe") {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: the adapter is not llvmpipe ({})",
            rowwise.info().device
        );
        return;
    }
    let run = |b: &dyn Backend, n: usize| {
        let shape = AttnShape::new(1, 1, 1, n, 128).unwrap();
        let (q, k, v) = random_qkv(1, 1, 1, n, 128, DType::F16, 5).unwrap();
        let (q, k, v) = (
            b.upload(&q).unwrap(),
            b.upload(&k).unwrap(),
            b.upload(&v).unwrap(),
        );
        let dims = shape.q_dims();
        let poison = vec![f32::NAN; dims.iter().product()];
        let mut out = b
            .upload(&HostTensor::from_f32(&dims, &poison, DType::F16).unwrap())
            .unwrap();
        b.dense_attention(&q, &k, &v, &mut out)
            .map(|()| b.download(&out).unwrap().to_f64())
    };
    // Rowwise at D = 128: rows past about 920 keys were left unwritten; 1000 is refused.
    let e = run(&*rowwise, 1000).expect_err("1000 keys per row pass the loop limit");
    let msg = e.to_string();
    assert!(
        matches!(e, minference::Error::Unsupported { .. }) && msg.contains("65535"),
        "{msg}"
    );
    // 800 keys fit: every row written.
    let o = run(&*rowwise, 800).unwrap_or_else(|e| panic!("{e}"));
    assert!(o.iter().all(|x| x.is_finite()), "unwritten rows at N = 800");
    // The tiled kernels loop per 64-key tile: 1000 keys fit easily, every row written.
    if let Some(tiled) = variant(Variant::Tiled) {
        let o = run(&*tiled, 1000).unwrap_or_else(|e| panic!("{e}"));
        assert!(o.iter().all(|x| x.is_finite()), "unwritten rows (tiled)");
    }
    // The index: budgets of N at N = 33000 make the conversion walk 33000 offsets and
    // columns per row block: refused. (Budgets 300/2500 at N = 4500 run, complete, in
    // `index_at_longer_lengths_matches_the_reference`.)
    let n = 33000;
    let (q, k, _) = random_qkv(1, 1, 1, n, 64, DType::F16, 6).unwrap();
    let e = rowwise
        .build_index(
            &rowwise.upload(&q).unwrap(),
            &rowwise.upload(&k).unwrap(),
            &[minference::Pattern::VerticalSlash {
                vertical: n,
                slash: n,
            }],
        )
        .err()
        .expect("budgets of N = 33000 pass the loop limit");
    let msg = e.to_string();
    assert!(
        matches!(e, minference::Error::Unsupported { .. })
            && msg.contains("65535")
            && msg.contains("vertical_slash_index"),
        "{msg}"
    );
}
