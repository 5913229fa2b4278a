//! safetensors I/O: read q/k/v and index tensors, write outputs atomically.

use crate::error::{Error, Result};
use crate::tensor::{DType, HostTensor, TensorData};
use half::{bf16, f16};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::Path;

/// A tensor read from or written to a safetensors file.
#[derive(Clone, Debug, PartialEq)]
pub enum StTensor {
    /// A float tensor (f32, f16, bf16).
    Float(HostTensor),
    /// An i32 tensor (index arrays) and its dims.
    I32(Vec<usize>, Vec<i32>),
}

/// The tensors and metadata of one safetensors file.
#[derive(Clone, Debug, Default)]
pub struct StFile {
    /// Tensors by name.
    pub tensors: HashMap<String, StTensor>,
    /// The `__metadata__` map.
    pub metadata: HashMap<String, String>,
    /// Where it came from (for messages).
    pub path: String,
}

fn st_err(path: &str, msg: impl Into<String>) -> Error {
    Error::SafeTensors {
        path: path.to_string(),
        msg: msg.into(),
    }
}

impl StFile {
    /// Read a whole file.
    pub fn read(path: &Path) -> Result<Self> {
        let p = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: p.clone(),
            source,
        })?;
        Self::parse(&bytes, &p)
    }

    /// Parse bytes (`path` is only for messages).
    pub fn parse(bytes: &[u8], path: &str) -> Result<Self> {
        let (_, meta) = SafeTensors::read_metadata(bytes)
            .map_err(|e| st_err(path, format!("not a safetensors file: {e}")))?;
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| st_err(path, format!("not a safetensors file: {e}")))?;
        let mut tensors = HashMap::new();
        for (name, view) in st.tensors() {
            let dims = view.shape().to_vec();
            let data = view.data();
            let t = match view.dtype() {
                Dtype::F32 => StTensor::Float(HostTensor {
                    dims,
                    data: TensorData::F32(
                        data.chunks_exact(4)
                            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                            .collect(),
                    ),
                }),
                Dtype::F16 => StTensor::Float(HostTensor {
                    dims,
                    data: TensorData::F16(
                        data.chunks_exact(2)
                            .map(|c| f16::from_le_bytes([c[0], c[1]]))
                            .collect(),
                    ),
                }),
                Dtype::BF16 => StTensor::Float(HostTensor {
                    dims,
                    data: TensorData::BF16(
                        data.chunks_exact(2)
                            .map(|c| bf16::from_le_bytes([c[0], c[1]]))
                            .collect(),
                    ),
                }),
                Dtype::I32 => StTensor::I32(
                    dims,
                    data.chunks_exact(4)
                        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                ),
                other => {
                    return Err(st_err(
                        path,
                        format!("tensor `{name}` has dtype {other:?}; want f32, f16, bf16 or i32"),
                    ))
                }
            };
            tensors.insert(name, t);
        }
        let metadata = meta.metadata().clone().unwrap_or_default();
        Ok(Self {
            tensors,
            metadata,
            path: path.to_string(),
        })
    }

    /// The float tensor `name`, or an error naming the file and the tensors it has.
    pub fn float(&self, name: &str) -> Result<&HostTensor> {
        match self.tensors.get(name) {
            Some(StTensor::Float(t)) => Ok(t),
            Some(StTensor::I32(..)) => Err(st_err(
                &self.path,
                format!("tensor `{name}` is i32, want a float tensor"),
            )),
            None => {
                let mut have: Vec<&String> = self.tensors.keys().collect();
                have.sort();
                Err(st_err(
                    &self.path,
                    format!("missing tensor `{name}` (the file has {have:?})"),
                ))
            }
        }
    }

    /// The i32 tensor `name` with its dims.
    pub fn i32(&self, name: &str) -> Result<(&[usize], &[i32])> {
        match self.tensors.get(name) {
            Some(StTensor::I32(d, v)) => Ok((d, v)),
            Some(StTensor::Float(_)) => Err(st_err(
                &self.path,
                format!("tensor `{name}` is a float tensor, want i32"),
            )),
            None => Err(st_err(&self.path, format!("missing tensor `{name}`"))),
        }
    }

    /// Add a float tensor.
    pub fn put_float(&mut self, name: &str, t: HostTensor) {
        self.tensors.insert(name.to_string(), StTensor::Float(t));
    }

    /// Add an i32 tensor.
    pub fn put_i32(&mut self, name: &str, dims: &[usize], v: Vec<i32>) {
        self.tensors
            .insert(name.to_string(), StTensor::I32(dims.to_vec(), v));
    }

    /// Serialise to bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut names: Vec<&String> = self.tensors.keys().collect();
        names.sort();
        let mut views = Vec::new();
        for name in names {
            let v = match &self.tensors[name] {
                StTensor::Float(t) => {
                    let dt = match t.dtype() {
                        DType::F32 => Dtype::F32,
                        DType::F16 => Dtype::F16,
                        DType::BF16 => Dtype::BF16,
                    };
                    TensorView::new(dt, t.dims.clone(), t.as_bytes())
                }
                StTensor::I32(d, v) => {
                    TensorView::new(Dtype::I32, d.clone(), bytemuck::cast_slice(v))
                }
            }
            .map_err(|e| st_err(&self.path, format!("tensor `{name}`: {e}")))?;
            views.push((name.clone(), v));
        }
        let meta = (!self.metadata.is_empty()).then(|| self.metadata.clone());
        safetensors::serialize(views, meta).map_err(|e| st_err(&self.path, e.to_string()))
    }

    /// Write to `path` atomically: a temporary file beside it, renamed into place, so a
    /// failure never leaves a partial file behind.
    pub fn write(&self, path: &Path) -> Result<()> {
        let p = path.display().to_string();
        let bytes = self.to_bytes()?;
        let tmp = path.with_extension("safetensors.partial");
        let io = |source| Error::Io {
            path: p.clone(),
            source,
        };
        std::fs::write(&tmp, bytes).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(e)
        })?;
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(e)
        })
    }
}

/// Save a layer index's selections and kernel arrays into `file` under MInference's names.
pub fn put_index(file: &mut StFile, ix: &crate::index::HostIndex) {
    let m = &ix.meta;
    let (b, h, r) = (m.shape.batch, m.shape.q_heads, m.rows);
    file.put_i32("vertical_index", &[b, h, m.nv], ix.vertical_index.clone());
    file.put_i32("slash_index", &[b, h, m.ns], ix.slash_index.clone());
    file.put_i32("block_index", &[b, h, r, m.top_k], ix.block_index.clone());
    file.put_i32("block_count", &[b, h, r], ix.block_count.clone());
    file.put_i32("block_offset", &[b, h, r, m.nnz_s], ix.block_offset.clone());
    file.put_i32("column_count", &[b, h, r], ix.column_count.clone());
    file.put_i32("column_index", &[b, h, r, m.nnz_v], ix.column_index.clone());
}

/// Read an index saved by [`put_index`] for `meta` (widths are checked against the file).
pub fn get_index(file: &StFile, meta: crate::index::IndexMeta) -> Result<crate::index::HostIndex> {
    let m = &meta;
    let (b, h, r) = (m.shape.batch, m.shape.q_heads, m.rows);
    let get = |name: &str, dims: &[usize]| -> Result<Vec<i32>> {
        let (d, v) = file.i32(name)?;
        if d != dims {
            return Err(st_err(
                &file.path,
                format!("tensor `{name}` has dims {d:?}, want {dims:?}"),
            ));
        }
        Ok(v.to_vec())
    };
    let ix = crate::index::HostIndex {
        vertical_index: get("vertical_index", &[b, h, m.nv])?,
        slash_index: get("slash_index", &[b, h, m.ns])?,
        block_index: get("block_index", &[b, h, r, m.top_k])?,
        block_count: get("block_count", &[b, h, r])?,
        block_offset: get("block_offset", &[b, h, r, m.nnz_s])?,
        column_count: get("column_count", &[b, h, r])?,
        column_index: get("column_index", &[b, h, r, m.nnz_v])?,
        meta,
    };
    ix.validate()?;
    Ok(ix)
}
