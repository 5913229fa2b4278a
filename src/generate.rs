//! Deterministic input generators: plain Gaussian q/k/v, and a structured generator whose
//! heads look like real long-context heads (sinks, a local window, a few heavy columns,
//! periodic diagonals, block clusters), so that indices are not chosen from flat noise.

use crate::error::{invalid, Result};
use crate::tensor::{DType, HostTensor};
use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::Distribution;

/// Gaussian `N(0, 1)` q `[B,Hq,N,D]`, k and v `[B,Hkv,N,D]`, rounded to `dtype`.
pub fn random_qkv(
    b: usize,
    hq: usize,
    hkv: usize,
    n: usize,
    d: usize,
    dtype: DType,
    seed: u64,
) -> Result<(HostTensor, HostTensor, HostTensor)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut gen = |dims: [usize; 4]| {
        let v: Vec<f64> = (0..dims.iter().product::<usize>())
            .map(|_| rng.sample(rand_distr::StandardNormal))
            .collect();
        HostTensor::from_f64(&dims, &v, dtype)
    };
    Ok((
        gen([b, hq, n, d])?,
        gen([b, hkv, n, d])?,
        gen([b, hkv, n, d])?,
    ))
}

/// q, k, v whose scores rise along the keys, to exercise the online softmax's rescaling:
/// every k row j is `4 j / n` in every dim, query row i is `0.5 (1 + i % 3)` in every dim
/// (three slopes, so rows pass their running max at different keys), v is Gaussian.
/// With the `1 / sqrt(D)` scale the scores of a row climb by `2 (1 + i % 3) sqrt(D)` from the
/// first key to the last (16 to 48 at D = 64): many times what any max may lag behind.
pub fn rising_scores_qkv(
    b: usize,
    hq: usize,
    hkv: usize,
    n: usize,
    d: usize,
    dtype: DType,
    seed: u64,
) -> Result<(HostTensor, HostTensor, HostTensor)> {
    let (_, _, v) = random_qkv(b, hq, hkv, n, d, dtype, seed)?;
    let q: Vec<f64> = (0..b * hq * n)
        .flat_map(|r| std::iter::repeat_n(0.5 * (1 + (r % n) % 3) as f64, d))
        .collect();
    let k: Vec<f64> = (0..b * hkv * n)
        .flat_map(|r| std::iter::repeat_n(4.0 * (r % n) as f64 / n as f64, d))
        .collect();
    Ok((
        HostTensor::from_f64(&[b, hq, n, d], &q, dtype)?,
        HostTensor::from_f64(&[b, hkv, n, d], &k, dtype)?,
        v,
    ))
}

/// What a query head of the structured generator attends to.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum HeadKind {
    /// Sink tokens and a local window.
    AShape,
    /// A few heavy key columns and periodic diagonals.
    VerticalSlash,
    /// Clusters of 64-blocks that attend to each other.
    BlockSparse,
    /// Weak structure (near-uniform attention).
    Noise,
}

impl HeadKind {
    /// The kinds in a fixed cycle, for assigning to heads.
    pub const CYCLE: [HeadKind; 3] = [
        HeadKind::AShape,
        HeadKind::VerticalSlash,
        HeadKind::BlockSparse,
    ];
}

/// Structured q, k, v. Query head `h` has kind `kinds[h]`; k and v are shared per kv head.
///
/// Layout of the head dimension (D >= 32): dim 0 is the sink feature (the first 4 tokens),
/// dims `1..9` four positional frequency pairs, dims `9..17` eight block-cluster one-hots,
/// dim 17 the heavy-column feature (6 random key columns per kv head), dims `18..30` six
/// local-window frequency pairs, the rest Gaussian noise. A-shape heads weight the sinks and
/// the local-window pairs, whose periods are incommensurate so that their sum peaks only at
/// offset 0 (no second band within 32K tokens: the sum of the six cosines stays below 3.6
/// of 6 for offsets 350..32768); vertical-slash heads weight the sinks, the heavy columns
/// and the period-97 pair (diagonals). Window logits peak at 12 (sinks add 9), so f16
/// storage of q and k is safe.
pub fn structured_qkv(
    b: usize,
    hkv: usize,
    n: usize,
    d: usize,
    kinds: &[HeadKind],
    dtype: DType,
    seed: u64,
) -> Result<(HostTensor, HostTensor, HostTensor)> {
    if d < 32 {
        return Err(invalid(
            "head_dim",
            format!("the structured generator needs D >= 32, got {d}"),
        ));
    }
    let hq = kinds.len();
    if hkv == 0 || hq % hkv != 0 {
        return Err(invalid(
            "kinds",
            format!("{hq} query heads is not a multiple of {hkv} kv heads"),
        ));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let normal = rand_distr::StandardNormal;
    const POS: usize = 1;
    const CL: usize = 9;
    const CLUSTERS: usize = 8;
    const HEAVY: usize = CL + CLUSTERS;
    const LOCAL: usize = HEAVY + 1;
    // Local-window pairs for A-shape heads: incommensurate periods (see the doc comment),
    // each with amplitude LOCAL_AMP, so the window peaks at 6 * LOCAL_AMP = 12 with a
    // Gaussian-like width of about 80 tokens.
    const LOCAL_PERIODS: [f64; 6] = [937.0, 1787.0, 2461.0, 2628.0, 3117.0, 3711.0];
    const LOCAL_AMP: f64 = 2.0;
    let sqrt_d = (d as f64).sqrt();
    // Periods of the positional pairs: local window ones, and one short period for slashes.
    let periods = [97.0, 1024.0, 2048.0, 4096.0];
    let rows = n.div_ceil(64);
    let mut k = vec![0.0; b * hkv * n * d];
    let mut v = vec![0.0; b * hkv * n * d];
    let mut q = vec![0.0; b * hq * n * d];
    for bi in 0..b {
        for g in 0..hkv {
            let heavy: Vec<usize> = (0..6).map(|_| rng.random_range(0..n)).collect();
            let cluster: Vec<usize> = (0..rows).map(|_| rng.random_range(0..CLUSTERS)).collect();
            let base = (bi * hkv + g) * n * d;
            for j in 0..n {
                let kr = &mut k[base + j * d..base + (j + 1) * d];
                for x in kr.iter_mut() {
                    *x = 0.3 * Distribution::<f64>::sample(&normal, &mut rng);
                }
                kr[0] = if j < 4 { 1.0 } else { 0.0 };
                kr[HEAVY] = if heavy.contains(&j) { 1.0 } else { 0.0 };
                for (f, p) in periods.iter().enumerate() {
                    let w = 2.0 * std::f64::consts::PI * j as f64 / p;
                    kr[POS + 2 * f] = w.cos();
                    kr[POS + 2 * f + 1] = w.sin();
                }
                kr[CL + cluster[j / 64]] = 1.0;
                for (f, p) in LOCAL_PERIODS.iter().enumerate() {
                    let w = 2.0 * std::f64::consts::PI * j as f64 / p;
                    kr[LOCAL + 2 * f] = w.cos();
                    kr[LOCAL + 2 * f + 1] = w.sin();
                }
                for x in v[base + j * d..base + (j + 1) * d].iter_mut() {
                    *x = Distribution::<f64>::sample(&normal, &mut rng);
                }
            }
            for h in (0..hq).filter(|h| h * hkv / hq == g) {
                let qbase = (bi * hq + h) * n * d;
                // Logit weights (before the 1/sqrt(D) scale) per feature group.
                let (sink, heavy_w, pos, slash, cl, local) = match kinds[h] {
                    HeadKind::AShape => (9.0, 0.0, [0.0; 4], 0.0, 0.0, LOCAL_AMP),
                    HeadKind::VerticalSlash => (8.0, 8.0, [0.0; 4], 7.0, 0.0, 0.0),
                    HeadKind::BlockSparse => (1.0, 1.0, [0.0, 0.5, 0.0, 0.0], 0.0, 9.0, 0.0),
                    HeadKind::Noise => (0.5, 0.5, [0.0; 4], 0.0, 0.0, 0.0),
                };
                for i in 0..n {
                    let qr = &mut q[qbase + i * d..qbase + (i + 1) * d];
                    for x in qr.iter_mut() {
                        *x = 0.3 * Distribution::<f64>::sample(&normal, &mut rng);
                    }
                    qr[0] = sink * sqrt_d;
                    qr[HEAVY] = heavy_w * sqrt_d;
                    for (f, p) in periods.iter().enumerate() {
                        let amp = if f == 0 { slash } else { pos[f] };
                        let w = 2.0 * std::f64::consts::PI * i as f64 / p;
                        qr[POS + 2 * f] = amp * sqrt_d * w.cos();
                        qr[POS + 2 * f + 1] = amp * sqrt_d * w.sin();
                    }
                    qr[CL + cluster[i / 64]] = cl * sqrt_d;
                    if local > 0.0 {
                        for (f, p) in LOCAL_PERIODS.iter().enumerate() {
                            let w = 2.0 * std::f64::consts::PI * i as f64 / p;
                            qr[LOCAL + 2 * f] = local * sqrt_d * w.cos();
                            qr[LOCAL + 2 * f + 1] = local * sqrt_d * w.sin();
                        }
                    }
                }
            }
        }
    }
    let qd = [b, hq, n, d];
    let kd = [b, hkv, n, d];
    Ok((
        HostTensor::from_f64(&qd, &q, dtype)?,
        HostTensor::from_f64(&kd, &k, dtype)?,
        HostTensor::from_f64(&kd, &v, dtype)?,
    ))
}
