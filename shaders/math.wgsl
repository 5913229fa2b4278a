// Scalar helpers shared by every module (after common.wgsl, or after a coop module's own
// bindings).

fn positive_infinity() -> f32 {
    return bitcast<f32>(0x7f800000u);
}

/// exp2 that is exactly 0 below 2^-120 and never sees a huge negative argument (the
/// running max starts at the finite MASKED; some drivers mishandle exp2 far out of range).
fn exp2_clamped(x: f32) -> f32 {
    return select(0.0, exp2(max(x, -120.0)), x > -120.0);
}

fn max4(x: vec4<f32>) -> f32 {
    return max(max(x.x, x.y), max(x.z, x.w));
}

/// exp2_clamped of each component.
fn exp2_clamped4(x: vec4<f32>) -> vec4<f32> {
    return select(vec4<f32>(0.0), exp2(max(x, vec4<f32>(-120.0))), x > vec4<f32>(-120.0));
}
