//! Criterion benches: every available backend, every pattern and index building alone,
//! over sequence lengths.
//!
//! Names are `{backend}/{pattern}/{dtype}/{seq_len}` (index building alone:
//! `{backend}/index-{pattern}/{dtype}/{seq_len}`). Every sample synchronizes the device
//! before its clock stops (`iter_custom`). Throughput is in useful FLOPs (`4 * D * computed
//! (query, key) pairs`; criterion prints them as `elem/s`, so `Gelem/s` reads GFLOP/s) for
//! the attention benches, and in query rows for index building. Backends that are absent are
//! listed, with the reason, before the first bench. Sizes come from
//! `minference::bench::criterion_sizes`: small on host devices (the float64 CPU backend,
//! wgpu on lavapipe) so that `cargo bench` on a machine without a GPU stays short.

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use minference::backend::run_layer_into;
use minference::bench::{
    criterion_sizes, default_dtype, index_pairs, is_host_device, open_backends, window_pairs,
    PatternCase, FAMILIES,
};
use minference::generate::{structured_qkv, HeadKind};
use minference::{AttnShape, Backend};
use std::time::{Duration, Instant};

/// Time `iters` runs of `f` with the device synchronized before the clock starts and stops.
fn timed(be: &dyn Backend, iters: u64, mut f: impl FnMut()) -> Duration {
    be.synchronize().expect("synchronize");
    let t0 = Instant::now();
    for _ in 0..iters {
        f();
    }
    be.synchronize().expect("synchronize");
    t0.elapsed()
}

fn attention(c: &mut Criterion) {
    let (backends, skipped) = open_backends(None).expect("the cpu backend always opens");
    for s in &skipped {
        eprintln!("skipped backend {}: {}", s.backend, s.reason);
    }
    for be in &backends {
        let be: &dyn Backend = be.as_ref();
        let info = be.info();
        eprintln!("backend {}: {}", info.name, info.device);
        let sizes = criterion_sizes(&info);
        let dtype = default_dtype(&info);
        let mut group = c.benchmark_group(info.name);
        group.sampling_mode(SamplingMode::Flat);
        if is_host_device(&info) {
            group
                .sample_size(10)
                .warm_up_time(Duration::from_millis(200))
                .measurement_time(Duration::from_millis(800));
        } else {
            group
                .sample_size(20)
                .warm_up_time(Duration::from_millis(500))
                .measurement_time(Duration::from_secs(3));
        }
        for &n in &sizes.seq_lens {
            let shape = AttnShape::new(1, sizes.heads, sizes.heads, n, sizes.head_dim)
                .expect("valid bench shape");
            let kinds: Vec<HeadKind> = (0..shape.q_heads)
                .map(|h| HeadKind::CYCLE[h % HeadKind::CYCLE.len()])
                .collect();
            let (q, k, v) =
                structured_qkv(1, shape.kv_heads, n, shape.head_dim, &kinds, dtype, 2024)
                    .expect("structured inputs");
            let (q, k, v) = (
                be.upload(&q).expect("upload q"),
                be.upload(&k).expect("upload k"),
                be.upload(&v).expect("upload v"),
            );
            let mut out = be.empty(&shape.q_dims(), dtype).expect("output");
            for family in FAMILIES {
                let p = PatternCase::family(family).expect("known family").at(n);
                let pats = vec![p; shape.q_heads];
                let ix = p
                    .uses_index()
                    .then(|| be.build_index(&q, &k, &pats).expect("build_index"));
                let pairs = match &ix {
                    Some(ix) => index_pairs(&be.download_index(ix).expect("download index")),
                    None => window_pairs(&shape, &p),
                };
                group.throughput(Throughput::Elements(4 * shape.head_dim as u64 * pairs));
                group.bench_function(BenchmarkId::new(format!("{family}/{dtype}"), n), |b| {
                    b.iter_custom(|iters| {
                        timed(be, iters, || {
                            run_layer_into(be, &q, &k, &v, &pats, &mut out).expect("layer");
                        })
                    })
                });
                if ix.is_some() {
                    group.throughput(Throughput::Elements(
                        (shape.batch * shape.q_heads * n) as u64,
                    ));
                    group.bench_function(
                        BenchmarkId::new(format!("index-{family}/{dtype}"), n),
                        |b| {
                            b.iter_custom(|iters| {
                                timed(be, iters, || {
                                    be.build_index(&q, &k, &pats).expect("build_index");
                                })
                            })
                        },
                    );
                }
            }
        }
        group.finish();
    }
}

criterion_group!(benches, attention);
criterion_main!(benches);
