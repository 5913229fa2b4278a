//! The generic backend suite on the CPU backend.
mod common;

fn cpu() -> Box<dyn minference::Backend> {
    Box::new(minference::CpuBackend::new())
}

backend_suite!(cpu());
