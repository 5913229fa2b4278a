//! How many workgroups the adapter's driver keeps on one SM at once, by workgroup size,
//! workgroup memory and registers held (`shaders/residency_probe.wgsl`).
//!
//! `workgroups_per_sm` (ignored: run by hand on a GPU, `PARTS=residency` of
//! `scripts/device_session.sh`) dispatches k x SMS workgroups of a fixed amount of work (SMS:
//! `MINFERENCE_RESIDENCY_SMS`, default 132, the H100/H200 SXM) for k = 1..4 and prints each
//! time against k = 1: about 1 while k workgroups fit an SM at once, about k / resident past
//! it. It answers whether a kernel that leaves room for two workgroups per SM in registers and
//! workgroup memory gets them through this driver (the cooperative-matrix kernels'
//! occupancy, docs/coop.md). The `probe` rows take few registers and vary workgroup memory;
//! the `probe_live` rows hold `LIVE` vec4s in registers (the driver's counts for them:
//! `tests/wgpu_pipeline_stats.rs`, 109 and 189 on the H200). Measured there: registers limit
//! residency as the register file says, workgroup memory to about 50-57 KiB per SM in all
//! (two workgroups of 24 KiB, one of 28 KiB).
//!
//! `residency_probe_validates` (not ignored, no GPU) checks the shader with naga.

use wgpu::util::DeviceExt;

#[path = "residency_source.rs"]
mod residency_source;
use residency_source::{residency_source, SOURCE};
#[path = "pass_timer.rs"]
mod pass_timer;
use pass_timer::{median, PassTimer};

const REPS: usize = 5;
/// Live vec4s of the register-holding runs (`probe_live`).
const LIVE: [usize; 2] = [24, 44];

/// One probe configuration: entry point, invocations per workgroup, workgroup memory bytes,
/// live vec4s (`probe_live` only).
struct Config {
    entry: &'static str,
    wg: u32,
    bytes: u32,
    live: usize,
}

fn configs() -> Vec<Config> {
    let mut out = Vec::new();
    // Workgroup memory sizes: none, 16, 20, 24, 28 KiB, the 32-row coop kernel's 31248, the
    // 64-row coop kernel's 44816, 48 KiB.
    for wg in [128u32, 256] {
        for bytes in [16u32, 16384, 20480, 24576, 28672, 31248, 44816, 49152] {
            out.push(Config {
                entry: "probe",
                wg,
                bytes,
                live: 0,
            });
        }
    }
    // With registers held: 24 vec4s (about 100 registers: two workgroups of 256 fit the
    // register file) and 44 (about 180: two of 128 fit, one of 256), at the coop kernels'
    // workgroup memory.
    for live in LIVE {
        for (wg, bytes) in [(128u32, 16u32), (128, 31248), (256, 16), (256, 44816)] {
            out.push(Config {
                entry: "probe_live",
                wg,
                bytes,
                live,
            });
        }
    }
    out
}

#[test]
fn residency_probe_validates() {
    for live in [0, LIVE[1]] {
        let source = residency_source(live);
        let module = naga::front::wgsl::parse_str(&source)
            .unwrap_or_else(|e| panic!("WGSL parse error:\n{}", e.emit_to_string(&source)));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::empty(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("validation error:\n{}", e.emit_to_string(&source)));
    }
    assert_eq!(
        residency_source(0),
        SOURCE
            .replace("    // LIVE_LOAD\n", "")
            .replace("        // LIVE_USE\n", "")
    );
}

#[test]
#[ignore]
fn workgroups_per_sm() {
    let adapter = match minference::wgpu_backend::first_adapter() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("\n**********\nSKIPPED: residency probe: no adapter: {e}\n**********\n");
            return;
        }
    };
    if !adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
        eprintln!("\n**********\nSKIPPED: residency probe: no timestamp queries\n**********\n");
        return;
    }
    let info = adapter.get_info();
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("residency probe"),
        required_features: wgpu::Features::TIMESTAMP_QUERY,
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .expect("request_device");
    let sms: u32 = std::env::var("MINFERENCE_RESIDENCY_SMS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(132);
    let max_k = 4u32;
    let max_wg = 256u32;
    let out = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("out"),
        size: u64::from(sms * max_k * max_wg) * 4,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let timer = PassTimer::new(&device, &queue, REPS as u32);
    let live_max = LIVE.iter().copied().max().unwrap_or(1);
    let live_in = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("live_in"),
        contents: bytemuck::cast_slice(&vec![0.999_999_94f32; 4 * live_max]),
        usage: wgpu::BufferUsages::STORAGE,
    });
    let limit = device.limits().max_compute_workgroup_storage_size;
    eprintln!(
        "device: {} ({:?}, {} {}); {sms} SMs assumed; workgroup memory limit {limit} bytes",
        info.name, info.backend, info.driver, info.driver_info
    );
    eprintln!("median of {REPS} dispatches; time of k workgroups per SM / time of 1 (about 1 while they fit at once)");
    // One module per live count (the configurations share them).
    let mut modules: Vec<(usize, wgpu::ShaderModule)> = Vec::new();
    for c in configs() {
        if c.bytes > limit {
            continue;
        }
        if !modules.iter().any(|(live, _)| *live == c.live) {
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("residency_probe"),
                source: wgpu::ShaderSource::Wgsl(residency_source(c.live).into()),
            });
            modules.push((c.live, module));
        }
        let module = modules
            .iter()
            .find_map(|(live, m)| (*live == c.live).then_some(m))
            .expect("module built above");
        let (wg, bytes) = (c.wg, c.bytes);
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(c.entry),
            layout: None,
            module,
            entry_point: Some(c.entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &[("WG", f64::from(wg)), ("SMEM_VEC4", f64::from(bytes / 16))],
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: out.as_entire_binding(),
        }];
        if c.entry == "probe_live" {
            entries.push(wgpu::BindGroupEntry {
                binding: 1,
                resource: live_in.as_entire_binding(),
            });
        }
        let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("residency_probe"),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let mut times = Vec::new();
        for k in 1..=max_k {
            let mut encoder = device.create_command_encoder(&Default::default());
            // One warm-up dispatch, then REPS timed ones.
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                pass.set_pipeline(&pipeline);
                pass.set_bind_group(0, &group, &[]);
                pass.dispatch_workgroups(sms * k, 1, 1);
            }
            for r in 0..REPS as u32 {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("probe"),
                    timestamp_writes: Some(timer.writes(r)),
                });
                pass.set_pipeline(&pipeline);
                pass.set_bind_group(0, &group, &[]);
                pass.dispatch_workgroups(sms * k, 1, 1);
            }
            timer.resolve(&mut encoder);
            queue.submit([encoder.finish()]);
            timer.map();
            device
                .poll(wgpu::PollType::wait_indefinitely())
                .expect("poll");
            times.push(median(&mut timer.millis()));
        }
        let ratios: Vec<String> = times
            .iter()
            .enumerate()
            .map(|(i, t)| format!("k={}: {:.2}", i + 1, t / times[0]))
            .collect();
        // Resident: the largest k whose time stays within 30% of k = 1.
        let resident = times.iter().take_while(|t| **t < 1.3 * times[0]).count();
        eprintln!(
            "{:<10} live {:>2} vec4, workgroup {wg:>3} invocations, {bytes:>5} bytes: k=1 {:.3} ms; {}; resident per SM: {}{}",
            c.entry,
            c.live,
            times[0],
            ratios.join(", "),
            resident,
            if resident as u32 == max_k { "+" } else { "" }
        );
        assert!(times.iter().all(|t| *t > 0.0), "timestamps did not advance");
    }
}
