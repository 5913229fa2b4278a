//! The generic backend suite on the wgpu backend.
//!
//! Without an adapter the tests print a loud SKIPPED line and pass, unless
//! `MINFERENCE_REQUIRE_WGPU=1` (CI, with Mesa lavapipe installed): then they fail.
mod common;

use minference::wgpu_backend::{Variant, WgpuBackend};
use minference::Backend;
use std::io::Write;

/// The backend, or `None` (after saying why) when no adapter is found and none is required.
fn wgpu() -> Option<Box<dyn Backend>> {
    match WgpuBackend::new() {
        Ok(b) => Some(Box::new(b)),
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
pub fn variant(v: Variant) -> Option<Box<dyn Backend>> {
    wgpu()?;
    match WgpuBackend::with_variant(v) {
        Ok(b) => Some(Box::new(b)),
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

#[test]
fn the_default_variant_is_the_fastest_available() {
    if std::env::var(minference::wgpu_backend::VARIANT_ENV).is_ok() {
        return; // forced by the environment
    }
    let Some(b) = wgpu() else { return };
    drop(b);
    let b = WgpuBackend::new().expect("opened a moment ago");
    let available = b.available_variants();
    assert!(available.contains(&Variant::Rowwise), "{available:?}");
    assert_eq!(Some(&b.variant()), available.last(), "{available:?}");
    assert!(
        b.info().notes.contains(&format!("variant {}", b.variant())),
        "{}",
        b.info().notes
    );
}

#[test]
fn a_bad_variant_name_is_a_clear_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_minference"))
        .args(["check", "--backend", "wgpu"])
        .env(minference::wgpu_backend::VARIANT_ENV, "fastest")
        .output()
        .expect("the binary runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("MINFERENCE_WGPU_VARIANT") && err.contains("fastest"),
        "{err}"
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

/// Timing of dense vs sparse prefill (run by hand on a GPU: `--ignored bench --nocapture`).
/// H = 8, D = 128, f16; medians after one warm-up, each run followed by a device synchronize.
/// `MINFERENCE_BENCH_N` picks the lengths (comma-separated; default 4096,16384).
#[test]
#[ignore]
fn bench_dense_vs_sparse() {
    use minference::{AttnShape, DType, Pattern};
    use std::time::Instant;
    let b = or_skip!();
    eprintln!("device: {}", b.info().device);
    let ns: Vec<usize> = std::env::var("MINFERENCE_BENCH_N")
        .unwrap_or_else(|_| "4096,16384".into())
        .split(',')
        .filter_map(|x| x.trim().parse().ok())
        .collect();
    let (h, d) = (8, 128);
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
        let time = |f: &mut dyn FnMut()| -> f64 {
            f();
            b.synchronize().unwrap();
            let mut t: Vec<f64> = (0..reps)
                .map(|_| {
                    let t0 = Instant::now();
                    f();
                    b.synchronize().unwrap();
                    t0.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
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
            eprintln!(
                "wgpu/f16/N={n}: dense {dense:.2} ms ({dense_tflops:.2} TFLOP/s) | {pat}: index {build:.2} ms + sparse {sparse:.2} ms = {:.2} ms, speedup {:.2}x",
                build + sparse,
                dense / (build + sparse)
            );
        }
    }
}

variant_suite!(coop, super::Variant::CoopMatrix);

/// Every cooperative-matrix WGSL module parses, validates with the capabilities the coop
/// variant opens the device with (cooperative matrices, f16, subgroups), declares its
/// `{stem}_f16` entry point, fits the workgroup memory the backend checks for, and compiles to
/// SPIR-V. Needs no GPU: lavapipe cannot run cooperative matrices, so this is what CI checks.
#[test]
fn coop_shaders_validate_and_compile_to_spirv() {
    use minference::wgpu_backend::{COOP_SOURCES, COOP_WORKGROUP_BYTES};
    use naga::valid::{Capabilities, ShaderStages, SubgroupOperationSet, ValidationFlags};
    for (stem, source) in COOP_SOURCES {
        let module = naga::front::wgsl::parse_str(source)
            .unwrap_or_else(|e| panic!("{stem}: WGSL parse error:\n{}", e.emit_to_string(source)));
        // SHADER_FLOAT16_IN_FLOAT32 (unpack2x16float) comes from wgpu's downlevel flag
        // SHADER_F16_IN_F32, which the rowwise kernels need as well.
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
        let workgroup_bytes: u32 = module
            .global_variables
            .iter()
            .filter(|(_, g)| g.space == naga::AddressSpace::WorkGroup)
            .map(|(_, g)| module.types[g.ty].inner.size(module.to_ctx()))
            .sum();
        assert_eq!(
            workgroup_bytes, COOP_WORKGROUP_BYTES,
            "{stem}: workgroup memory of the WGSL vs COOP_WORKGROUP_BYTES"
        );
        assert!(
            workgroup_bytes <= 48 * 1024,
            "{stem}: {workgroup_bytes} bytes"
        );
        let options = naga::back::spv::Options {
            lang_version: (1, 3),
            ..Default::default()
        };
        let words = naga::back::spv::write_vec(&module, &info, &options, None)
            .unwrap_or_else(|e| panic!("{stem}: SPIR-V error: {e}"));
        assert!(words.len() > 100, "{stem}: {} SPIR-V words", words.len());
    }
}
