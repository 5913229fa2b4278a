//! What the Vulkan driver made of the cooperative-matrix kernels: registers, spills, shared
//! memory, as its compiler reports them.
//!
//! `coop_pipeline_statistics` (ignored: run by hand on a GPU whose Vulkan driver has
//! `VK_KHR_pipeline_executable_properties`) opens the wgpu adapter's Vulkan device through
//! wgpu-hal with that extension added, compiles the coop attention kernels at each tile width
//! (and kernels of the matmul microbenchmark and the residency probe, for calibration) to
//! SPIR-V with naga as wgpu would (pipeline constants applied; with and without wgpu's
//! runtime checks), builds each compute pipeline
//! with `VK_PIPELINE_CREATE_CAPTURE_STATISTICS_BIT_KHR`, and prints every statistic the driver
//! gives (on NVIDIA: register count, local memory, shared memory, ...). The register count
//! sets how many workgroups share an SM, which the timings alone cannot tell
//! (`docs/coop.md`). Where the adapter is not Vulkan, lacks the extension or cooperative
//! matrices, it prints SKIPPED and passes. (Not built on Apple targets: wgpu-hal's Vulkan
//! backend is not compiled there.)
#![cfg(not(target_vendor = "apple"))]

use std::ffi::{CStr, CString};

use ash::vk;
use minference::wgpu_backend::{coop_constants, COOP_BLOCK_NS, COOP_SOURCES, COOP_SPLIT_CONSTANTS};

#[path = "residency_source.rs"]
mod residency_source;
use residency_source::residency_source;

/// One kernel to compile: what to call it, its WGSL, entry point and pipeline constants.
struct Subject {
    label: String,
    source: String,
    entry: String,
    constants: Vec<(String, f64)>,
}

fn subjects() -> Vec<Subject> {
    let mut out = Vec::new();
    for (stem, source) in COOP_SOURCES {
        if stem == "a_shape_attention_coop" {
            continue; // the same core as dense
        }
        for block_n in COOP_BLOCK_NS {
            out.push(Subject {
                label: format!("{stem} (D = 128, BLOCK_N = {block_n})"),
                source: source.to_string(),
                entry: format!("{stem}_f16"),
                constants: coop_constants(128, block_n)
                    .iter()
                    .map(|&(k, v)| (k.to_string(), f64::from(v)))
                    .collect(),
            });
        }
    }
    // The split dense kernel (128 rows, 16 subgroups, two barriers per tile).
    let (stem, source) = COOP_SOURCES
        .iter()
        .find(|(stem, _)| *stem == "dense_attention_coop")
        .expect("dense coop source");
    out.push(Subject {
        label: format!("{stem} (split: D = 128, BLOCK_N = 32, BLOCK_M = 128, 512 invocations)"),
        source: source.to_string(),
        entry: format!("{stem}_f16"),
        constants: COOP_SPLIT_CONSTANTS
            .iter()
            .map(|&(k, v)| (k.to_string(), f64::from(v)))
            .collect(),
    });
    let bench = include_str!("../shaders/coop_matmul_bench.wgsl");
    for entry in [
        "matmul_direct_4x4",
        "matmul_shared_2x4",
        "mma_peak_2x4",
        "smem_peak_vec4",
        "smem_peak_f16",
        "smem_peak_vec4_kt",
        "matmul_prefetch_2x4",
        "matmul_double_2x4",
        "matmul_double_2x4_bk16",
        "matmul_prefetch_2x4_wg512",
        "matmul_double_2x4_bk16_wg512",
    ] {
        out.push(Subject {
            label: format!("coop_matmul_bench {entry}"),
            source: bench.to_string(),
            entry: entry.to_string(),
            constants: vec![("DIM".to_string(), 4096.0)],
        });
    }
    // The residency probe's register-holding kernel (tests/wgpu_residency.rs), for the
    // registers behind its residency figures.
    for live in [24, 44] {
        for wg in [128.0, 256.0] {
            out.push(Subject {
                label: format!("residency probe_live {live} vec4, {wg} invocations"),
                source: residency_source(live),
                entry: "probe_live".to_string(),
                constants: vec![("WG".to_string(), wg), ("SMEM_VEC4".to_string(), 1.0)],
            });
        }
    }
    out
}

/// SPIR-V of `s` as wgpu 30's Vulkan backend writes it for a Vulkan 1.3 device with robust
/// buffer access and native workgroup zero-init (the H100's), with (`checked`) or without its
/// runtime checks; and the module's (group 0) bindings as descriptor types.
fn spirv(s: &Subject, checked: bool) -> (Vec<u32>, Vec<(u32, vk::DescriptorType)>) {
    use naga::valid::{Capabilities, ShaderStages, SubgroupOperationSet, ValidationFlags};
    let module = naga::front::wgsl::parse_str(&s.source)
        .unwrap_or_else(|e| panic!("{}: {}", s.label, e.emit_to_string(&s.source)));
    let info = naga::valid::Validator::new(ValidationFlags::all(), Capabilities::all())
        .subgroup_stages(ShaderStages::COMPUTE)
        .subgroup_operations(SubgroupOperationSet::all())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{}: {}", s.label, e.emit_to_string(&s.source)));
    let constants = s.constants.iter().cloned().collect();
    let (m, i) = naga::back::pipeline_constants::process_overrides(
        &module,
        &info,
        Some((naga::ShaderStage::Compute, &s.entry)),
        &constants,
    )
    .unwrap_or_else(|e| panic!("{}: overrides: {e}", s.label));
    let policy = |p| naga::proc::BoundsCheckPolicies {
        index: p,
        buffer: naga::proc::BoundsCheckPolicy::Unchecked, // robust buffer access does it
        image_load: naga::proc::BoundsCheckPolicy::Unchecked,
        binding_array: naga::proc::BoundsCheckPolicy::Unchecked,
    };
    let options = naga::back::spv::Options {
        lang_version: (1, 6),
        bounds_check_policies: if checked {
            policy(naga::proc::BoundsCheckPolicy::Restrict)
        } else {
            policy(naga::proc::BoundsCheckPolicy::Unchecked)
        },
        zero_initialize_workgroup_memory:
            naga::back::spv::ZeroInitializeWorkgroupMemoryMode::Native,
        force_loop_bounding: checked,
        emit_int_div_checks: checked,
        ..Default::default()
    };
    let pipeline = naga::back::spv::PipelineOptions {
        shader_stage: naga::ShaderStage::Compute,
        entry_point: s.entry.clone(),
    };
    let words = naga::back::spv::write_vec(&m, &i, &options, Some(&pipeline))
        .unwrap_or_else(|e| panic!("{}: SPIR-V: {e}", s.label));
    let mut bindings: Vec<(u32, vk::DescriptorType)> = m
        .global_variables
        .iter()
        .filter_map(|(_, g)| {
            let b = g.binding.as_ref()?;
            let ty = match g.space {
                naga::AddressSpace::Uniform => vk::DescriptorType::UNIFORM_BUFFER,
                naga::AddressSpace::Storage { .. } => vk::DescriptorType::STORAGE_BUFFER,
                _ => return None,
            };
            Some((b.binding, ty))
        })
        .collect();
    bindings.sort_by_key(|b| b.0);
    (words, bindings)
}

fn skipped(why: &str) {
    eprintln!("\n**********\nSKIPPED: coop pipeline statistics: {why}\n**********\n");
}

fn text(name: Result<&CStr, std::ffi::FromBytesUntilNulError>) -> String {
    name.map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "?".to_string())
}

#[test]
#[ignore]
fn coop_pipeline_statistics() {
    use wgpu::hal::api::Vulkan;
    // The adapter the backend opens (`WGPU_BACKEND=vulkan` picks Vulkan where there are more).
    let adapter = match minference::wgpu_backend::first_adapter() {
        Ok(a) => a,
        Err(e) => return skipped(&format!("no adapter: {e}")),
    };
    let name = adapter.get_info().name;
    let features = wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX
        | wgpu::Features::SHADER_F16
        | wgpu::Features::SUBGROUP;
    if !adapter.features().contains(features) {
        return skipped(&format!(
            "adapter `{name}` lacks cooperative matrices, f16 or subgroups"
        ));
    }
    // SAFETY: the hal adapter is used only while `adapter` lives, on this thread.
    let Some(hal_adapter) = (unsafe { adapter.as_hal::<Vulkan>() }) else {
        return skipped(&format!("adapter `{name}` is not a Vulkan adapter"));
    };
    let ext = ash::khr::pipeline_executable_properties::NAME;
    let raw_instance = hal_adapter.shared_instance().raw_instance();
    // SAFETY: a valid physical device of this instance.
    let available = unsafe {
        raw_instance.enumerate_device_extension_properties(hal_adapter.raw_physical_device())
    }
    .expect("device extensions");
    if !available
        .iter()
        .any(|e| e.extension_name_as_c_str() == Ok(ext))
    {
        return skipped(&format!(
            "adapter `{name}` has no {}",
            ext.to_string_lossy()
        ));
    }
    // Leaked: the device keeps no pointer to it after creation, and the test ends soon.
    let stats_feature: &'static mut _ = Box::leak(Box::new(
        vk::PhysicalDevicePipelineExecutablePropertiesFeaturesKHR::default()
            .pipeline_executable_info(true),
    ));
    let callback: Box<wgpu::hal::vulkan::CreateDeviceCallback> = Box::new(move |args| {
        args.extensions.push(ext);
        let info = std::mem::take(args.create_info);
        *args.create_info = info.push_next(stats_feature);
    });
    // SAFETY: features the adapter reports; the callback only adds an extension it lists and
    // its feature struct.
    let open = unsafe {
        hal_adapter.open_with_callback(
            features,
            &adapter.limits(),
            &wgpu::MemoryHints::Performance,
            Some(callback),
        )
    }
    .expect("open the Vulkan device with VK_KHR_pipeline_executable_properties");
    let device = open.device.raw_device();
    let stats = ash::khr::pipeline_executable_properties::Device::new(raw_instance, device);
    eprintln!("device: {name}");
    let mut reported = 0;
    for subject in subjects() {
        for checked in [false, true] {
            let (words, bindings) = spirv(&subject, checked);
            let checks = if checked { "checked" } else { "unchecked" };
            // SAFETY: every object below is created from `device`, used once and destroyed
            // before the next subject.
            unsafe {
                let layout_bindings: Vec<vk::DescriptorSetLayoutBinding> = bindings
                    .iter()
                    .map(|&(b, ty)| {
                        vk::DescriptorSetLayoutBinding::default()
                            .binding(b)
                            .descriptor_type(ty)
                            .descriptor_count(1)
                            .stage_flags(vk::ShaderStageFlags::COMPUTE)
                    })
                    .collect();
                let set_layout = device
                    .create_descriptor_set_layout(
                        &vk::DescriptorSetLayoutCreateInfo::default().bindings(&layout_bindings),
                        None,
                    )
                    .expect("descriptor set layout");
                let set_layouts = [set_layout];
                let pipeline_layout = device
                    .create_pipeline_layout(
                        &vk::PipelineLayoutCreateInfo::default().set_layouts(&set_layouts),
                        None,
                    )
                    .expect("pipeline layout");
                let shader = device
                    .create_shader_module(&vk::ShaderModuleCreateInfo::default().code(&words), None)
                    .expect("shader module");
                let entry = CString::new(subject.entry.as_str()).expect("entry name");
                let info = vk::ComputePipelineCreateInfo::default()
                    .flags(vk::PipelineCreateFlags::CAPTURE_STATISTICS_KHR)
                    .stage(
                        vk::PipelineShaderStageCreateInfo::default()
                            .stage(vk::ShaderStageFlags::COMPUTE)
                            .module(shader)
                            .name(&entry),
                    )
                    .layout(pipeline_layout);
                let pipeline = device
                    .create_compute_pipelines(vk::PipelineCache::null(), &[info], None)
                    .map_err(|(_, e)| e)
                    .expect("compute pipeline")[0];
                let executables = stats
                    .get_pipeline_executable_properties(
                        &vk::PipelineInfoKHR::default().pipeline(pipeline),
                    )
                    .expect("pipeline executables");
                for (index, exe) in executables.iter().enumerate() {
                    let values = stats
                        .get_pipeline_executable_statistics(
                            &vk::PipelineExecutableInfoKHR::default()
                                .pipeline(pipeline)
                                .executable_index(index as u32),
                        )
                        .expect("statistics");
                    let line: Vec<String> = values
                        .iter()
                        .map(|v| {
                            let value = match v.format {
                                vk::PipelineExecutableStatisticFormatKHR::BOOL32 => {
                                    (v.value.b32 != 0).to_string()
                                }
                                vk::PipelineExecutableStatisticFormatKHR::INT64 => {
                                    v.value.i64.to_string()
                                }
                                vk::PipelineExecutableStatisticFormatKHR::UINT64 => {
                                    v.value.u64.to_string()
                                }
                                _ => format!("{:.3}", v.value.f64),
                            };
                            format!("{} = {value}", text(v.name_as_c_str()))
                        })
                        .collect();
                    reported += values.len();
                    eprintln!(
                        "{:<40} {checks:<9} [{} subgroup {}] {}",
                        subject.label,
                        text(exe.name_as_c_str()),
                        exe.subgroup_size,
                        line.join(", ")
                    );
                }
                device.destroy_pipeline(pipeline, None);
                device.destroy_shader_module(shader, None);
                device.destroy_pipeline_layout(pipeline_layout, None);
                device.destroy_descriptor_set_layout(set_layout, None);
            }
        }
    }
    assert!(reported > 0, "the driver reported no statistics");
}
