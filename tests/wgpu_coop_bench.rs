//! The ceiling of cooperative-matrix matmul through naga and the adapter's driver.
//!
//! `coop_matmul_throughput` (ignored: run by hand on a GPU with cooperative matrices)
//! times the kernels of `shaders/coop_matmul_bench.wgsl` on C = A B, f16 inputs, f32
//! accumulation, DIM x DIM (default 4096; `MINFERENCE_COOP_BENCH_DIM` picks another multiple
//! of 128) with timestamp queries around each dispatch: the median of `REPS` dispatches after
//! `WARMUP`, printed as TFLOP/s (2 DIM^3 per dispatch), each result spot-checked against f64.
//! Every kernel runs twice: built with wgpu's runtime checks (bounds clamps, loop bounding,
//! division guards) and without them (`create_shader_module_trusted`: what the library's coop
//! kernels use). `MINFERENCE_COOP_BENCH_KERNELS` (entry points, comma-separated) and
//! `MINFERENCE_COOP_BENCH_CHECKS` (`checked` or `unchecked`) run a subset.
//! Where the adapter has no 16x16x16 f16->f32 cooperative matrices, no timestamp queries or
//! subgroups other than 32 wide (lavapipe), it prints SKIPPED and passes.
//!
//! `coop_matmul_bench_shaders_validate` (not ignored, no GPU) checks that every entry point
//! validates with naga and compiles to SPIR-V.

use half::f16;
use wgpu::util::DeviceExt;

#[path = "pass_timer.rs"]
mod pass_timer;
use pass_timer::{median as median_of, PassTimer};

const SOURCE: &str = include_str!("../shaders/coop_matmul_bench.wgsl");
const WARMUP: usize = 3;
const REPS: usize = 15;

/// One kernel of the benchmark: entry point, output block per workgroup (rows, columns),
/// what it computes and what it shows.
struct Kernel {
    entry: &'static str,
    block: (u32, u32),
    /// `Some(k)`: the kernel computes (DIM / k) A[:, 0..k] B[0..k, :] (it repeats the products
    /// of the first k columns of A and rows of B) instead of A B.
    repeats: Option<u32>,
    what: &'static str,
}

const KERNELS: [Kernel; 19] = [
    Kernel {
        entry: "matmul_direct_1x1",
        block: (32, 32),
        repeats: None,
        what: "(a) storage loads, one 16x16 per subgroup, 4 subgroups",
    },
    Kernel {
        entry: "matmul_direct_2x2",
        block: (64, 64),
        repeats: None,
        what: "(b) storage loads, 32x32 per subgroup (4 named accumulators), 4 subgroups",
    },
    Kernel {
        entry: "matmul_direct_2x2_array",
        block: (64, 64),
        repeats: None,
        what: "(b') as (b), accumulators in a loop-indexed private array",
    },
    Kernel {
        entry: "matmul_direct_4x4",
        block: (128, 128),
        repeats: None,
        what: "(b) storage loads, 64x64 per subgroup (16 accumulators), 4 subgroups",
    },
    Kernel {
        entry: "matmul_shared_4sg",
        block: (64, 64),
        repeats: None,
        what: "(c) A/B chunks staged in workgroup memory, 32x32 per subgroup, 4 subgroups",
    },
    Kernel {
        entry: "matmul_shared_8sg",
        block: (128, 64),
        repeats: None,
        what: "(c) A/B chunks staged in workgroup memory, 32x32 per subgroup, 8 subgroups",
    },
    Kernel {
        entry: "matmul_shared_4sg_rt",
        block: (64, 64),
        repeats: None,
        what: "(c') as matmul_shared_4sg, coopLoad strides unknown at compile time",
    },
    Kernel {
        entry: "matmul_shared_2x4",
        block: (128, 128),
        repeats: None,
        what: "(d) staged, 32x64 per subgroup (8 named accumulators), 8 subgroups",
    },
    Kernel {
        entry: "matmul_shared_4x4",
        block: (128, 128),
        repeats: None,
        what: "(d) staged, 64x64 per subgroup (16 named accumulators), 4 subgroups",
    },
    Kernel {
        entry: "mma_peak_2x4",
        block: (128, 64),
        repeats: Some(16),
        what: "(e) no loads in the loop: the matrix instructions alone, 8 accumulators",
    },
    Kernel {
        entry: "smem_peak_vec4",
        block: (128, 128),
        repeats: Some(64),
        what: "(f) (d)'s step on tiles staged once: loads from vec4<f16> arrays, B row-major",
    },
    Kernel {
        entry: "smem_peak_f16",
        block: (128, 128),
        repeats: Some(64),
        what: "(f) as smem_peak_vec4, scalar f16 arrays",
    },
    Kernel {
        entry: "smem_peak_vec4_kt",
        block: (128, 128),
        repeats: Some(64),
        what: "(f) as smem_peak_vec4, B stored transposed and loaded column-major (K^T)",
    },
    Kernel {
        entry: "smem_peak_f16_kt",
        block: (128, 128),
        repeats: Some(64),
        what: "(f) as smem_peak_vec4_kt, scalar f16 arrays",
    },
    Kernel {
        entry: "matmul_prefetch_2x4",
        block: (128, 128),
        repeats: None,
        what: "(g) as (d) 2x4, next chunk fetched into registers during the products",
    },
    Kernel {
        entry: "matmul_double_2x4",
        block: (128, 128),
        repeats: None,
        what: "(g) as (g) prefetch, two buffers: one barrier per 32 k (37,888 B)",
    },
    Kernel {
        entry: "matmul_double_2x4_bk16",
        block: (128, 128),
        repeats: None,
        what: "(g) two buffers of 16 k: one barrier per 16 k (20,992 B)",
    },
    Kernel {
        entry: "matmul_prefetch_2x4_wg512",
        block: (256, 128),
        repeats: None,
        what: "(h) as (g) prefetch, 16 subgroups in one workgroup (29,184 B)",
    },
    Kernel {
        entry: "matmul_double_2x4_bk16_wg512",
        block: (256, 128),
        repeats: None,
        what: "(h) as (g) bk16, 16 subgroups in one workgroup (33,280 B)",
    },
];

#[test]
fn coop_matmul_bench_shaders_validate() {
    use naga::valid::{Capabilities, ShaderStages, SubgroupOperationSet, ValidationFlags};
    let module = naga::front::wgsl::parse_str(SOURCE)
        .unwrap_or_else(|e| panic!("WGSL parse error:\n{}", e.emit_to_string(SOURCE)));
    let caps =
        Capabilities::COOPERATIVE_MATRIX | Capabilities::SHADER_FLOAT16 | Capabilities::SUBGROUP;
    let info = naga::valid::Validator::new(ValidationFlags::all(), caps)
        .subgroup_stages(ShaderStages::COMPUTE)
        .subgroup_operations(SubgroupOperationSet::all())
        .validate(&module)
        .unwrap_or_else(|e| panic!("validation error:\n{}", e.emit_to_string(SOURCE)));
    for k in &KERNELS {
        let constants = [("DIM".to_string(), 4096.0)].into_iter().collect();
        let (m, i) = naga::back::pipeline_constants::process_overrides(
            &module,
            &info,
            Some((naga::ShaderStage::Compute, k.entry)),
            &constants,
        )
        .unwrap_or_else(|e| panic!("{}: overrides: {e}", k.entry));
        let options = naga::back::spv::Options {
            lang_version: (1, 3),
            ..Default::default()
        };
        let pipeline = naga::back::spv::PipelineOptions {
            shader_stage: naga::ShaderStage::Compute,
            entry_point: k.entry.to_string(),
        };
        let words = naga::back::spv::write_vec(&m, &i, &options, Some(&pipeline))
            .unwrap_or_else(|e| panic!("{}: SPIR-V error: {e}", k.entry));
        assert!(words.len() > 100, "{}: {} words", k.entry, words.len());
    }
}

fn skipped(why: &str) {
    eprintln!("\n**********\nSKIPPED: coop matmul bench: {why}\n**********\n");
}

/// A device with cooperative matrices, f16, subgroups and timestamp queries, or why not.
fn open() -> Result<(wgpu::Adapter, wgpu::Device, wgpu::Queue), String> {
    let adapter =
        minference::wgpu_backend::first_adapter().map_err(|e| format!("no adapter: {e}"))?;
    let info = adapter.get_info();
    let needed = wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX
        | wgpu::Features::SHADER_F16
        | wgpu::Features::SUBGROUP
        | wgpu::Features::TIMESTAMP_QUERY;
    let missing = needed - adapter.features();
    if !missing.is_empty() {
        let names: Vec<&str> = missing.iter_names().map(|(name, _)| name).collect();
        return Err(format!(
            "adapter `{}` lacks the wgpu features {}",
            info.name,
            names.join(", ")
        ));
    }
    let has_config = adapter.cooperative_matrix_properties().iter().any(|c| {
        (c.m_size, c.n_size, c.k_size) == (16, 16, 16)
            && c.ab_type == wgpu::CooperativeScalarType::F16
            && c.cr_type == wgpu::CooperativeScalarType::F32
    });
    if !has_config {
        return Err(format!(
            "adapter `{}` reports no 16x16x16 f16->f32 cooperative matrices",
            info.name
        ));
    }
    if (info.subgroup_min_size, info.subgroup_max_size) != (32, 32) {
        return Err(format!(
            "adapter `{}` has subgroups of {}..{} invocations; the kernels assume 32",
            info.name, info.subgroup_min_size, info.subgroup_max_size
        ));
    }
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("coop matmul bench"),
        required_features: needed,
        required_limits: adapter.limits(),
        // SAFETY: opting into wgpu's experimental cooperative matrices for this benchmark's
        // own kernels, on a configuration the adapter reports.
        experimental_features: unsafe { wgpu::ExperimentalFeatures::enabled() },
        memory_hints: wgpu::MemoryHints::Performance,
        trace: wgpu::Trace::Off,
    }))
    .map_err(|e| format!("request_device: {e}"))?;
    Ok((adapter, device, queue))
}

/// Deterministic values in [-1, 1) as f16 (a small LCG: no RNG state shared with other tests).
fn values(n: usize, seed: u64) -> Vec<f16> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            f16::from_f32(((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0)
        })
        .collect()
}

#[test]
#[ignore]
fn coop_matmul_throughput() {
    let (adapter, device, queue) = match open() {
        Ok(x) => x,
        Err(why) => return skipped(&why),
    };
    let dim: u32 = std::env::var("MINFERENCE_COOP_BENCH_DIM")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4096);
    assert!(
        dim % 128 == 0,
        "MINFERENCE_COOP_BENCH_DIM must be a multiple of 128"
    );
    let info = adapter.get_info();
    eprintln!(
        "device: {} ({:?}, {} {})",
        info.name, info.backend, info.driver, info.driver_info
    );
    let n = (dim * dim) as usize;
    let (ha, hb) = (values(n, 1), values(n, 2));
    let init = |label: &str, data: &[f16]| {
        device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::cast_slice(data),
            usage: wgpu::BufferUsages::STORAGE,
        })
    };
    let (a, b) = (init("a", &ha), init("b", &hb));
    let c_bytes = (n * 4) as u64;
    let c = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("c"),
        size: c_bytes,
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let staging = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("c staging"),
        size: c_bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let runs = (WARMUP + REPS) as u32;
    let timer = PassTimer::new(&device, &queue, runs);
    let desc = || wgpu::ShaderModuleDescriptor {
        label: Some("coop_matmul_bench"),
        source: wgpu::ShaderSource::Wgsl(SOURCE.into()),
    };
    let checked = device.create_shader_module(desc());
    // SAFETY: every kernel indexes inside its buffers and workgroup arrays for any DIM that is
    // a multiple of 128 (asserted above), every loop ends, and every divisor is a nonzero
    // constant, which is what wgpu's runtime checks would otherwise enforce.
    let unchecked = unsafe {
        device.create_shader_module_trusted(desc(), wgpu::ShaderRuntimeChecks::unchecked())
    };
    let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some("coop_matmul_bench"),
        // 3 and 4: a and b again, read 16 bytes at a time by the pipelined kernels.
        entries: &[0, 1, 2, 3, 4].map(|i| wgpu::BindGroupLayoutEntry {
            binding: i,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only: i != 2 },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        }),
    });
    let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("coop_matmul_bench"),
        layout: &layout,
        entries: &[
            wgpu::BindGroupEntry {
                binding: 0,
                resource: a.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: b.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 2,
                resource: c.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 3,
                resource: a.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 4,
                resource: b.as_entire_binding(),
            },
        ],
    });
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some("coop_matmul_bench"),
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    let flops = 2.0 * (dim as f64).powi(3);
    let mut wrong = Vec::new();
    eprintln!("C = A B, {dim} x {dim} x {dim}, f16 -> f32; median of {REPS} after {WARMUP} warm-up dispatches (timestamp queries)");
    let only = |var: &str| -> Option<Vec<String>> {
        std::env::var(var)
            .ok()
            .map(|s| s.split(',').map(|x| x.trim().to_string()).collect())
    };
    let (only_kernels, only_checks) = (
        only("MINFERENCE_COOP_BENCH_KERNELS"),
        only("MINFERENCE_COOP_BENCH_CHECKS"),
    );
    let picked = |list: &Option<Vec<String>>, name: &str| {
        list.as_ref().is_none_or(|l| l.iter().any(|x| x == name))
    };
    for k in KERNELS.iter() {
        assert!(
            SOURCE.contains(&format!("fn {}(", k.entry)),
            "no entry point {}",
            k.entry
        );
    }
    let runs_of = [("checked", &checked), ("unchecked", &unchecked)];
    for ((checks, module), k) in runs_of
        .iter()
        .filter(|(c, _)| picked(&only_checks, c))
        .flat_map(|m| {
            KERNELS
                .iter()
                .filter(|k| picked(&only_kernels, k.entry))
                .map(move |k| (m, k))
        })
    {
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(k.entry),
            layout: Some(&pipeline_layout),
            module,
            entry_point: Some(k.entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &[("DIM", dim as f64)],
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        let mut encoder = device.create_command_encoder(&Default::default());
        encoder.clear_buffer(&c, 0, None);
        for run in 0..runs {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(k.entry),
                timestamp_writes: Some(timer.writes(run)),
            });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &group, &[]);
            pass.dispatch_workgroups(dim / k.block.1, dim / k.block.0, 1);
        }
        timer.resolve(&mut encoder);
        encoder.copy_buffer_to_buffer(&c, 0, &staging, 0, c_bytes);
        queue.submit([encoder.finish()]);
        if let Some(e) = pollster::block_on(scope.pop()) {
            eprintln!("{:<24} {checks:<9} FAILED to build or run: {e}", k.entry);
            wrong.push(format!("{} ({checks})", k.entry));
            continue;
        }
        timer.map();
        staging.map_async(wgpu::MapMode::Read, .., |r| r.expect("map c"));
        device
            .poll(wgpu::PollType::wait_indefinitely())
            .expect("poll");
        let got: Vec<f32> = bytemuck::pod_collect_to_vec(&staging.get_mapped_range(..).expect("c"));
        staging.unmap();
        // The timed runs after the warm-up ones, sorted by `median_of` (ms[0] is the fastest).
        let mut ms = timer.millis().split_off(WARMUP);
        let median = median_of(&mut ms);
        // Spot check 64 entries against f64 (inputs exact in f16; f32 accumulation); the
        // repeated products' entries grow with DIM / k, so their error is relative.
        let mut max_err = 0.0f64;
        for t in 0..64usize {
            let (i, j) = ((t * 977 + 13) % dim as usize, (t * 331 + 7) % dim as usize);
            let inner = k.repeats.unwrap_or(dim) as usize;
            let dot: f64 = (0..inner)
                .map(|l| ha[i * dim as usize + l].to_f64() * hb[l * dim as usize + j].to_f64())
                .sum();
            let want = dot * (dim / inner as u32) as f64;
            let scale = if k.repeats.is_some() {
                want.abs().max(1.0)
            } else {
                1.0
            };
            let err = (got[i * dim as usize + j] as f64 - want).abs() / scale;
            max_err = max_err.max(err);
        }
        let ok = max_err <= 1e-2;
        if !ok {
            wrong.push(format!("{} ({checks})", k.entry));
        }
        eprintln!(
            "{:<24} {checks:<9} {median:8.3} ms {:8.1} TFLOP/s  (min {:.3} ms, max err {max_err:.1e}{})  {}",
            k.entry,
            flops / (median * 1e-3) / 1e12,
            ms[0],
            if ok { "" } else { " WRONG" },
            k.what
        );
    }
    assert!(
        wrong.is_empty(),
        "kernels with wrong results or errors: {wrong:?}"
    );
}
