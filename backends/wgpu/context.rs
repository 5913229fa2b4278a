//! The wgpu device, the pipeline cache, buffers and error scopes.

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::{mpsc, Arc, Mutex};

pub(crate) const NAME: &str = "wgpu";

/// How a kernel binds one buffer.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    /// The kernel's params struct.
    Uniform,
    /// `var<storage, read>`.
    Read,
    /// `var<storage, read_write>`.
    ReadWrite,
}

/// One kernel family: a WGSL module (one file, plus the shared preludes) and its bindings.
pub(crate) struct Family {
    /// The file stem (`dense_attention`, ...).
    pub stem: &'static str,
    /// The module's WGSL source.
    pub source: &'static str,
    /// Binding `i` of group 0 is `slots[i]`.
    pub slots: &'static [Slot],
    /// Built without wgpu's runtime checks (`create_shader_module_trusted`): no clamps on
    /// workgroup and private array indices, no loop bounding, no division guards. Only for
    /// modules whose header argues why every index is in range and every loop ends (the
    /// cooperative-matrix kernels; measured: see docs/coop.md). Storage-buffer accesses are
    /// then bounded by the Vulkan device's robust buffer access where the device has it
    /// (wgpu enables it), and by the module's own argument everywhere.
    pub trusted: bool,
}

/// The first adapter wgpu offers (high performance preferred; `WGPU_BACKEND` and the other
/// `wgpu` environment variables apply): the one this backend opens, and the one the by-hand
/// diagnostics in tests/ use.
pub fn first_adapter() -> std::result::Result<wgpu::Adapter, wgpu::RequestAdapterError> {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle().with_env());
    pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        force_fallback_adapter: false,
        compatible_surface: None,
        apply_limit_buckets: false,
    }))
}

/// A compiled entry point and its bind-group layout.
pub(crate) struct Kernel {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
    pub name: String,
}

/// Pipeline-overridable constants of a kernel (WGSL `override`s), by name.
pub(crate) type Constants = &'static [(&'static str, u32)];

type KernelKey = (&'static str, &'static str, Constants);

/// The device, its queue and limits, and the caches.
pub(crate) struct Context {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub limits: wgpu::Limits,
    pub adapter_info: wgpu::AdapterInfo,
    /// The cooperative-matrix configuration the device was opened with (16x16x16, f16 inputs,
    /// f32 accumulation), or why there is none.
    pub coop: std::result::Result<wgpu::CooperativeMatrixProperties, String>,
    modules: Mutex<HashMap<&'static str, Arc<wgpu::ShaderModule>>>,
    /// Pipelines keyed by (family stem, entry point, pipeline constants).
    kernels: Mutex<HashMap<KernelKey, Arc<Kernel>>>,
    /// A MAP_READ staging buffer reused by downloads, grown as needed.
    staging: Mutex<Option<wgpu::Buffer>>,
    /// Scratch storage buffers reused across calls, by label (see [`Context::scratch`]).
    scratch: Mutex<HashMap<&'static str, wgpu::Buffer>>,
    /// Storage buffers of dropped indexes, for the next index of the same sizes (see
    /// [`Context::reused_storage`]).
    pool: BufferPool,
}

/// Storage buffers given back for reuse, oldest first (at most [`POOL_BUFFERS`]).
pub(crate) type BufferPool = Arc<Mutex<Vec<wgpu::Buffer>>>;

/// Most buffers a [`BufferPool`] keeps: the five arrays of two indexes (so up to two indexes'
/// memory stays allocated after they are dropped, until the backend is). A vertical-slash
/// index at N = 65536, H = 32 is 254 MiB; allocating it anew while the dropped one was still
/// in flight cost about as much as its kernels on the H200 (docs/coop.md, eighth session).
pub(crate) const POOL_BUFFERS: usize = 10;

/// The size of a storage buffer asked for `bytes`: at least 4, a multiple of 4.
fn storage_size(bytes: u64) -> u64 {
    bytes.max(4).next_multiple_of(4)
}

/// Give `buffers` back to `pool` for reuse; the oldest beyond [`POOL_BUFFERS`] are released.
pub(crate) fn give_back(pool: &BufferPool, buffers: impl IntoIterator<Item = wgpu::Buffer>) {
    let mut pool = lock(pool);
    pool.extend(buffers);
    let extra = pool.len().saturating_sub(POOL_BUFFERS);
    pool.drain(..extra);
}

/// Exclusive use of the context's scratch buffers while held: a caller records, submits and
/// (when it times its stages) waits for all its work on them before dropping it, so no
/// other call's dispatches land between its own. Work of an earlier holder still running
/// on the device is ordered before the new holder's by the queue.
pub(crate) struct Scratch<'a> {
    ctx: &'a Context,
    buffers: std::sync::MutexGuard<'a, HashMap<&'static str, wgpu::Buffer>>,
}

impl Scratch<'_> {
    /// The scratch storage buffer `label` of at least `bytes` (checked against the limits):
    /// the one of the last call while it is large enough, else a new one kept for later
    /// calls. Its contents are whatever the last user left: every user writes what it reads.
    pub fn storage(&mut self, label: &'static str, bytes: u64) -> Result<wgpu::Buffer> {
        if let Some(b) = self.buffers.get(label) {
            if b.size() >= bytes {
                return Ok(b.clone());
            }
        }
        self.buffers.remove(label);
        let b = self.ctx.storage(label, bytes)?;
        self.buffers.insert(label, b.clone());
        Ok(b)
    }
}

fn device_error(kernel: &str, msg: impl Into<String>) -> Error {
    Error::Device {
        backend: NAME,
        kernel: kernel.to_string(),
        msg: msg.into(),
    }
}

/// The features the cooperative-matrix kernels need: the matrices, f16 in storage and
/// workgroup memory, and `subgroup_id` to give each subgroup its row slice.
pub(crate) const COOP_FEATURES: wgpu::Features = wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX
    .union(wgpu::Features::SHADER_F16)
    .union(wgpu::Features::SUBGROUP);

/// The 16x16x16 f16 x f16 -> f32 cooperative-matrix configuration of `adapter`, or why it
/// has none (missing features, or the configurations it does report).
fn coop_config(
    adapter: &wgpu::Adapter,
) -> std::result::Result<wgpu::CooperativeMatrixProperties, String> {
    let missing = COOP_FEATURES - adapter.features();
    if !missing.is_empty() {
        let names: Vec<&str> = missing.iter_names().map(|(name, _)| name).collect();
        return Err(format!(
            "the adapter lacks the wgpu features {} (cooperative matrices need Vulkan's \
             VK_KHR_cooperative_matrix with vulkanMemoryModelDeviceScope)",
            names.join(", ")
        ));
    }
    let configs = adapter.cooperative_matrix_properties();
    configs
        .iter()
        .find(|c| {
            (c.m_size, c.n_size, c.k_size) == (16, 16, 16)
                && c.ab_type == wgpu::CooperativeScalarType::F16
                && c.cr_type == wgpu::CooperativeScalarType::F32
        })
        .copied()
        .ok_or_else(|| {
            let listed: Vec<String> = configs
                .iter()
                .map(|c| {
                    format!(
                        "{}x{}x{} {:?}->{:?}",
                        c.m_size, c.n_size, c.k_size, c.ab_type, c.cr_type
                    )
                })
                .collect();
            format!(
                "no 16x16x16 f16->f32 cooperative-matrix configuration (the adapter reports [{}])",
                listed.join(", ")
            )
        })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a cache lock leaves a usable cache: take it anyway.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Context {
    /// Open the first adapter wgpu offers (high performance preferred).
    ///
    /// `coop`: also open the cooperative-matrix features where the adapter has them (the
    /// default backend and the coop variant ask; a backend forced to a portable variant runs
    /// on a device without experimental features, as tested).
    pub fn open(coop: bool) -> Result<Self> {
        let unavailable = |reason: String| Error::Unavailable {
            backend: NAME,
            reason,
        };
        let adapter = first_adapter().map_err(|e| unavailable(format!("no adapter: {e}")))?;
        let adapter_info = adapter.get_info();
        // Ask for everything the adapter offers: larger bindings and dispatch grids.
        let limits = adapter.limits();
        let mut coop = if coop {
            coop_config(&adapter)
        } else {
            Err(
                "the device was opened without cooperative matrices (only the coop variant \
                 opens them)"
                    .to_string(),
            )
        };
        let request = |features: wgpu::Features| {
            let experimental_features = if features.is_empty() {
                wgpu::ExperimentalFeatures::disabled()
            } else {
                // SAFETY: opting into wgpu's experimental cooperative matrices; the coop
                // kernels are their only users and run only on a configuration the adapter
                // reports.
                unsafe { wgpu::ExperimentalFeatures::enabled() }
            };
            pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
                label: Some("minference"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features,
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            }))
        };
        // The coop variant's features are requested only where the adapter has them all (the
        // experimental opt-in only then, too); every other variant needs none, so a refusal
        // costs the coop variant only.
        let opened = match &coop {
            Ok(_) => request(COOP_FEATURES).or_else(|e| {
                coop = Err(format!(
                    "opening the device with {COOP_FEATURES:?} failed: {e}"
                ));
                request(wgpu::Features::empty())
            }),
            Err(_) => request(wgpu::Features::empty()),
        };
        let (device, queue) =
            opened.map_err(|e| unavailable(format!("adapter `{}`: {e}", adapter_info.name)))?;
        Ok(Self {
            device,
            queue,
            limits,
            adapter_info,
            coop,
            modules: Mutex::new(HashMap::new()),
            kernels: Mutex::new(HashMap::new()),
            staging: Mutex::new(None),
            scratch: Mutex::new(HashMap::new()),
            pool: Arc::new(Mutex::new(Vec::new())),
        })
    }

    /// Run `f` inside a validation error scope; a captured error becomes [`Error::Device`]
    /// naming `what` (the kernel or operation) and carrying wgpu's message (WGSL location
    /// included for shader errors).
    pub fn scoped<T>(&self, what: &str, f: impl FnOnce() -> T) -> Result<T> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let v = pollster::block_on(validation.pop());
        let o = pollster::block_on(oom.pop());
        match v.or(o) {
            Some(e) => Err(device_error(what, e.to_string())),
            None => Ok(out),
        }
    }

    /// The compiled entry point `entry` of `family`, built once and cached.
    pub fn kernel(&self, family: &Family, entry: &'static str) -> Result<Arc<Kernel>> {
        self.kernel_with(family, entry, &[])
    }

    /// The compiled entry point `entry` of `family` with its `override`s set to `constants`,
    /// built once per (family, entry, constants) and cached.
    pub fn kernel_with(
        &self,
        family: &Family,
        entry: &'static str,
        constants: Constants,
    ) -> Result<Arc<Kernel>> {
        let key = (family.stem, entry, constants);
        if let Some(k) = lock(&self.kernels).get(&key) {
            return Ok(k.clone());
        }
        let module = self.module(family)?;
        let specialised: Vec<String> = constants.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let name = if specialised.is_empty() {
            format!("{}::{entry}", family.stem)
        } else {
            format!("{}::{entry}[{}]", family.stem, specialised.join(","))
        };
        let constants_f64: Vec<(&str, f64)> =
            constants.iter().map(|&(k, v)| (k, f64::from(v))).collect();
        let kernel = self.scoped(&name, || {
            let entries: Vec<wgpu::BindGroupLayoutEntry> = family
                .slots
                .iter()
                .enumerate()
                .map(|(i, slot)| wgpu::BindGroupLayoutEntry {
                    binding: i as u32,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: match slot {
                            Slot::Uniform => wgpu::BufferBindingType::Uniform,
                            Slot::Read => wgpu::BufferBindingType::Storage { read_only: true },
                            Slot::ReadWrite => {
                                wgpu::BufferBindingType::Storage { read_only: false }
                            }
                        },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                })
                .collect();
            let layout = self
                .device
                .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                    label: Some(&name),
                    entries: &entries,
                });
            let pipeline_layout =
                self.device
                    .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                        label: Some(&name),
                        bind_group_layouts: &[Some(&layout)],
                        immediate_size: 0,
                    });
            let pipeline = self
                .device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(&name),
                    layout: Some(&pipeline_layout),
                    module: &module,
                    entry_point: Some(entry),
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants: &constants_f64,
                        ..Default::default()
                    },
                    cache: None,
                });
            Kernel {
                pipeline,
                layout,
                name: name.clone(),
            }
        })?;
        let kernel = Arc::new(kernel);
        lock(&self.kernels).insert(key, kernel.clone());
        Ok(kernel)
    }

    fn module(&self, family: &Family) -> Result<Arc<wgpu::ShaderModule>> {
        if let Some(m) = lock(&self.modules).get(family.stem) {
            return Ok(m.clone());
        }
        let module = self.scoped(&format!("{}.wgsl", family.stem), || {
            let desc = wgpu::ShaderModuleDescriptor {
                label: Some(family.stem),
                source: wgpu::ShaderSource::Wgsl(family.source.into()),
            };
            if family.trusted {
                // SAFETY: `Family::trusted` is set only for modules that keep every array
                // index in range, end every loop and divide only by nonzero values (their
                // headers say why); their storage reads stay inside validated shapes and
                // indices.
                unsafe {
                    self.device
                        .create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked())
                }
            } else {
                self.device.create_shader_module(desc)
            }
        })?;
        let module = Arc::new(module);
        lock(&self.modules).insert(family.stem, module.clone());
        Ok(module)
    }

    /// Check a buffer of `bytes` against the adapter's binding and buffer limits.
    pub fn check_size(&self, what: &str, bytes: u64) -> Result<()> {
        let max_binding = self.limits.max_storage_buffer_binding_size;
        let max_buffer = self.limits.max_buffer_size;
        if bytes > max_binding || bytes > max_buffer {
            return Err(Error::Unsupported {
                backend: NAME,
                what: format!(
                    "`{what}` of {bytes} bytes: larger than the adapter's \
                     max_storage_buffer_binding_size ({max_binding} bytes) or max_buffer_size \
                     ({max_buffer} bytes)"
                ),
            });
        }
        Ok(())
    }

    /// The scratch buffers, for exclusive use until the guard drops (see [`Scratch`]).
    pub fn scratch(&self) -> Scratch<'_> {
        Scratch {
            ctx: self,
            buffers: lock(&self.scratch),
        }
    }

    /// A storage buffer of `bytes` (sized as [`Self::storage`] sizes it): one given back to
    /// the pool with exactly that size if there is one (its contents are whatever its last
    /// user left), else a new one.
    pub fn reused_storage(&self, label: &str, bytes: u64) -> Result<wgpu::Buffer> {
        let size = storage_size(bytes);
        {
            let mut pool = lock(&self.pool);
            if let Some(i) = pool.iter().position(|b| b.size() == size) {
                return Ok(pool.remove(i));
            }
        }
        self.storage(label, bytes)
    }

    /// The pool [`Self::reused_storage`] takes from (for owners that give buffers back).
    pub fn pool(&self) -> BufferPool {
        self.pool.clone()
    }

    /// How many buffers the pool holds.
    pub fn pooled(&self) -> usize {
        lock(&self.pool).len()
    }

    /// A storage buffer of `bytes` (at least 4), checked against the limits.
    pub fn storage(&self, label: &str, bytes: u64) -> Result<wgpu::Buffer> {
        self.check_size(label, bytes)?;
        self.scoped(label, || {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: storage_size(bytes),
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })
    }

    /// A storage buffer holding `data` (padded to 4 bytes).
    pub fn storage_with(&self, label: &str, data: &[u8]) -> Result<wgpu::Buffer> {
        let buf = self.storage(label, data.len() as u64)?;
        if !data.is_empty() {
            let mut padded;
            let bytes = if data.len() % 4 == 0 {
                data
            } else {
                padded = data.to_vec();
                padded.resize(data.len().next_multiple_of(4), 0);
                &padded
            };
            self.queue.write_buffer(&buf, 0, bytes);
        }
        Ok(buf)
    }

    /// A uniform buffer holding a params struct.
    pub fn uniform<T: bytemuck::Pod>(&self, label: &str, params: &T) -> wgpu::Buffer {
        let bytes = bytemuck::bytes_of(params);
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: (bytes.len() as u64).next_multiple_of(16),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.queue.write_buffer(&buf, 0, bytes);
        buf
    }

    /// Record one dispatch of `kernel` with `buffers` bound in slot order.
    pub fn dispatch(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        kernel: &Kernel,
        buffers: &[&wgpu::Buffer],
        grid: [u32; 3],
    ) -> Result<()> {
        let max = self.limits.max_compute_workgroups_per_dimension;
        if grid.iter().any(|&g| g > max) {
            return Err(Error::Unsupported {
                backend: NAME,
                what: format!(
                    "kernel `{}`: grid {grid:?} exceeds max_compute_workgroups_per_dimension ({max})",
                    kernel.name
                ),
            });
        }
        if grid.contains(&0) {
            return Ok(());
        }
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        let group = self.scoped(&kernel.name, || {
            self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(&kernel.name),
                layout: &kernel.layout,
                entries: &entries,
            })
        })?;
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(&kernel.name),
            timestamp_writes: None,
        });
        pass.set_pipeline(&kernel.pipeline);
        pass.set_bind_group(0, &group, &[]);
        pass.dispatch_workgroups(grid[0], grid[1], grid[2]);
        Ok(())
    }

    /// A fresh command encoder.
    pub fn encoder(&self, label: &str) -> wgpu::CommandEncoder {
        self.device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) })
    }

    /// Submit `encoder` inside an error scope naming `what`.
    pub fn submit(&self, what: &str, encoder: wgpu::CommandEncoder) -> Result<()> {
        self.scoped(what, || {
            self.queue.submit([encoder.finish()]);
        })
    }

    /// Wait for all submitted work.
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| device_error("synchronize", e.to_string()))
    }

    /// Copy `bytes` bytes of `buf` back to the host.
    pub fn read(&self, what: &str, buf: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let size = bytes.next_multiple_of(4);
        let mut staging = lock(&self.staging);
        if staging.as_ref().is_none_or(|s| s.size() < size) {
            *staging = Some(self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("download staging"),
                size: size.next_power_of_two().max(1 << 16),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
        }
        let staging = staging
            .as_ref()
            .ok_or_else(|| device_error(what, "no staging buffer"))?;
        let mut encoder = self.encoder(what);
        encoder.copy_buffer_to_buffer(buf, 0, staging, 0, size);
        self.submit(what, encoder)?;
        let (tx, rx) = mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, 0..size, move |r| {
            // The receiver waits below; a send error only means it is gone.
            let _ = tx.send(r);
        });
        self.wait()?;
        rx.recv()
            .map_err(|e| device_error(what, format!("map callback lost: {e}")))?
            .map_err(|e| device_error(what, format!("map failed: {e}")))?;
        let data = {
            let view = staging
                .get_mapped_range(0..size)
                .map_err(|e| device_error(what, format!("mapped range: {e}")))?;
            view[..bytes as usize].to_vec()
        };
        staging.unmap();
        Ok(data)
    }
}
