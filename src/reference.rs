//! The float64 reference attention: dense, A-shape and sparse-index attention, written as
//! "for every query row, the set of keys it sees, then a softmax" so that it is obviously
//! right. Backends are compared against it.

use crate::error::{invalid, Result};
use crate::index::{dot, HostIndex};
use crate::pattern::Pattern;
use crate::tensor::{AttnShape, DType};
use rayon::prelude::*;

/// `out_row = softmax(scale * q_row . k[keys]^T) . v[keys]` in float64.
/// An empty key set writes zeros (rows of heads outside the sparse index).
pub fn attend_row(
    q_row: &[f64],
    k: &[f64],
    v: &[f64],
    d: usize,
    scale: f64,
    keys: &[usize],
    out_row: &mut [f64],
) {
    out_row.iter_mut().for_each(|x| *x = 0.0);
    if keys.is_empty() {
        return;
    }
    let scores: Vec<f64> = keys
        .iter()
        .map(|&j| scale * dot(q_row, &k[j * d..(j + 1) * d]))
        .collect();
    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for (&j, &s) in keys.iter().zip(&scores) {
        let p = (s - max).exp();
        sum += p;
        for (o, &vv) in out_row.iter_mut().zip(&v[j * d..(j + 1) * d]) {
            *o += p * vv;
        }
    }
    out_row.iter_mut().for_each(|x| *x /= sum);
}

/// Keys row `i` sees under a token-level pattern (dense or A-shape), ascending.
pub fn window_keys(pattern: &Pattern, i: usize) -> Vec<usize> {
    match *pattern {
        Pattern::AShape { sink, local } => (0..=i).filter(|&j| j < sink || i - j < local).collect(),
        _ => (0..=i).collect(),
    }
}

/// Run `row_keys(b, h, i)` attention for every row of q (`[B, Hq, N, D]`) against k, v
/// (`[B, Hkv, N, D]`); rows run in parallel.
pub fn attention_with<F>(
    shape: &AttnShape,
    q: &[f64],
    k: &[f64],
    v: &[f64],
    row_keys: F,
) -> Result<Vec<f64>>
where
    F: Fn(usize, usize, usize) -> Option<Vec<usize>> + Sync,
{
    let q_len: usize = shape.q_dims().iter().product();
    let kv_len: usize = shape.kv_dims().iter().product();
    for (name, len, want) in [
        ("q", q.len(), q_len),
        ("k", k.len(), kv_len),
        ("v", v.len(), kv_len),
    ] {
        if len != want {
            return Err(invalid(
                name,
                format!("{len} elements, want {want} for shape {shape:?}"),
            ));
        }
    }
    let (n, d) = (shape.seq_len, shape.head_dim);
    let scale = shape.scale();
    let mut out = vec![0.0; q_len];
    out.par_chunks_mut(d).enumerate().for_each(|(row, o)| {
        let (bh, i) = (row / n, row % n);
        let (b, h) = (bh / shape.q_heads, bh % shape.q_heads);
        if let Some(keys) = row_keys(b, h, i) {
            let kv = shape.kv_offset(b, h);
            let qr = &q[shape.q_offset(b, h) + i * d..shape.q_offset(b, h) + (i + 1) * d];
            attend_row(
                qr,
                &k[kv..kv + n * d],
                &v[kv..kv + n * d],
                d,
                scale,
                &keys,
                o,
            );
        } else {
            o.iter_mut().for_each(|x| *x = f64::NAN);
        }
    });
    Ok(out)
}

/// Dense causal attention in float64.
pub fn dense(shape: &AttnShape, q: &[f64], k: &[f64], v: &[f64]) -> Result<Vec<f64>> {
    attention_with(shape, q, k, v, |_, _, i| Some((0..=i).collect()))
}

/// A-shape attention (`j <= i && (j < sink || i - j < local)`) in float64.
pub fn a_shape(
    shape: &AttnShape,
    q: &[f64],
    k: &[f64],
    v: &[f64],
    sink: usize,
    local: usize,
) -> Result<Vec<f64>> {
    let p = Pattern::AShape { sink, local };
    p.validate()?;
    attention_with(shape, q, k, v, |_, _, i| Some(window_keys(&p, i)))
}

/// Attention over a sparse index in float64; rows of non-index heads are zero.
pub fn sparse(
    shape: &AttnShape,
    q: &[f64],
    k: &[f64],
    v: &[f64],
    index: &HostIndex,
) -> Result<Vec<f64>> {
    if index.meta.shape != *shape {
        return Err(invalid(
            "index",
            format!("built for {:?}, used with {shape:?}", index.meta.shape),
        ));
    }
    index.validate()?;
    attention_with(shape, q, k, v, |b, h, i| Some(index.keys_of_row(b, h, i)))
}

/// A whole layer (every head with its own pattern) in float64: builds the index for the
/// vertical-slash and block-sparse heads, then attends. Returns the output and the index.
pub fn layer(
    shape: &AttnShape,
    q: &[f64],
    k: &[f64],
    v: &[f64],
    patterns: &[Pattern],
) -> Result<(Vec<f64>, HostIndex)> {
    let index = crate::index::build_index(shape, q, k, patterns)?;
    let out = attention_with(shape, q, k, v, |b, h, i| {
        Some(if patterns[h].uses_index() {
            index.keys_of_row(b, h, i)
        } else {
            window_keys(&patterns[h], i)
        })
    })?;
    Ok((out, index))
}

/// A naive attention in a low precision, for tolerances: scores and softmax in f32, the
/// probabilities rounded to `dtype` before `P . V` (as a same-precision kernel does), f32
/// accumulation, the output rounded to `dtype`. `keys(b, h, i)` gives each row's keys.
pub fn naive_low_precision<F>(
    shape: &AttnShape,
    q: &[f64],
    k: &[f64],
    v: &[f64],
    dtype: DType,
    keys: F,
) -> Vec<f64>
where
    F: Fn(usize, usize, usize) -> Vec<usize> + Sync,
{
    let (n, d) = (shape.seq_len, shape.head_dim);
    let scale = shape.scale() as f32;
    let mut out = vec![0.0; shape.q_dims().iter().product()];
    out.par_chunks_mut(d).enumerate().for_each(|(row, o)| {
        let (bh, i) = (row / n, row % n);
        let (b, h) = (bh / shape.q_heads, bh % shape.q_heads);
        let keys = keys(b, h, i);
        if keys.is_empty() {
            o.iter_mut().for_each(|x| *x = 0.0);
            return;
        }
        let qo = shape.q_offset(b, h) + i * d;
        let kv = shape.kv_offset(b, h);
        let s: Vec<f32> = keys
            .iter()
            .map(|&j| {
                let mut acc = 0f32;
                for c in 0..d {
                    acc += q[qo + c] as f32 * k[kv + j * d + c] as f32;
                }
                acc * scale
            })
            .collect();
        let max = s.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let p: Vec<f32> = s.iter().map(|&x| (x - max).exp()).collect();
        let sum: f32 = p.iter().sum();
        let mut acc = vec![0f32; d];
        for (&j, &pj) in keys.iter().zip(&p) {
            let pj = dtype.round(pj as f64) as f32;
            for c in 0..d {
                acc[c] += pj * v[kv + j * d + c] as f32;
            }
        }
        for c in 0..d {
            o[c] = dtype.round((acc[c] / sum) as f64);
        }
    });
    out
}

/// `||a - b|| / ||b||` (Frobenius); `inf` when lengths differ or anything is NaN.
pub fn rel_error(a: &[f64], b: &[f64]) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    let (mut num, mut den) = (0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        if !x.is_finite() || !y.is_finite() {
            return f64::INFINITY;
        }
        num += (x - y) * (x - y);
        den += y * y;
    }
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}
