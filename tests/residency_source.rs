//! The residency probe's WGSL (`shaders/residency_probe.wgsl`) with `live` vec4s held in
//! registers by `probe_live` (shared by `tests/wgpu_residency.rs` and
//! `tests/wgpu_pipeline_stats.rs`, which reports what the driver made of it).

/// The probe's source as it stands (`probe_live` with no live values).
pub const SOURCE: &str = include_str!("../shaders/residency_probe.wgsl");

/// The probe with `live` vec4s, loaded from `live_in` before `probe_live`'s chain and each
/// multiplied into it on every step (so each stays live: about 4 `live` registers).
pub fn residency_source(live: usize) -> String {
    let load: String = (0..live)
        .map(|i| format!("    let a{i} = live_in[{i}u];\n"))
        .collect();
    let uses: String = (0..live)
        .map(|i| format!("        x = fma(x, a{i}, vec4<f32>(1e-7));\n"))
        .collect();
    SOURCE
        .replace("    // LIVE_LOAD\n", &load)
        .replace("        // LIVE_USE\n", &uses)
}
