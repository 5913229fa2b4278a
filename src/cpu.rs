//! The CPU backend: the float64 reference behind the [`Backend`] trait, multi-threaded.
//!
//! Tensors are held as f64 copies of their stored values (exact for f32, f16, bf16); every
//! result is computed in float64 and rounded to the storage dtype once, on write.

use crate::backend::{check_a_shape, check_qkv, Backend, BackendInfo, DeviceIndex, DeviceTensor};
use crate::error::Result;
use crate::index::{build_index, HostIndex};
use crate::pattern::Pattern;
use crate::reference::{attention_with, window_keys};
use crate::tensor::{AttnShape, DType, HostTensor};

const NAME: &str = "cpu";

/// The CPU backend (rayon over rows; float64 arithmetic).
#[derive(Clone, Debug, Default)]
pub struct CpuBackend;

impl CpuBackend {
    /// A CPU backend (always available).
    pub fn new() -> Self {
        Self
    }

    fn run_rows<F>(
        &self,
        q: &DeviceTensor,
        k: &DeviceTensor,
        v: &DeviceTensor,
        out: &mut DeviceTensor,
        keys: F,
    ) -> Result<()>
    where
        F: Fn(&AttnShape, usize, usize, usize) -> Option<Vec<usize>> + Sync,
    {
        let shape = check_qkv(&self.info(), q, k, v, Some(out))?;
        let dtype = out.dtype();
        let (qd, kd, vd) = (
            q.storage::<Vec<f64>>(NAME, "q")?,
            k.storage::<Vec<f64>>(NAME, "k")?,
            v.storage::<Vec<f64>>(NAME, "v")?,
        );
        let res = attention_with(&shape, qd, kd, vd, |b, h, i| keys(&shape, b, h, i))?;
        let od = out.storage_mut::<Vec<f64>>(NAME, "out")?;
        for (o, r) in od.iter_mut().zip(res) {
            // NaN marks rows this call does not own: keep what is there.
            if !r.is_nan() {
                *o = dtype.round(r);
            }
        }
        Ok(())
    }
}

impl Backend for CpuBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            name: NAME,
            device: format!(
                "host CPU, {} threads, float64",
                rayon::current_num_threads()
            ),
            dtypes: vec![DType::F32, DType::F16, DType::BF16],
            head_dims: vec![],
            notes: "float64 reference".into(),
        }
    }

    fn upload(&self, t: &HostTensor) -> Result<DeviceTensor> {
        Ok(DeviceTensor::new(NAME, &t.dims, t.dtype(), t.to_f64()))
    }

    fn download(&self, t: &DeviceTensor) -> Result<HostTensor> {
        HostTensor::from_f64(t.dims(), t.storage::<Vec<f64>>(NAME, "tensor")?, t.dtype())
    }

    fn empty(&self, dims: &[usize], dtype: DType) -> Result<DeviceTensor> {
        let n: usize = dims.iter().product();
        Ok(DeviceTensor::new(NAME, dims, dtype, vec![0.0f64; n]))
    }

    fn build_index(
        &self,
        q: &DeviceTensor,
        k: &DeviceTensor,
        patterns: &[Pattern],
    ) -> Result<DeviceIndex> {
        let shape = AttnShape::from_dims(q.dims(), k.dims(), k.dims())?;
        let ix = build_index(
            &shape,
            q.storage::<Vec<f64>>(NAME, "q")?,
            k.storage::<Vec<f64>>(NAME, "k")?,
            patterns,
        )?;
        Ok(DeviceIndex::new(NAME, ix.meta.clone(), ix))
    }

    fn upload_index(&self, index: &HostIndex) -> Result<DeviceIndex> {
        index.validate()?;
        Ok(DeviceIndex::new(NAME, index.meta.clone(), index.clone()))
    }

    fn download_index(&self, index: &DeviceIndex) -> Result<HostIndex> {
        Ok(index.storage::<HostIndex>(NAME)?.clone())
    }

    fn sparse_attention(
        &self,
        q: &DeviceTensor,
        k: &DeviceTensor,
        v: &DeviceTensor,
        index: &DeviceIndex,
        out: &mut DeviceTensor,
    ) -> Result<()> {
        let ix = index.storage::<HostIndex>(NAME)?;
        crate::backend::check_sparse(&self.info(), q, k, v, index, out)?;
        self.run_rows(q, k, v, out, |_, b, h, i| {
            ix.meta.patterns[h]
                .uses_index()
                .then(|| ix.keys_of_row(b, h, i))
        })
    }

    fn dense_attention(
        &self,
        q: &DeviceTensor,
        k: &DeviceTensor,
        v: &DeviceTensor,
        out: &mut DeviceTensor,
    ) -> Result<()> {
        self.run_rows(q, k, v, out, |_, _, _, i| Some((0..=i).collect()))
    }

    fn a_shape_attention(
        &self,
        q: &DeviceTensor,
        k: &DeviceTensor,
        v: &DeviceTensor,
        windows: &[Option<(usize, usize)>],
        out: &mut DeviceTensor,
    ) -> Result<()> {
        check_a_shape(&self.info(), q, k, v, windows, out)?;
        self.run_rows(q, k, v, out, |_, _, h, i| {
            windows[h].map(|(sink, local)| window_keys(&Pattern::AShape { sink, local }, i))
        })
    }

    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
}
