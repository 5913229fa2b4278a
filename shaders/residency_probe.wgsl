// Residency probe (tests/wgpu_residency.rs): how many workgroups of a given size and workgroup
// memory the driver keeps on one SM at once. Each workgroup touches SMEM_VEC4 vec4s of
// workgroup memory (so the driver allocates them), then every invocation runs a dependent
// chain of ITERS fma: a fixed time per workgroup that co-resident workgroups do not slow down
// while each scheduler holds at most 4 warps. Dispatching k workgroups per SM then takes about
// ceil(k / resident) times as long as one per SM. `probe_live` does the same with LIVE vec4s
// loaded before the chain and read by it, one component after the other, on every step (one
// scalar chain still), so they stay in registers (the test
// writes their declarations, loads and uses at the LIVE_* markers: about 4 LIVE + a few
// registers per invocation; 0 in this file as it stands).

override WG: u32 = 128u;
override SMEM_VEC4: u32 = 1u;
override ITERS: u32 = 65536u;

@group(0) @binding(0) var<storage, read_write> out: array<f32>; // [workgroups * WG]

var<workgroup> pad: array<vec4<f32>, SMEM_VEC4>;

/// Touch the workgroup memory (so the driver allocates it), then the chain's start value,
/// which depends on it and on the workgroup.
fn start_value(lid: u32, wid: vec3<u32>) -> f32 {
    for (var i = lid; i < SMEM_VEC4; i += WG) {
        pad[i] = vec4<f32>(f32(i));
    }
    workgroupBarrier();
    return pad[lid % SMEM_VEC4].x * 1e-9 + f32(wid.x) * 1e-7 + 1.0;
}

@compute @workgroup_size(WG)
fn probe(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    var x = start_value(lid, wid);
    // The dependent chain (the store keeps it live).
    for (var i = 0u; i < ITERS; i++) {
        x = fma(x, 0.99999994, 1e-7);
    }
    out[wid.x * WG + lid] = x;
}

@group(0) @binding(1) var<storage, read> live_in: array<vec4<f32>>; // [LIVE]

@compute @workgroup_size(WG)
fn probe_live(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    var x = start_value(lid, wid);
    // LIVE_LOAD
    for (var i = 0u; i < ITERS / 128u; i++) {
        x = fma(x, 0.99999994, 1e-7);
        // LIVE_USE
    }
    out[wid.x * WG + lid] = x + f32(arrayLength(&live_in)) * 0.0;
}
