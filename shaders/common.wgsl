// Shared by every kernel that reads q, k, v: storage access in f32 or packed f16.
//
// Tensors are bound as `array<u32>`: an f32 element is one word (bitcast), an f16 element
// is half a word (two per u32, element 2w in the low half), so f16 storage needs no
// SHADER_F16 feature. Arithmetic is f32 everywhere.

@group(0) @binding(1) var<storage, read> q: array<u32>; // [B, Hq, N, D]
@group(0) @binding(2) var<storage, read> k: array<u32>; // [B, Hkv, N, D]
@group(0) @binding(3) var<storage, read> v: array<u32>; // [B, Hkv, N, D]

const LOG2E: f32 = 1.4426950408889634;
/// Largest head dim: sizes the private and workgroup arrays.
const MAX_HEAD_DIM: u32 = 128u;

/// Set by each entry point: true for the `_f16` entries.
var<private> storage_f16: bool;

fn unpack_elem(word: u32, i: u32) -> f32 {
    return unpack2x16float(word)[i & 1u];
}

fn load_q(i: u32) -> f32 {
    if storage_f16 {
        return unpack_elem(q[i >> 1u], i);
    }
    return bitcast<f32>(q[i]);
}

fn load_k(i: u32) -> f32 {
    if storage_f16 {
        return unpack_elem(k[i >> 1u], i);
    }
    return bitcast<f32>(k[i]);
}

fn load_v(i: u32) -> f32 {
    if storage_f16 {
        return unpack_elem(v[i >> 1u], i);
    }
    return bitcast<f32>(v[i]);
}

/// Four consecutive elements starting at `i` (a multiple of 4).
fn load_q4(i: u32) -> vec4<f32> {
    if storage_f16 {
        let w = i >> 1u;
        return vec4<f32>(unpack2x16float(q[w]), unpack2x16float(q[w + 1u]));
    }
    return vec4<f32>(bitcast<f32>(q[i]), bitcast<f32>(q[i + 1u]), bitcast<f32>(q[i + 2u]), bitcast<f32>(q[i + 3u]));
}

fn load_k4(i: u32) -> vec4<f32> {
    if storage_f16 {
        let w = i >> 1u;
        return vec4<f32>(unpack2x16float(k[w]), unpack2x16float(k[w + 1u]));
    }
    return vec4<f32>(bitcast<f32>(k[i]), bitcast<f32>(k[i + 1u]), bitcast<f32>(k[i + 2u]), bitcast<f32>(k[i + 3u]));
}

fn load_v4(i: u32) -> vec4<f32> {
    if storage_f16 {
        let w = i >> 1u;
        return vec4<f32>(unpack2x16float(v[w]), unpack2x16float(v[w + 1u]));
    }
    return vec4<f32>(bitcast<f32>(v[i]), bitcast<f32>(v[i + 1u]), bitcast<f32>(v[i + 2u]), bitcast<f32>(v[i + 3u]));
}

fn positive_infinity() -> f32 {
    return bitcast<f32>(0x7f800000u);
}

/// exp2 that is exactly 0 below 2^-120 and never sees a huge negative argument (the
/// running max starts at the finite MASKED; some drivers mishandle exp2 far out of range).
fn exp2_clamped(x: f32) -> f32 {
    return select(0.0, exp2(max(x, -120.0)), x > -120.0);
}
