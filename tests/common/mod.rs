//! The generic backend suite: written once over `&dyn Backend`, instantiated per backend
//! with `backend_suite!` (see `tests/cpu.rs`, `tests/wgpu.rs`, `tests/cuda.rs`).
#![allow(dead_code)]

pub mod independent;

use minference::backend::run_layer_into;
use minference::generate::{random_qkv, structured_qkv, HeadKind};
use minference::reference;
use minference::vectors::{
    check_case, check_index_against_reference, list_cases, reference_and_tolerance, VectorCase,
};
use minference::{AttnShape, Backend, DType, HostTensor, Pattern};
use std::path::Path;

/// Where the shared vectors live.
pub fn vectors_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors"))
}

/// Every shared vector passes on `backend` (cases whose dtype it lacks are converted: f16
/// cases run as f32 when f16 is unsupported, and say so).
pub fn all_vectors(backend: &dyn Backend) {
    let info = backend.info();
    let mut failures = Vec::new();
    let paths = list_cases(vectors_dir()).expect("tests/vectors has cases");
    assert!(
        paths.len() >= 20,
        "expected the full vector set, found {}",
        paths.len()
    );
    for p in paths {
        let mut case = VectorCase::read(&p).expect("vector reads");
        if let Some(from) = case.cast_for(&info) {
            eprintln!(
                "{}: {} lacks {from}, running as {}",
                case.spec.name, info.name, case.spec.dtype
            );
        }
        if info
            .check(case.spec.dtype, case.spec.shape.head_dim)
            .is_err()
        {
            eprintln!(
                "{}: {} does not support D = {}, skipped",
                case.spec.name, info.name, case.spec.shape.head_dim
            );
            continue;
        }
        let r = check_case(backend, &case).expect("case runs");
        eprintln!(
            "{} {}: {}",
            if r.passed { "PASS" } else { "FAIL" },
            r.name,
            r.detail
        );
        if !r.passed {
            failures.push(format!("{}: {}", r.name, r.detail));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Run a layer on fresh inputs with a NaN-poisoned output; compare with float64 on the
/// backend's own index; check its index against the reference (tie-tolerant).
pub fn fresh_layer(
    backend: &dyn Backend,
    shape: AttnShape,
    dtype: DType,
    patterns: &[Pattern],
    structured: bool,
    seed: u64,
) -> f64 {
    let (b, hq, hkv, n, d) = (
        shape.batch,
        shape.q_heads,
        shape.kv_heads,
        shape.seq_len,
        shape.head_dim,
    );
    let (q, k, v) = if structured {
        let kinds: Vec<HeadKind> = (0..hq).map(|h| HeadKind::CYCLE[h % 3]).collect();
        structured_qkv(b, hkv, n, d, &kinds, dtype, seed).unwrap()
    } else {
        random_qkv(b, hq, hkv, n, d, dtype, seed).unwrap()
    };
    let (qd, kd, vd) = (
        backend.upload(&q).unwrap(),
        backend.upload(&k).unwrap(),
        backend.upload(&v).unwrap(),
    );
    let mut out = backend
        .upload(&HostTensor::filled(&shape.q_dims(), f64::NAN, dtype))
        .unwrap();
    let ix = run_layer_into(backend, &qd, &kd, &vd, patterns, &mut out).unwrap();
    let got = backend.download(&out).unwrap().to_f64();
    let host_ix = ix.map(|i| backend.download_index(&i).unwrap());
    if let Some(hix) = &host_ix {
        check_index_against_reference(&shape, &q, &k, &v, patterns, hix)
            .unwrap_or_else(|e| panic!("{} index: {e}", backend.info().name));
    }
    let (want, tol) =
        reference_and_tolerance(&shape, [&q, &k, &v], dtype, patterns, host_ix.as_ref()).unwrap();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= tol,
            "{} {:?} {dtype}: element {i}: got {g} want {w} (tol {tol:.3e})",
            backend.info().name,
            patterns[0]
        );
    }
    reference::rel_error(&got, &want)
}

/// Fresh random inputs for every pattern, awkward sizes, GQA, batch 2; f32 within 2e-4.
pub fn fresh_every_pattern(backend: &dyn Backend) {
    let info = backend.info();
    let dtypes: Vec<DType> = [DType::F32, DType::F16, DType::BF16]
        .into_iter()
        .filter(|d| info.dtypes.contains(d))
        .collect();
    let mut seed = 7;
    for &(n, d, hq, hkv) in &[(333, 64, 4, 2), (130, 128, 4, 1), (64, 64, 2, 2)] {
        if info.check(DType::F32, d).is_err() && info.check(DType::F16, d).is_err() {
            continue;
        }
        let shape = AttnShape::new(2, hq, hkv, n, d).unwrap();
        for pats in [
            vec![Pattern::Dense; hq],
            vec![Pattern::AShape { sink: 5, local: 40 }; hq],
            vec![
                Pattern::VerticalSlash {
                    vertical: 40,
                    slash: 70
                };
                hq
            ],
            vec![Pattern::BlockSparse { top_k: 2 }; hq],
            (0..hq)
                .map(|h| {
                    [
                        Pattern::VerticalSlash {
                            vertical: 35,
                            slash: 60,
                        },
                        Pattern::BlockSparse { top_k: 3 },
                        Pattern::AShape { sink: 2, local: 17 },
                        Pattern::Dense,
                    ][h % 4]
                })
                .collect(),
        ] {
            for &dt in &dtypes {
                if info.check(dt, d).is_err() {
                    continue;
                }
                seed += 1;
                let rel = fresh_layer(backend, shape, dt, &pats, seed % 2 == 0, seed);
                if dt == DType::F32 {
                    assert!(
                        rel < 2e-4,
                        "{} {:?} f32 relative error {rel:.3e} >= 2e-4",
                        info.name,
                        pats[0]
                    );
                }
            }
        }
    }
}

/// The sparse kernel alone on the reference index (uploaded), poisoned output.
pub fn sparse_on_reference_index(backend: &dyn Backend) {
    let info = backend.info();
    let dt = if info.dtypes.contains(&DType::F32) {
        DType::F32
    } else {
        info.dtypes[0]
    };
    let shape = AttnShape::new(2, 4, 2, 457, 64).unwrap();
    let (q, k, v) = structured_qkv(
        2,
        2,
        457,
        64,
        &[
            HeadKind::VerticalSlash,
            HeadKind::BlockSparse,
            HeadKind::AShape,
            HeadKind::VerticalSlash,
        ],
        dt,
        99,
    )
    .unwrap();
    let pats = [
        Pattern::VerticalSlash {
            vertical: 50,
            slash: 80,
        },
        Pattern::BlockSparse { top_k: 3 },
        Pattern::Dense,
        Pattern::VerticalSlash {
            vertical: 30,
            slash: 50,
        },
    ];
    let (qf, kf, vf) = (q.to_f64(), k.to_f64(), v.to_f64());
    let ix = minference::index::build_index(&shape, &qf, &kf, &pats).unwrap();
    let dix = backend.upload_index(&ix).unwrap();
    assert_eq!(
        backend.download_index(&dix).unwrap(),
        ix,
        "index round trip"
    );
    let (qd, kd, vd) = (
        backend.upload(&q).unwrap(),
        backend.upload(&k).unwrap(),
        backend.upload(&v).unwrap(),
    );
    let mut out = backend
        .upload(&HostTensor::filled(&shape.q_dims(), f64::NAN, dt))
        .unwrap();
    backend
        .sparse_attention(&qd, &kd, &vd, &dix, &mut out)
        .unwrap();
    let got = backend.download(&out).unwrap().to_f64();
    let want = reference::sparse(&shape, &qf, &kf, &vf, &ix).unwrap();
    let per_head = 457 * 64;
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let h = (i / per_head) % 4;
        if pats[h].uses_index() {
            assert!(
                (g - w).abs() <= 1e-3 + 1e-3 * w.abs(),
                "element {i}: got {g} want {w}"
            );
        } else {
            assert!(g.is_nan(), "element {i} of a non-index head was written ({g}); the sparse kernel must leave it");
        }
    }
}

/// Bad inputs give errors naming the argument, never a panic.
pub fn bad_inputs_are_errors(backend: &dyn Backend) {
    let dt = backend.info().dtypes[0];
    let t = |dims: &[usize]| backend.upload(&HostTensor::filled(dims, 0.5, dt)).unwrap();
    let (q, k, v) = (t(&[1, 3, 64, 64]), t(&[1, 2, 64, 64]), t(&[1, 2, 64, 64]));
    let e = minference::run_layer(backend, &q, &k, &v, &[Pattern::Dense; 3])
        .err()
        .expect("Hq % Hkv != 0 must fail");
    assert!(e.to_string().contains("not a multiple"), "{e}");
    let (q, k) = (t(&[1, 2, 64, 64]), t(&[1, 2, 32, 64]));
    let e = minference::run_layer(backend, &q, &k, &k, &[Pattern::Dense; 2])
        .err()
        .expect("N mismatch must fail");
    assert!(e.to_string().contains("do not match"), "{e}");
    let q3 = t(&[2, 64, 64]);
    let e = minference::run_layer(backend, &q3, &k, &k, &[Pattern::Dense; 2])
        .err()
        .expect("rank 3 must fail");
    assert!(e.to_string().contains("rank"), "{e}");
    let (q, k) = (t(&[1, 2, 64, 64]), t(&[1, 2, 64, 64]));
    let e = minference::run_layer(backend, &q, &k, &k, &[Pattern::Dense; 3])
        .err()
        .expect("wrong head count must fail");
    assert!(e.to_string().contains("3 head patterns"), "{e}");
    let e = minference::run_layer(backend, &q, &k, &k, &[Pattern::BlockSparse { top_k: 0 }; 2])
        .err()
        .expect("top_k 0 must fail");
    assert!(e.to_string().contains("top_k"), "{e}");
}

/// Instantiate the generic suite for one backend: `backend_suite!(make_backend_expr);`
#[macro_export]
macro_rules! backend_suite {
    ($make:expr) => {
        #[test]
        fn all_shared_vectors() {
            common::all_vectors(&*$make);
        }
        #[test]
        fn fresh_random_inputs_every_pattern() {
            common::fresh_every_pattern(&*$make);
        }
        #[test]
        fn sparse_kernel_on_reference_index() {
            common::sparse_on_reference_index(&*$make);
        }
        #[test]
        fn bad_inputs_are_errors() {
            common::bad_inputs_are_errors(&*$make);
        }
    };
}
