//! The generic backend suite on the wgpu backend.
//!
//! Without an adapter the tests print a loud SKIPPED line and pass, unless
//! `MINFERENCE_REQUIRE_WGPU=1` (CI, with Mesa lavapipe installed): then they fail.
mod common;

use minference::wgpu_backend::WgpuBackend;
use minference::Backend;

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
        .err()
        .expect("a 64 GiB tensor must be refused");
    let msg = e.to_string();
    assert!(
        matches!(e, minference::Error::Unsupported { .. })
            && msg.contains("max_storage_buffer_binding_size"),
        "{msg}"
    );
}
