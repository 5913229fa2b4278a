//! Host tensors, dtypes and the attention problem's shape.

use crate::error::{invalid, Result};
use crate::pattern::BLOCK;
use half::{bf16, f16};

/// Storage dtype of q, k, v and the output.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE float32.
    F32,
    /// IEEE float16.
    F16,
    /// bfloat16.
    BF16,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }
    /// Lower-case name (`f32`, `f16`, `bf16`).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
        }
    }
    /// Round a value to this dtype and back (what storing it does).
    pub fn round(self, x: f64) -> f64 {
        match self {
            DType::F32 => x as f32 as f64,
            DType::F16 => f16::from_f64(x).to_f64(),
            DType::BF16 => bf16::from_f64(x).to_f64(),
        }
    }
    /// Unit roundoff of the dtype (half an ulp at 1.0).
    pub fn eps(self) -> f64 {
        match self {
            DType::F32 => f32::EPSILON as f64 / 2.0,
            DType::F16 => 2f64.powi(-11),
            DType::BF16 => 2f64.powi(-8),
        }
    }
}

impl std::str::FromStr for DType {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(DType::F32),
            "f16" => Ok(DType::F16),
            "bf16" => Ok(DType::BF16),
            _ => Err(invalid(
                "dtype",
                format!("`{s}` is not one of f32, f16, bf16"),
            )),
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Typed element storage of a [`HostTensor`].
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// float32 elements.
    F32(Vec<f32>),
    /// float16 elements.
    F16(Vec<f16>),
    /// bfloat16 elements.
    BF16(Vec<bf16>),
}

/// A dense row-major tensor in host memory.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// Dimensions, outermost first.
    pub dims: Vec<usize>,
    /// Elements, `dims.iter().product()` of them.
    pub data: TensorData,
}

impl HostTensor {
    /// Build from f64 values, rounding to `dtype`. Fails if the length does not match `dims`.
    pub fn from_f64(dims: &[usize], values: &[f64], dtype: DType) -> Result<Self> {
        let want: usize = dims.iter().product();
        if values.len() != want {
            return Err(invalid(
                "values",
                format!("{} elements for dims {dims:?} (want {want})", values.len()),
            ));
        }
        let data = match dtype {
            DType::F32 => TensorData::F32(values.iter().map(|&x| x as f32).collect()),
            DType::F16 => TensorData::F16(values.iter().map(|&x| f16::from_f64(x)).collect()),
            DType::BF16 => TensorData::BF16(values.iter().map(|&x| bf16::from_f64(x)).collect()),
        };
        Ok(Self {
            dims: dims.to_vec(),
            data,
        })
    }

    /// Build from f32 values, rounding to `dtype`.
    pub fn from_f32(dims: &[usize], values: &[f32], dtype: DType) -> Result<Self> {
        let v: Vec<f64> = values.iter().map(|&x| x as f64).collect();
        Self::from_f64(dims, &v, dtype)
    }

    /// A tensor of `dims` filled with `value` (NaN poisons an output buffer).
    pub fn filled(dims: &[usize], value: f64, dtype: DType) -> Self {
        let n: usize = dims.iter().product();
        let data = match dtype {
            DType::F32 => TensorData::F32(vec![value as f32; n]),
            DType::F16 => TensorData::F16(vec![f16::from_f64(value); n]),
            DType::BF16 => TensorData::BF16(vec![bf16::from_f64(value); n]),
        };
        Self {
            dims: dims.to_vec(),
            data,
        }
    }

    /// Element dtype.
    pub fn dtype(&self) -> DType {
        match self.data {
            TensorData::F32(_) => DType::F32,
            TensorData::F16(_) => DType::F16,
            TensorData::BF16(_) => DType::BF16,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match &self.data {
            TensorData::F32(v) => v.len(),
            TensorData::F16(v) => v.len(),
            TensorData::BF16(v) => v.len(),
        }
    }

    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Elements widened to f64 (exact).
    pub fn to_f64(&self) -> Vec<f64> {
        match &self.data {
            TensorData::F32(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::F16(v) => v.iter().map(|x| x.to_f64()).collect(),
            TensorData::BF16(v) => v.iter().map(|x| x.to_f64()).collect(),
        }
    }

    /// Elements converted to f32 (exact for f16 and bf16).
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            TensorData::F32(v) => v.clone(),
            TensorData::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            TensorData::BF16(v) => v.iter().map(|x| x.to_f32()).collect(),
        }
    }

    /// The same values in another dtype (rounded).
    pub fn cast(&self, dtype: DType) -> Self {
        if dtype == self.dtype() {
            return self.clone();
        }
        // The length matches by construction.
        let v = self.to_f64();
        let data = match dtype {
            DType::F32 => TensorData::F32(v.iter().map(|&x| x as f32).collect()),
            DType::F16 => TensorData::F16(v.iter().map(|&x| f16::from_f64(x)).collect()),
            DType::BF16 => TensorData::BF16(v.iter().map(|&x| bf16::from_f64(x)).collect()),
        };
        Self {
            dims: self.dims.clone(),
            data,
        }
    }

    /// Raw little-endian bytes of the elements.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.data {
            TensorData::F32(v) => bytemuck::cast_slice(v),
            TensorData::F16(v) => bytemuck::cast_slice(v),
            TensorData::BF16(v) => bytemuck::cast_slice(v),
        }
    }

    /// Position of the first non-finite element, if any.
    pub fn first_non_finite(&self) -> Option<usize> {
        match &self.data {
            TensorData::F32(v) => v.iter().position(|x| !x.is_finite()),
            TensorData::F16(v) => v.iter().position(|x| !x.is_finite()),
            TensorData::BF16(v) => v.iter().position(|x| !x.is_finite()),
        }
    }
}

/// The shape of one attention problem: q `[B, Hq, N, D]`, k and v `[B, Hkv, N, D]`.
///
/// Query head `h` reads kv head `h / (Hq / Hkv)` (grouped-query attention).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct AttnShape {
    /// Batch size `B`.
    pub batch: usize,
    /// Query heads `Hq`.
    pub q_heads: usize,
    /// Key/value heads `Hkv` (divides `Hq`).
    pub kv_heads: usize,
    /// Sequence length `N`.
    pub seq_len: usize,
    /// Head dimension `D`.
    pub head_dim: usize,
}

impl AttnShape {
    /// Validate and build a shape.
    pub fn new(
        batch: usize,
        q_heads: usize,
        kv_heads: usize,
        seq_len: usize,
        head_dim: usize,
    ) -> Result<Self> {
        for (name, v) in [
            ("batch", batch),
            ("q_heads", q_heads),
            ("kv_heads", kv_heads),
            ("seq_len", seq_len),
            ("head_dim", head_dim),
        ] {
            if v == 0 {
                return Err(invalid(name, "must be at least 1, got 0 (empty tensor)"));
            }
        }
        if q_heads % kv_heads != 0 {
            return Err(invalid(
                "k",
                format!(
                    "query heads Hq = {q_heads} is not a multiple of kv heads Hkv = {kv_heads}"
                ),
            ));
        }
        if seq_len > i32::MAX as usize / 2 {
            return Err(invalid(
                "seq_len",
                format!("{seq_len} does not fit the i32 index"),
            ));
        }
        Ok(Self {
            batch,
            q_heads,
            kv_heads,
            seq_len,
            head_dim,
        })
    }

    /// Check q, k, v dims (and the output's, if given) and return the shape.
    pub fn from_dims(q: &[usize], k: &[usize], v: &[usize]) -> Result<Self> {
        for (name, d) in [("q", q), ("k", k), ("v", v)] {
            if d.len() != 4 {
                return Err(invalid(
                    name,
                    format!(
                        "want rank 4 [B, H, N, D], got rank {} with dims {d:?}",
                        d.len()
                    ),
                ));
            }
        }
        if k != v {
            return Err(invalid("v", format!("dims {v:?} differ from k's {k:?}")));
        }
        if q[0] != k[0] || q[2] != k[2] || q[3] != k[3] {
            return Err(invalid(
                "k",
                format!("dims {k:?} do not match q {q:?} in B, N or D"),
            ));
        }
        Self::new(q[0], q[1], k[1], q[2], q[3])
    }

    /// q and output dims `[B, Hq, N, D]`.
    pub fn q_dims(&self) -> [usize; 4] {
        [self.batch, self.q_heads, self.seq_len, self.head_dim]
    }
    /// k and v dims `[B, Hkv, N, D]`.
    pub fn kv_dims(&self) -> [usize; 4] {
        [self.batch, self.kv_heads, self.seq_len, self.head_dim]
    }
    /// Query heads per kv head.
    pub fn group(&self) -> usize {
        self.q_heads / self.kv_heads
    }
    /// kv head read by query head `h`.
    pub fn kv_head(&self, h: usize) -> usize {
        h / self.group()
    }
    /// Row blocks `R = cdiv(N, BLOCK)`.
    pub fn rows(&self) -> usize {
        self.seq_len.div_ceil(BLOCK)
    }
    /// Softmax scale `1/sqrt(D)`.
    pub fn scale(&self) -> f64 {
        1.0 / (self.head_dim as f64).sqrt()
    }
    /// Offset of row 0 of (batch b, query head h) in q or the output.
    pub fn q_offset(&self, b: usize, h: usize) -> usize {
        ((b * self.q_heads + h) * self.seq_len) * self.head_dim
    }
    /// Offset of row 0 of (batch b, the kv head of query head h) in k or v.
    pub fn kv_offset(&self, b: usize, h: usize) -> usize {
        ((b * self.kv_heads + self.kv_head(h)) * self.seq_len) * self.head_dim
    }
    /// Number of causal (query, key) pairs over all batches and query heads.
    pub fn causal_pairs(&self) -> u64 {
        let n = self.seq_len as u64;
        (self.batch * self.q_heads) as u64 * n * (n + 1) / 2
    }
}
