//! The residency probe's WGSL (`shaders/residency_probe.wgsl`) with `live` vec4s held in
//! registers by `probe_live` (shared by `tests/wgpu_residency.rs` and
//! `tests/wgpu_pipeline_stats.rs`, which reports what the driver made of it).

/// The probe's source as it stands (`probe_live` with no live values).
pub const SOURCE: &str = include_str!("../shaders/residency_probe.wgsl");

/// The probe with `live` vec4s, loaded from `live_in` before `probe_live`'s chain and each
/// component multiplied into it on every step (so each stays live: about 4 `live` registers),
/// one scalar fma after the other (a single dependent chain: a warp issues one fma per fma
/// latency, so co-resident warps do not slow each other).
pub fn residency_source(live: usize) -> String {
    let load: String = (0..live)
        .map(|i| format!("    let a{i} = live_in[{i}u];\n"))
        .collect();
    let uses: String = (0..live)
        .flat_map(|i| ["x", "y", "z", "w"].map(move |c| (i, c)))
        .map(|(i, c)| format!("        x = fma(x, a{i}.{c}, 1e-7);\n"))
        .collect();
    SOURCE
        .replace("    // LIVE_LOAD\n", &load)
        .replace("        // LIVE_USE\n", &uses)
}
