//! The generic backend suite on the CUDA backend (needs `--features cuda` and a GPU).
//!
//! Without a GPU the suite prints `SKIPPED` and passes, unless `MINFERENCE_REQUIRE_CUDA=1`.
#![cfg(feature = "cuda")]
mod common;

use minference::cuda_backend::{compile_family, nvrtc_present, CudaBackend, Family, MmaTiling};
use std::io::Write;

/// The CUDA backend, or `None` (after a loud message) when no device is usable here.
fn cuda() -> Option<Box<dyn minference::Backend>> {
    match CudaBackend::new() {
        Ok(b) => Some(Box::new(b)),
        Err(e) => {
            if std::env::var("MINFERENCE_REQUIRE_CUDA").as_deref() == Ok("1") {
                panic!("MINFERENCE_REQUIRE_CUDA=1 but the CUDA backend does not open: {e}");
            }
            // Straight to stderr: libtest captures `eprintln!` of passing tests.
            let _ = writeln!(std::io::stderr(), "SKIPPED: no CUDA device: {e}");
            None
        }
    }
}

macro_rules! cuda_or_skip {
    () => {
        match cuda() {
            Some(b) => b,
            None => return,
        }
    };
}

backend_suite!(cuda_or_skip!());

/// True if libnvrtc loads; otherwise a loud SKIPPED line, or a panic when
/// `MINFERENCE_REQUIRE_CUDA=1` or `MINFERENCE_REQUIRE_NVRTC=1` (CI fetches NVRTC and sets it).
fn nvrtc_or_skip() -> bool {
    if nvrtc_present() {
        return true;
    }
    for var in ["MINFERENCE_REQUIRE_CUDA", "MINFERENCE_REQUIRE_NVRTC"] {
        if std::env::var(var).as_deref() == Ok("1") {
            panic!("{var}=1 but libnvrtc is not found");
        }
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED: libnvrtc not found");
    false
}

/// Every kernel family compiles with NVRTC for its target on sm_80 and sm_90 devices (the
/// wgmma family for sm_90a only; needs only libnvrtc: CI fetches NVIDIA's NVRTC wheel and sets
/// `MINFERENCE_REQUIRE_NVRTC=1`).
#[test]
fn every_family_compiles_for_sm80_and_sm90() {
    if !nvrtc_or_skip() {
        return;
    }
    let mut compiled = 0;
    for arch in ["sm_80", "sm_90"] {
        for f in Family::ALL {
            if let Some(target) = f.target(arch) {
                compile_family(f, target).unwrap_or_else(|e| panic!("{e}"));
                compiled += 1;
            }
        }
    }
    assert_eq!(
        compiled,
        2 * Family::ALL.len() - 1,
        "wgmma runs on sm_90 only"
    );
    assert_eq!(Family::AttentionWgmma.target("sm_90"), Some("sm_90a"));
    assert_eq!(Family::AttentionWgmma.target("sm_80"), None);
}

/// Writes every family's PTX for sm_90 into $MINFERENCE_DUMP_PTX (for `ptxas -v` on a GPU box).
#[test]
#[ignore]
fn dump_ptx() {
    let Ok(dir) = std::env::var("MINFERENCE_DUMP_PTX") else {
        return;
    };
    for f in Family::ALL {
        let target = f.target("sm_90").expect("every family runs on sm_90");
        let ptx = compile_family(f, target).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(format!("{dir}/{f:?}.ptx"), ptx.to_src()).expect("ptx written");
    }
}

/// The same suite with the scalar kernel for every dtype (the tensor-core kernel's fallback).
mod scalar {
    use super::common;
    use super::cuda;

    fn scalar() -> Option<Box<dyn minference::Backend>> {
        cuda().map(|_| {
            let b = super::CudaBackend::new().expect("opened a moment ago");
            b.set_scalar_only(true);
            Box::new(b) as Box<dyn minference::Backend>
        })
    }

    macro_rules! scalar_or_skip {
        () => {
            match scalar() {
                Some(b) => b,
                None => return,
            }
        };
    }

    crate::backend_suite!(scalar_or_skip!());
}

/// The generic suite on the CUDA backend with the mma.sync tensor-core kernel (also on sm_90,
/// where wgmma is the default) tiled as `window` for dense and A-shape heads and `sparse` for
/// sparse heads.
fn tiled(window: MmaTiling, sparse: MmaTiling) -> Option<Box<dyn minference::Backend>> {
    cuda().map(|_| {
        let b = CudaBackend::new().expect("opened a moment ago");
        b.set_wgmma(None).expect("turning wgmma off always works");
        b.set_window_tiling(window).expect("a supported tiling");
        b.set_sparse_tiling(sparse).expect("a supported tiling");
        Box::new(b) as Box<dyn minference::Backend>
    })
}

/// Instantiate the generic suite in a module for one pair of tilings.
macro_rules! tiling_suite {
    ($module:ident, ($wb:expr, $wm:expr), $sm:expr) => {
        mod $module {
            use super::common;
            use minference::cuda_backend::MmaTiling;
            macro_rules! tiled_or_skip {
                () => {
                    match super::tiled(
                        MmaTiling {
                            block_m: $wb,
                            warp_mt: $wm,
                        },
                        MmaTiling {
                            block_m: 64,
                            warp_mt: $sm,
                        },
                    ) {
                        Some(b) => b,
                        None => return,
                    }
                };
            }
            crate::backend_suite!(tiled_or_skip!());
        }
    };
}

// Every tiling the mma.sync kernel is instantiated for.
tiling_suite!(mma_default, (128, 2), 1);
tiling_suite!(rows64_warp16_sparse_warp32, (64, 1), 2);
tiling_suite!(rows64_warp32, (64, 2), 1);
tiling_suite!(rows128_warp16, (128, 1), 1);

/// The wgmma kernel with 128-row CTAs for dense and A-shape heads (the main suite runs the
/// default rows); a loud SKIPPED on devices other than sm_90.
mod wgmma_rows128 {
    use super::common;
    use std::io::Write;
    fn wgmma() -> Option<Box<dyn minference::Backend>> {
        super::cuda()?;
        let b = super::CudaBackend::new().expect("opened a moment ago");
        if !b.has_wgmma() {
            let _ = writeln!(std::io::stderr(), "SKIPPED: no wgmma on this device");
            return None;
        }
        b.set_wgmma(Some(128)).expect("sm_90 runs wgmma");
        Some(Box::new(b))
    }
    macro_rules! wgmma_or_skip {
        () => {
            match wgmma() {
                Some(b) => b,
                None => return,
            }
        };
    }
    crate::backend_suite!(wgmma_or_skip!());
}

/// `set_wgmma` checks its argument: rows other than 64 or 128 are an error naming the value,
/// and so is asking for wgmma on a device without it.
#[test]
fn set_wgmma_rejects_bad_rows_and_devices_without_it() {
    let Some(_) = cuda() else { return };
    let b = CudaBackend::new().expect("opened a moment ago");
    let e = b.set_wgmma(Some(96)).expect_err("96 rows").to_string();
    assert!(e.contains("96"), "{e}");
    b.set_wgmma(None).expect("off always works");
    assert_eq!(b.set_wgmma(Some(64)).is_ok(), b.has_wgmma());
}

/// The on-disk PTX cache: a second compile is read back (same PTX), and an entry whose key
/// does not match (an edited kernel) is compiled afresh and replaced.
#[test]
fn ptx_cache_reuses_matching_entries_only() {
    use minference::cuda_backend::compile_family_cached;
    if !nvrtc_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let family = Family::BlockSparseIndex;
    let first = compile_family_cached(family, "sm_80", Some(dir.path()))
        .unwrap_or_else(|e| panic!("{e}"))
        .to_src();
    let entries: Vec<_> = std::fs::read_dir(dir.path().join("ptx"))
        .expect("cache written")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(entries.len(), 2, "one .ptx and one .key: {entries:?}");
    let key = entries
        .iter()
        .find(|p| p.extension().is_some_and(|x| x == "key"))
        .expect("a key file");
    let ptx = key.with_extension("ptx");
    // A planted PTX under the matching key is what the cache returns (proof it was read).
    std::fs::write(&ptx, "// planted\n").expect("write");
    let again = compile_family_cached(family, "sm_80", Some(dir.path()))
        .unwrap_or_else(|e| panic!("{e}"))
        .to_src();
    assert_eq!(again, "// planted\n");
    // A key that no longer matches (as after a kernel edit) compiles afresh and rewrites.
    std::fs::write(key, "arch sm_80\nsomething else").expect("write");
    let fresh = compile_family_cached(family, "sm_80", Some(dir.path()))
        .unwrap_or_else(|e| panic!("{e}"))
        .to_src();
    assert_eq!(fresh, first);
    assert_eq!(std::fs::read_to_string(&ptx).expect("ptx"), first);
}
