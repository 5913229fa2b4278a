//! The cooperative-matrix kernels' control flow on an adapter without cooperative matrices.
//!
//! Lavapipe (CI) cannot run `coopLoad`/`coopMultiplyAdd`, so this test takes the coop WGSL,
//! swaps its matrix-steps section (between the `---- matrix steps` markers of
//! `attention_coop.wgsl`: Q fragments, O accumulators, scores, P.V, the O rescale and stash)
//! for scalar code with the same contract on the same workgroup arrays, and runs the result
//! through raw wgpu: Q/K/V staging, the software pipeline across tiles, masks, the index walk,
//! the online softmax with its lazy max, the rescale decisions, the barriers and the store are
//! then the shipped code, checked against float64. D = 64 and 128 with BLOCK_N = 32 (pipeline
//! constants): lavapipe gives 32 KiB of workgroup memory, the backend's 64-key tiles need
//! 44 KiB. What it does not check is the matrix layout of the coop ops (the naga test checks
//! that they validate; the GPU suite `coop::` checks the results).

use minference::generate::{random_qkv, rising_scores_qkv};
use minference::vectors::reference_and_tolerance;
use minference::wgpu_backend::COOP_SOURCES;
use minference::{AttnShape, DType, HostTensor, Pattern};
use wgpu::util::DeviceExt;

/// Keys per tile of the emulated kernels (pipeline constant; HEAD_DIM is the case's D).
const BLOCK_N: f64 = 32.0;
/// Query rows per workgroup (`BLOCK_M` of the coop core).
const BLOCK_M: usize = 64;

/// Scalar stand-ins for the matrix steps of `attention_coop.wgsl`: invocation (srow, slane)
/// holds Q row `srow` and O row `srow`, columns [slane D / 4, (slane + 1) D / 4).
const SCALAR_MATRIX_STEPS: &str = r#"
var<private> q_emul: array<vec4<f32>, 32>; // Q row srow, D4 used
var<private> o_emul: array<vec4<f32>, 8>;  // O row srow, this quarter's D4 / 4 used

fn load_q_fragments(q_pass: u32) {
    if srow / KV_ROWS != q_pass {
        return;
    }
    for (var c = 0u; c < D4; c++) {
        q_emul[c] = vec4<f32>(kv_tile[(srow % KV_ROWS) * KV_ROW4 + c]);
    }
}

fn clear_o() {
    for (var c = 0u; c < D4 / 4u; c++) {
        o_emul[c] = vec4<f32>(0.0);
    }
}

fn scores() {
    // Row srow, this quarter's keys.
    for (var c4 = slane * BLOCK_N / 16u; c4 < (slane + 1u) * BLOCK_N / 16u; c4++) {
        var s = vec4<f32>(0.0);
        for (var e = 0u; e < 4u; e++) {
            let key = 4u * c4 + e;
            var acc = 0.0;
            for (var c = 0u; c < D4; c++) {
                acc += dot(q_emul[c], vec4<f32>(kv_tile[key * KV_ROW4 + c]));
            }
            s[e] = acc;
        }
        s_tile[srow * S_ROW4 + c4] = s;
    }
}

fn accumulate_pv() {
    let c0 = slane * D4 / 4u;
    for (var c = 0u; c < D4 / 4u; c++) {
        var acc = o_emul[c];
        for (var s = 0u; s < BLOCK_N; s++) {
            let p = f32(p_tile[srow * P_ROW4 + s / 4u][s % 4u]);
            acc += p * vec4<f32>(kv_tile[(V_ROW0 + s) * KV_ROW4 + c0 + c]);
        }
        o_emul[c] = acc;
    }
}

fn rescale_o() {
    let correction = row_stat[srow];
    for (var c = 0u; c < D4 / 4u; c++) {
        o_emul[c] *= correction;
    }
    // The real rescale uses s_tile columns [0, 32) as scratch: nothing may rely on them after.
    for (var c = slane * 2u; c < slane * 2u + 2u; c++) {
        s_tile[srow * S_ROW4 + c] = vec4<f32>(-7.0e20);
    }
}

fn stash_o(pair: u32) {
    // Columns [32 pair, 32 pair + 32) = vec4 columns [8 pair, 8 pair + 8), over the quarters
    // that hold them.
    for (var c = 0u; c < 8u; c++) {
        let col4 = 8u * pair + c;
        if col4 / (D4 / 4u) == slane {
            s_tile[srow * S_ROW4 + c] = o_emul[col4 % (D4 / 4u)];
        }
    }
}
"#;

const BEGIN: &str = "// ---- matrix steps";
const END: &str = "// ---- end of matrix steps";

/// The coop module of `stem` with its matrix steps swapped for `SCALAR_MATRIX_STEPS`.
fn emulated_source(stem: &str) -> String {
    let (_, src) = COOP_SOURCES
        .iter()
        .find(|(s, _)| *s == stem)
        .unwrap_or_else(|| panic!("no coop family `{stem}`"));
    let s = src.replace("enable wgpu_cooperative_matrix;\n", "");
    let start = s
        .find(BEGIN)
        .unwrap_or_else(|| panic!("{stem}: `{BEGIN}` not found"));
    let end = s[start..]
        .find(END)
        .map(|i| start + i)
        .unwrap_or_else(|| panic!("{stem}: `{END}` not found"));
    let end = end + s[end..].find('\n').unwrap_or(s.len() - end);
    let s = format!("{}{SCALAR_MATRIX_STEPS}{}", &s[..start], &s[end..]);
    let code: Vec<&str> = s
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect();
    for op in ["coopLoad", "coopStore", "coopMultiplyAdd", "coop_mat"] {
        assert!(
            !code.iter().any(|l| l.contains(op)),
            "{stem}: `{op}` is left"
        );
    }
    s
}

struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
}

fn gpu() -> Option<Gpu> {
    let Ok(adapter) = minference::wgpu_backend::first_adapter() else {
        eprintln!("\n**********\nSKIPPED: coop emulation: no wgpu adapter\n**********\n");
        return None;
    };
    let needed = wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP;
    if !adapter.features().contains(needed) {
        eprintln!(
            "\n**********\nSKIPPED: coop emulation: adapter `{}` lacks SHADER_F16 or SUBGROUP\n**********\n",
            adapter.get_info().name
        );
        return None;
    }
    // The four lanes of a softmax row swap maxima by shuffles: they must share a subgroup.
    let info = adapter.get_info();
    if info.subgroup_min_size < 4 {
        eprintln!(
            "\n**********\nSKIPPED: coop emulation: adapter `{}` may run subgroups of {} invocations; the coop softmax needs 4 neighbouring lanes in one subgroup\n**********\n",
            info.name, info.subgroup_min_size
        );
        return None;
    }
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("coop emulation"),
        required_features: needed,
        required_limits: adapter.limits(),
        experimental_features: wgpu::ExperimentalFeatures::disabled(),
        memory_hints: wgpu::MemoryHints::Performance,
        trace: wgpu::Trace::Off,
    }))
    .expect("device");
    Some(Gpu { device, queue })
}

/// `AttentionParams` of `attention_coop.wgsl`.
fn params(shape: &AttnShape, nnz_s: usize, nnz_v: usize) -> Vec<u8> {
    let words: [u32; 8] = [
        shape.batch as u32,
        shape.q_heads as u32,
        shape.kv_heads as u32,
        shape.seq_len as u32,
        shape.head_dim as u32,
        nnz_s as u32,
        nnz_v as u32,
        ((shape.scale() * std::f64::consts::LOG2_E) as f32).to_bits(),
    ];
    bytemuck::cast_slice(&words).to_vec()
}

fn padded(bytes: &[u8]) -> Vec<u8> {
    let mut v = bytes.to_vec();
    v.resize(bytes.len().next_multiple_of(4).max(4), 0);
    v
}

/// Run entry `{stem}_f16` of the emulated module over q, k, v and `extra` storage buffers;
/// the output starts as f16 NaNs. Returns the output as f64. `split`: K and V in their own
/// halves of kv_tile, two barriers per tile (`SPLIT_KV = 1`, the dense kernel's walk). The
/// backend runs it with 128 rows and 512 invocations at D = 128, whose 47,368 bytes are over
/// lavapipe's 32 KiB limit; the walk needs one 16-byte chunk per invocation per K or V tile,
/// which the core's 256 invocations give at D = 64 (at 128 they take two), so it runs here with
/// 64 rows at D = 64.
fn run(
    gpu: &Gpu,
    stem: &str,
    shape: &AttnShape,
    [q, k, v]: [&HostTensor; 3],
    p: Vec<u8>,
    extra: &[Vec<u8>],
    split: bool,
) -> Vec<f64> {
    let dev = &gpu.device;
    let scope = dev.push_error_scope(wgpu::ErrorFilter::Validation);
    let module = dev.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(stem),
        source: wgpu::ShaderSource::Wgsl(emulated_source(stem).into()),
    });
    let storage = |label: &str, bytes: &[u8], usage: wgpu::BufferUsages| {
        dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: &padded(bytes),
            usage: wgpu::BufferUsages::STORAGE | usage,
        })
    };
    let elems = shape.q_dims().iter().product::<usize>();
    let nan_words = vec![0x7e00_7e00u32; elems.div_ceil(2)];
    let mut buffers = vec![
        dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("params"),
            contents: &p,
            usage: wgpu::BufferUsages::UNIFORM,
        }),
        storage("q", q.as_bytes(), wgpu::BufferUsages::empty()),
        storage("k", k.as_bytes(), wgpu::BufferUsages::empty()),
        storage("v", v.as_bytes(), wgpu::BufferUsages::empty()),
        storage(
            "out",
            bytemuck::cast_slice(&nan_words),
            wgpu::BufferUsages::COPY_SRC,
        ),
    ];
    for (i, e) in extra.iter().enumerate() {
        buffers.push(storage(
            &format!("extra{i}"),
            e,
            wgpu::BufferUsages::empty(),
        ));
    }
    let entries: Vec<wgpu::BindGroupLayoutEntry> = (0..buffers.len())
        .map(|i| wgpu::BindGroupLayoutEntry {
            binding: i as u32,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: match i {
                    0 => wgpu::BufferBindingType::Uniform,
                    4 => wgpu::BufferBindingType::Storage { read_only: false },
                    _ => wgpu::BufferBindingType::Storage { read_only: true },
                },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        })
        .collect();
    let layout = dev.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(stem),
        entries: &entries,
    });
    let pipeline_layout = dev.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(stem),
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    let entry = format!("{stem}_f16");
    let pipeline = dev.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(stem),
        layout: Some(&pipeline_layout),
        module: &module,
        entry_point: Some(&entry),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants: &[
                ("HEAD_DIM", shape.head_dim as f64),
                ("BLOCK_N", BLOCK_N),
                ("SPLIT_KV", if split { 1.0 } else { 0.0 }),
            ],
            ..Default::default()
        },
        cache: None,
    });
    let group = dev.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(stem),
        layout: &layout,
        entries: &buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect::<Vec<_>>(),
    });
    let out_bytes = (elems * 2).next_multiple_of(4) as u64;
    let staging = dev.create_buffer(&wgpu::BufferDescriptor {
        label: Some("staging"),
        size: out_bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = dev.create_command_encoder(&Default::default());
    {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &group, &[]);
        pass.dispatch_workgroups(
            shape.seq_len.div_ceil(BLOCK_M) as u32,
            (shape.batch * shape.q_heads) as u32,
            1,
        );
    }
    encoder.copy_buffer_to_buffer(&buffers[4], 0, &staging, 0, out_bytes);
    gpu.queue.submit([encoder.finish()]);
    if let Some(e) = pollster::block_on(scope.pop()) {
        panic!("{stem}: wgpu validation error: {e}");
    }
    staging.map_async(wgpu::MapMode::Read, .., |r| r.expect("map"));
    dev.poll(wgpu::PollType::wait_indefinitely()).expect("poll");
    let data = staging.get_mapped_range(..).expect("mapped").to_vec();
    let halves: Vec<half::f16> = bytemuck::pod_collect_to_vec(&data);
    halves[..elems].iter().map(|h| h.to_f64()).collect()
}

fn check(stem: &str, case: &str, got: &[f64], want: &[f64], tol: f64) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol,
            "{stem} (emulated) {case}: element {i}: got {g} want {w} (tol {tol:.3e})"
        );
    }
}

#[test]
fn coop_kernels_with_scalar_matrix_steps_match_float64() {
    let Some(gpu) = gpu() else { return };
    let mut seed = 40;
    // The rising cases have scores that rise along the keys: O is rescaled many times. D = 128
    // takes two fetch passes per tile and four O column pairs (32-key tiles fit lavapipe's
    // 32 KiB at D = 128 too).
    for &(b, hq, hkv, n, d, rising) in &[
        (1, 1, 1, 1, 64, false),
        (2, 4, 2, 63, 64, false),
        (1, 2, 1, 65, 64, false),
        (2, 4, 1, 200, 64, false),
        (1, 2, 1, 1000, 64, false),
        (1, 2, 1, 200, 64, true),
        (2, 2, 2, 1000, 64, true),
        (1, 2, 1, 130, 128, false),
        (1, 2, 2, 300, 128, true),
    ] {
        seed += 1;
        let shape = AttnShape::new(b, hq, hkv, n, d).unwrap();
        let generate = if rising {
            rising_scores_qkv
        } else {
            random_qkv
        };
        let (q, k, v) = generate(b, hq, hkv, n, d, DType::F16, seed).unwrap();
        let qkv = [&q, &k, &v];
        let case = format!(
            "B={b} Hq={hq} Hkv={hkv} N={n} D={d}{}",
            if rising { " rising scores" } else { "" }
        );

        let pats = vec![Pattern::Dense; hq];
        let (want, tol) = reference_and_tolerance(&shape, qkv, DType::F16, &pats, None).unwrap();
        // Both walks at D = 64 (see `run` for why the split one runs at D = 64 only).
        for split in [false, true].into_iter().filter(|&split| !split || d == 64) {
            let got = run(
                &gpu,
                "dense_attention_coop",
                &shape,
                qkv,
                params(&shape, 0, 0),
                &[],
                split,
            );
            let stem = if split {
                "dense_attention_coop (split K/V)"
            } else {
                "dense_attention_coop"
            };
            check(stem, &case, &got, &want, tol);
        }

        let pats = vec![Pattern::AShape { sink: 3, local: 37 }; hq];
        let windows: Vec<[i32; 2]> = vec![[3, 37]; hq];
        let (want, tol) = reference_and_tolerance(&shape, qkv, DType::F16, &pats, None).unwrap();
        let got = run(
            &gpu,
            "a_shape_attention_coop",
            &shape,
            qkv,
            params(&shape, 0, 0),
            &[bytemuck::cast_slice(&windows).to_vec()],
            false,
        );
        check("a_shape_attention_coop", &case, &got, &want, tol);

        let pats: Vec<Pattern> = (0..hq)
            .map(|h| {
                if h % 2 == 0 {
                    Pattern::VerticalSlash {
                        vertical: 20,
                        slash: 45,
                    }
                } else {
                    Pattern::BlockSparse { top_k: 2 }
                }
            })
            .collect();
        let (qf, kf) = (q.to_f64(), k.to_f64());
        let ix = minference::index::build_index(&shape, &qf, &kf, &pats).unwrap();
        let (want, tol) =
            reference_and_tolerance(&shape, qkv, DType::F16, &pats, Some(&ix)).unwrap();
        let i32s = |x: &[i32]| bytemuck::cast_slice(x).to_vec();
        let got = run(
            &gpu,
            "sparse_attention_coop",
            &shape,
            qkv,
            params(&shape, ix.meta.nnz_s, ix.meta.nnz_v),
            &[
                i32s(&ix.block_count),
                i32s(&ix.block_offset),
                i32s(&ix.column_count),
                i32s(&ix.column_index),
            ],
            false,
        );
        check("sparse_attention_coop", &case, &got, &want, tol);
        eprintln!(
            "coop emulation {case}: dense{}, A-shape, sparse pass",
            if d == 64 { " (both walks)" } else { "" }
        );
    }
}
