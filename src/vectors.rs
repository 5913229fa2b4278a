//! The shared test vectors: their definition, generation, I/O, and the check that every
//! backend must pass.
//!
//! Each case is one safetensors file in `tests/vectors/` with the inputs `q`, `k`, `v`, the
//! float64 output `o` (stored in the inputs' dtype), and for layers with vertical-slash or
//! block-sparse heads the raw selections and the kernel index under MInference's names.
//! Metadata records the generator, the seed, the shape and the per-head patterns, so
//! `minference gen-vectors` regenerates the same tensors (the header's metadata order may differ).

use crate::backend::{run_layer_into, Backend};
use crate::error::{invalid, Error, Result};
use crate::generate::{random_qkv, structured_qkv, HeadKind};
use crate::index::{build_index, vertical_slash_scores, HostIndex, IndexMeta};
use crate::io::{get_index, put_index, StFile};
use crate::pattern::{Pattern, BLOCK};
use crate::reference::{self, window_keys};
use crate::tensor::{AttnShape, DType, HostTensor};
use std::path::{Path, PathBuf};

/// How a case's inputs are made.
#[derive(Clone, Debug, PartialEq)]
pub enum Inputs {
    /// Gaussian noise.
    Random,
    /// The structured generator with one kind per query head.
    Structured(Vec<HeadKind>),
}

/// The definition of one vector case.
#[derive(Clone, Debug, PartialEq)]
pub struct CaseSpec {
    /// File stem.
    pub name: String,
    /// Problem shape.
    pub shape: AttnShape,
    /// Storage dtype of inputs and the stored output.
    pub dtype: DType,
    /// One pattern per query head.
    pub patterns: Vec<Pattern>,
    /// Input generator.
    pub inputs: Inputs,
    /// RNG seed.
    pub seed: u64,
}

impl CaseSpec {
    /// Generate the inputs.
    pub fn qkv(&self) -> Result<(HostTensor, HostTensor, HostTensor)> {
        let s = &self.shape;
        match &self.inputs {
            Inputs::Random => random_qkv(
                s.batch, s.q_heads, s.kv_heads, s.seq_len, s.head_dim, self.dtype, self.seed,
            ),
            Inputs::Structured(kinds) => structured_qkv(
                s.batch, s.kv_heads, s.seq_len, s.head_dim, kinds, self.dtype, self.seed,
            ),
        }
    }
}

fn kind_name(k: HeadKind) -> &'static str {
    match k {
        HeadKind::AShape => "a-shape",
        HeadKind::VerticalSlash => "vertical-slash",
        HeadKind::BlockSparse => "block-sparse",
        HeadKind::Noise => "noise",
    }
}

fn kind_from(s: &str) -> Result<HeadKind> {
    Ok(match s {
        "a-shape" => HeadKind::AShape,
        "vertical-slash" => HeadKind::VerticalSlash,
        "block-sparse" => HeadKind::BlockSparse,
        "noise" => HeadKind::Noise,
        _ => return Err(invalid("generator", format!("unknown head kind `{s}`"))),
    })
}

/// The shared cases: every pattern; N in {1, 63, 64, 65, 200, 1000}; D in {64, 128}; GQA
/// ratios 1, 2, 4; B = 2; budgets larger than N; structured inputs; mixed layers.
pub fn default_cases() -> Vec<CaseSpec> {
    use HeadKind::*;
    let p = |s: &str| -> Pattern { s.parse().unwrap_or(Pattern::Dense) };
    let mut cases = Vec::new();
    let mut add = |name: &str,
                   (b, hq, hkv, n, d): (usize, usize, usize, usize, usize),
                   dtype,
                   pats: &[&str],
                   inputs: Inputs| {
        let patterns: Vec<Pattern> = if pats.len() == 1 {
            vec![p(pats[0]); hq]
        } else {
            pats.iter().map(|s| p(s)).collect()
        };
        let seed = 1000 + cases.len() as u64;
        if let Ok(shape) = AttnShape::new(b, hq, hkv, n, d) {
            cases.push(CaseSpec {
                name: name.into(),
                shape,
                dtype,
                patterns,
                inputs,
                seed,
            });
        }
    };
    use DType::{F16, F32};
    use Inputs::Random as R;
    let st = |k: &[HeadKind]| Inputs::Structured(k.to_vec());
    // f32 cases stay small (N <= 64); larger ones are f16 to keep tests/vectors a few MiB.
    add("dense_n1_d64", (2, 2, 1, 1, 64), F32, &["dense"], R);
    add(
        "dense_n65_d128_gqa4",
        (1, 4, 1, 65, 128),
        F16,
        &["dense"],
        R,
    );
    add("dense_n200_d64", (1, 2, 2, 200, 64), F16, &["dense"], R);
    add(
        "ashape_n63_d64",
        (2, 2, 2, 63, 64),
        F32,
        &["a-shape:4,16"],
        R,
    );
    add(
        "ashape_n200_d128_gqa2",
        (1, 2, 1, 200, 128),
        F16,
        &["a-shape:8,64"],
        R,
    );
    add(
        "ashape_n65_budget_gt_n",
        (2, 2, 1, 65, 64),
        F16,
        &["a-shape:100,500"],
        R,
    );
    add(
        "vs_n1_d64",
        (2, 2, 1, 1, 64),
        F32,
        &["vertical-slash:30,50"],
        R,
    );
    add(
        "vs_n64_d64",
        (2, 2, 1, 64, 64),
        F32,
        &["vertical-slash:40,60"],
        R,
    );
    add(
        "vs_n65_d128_gqa2",
        (2, 2, 1, 65, 128),
        F16,
        &["vertical-slash:45,70"],
        R,
    );
    add(
        "vs_n200_d64_gqa4",
        (1, 4, 1, 200, 64),
        F16,
        &["vertical-slash:50,120"],
        R,
    );
    add(
        "vs_n63_budget_gt_n",
        (2, 2, 2, 63, 64),
        F32,
        &["vertical-slash:1000,6096"],
        R,
    );
    add(
        "vs_n200_d128_structured",
        (1, 2, 2, 200, 128),
        F16,
        &["vertical-slash:40,110"],
        st(&[VerticalSlash, VerticalSlash]),
    );
    add(
        "vs_n1000_structured",
        (1, 2, 1, 1000, 64),
        F16,
        &["vertical-slash:100,300"],
        st(&[VerticalSlash, VerticalSlash]),
    );
    add("bs_n63_d64", (2, 2, 1, 63, 64), F32, &["block-sparse:1"], R);
    add(
        "bs_n65_d128",
        (2, 2, 2, 65, 128),
        F16,
        &["block-sparse:2"],
        R,
    );
    add(
        "bs_n200_d64_gqa4",
        (1, 4, 1, 200, 64),
        F16,
        &["block-sparse:2"],
        R,
    );
    add(
        "bs_n200_budget_gt_n",
        (2, 2, 1, 200, 64),
        F16,
        &["block-sparse:100"],
        R,
    );
    add(
        "mixed_n130_d64_gqa2",
        (2, 4, 2, 130, 64),
        F16,
        &[
            "vertical-slash:40,60",
            "block-sparse:2",
            "a-shape:4,32",
            "dense",
        ],
        st(&[VerticalSlash, BlockSparse, AShape, Noise]),
    );
    add(
        "mixed_n1000_d64_gqa2",
        (1, 2, 1, 1000, 64),
        F16,
        &["a-shape:16,256", "block-sparse:4"],
        st(&[AShape, BlockSparse]),
    );
    add(
        "mixed_n333_d64_gqa2",
        (1, 4, 2, 333, 64),
        F16,
        &[
            "a-shape:8,128",
            "vertical-slash:60,200",
            "block-sparse:3",
            "vertical-slash:30,50",
        ],
        st(&[AShape, VerticalSlash, BlockSparse, Noise]),
    );
    cases
}

/// A stored case: its definition, inputs and expected results.
#[derive(Clone, Debug)]
pub struct VectorCase {
    /// The definition.
    pub spec: CaseSpec,
    /// `[B, Hq, N, D]`.
    pub q: HostTensor,
    /// `[B, Hkv, N, D]`.
    pub k: HostTensor,
    /// `[B, Hkv, N, D]`.
    pub v: HostTensor,
    /// Expected output `[B, Hq, N, D]`: the float64 reference, stored in the case's dtype.
    pub o: HostTensor,
    /// Expected index, for layers with index heads.
    pub index: Option<HostIndex>,
}

impl VectorCase {
    /// Generate a case from its spec with the float64 reference.
    pub fn generate(spec: &CaseSpec) -> Result<Self> {
        let (q, k, v) = spec.qkv()?;
        let (out, index) = reference::layer(
            &spec.shape,
            &q.to_f64(),
            &k.to_f64(),
            &v.to_f64(),
            &spec.patterns,
        )?;
        let o = HostTensor::from_f64(&spec.shape.q_dims(), &out, spec.dtype)?;
        let index = spec
            .patterns
            .iter()
            .any(Pattern::uses_index)
            .then_some(index);
        Ok(Self {
            spec: spec.clone(),
            q,
            k,
            v,
            o,
            index,
        })
    }

    /// Make the case runnable on a backend that lacks its dtype: convert inputs and expected
    /// output to f32 (or the backend's first dtype). Returns the dtype it had, if converted.
    pub fn cast_for(&mut self, info: &crate::backend::BackendInfo) -> Option<DType> {
        let from = self.spec.dtype;
        if info.dtypes.contains(&from) {
            return None;
        }
        let to = match info.dtypes.first() {
            Some(_) if info.dtypes.contains(&DType::F32) => DType::F32,
            Some(&d) => d,
            None => return None,
        };
        self.spec.dtype = to;
        for t in [&mut self.q, &mut self.k, &mut self.v, &mut self.o] {
            *t = t.cast(to);
        }
        Some(from)
    }

    /// Write to `dir/NAME.safetensors`.
    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        let s = &self.spec;
        let mut f = StFile::default();
        f.put_float("q", self.q.clone());
        f.put_float("k", self.k.clone());
        f.put_float("v", self.v.clone());
        f.put_float("o", self.o.clone());
        if let Some(ix) = &self.index {
            put_index(&mut f, ix);
        }
        let pats: Vec<String> = s.patterns.iter().map(|p| p.to_string()).collect();
        let gen = match &s.inputs {
            Inputs::Random => "random".to_string(),
            Inputs::Structured(k) => format!(
                "structured:{}",
                k.iter()
                    .map(|x| kind_name(*x))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        };
        let sh = &s.shape;
        for (key, val) in [
            ("name", s.name.clone()),
            ("patterns", pats.join(";")),
            ("generator", gen),
            ("seed", s.seed.to_string()),
            ("dtype", s.dtype.to_string()),
            (
                "shape",
                format!(
                    "{},{},{},{},{}",
                    sh.batch, sh.q_heads, sh.kv_heads, sh.seq_len, sh.head_dim
                ),
            ),
            (
                "made_by",
                "minference gen-vectors (float64 reference)".to_string(),
            ),
        ] {
            f.metadata.insert(key.into(), val);
        }
        let path = dir.join(format!("{}.safetensors", s.name));
        f.write(&path)?;
        Ok(path)
    }

    /// Read a case file.
    pub fn read(path: &Path) -> Result<Self> {
        let f = StFile::read(path)?;
        let p = path.display().to_string();
        let meta = |k: &str| {
            f.metadata
                .get(k)
                .cloned()
                .ok_or_else(|| Error::SafeTensors {
                    path: p.clone(),
                    msg: format!("metadata `{k}` missing"),
                })
        };
        let nums: Vec<usize> = meta("shape")?
            .split(',')
            .map(|x| {
                x.parse()
                    .map_err(|_| invalid("shape", format!("bad metadata in {p}")))
            })
            .collect::<Result<_>>()?;
        if nums.len() != 5 {
            return Err(invalid("shape", format!("{p}: want 5 numbers")));
        }
        let shape = AttnShape::new(nums[0], nums[1], nums[2], nums[3], nums[4])?;
        let patterns: Vec<Pattern> = meta("patterns")?
            .split(';')
            .map(str::parse)
            .collect::<Result<_>>()?;
        let gen = meta("generator")?;
        let inputs = match gen.strip_prefix("structured:") {
            Some(k) => Inputs::Structured(k.split(',').map(kind_from).collect::<Result<_>>()?),
            None => Inputs::Random,
        };
        let spec = CaseSpec {
            name: meta("name")?,
            shape,
            dtype: meta("dtype")?.parse()?,
            patterns,
            inputs,
            seed: meta("seed")?
                .parse()
                .map_err(|_| invalid("seed", format!("bad metadata in {p}")))?,
        };
        let index = if spec.patterns.iter().any(Pattern::uses_index) {
            Some(get_index(&f, IndexMeta::new(shape, &spec.patterns)?)?)
        } else {
            None
        };
        Ok(Self {
            q: f.float("q")?.clone(),
            k: f.float("k")?.clone(),
            v: f.float("v")?.clone(),
            o: f.float("o")?.clone(),
            spec,
            index,
        })
    }
}

/// Every `*.safetensors` case in `dir`, sorted by name.
pub fn list_cases(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|source| Error::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    v.sort();
    if v.is_empty() {
        return Err(invalid(
            "--vectors",
            format!("no *.safetensors cases in {}", dir.display()),
        ));
    }
    Ok(v)
}

/// The outcome of checking one case on one backend.
#[derive(Clone, Debug)]
pub struct CaseReport {
    /// Case name.
    pub name: String,
    /// Did it pass.
    pub passed: bool,
    /// Max abs error of the output against the float64 reference.
    pub max_err: f64,
    /// The tolerance it was held to.
    pub tol: f64,
    /// Frobenius relative error.
    pub rel_err: f64,
    /// Whether the backend's selections were identical to the stored ones.
    pub same_selection: bool,
    /// What failed (or a short summary).
    pub detail: String,
}

/// Absolute tolerance floor per dtype (the FlashAttention rule adds it to twice the error
/// of a naive same-precision computation).
pub fn atol(dtype: DType) -> f64 {
    match dtype {
        DType::F32 => 2e-5,
        DType::F16 => 2e-3,
        DType::BF16 => 1.6e-2,
    }
}

/// Per row of the layer, the keys it sees given an index (for index heads) and the patterns.
pub fn layer_keys<'a>(
    patterns: &'a [Pattern],
    index: Option<&'a HostIndex>,
) -> impl Fn(usize, usize, usize) -> Vec<usize> + Sync + 'a {
    move |b, h, i| match (patterns[h].uses_index(), index) {
        (true, Some(ix)) => ix.keys_of_row(b, h, i),
        _ => window_keys(&patterns[h], i),
    }
}

/// True if `got` is an acceptable top-k for `scores` given `want`: the two sets differ only
/// in entries whose scores are within `tol` of the selection threshold (near-ties that
/// lower-precision arithmetic may order differently).
pub fn same_top_k(got: &[i32], want: &[i32], scores: &[f64], tol: f64) -> bool {
    let g: Vec<i32> = got.iter().copied().filter(|&x| x >= 0).collect();
    let w: Vec<i32> = want.iter().copied().filter(|&x| x >= 0).collect();
    if g.len() != w.len() || g.iter().any(|&x| x as usize >= scores.len()) {
        return false;
    }
    let thr = w
        .iter()
        .map(|&x| scores[x as usize])
        .fold(f64::INFINITY, f64::min);
    let near = |x: &i32| {
        (scores[*x as usize] - thr).abs() <= tol
            || scores[*x as usize].is_infinite() && thr.is_infinite()
    };
    g.iter().filter(|x| !w.contains(x)).all(near) && w.iter().filter(|x| !g.contains(x)).all(near)
}

/// Check the backend's raw selections against the stored ones (tie-tolerant).
fn check_selections(
    case: &VectorCase,
    got: &HostIndex,
    want: &HostIndex,
) -> std::result::Result<(), String> {
    let s = &case.spec.shape;
    let (q, k) = (case.q.to_f64(), case.k.to_f64());
    let (n, d) = (s.seq_len, s.head_dim);
    let m = &want.meta;
    for b in 0..s.batch {
        for h in 0..s.q_heads {
            let bh = b * s.q_heads + h;
            match case.spec.patterns[h] {
                Pattern::VerticalSlash { .. } => {
                    let qh = &q[s.q_offset(b, h)..s.q_offset(b, h) + n * d];
                    let kh = &k[s.kv_offset(b, h)..s.kv_offset(b, h) + n * d];
                    let (vs, ss) = vertical_slash_scores(qh, kh, n, d, s.scale());
                    let tol = 1e-3;
                    let (gv, wv) = (
                        &got.vertical_index[bh * m.nv..(bh + 1) * m.nv],
                        &want.vertical_index[bh * m.nv..(bh + 1) * m.nv],
                    );
                    let mut vs2 = vs.clone();
                    vs2.iter_mut()
                        .take(crate::pattern::FORCED_COLUMNS)
                        .for_each(|x| *x = f64::INFINITY);
                    if !same_top_k(gv, wv, &vs2, tol) {
                        return Err(format!(
                            "b{b} h{h}: vertical_index {gv:?} != {wv:?} beyond near-ties"
                        ));
                    }
                    let (gs, ws) = (
                        &got.slash_index[bh * m.ns..(bh + 1) * m.ns],
                        &want.slash_index[bh * m.ns..(bh + 1) * m.ns],
                    );
                    let mut ss2 = ss.clone();
                    ss2.iter_mut()
                        .take(crate::pattern::FORCED_OFFSETS)
                        .for_each(|x| *x = f64::INFINITY);
                    if !same_top_k(gs, ws, &ss2, tol) {
                        return Err(format!(
                            "b{b} h{h}: slash_index {gs:?} != {ws:?} beyond near-ties"
                        ));
                    }
                }
                Pattern::BlockSparse { .. } => {
                    let qp = crate::index::mean_pool(
                        &q[s.q_offset(b, h)..s.q_offset(b, h) + n * d],
                        n,
                        d,
                    );
                    let kp = crate::index::mean_pool(
                        &k[s.kv_offset(b, h)..s.kv_offset(b, h) + n * d],
                        n,
                        d,
                    );
                    for row in 0..m.rows {
                        let at = (bh * m.rows + row) * m.top_k;
                        let (g, w) = (
                            &got.block_index[at..at + m.top_k],
                            &want.block_index[at..at + m.top_k],
                        );
                        let mut sc: Vec<f64> = (0..=row)
                            .map(|c| {
                                crate::index::dot(
                                    &qp[row * d..(row + 1) * d],
                                    &kp[c * d..(c + 1) * d],
                                )
                            })
                            .collect();
                        sc[row] = f64::INFINITY;
                        let scale = sc[..row].iter().fold(1.0f64, |a, x| a.max(x.abs()));
                        if !same_top_k(g, w, &sc, 1e-3 * scale) {
                            return Err(format!("b{b} h{h} row block {row}: block_index {g:?} != {w:?} beyond near-ties"));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// The float64 output of a layer on a given index (the backend's own, for index heads) and
/// the tolerance a backend storing `dtype` is held to: FlashAttention's rule, twice the max
/// error of a naive same-precision computation ([`reference::naive_low_precision`]) plus
/// [`atol`].
pub fn reference_and_tolerance(
    shape: &AttnShape,
    [q, k, v]: [&HostTensor; 3],
    dtype: DType,
    patterns: &[Pattern],
    index: Option<&HostIndex>,
) -> Result<(Vec<f64>, f64)> {
    let (qf, kf, vf) = (q.to_f64(), k.to_f64(), v.to_f64());
    let keys = layer_keys(patterns, index);
    let want = reference::attention_with(shape, &qf, &kf, &vf, |b, h, i| Some(keys(b, h, i)))?;
    let naive = reference::naive_low_precision(shape, &qf, &kf, &vf, dtype, &keys);
    let naive_err = naive
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    Ok((want, 2.0 * naive_err + atol(dtype)))
}

/// Run one case on a backend: poisoned output, layer run, index checks, output tolerance.
pub fn check_case(backend: &dyn Backend, case: &VectorCase) -> Result<CaseReport> {
    let spec = &case.spec;
    let shape = spec.shape;
    let (q, k, v) = (
        backend.upload(&case.q)?,
        backend.upload(&case.k)?,
        backend.upload(&case.v)?,
    );
    let mut out = backend.upload(&HostTensor::filled(&shape.q_dims(), f64::NAN, spec.dtype))?;
    let ix = run_layer_into(backend, &q, &k, &v, &spec.patterns, &mut out)?;
    backend.synchronize()?;
    let got = backend.download(&out)?.to_f64();
    let mut problems = Vec::new();
    let got_index = match &ix {
        Some(ix) => Some(backend.download_index(ix)?),
        None => None,
    };
    let mut same_selection = true;
    if let (Some(g), Some(w)) = (&got_index, &case.index) {
        g.validate()?;
        match g.reconverted() {
            Ok(r) if r == *g => {}
            Ok(_) => {
                problems.push("index differs from the conversion of its own selections".to_string())
            }
            Err(e) => problems.push(format!("selections do not convert: {e}")),
        }
        same_selection = g.vertical_index == w.vertical_index
            && g.slash_index == w.slash_index
            && g.block_index == w.block_index;
        if same_selection && g != w {
            problems.push("same selections as stored but a different kernel index".into());
        }
        if let Err(e) = check_selections(case, g, w) {
            problems.push(e);
        }
    }
    // The float64 reference on the backend's own index (== the stored `o` when selections match).
    let (want, tol) = reference_and_tolerance(
        &shape,
        [&case.q, &case.k, &case.v],
        spec.dtype,
        &spec.patterns,
        got_index.as_ref(),
    )?;
    let mut max_err = 0.0f64;
    let mut worst = None;
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let e = (g - w).abs();
        if !g.is_finite() {
            worst = Some((i, *g, *w));
            max_err = f64::INFINITY;
            break;
        }
        if e > max_err {
            max_err = e;
            if e > tol {
                worst = Some((i, *g, *w));
            }
        }
    }
    if let Some((i, g, w)) = worst.filter(|_| max_err > tol) {
        let (d, n) = (shape.head_dim, shape.seq_len);
        let (row, c) = (i / d, i % d);
        problems.push(format!(
            "output[b{} h{} row {} col {c}] = {g} want {w} (max err {max_err:.3e} > tol {tol:.3e}{})",
            row / n / shape.q_heads,
            row / n % shape.q_heads,
            row % n,
            if g.is_nan() { ", unwritten or NaN" } else { "" }
        ));
    }
    if same_selection {
        let stored = case.o.to_f64();
        let e = stored
            .iter()
            .zip(&got)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        let stol = tol + spec.dtype.eps() * 2.0 * stored.iter().fold(0.0f64, |a, x| a.max(x.abs()));
        if e.is_nan() || e > stol {
            problems.push(format!(
                "output differs from the stored reference by {e:.3e} > {stol:.3e}"
            ));
        }
    }
    let rel_err = reference::rel_error(&got, &want);
    let passed = problems.is_empty();
    let detail = if passed {
        format!(
            "max err {max_err:.2e} <= tol {tol:.2e}, rel {rel_err:.2e}{}",
            if same_selection {
                ""
            } else {
                ", selections differ only at near-ties"
            }
        )
    } else {
        problems.join("; ")
    };
    Ok(CaseReport {
        name: spec.name.clone(),
        passed,
        max_err,
        tol,
        rel_err,
        same_selection,
        detail,
    })
}

/// Generate every default case into `dir`; returns the written paths.
pub fn generate_all(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.display().to_string(),
        source,
    })?;
    default_cases()
        .iter()
        .map(|c| VectorCase::generate(c)?.write(dir))
        .collect()
}

/// Check that `index` matches the float64 reference index built from q and k, tie-tolerant;
/// used by fresh-input tests of GPU index builders.
pub fn check_index_against_reference(
    shape: &AttnShape,
    q: &HostTensor,
    k: &HostTensor,
    v: &HostTensor,
    patterns: &[Pattern],
    got: &HostIndex,
) -> std::result::Result<(), String> {
    let want = build_index(shape, &q.to_f64(), &k.to_f64(), patterns).map_err(|e| e.to_string())?;
    let case = VectorCase {
        spec: CaseSpec {
            name: "fresh".into(),
            shape: *shape,
            dtype: q.dtype(),
            patterns: patterns.to_vec(),
            inputs: Inputs::Random,
            seed: 0,
        },
        q: q.clone(),
        k: k.clone(),
        v: v.clone(),
        o: q.clone(),
        index: None,
    };
    check_selections(&case, got, &want)?;
    match got.reconverted() {
        Ok(r) if r == *got => Ok(()),
        Ok(_) => Err("index differs from the conversion of its own selections".into()),
        Err(e) => Err(e.to_string()),
    }
}

#[allow(dead_code)]
const _: usize = BLOCK;
