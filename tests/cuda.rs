//! The generic backend suite on the CUDA backend (needs `--features cuda` and a GPU).
//!
//! Without a GPU the suite prints `SKIPPED` and passes, unless `MINFERENCE_REQUIRE_CUDA=1`.
#![cfg(feature = "cuda")]
mod common;

use minference::cuda_backend::{compile_family, nvrtc_present, CudaBackend, Family};
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

/// Every kernel family compiles with NVRTC for sm_80 and sm_90 (needs only libnvrtc).
#[test]
fn every_family_compiles_for_sm80_and_sm90() {
    if !nvrtc_present() {
        if std::env::var("MINFERENCE_REQUIRE_CUDA").as_deref() == Ok("1") {
            panic!("MINFERENCE_REQUIRE_CUDA=1 but libnvrtc is not found");
        }
        let _ = writeln!(std::io::stderr(), "SKIPPED: libnvrtc not found");
        return;
    }
    for arch in ["sm_80", "sm_90"] {
        for f in Family::ALL {
            compile_family(f, arch).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

/// Writes every family's PTX for sm_90 into $MINFERENCE_DUMP_PTX (for `ptxas -v` on a GPU box).
#[test]
#[ignore]
fn dump_ptx() {
    let Ok(dir) = std::env::var("MINFERENCE_DUMP_PTX") else {
        return;
    };
    for f in Family::ALL {
        let ptx = compile_family(f, "sm_90").unwrap_or_else(|e| panic!("{e}"));
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

/// The same suite with the tensor-core kernel's 2-warps x 32-rows variant.
mod warp_tiles_2 {
    use super::common;
    use super::cuda;

    fn mt2() -> Option<Box<dyn minference::Backend>> {
        cuda().map(|_| {
            let b = super::CudaBackend::new().expect("opened a moment ago");
            b.set_warp_tiles(2).expect("2 is supported");
            Box::new(b) as Box<dyn minference::Backend>
        })
    }

    macro_rules! mt2_or_skip {
        () => {
            match mt2() {
                Some(b) => b,
                None => return,
            }
        };
    }

    crate::backend_suite!(mt2_or_skip!());
}

/// The same suite with 128-row CTAs for dense and A-shape heads.
mod wide_rows {
    use super::common;
    use super::cuda;

    fn wide() -> Option<Box<dyn minference::Backend>> {
        cuda().map(|_| {
            let b = super::CudaBackend::new().expect("opened a moment ago");
            b.set_wide_rows(true);
            Box::new(b) as Box<dyn minference::Backend>
        })
    }

    macro_rules! wide_or_skip {
        () => {
            match wide() {
                Some(b) => b,
                None => return,
            }
        };
    }

    crate::backend_suite!(wide_or_skip!());
}

/// The same suite with 128-row CTAs of 4 warps x 32 rows for dense and A-shape heads
/// (sparse heads: 2 warps x 32 rows).
mod wide_rows_warp_tiles_2 {
    use super::common;
    use super::cuda;

    fn wide_mt2() -> Option<Box<dyn minference::Backend>> {
        cuda().map(|_| {
            let b = super::CudaBackend::new().expect("opened a moment ago");
            b.set_warp_tiles(2).expect("2 is supported");
            b.set_wide_rows(true);
            Box::new(b) as Box<dyn minference::Backend>
        })
    }

    macro_rules! wide_mt2_or_skip {
        () => {
            match wide_mt2() {
                Some(b) => b,
                None => return,
            }
        };
    }

    crate::backend_suite!(wide_mt2_or_skip!());
}
