//! The `minference` command-line program: `demo`, `run`, `check`, `bench`, `gen-vectors`,
//! `gen-capture`, `search`, `eval`.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use minference::backend::{attend_layer, run_layer_into};
use minference::generate::{structured_qkv, HeadKind};
use minference::io::{put_index, StFile};
use minference::registry::{open, BackendKind};
use minference::vectors::{check_case, list_cases, VectorCase};
use minference::{reference, AttnShape, Backend, DType, DeviceTensor, LayerConfig, Pattern};
use std::path::{Path, PathBuf};
use std::time::Instant;

mod search_cli;

#[derive(Parser)]
#[command(
    name = "minference",
    version,
    about = "MInference-style dynamic sparse attention for long-context prefill"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build a structured problem and compare dense, A-shape, vertical-slash and block-sparse.
    Demo {
        /// cpu, wgpu, cuda or auto.
        #[arg(long, default_value = "auto")]
        backend: String,
        /// Sequence length (default: 4096 on a GPU, 2048 on the CPU).
        #[arg(long)]
        seq_len: Option<usize>,
        /// Query heads (kv heads = heads / 2).
        #[arg(long, default_value_t = 8)]
        heads: usize,
        /// Head dim.
        #[arg(long, default_value_t = 128)]
        head_dim: usize,
        /// Storage dtype (f32, f16, bf16); default f16, or f32 where the backend lacks f16.
        #[arg(long)]
        dtype: Option<String>,
    },
    /// Run one layer on q, k, v from a safetensors file and write the output.
    Run {
        /// safetensors with `q` [B,Hq,N,D], `k` and `v` [B,Hkv,N,D] (f32, f16 or bf16).
        #[arg(long)]
        input: PathBuf,
        /// dense, a-shape:SINK,LOCAL, vertical-slash:V,S or block-sparse:K (every head).
        #[arg(long, conflicts_with = "config")]
        pattern: Option<String>,
        /// A MInference per-head config (JSON); with --layer.
        #[arg(long, requires = "layer")]
        config: Option<PathBuf>,
        /// Layer of the config to use.
        #[arg(long)]
        layer: Option<usize>,
        /// cpu, wgpu, cuda or auto.
        #[arg(long, default_value = "auto")]
        backend: String,
        /// Output safetensors: `o` [B,Hq,N,D] in the input dtype.
        #[arg(long)]
        output: PathBuf,
        /// Also save the raw selections and the kernel index.
        #[arg(long)]
        save_index: bool,
        /// Reject inputs holding NaN or infinity.
        #[arg(long)]
        check_finite: bool,
        /// After the run, time the layer this many times more (index building and attention
        /// separately, each after a device synchronize); the medians go to stderr and to the
        /// output's metadata (`time_ms_index`, `time_ms_attention`).
        #[arg(long, default_value_t = 0)]
        reps: usize,
    },
    /// Run the shared test vectors on one backend.
    Check {
        /// cpu, wgpu, cuda or auto.
        #[arg(long, default_value = "auto")]
        backend: String,
        /// Folder of vector cases.
        #[arg(long, default_value = "tests/vectors")]
        vectors: PathBuf,
    },
    /// Time every pattern on every available backend over sequence lengths.
    Bench(minference::bench::BenchArgs),
    /// Regenerate the shared test vectors with the float64 reference.
    GenVectors {
        /// Output folder.
        #[arg(long, default_value = "tests/vectors")]
        out: PathBuf,
    },
    /// Write a capture (q, k, v) from the structured generator, for `search` and `eval`.
    GenCapture(search_cli::GenCaptureArgs),
    /// Search each head's best pattern at equal kernel cost; write a MInference config.
    Search(search_cli::SearchArgs),
    /// Density, recall and output error of a config against dense attention.
    Eval(search_cli::EvalArgs),
}

fn open_backend(name: &str) -> Result<Box<dyn Backend>> {
    let kind: BackendKind = name.parse()?;
    let opened = open(kind)?;
    for (skipped, why) in &opened.skipped {
        eprintln!("backend auto: skipped {skipped}: {why}");
    }
    let info = opened.backend.info();
    eprintln!("backend: {} ({})", info.name, info.device);
    Ok(opened.backend)
}

fn main() {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Demo {
            backend,
            seq_len,
            heads,
            head_dim,
            dtype,
        } => demo(&backend, seq_len, heads, head_dim, dtype),
        Cmd::Run {
            input,
            pattern,
            config,
            layer,
            backend,
            output,
            save_index,
            check_finite,
            reps,
        } => run(
            &input,
            pattern,
            config,
            layer,
            &backend,
            &output,
            save_index,
            check_finite,
            reps,
        ),
        Cmd::Check { backend, vectors } => check(&backend, &vectors),
        Cmd::GenVectors { out } => gen_vectors(&out),
        Cmd::Bench(args) => args.run().map_err(Into::into),
        Cmd::GenCapture(a) => search_cli::gen_capture(a),
        Cmd::Search(a) => search_cli::search(a),
        Cmd::Eval(a) => search_cli::eval(a),
    };
    if let Err(e) = res {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

#[allow(clippy::too_many_arguments)]
fn run(
    input: &Path,
    pattern: Option<String>,
    config: Option<PathBuf>,
    layer: Option<usize>,
    backend: &str,
    output: &Path,
    save_index: bool,
    check_finite: bool,
    reps: usize,
) -> Result<()> {
    let kind: BackendKind = backend.parse()?;
    let file = StFile::read(input)?;
    let (q, k, v) = (file.float("q")?, file.float("k")?, file.float("v")?);
    let shape = AttnShape::from_dims(&q.dims, &k.dims, &v.dims)?;
    for (name, t) in [("k", k), ("v", v)] {
        if t.dtype() != q.dtype() {
            bail!(
                "invalid argument `{name}`: dtype {} differs from q's {}",
                t.dtype(),
                q.dtype()
            );
        }
    }
    if check_finite {
        for (name, t) in [("q", q), ("k", k), ("v", v)] {
            if let Some(i) = t.first_non_finite() {
                bail!(
                    "invalid argument `{name}`: element {i} is not finite ({})",
                    t.to_f64()[i]
                );
            }
        }
    }
    let layer_cfg = match (pattern, config) {
        (Some(p), None) => LayerConfig::uniform(p.parse()?, shape.q_heads),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading config {}", path.display()))?;
            let l = layer.ok_or_else(|| anyhow!("--config needs --layer"))?;
            LayerConfig::from_minference_json(&text, l, shape.q_heads, &path.display().to_string())?
        }
        _ => bail!("give exactly one of --pattern SPEC or --config FILE --layer L"),
    };
    layer_cfg.validate(shape.q_heads)?;
    let be = open_backend(&format!("{kind:?}").to_lowercase())?;
    let (qd, kd, vd) = (be.upload(q)?, be.upload(k)?, be.upload(v)?);
    let mut out = be.empty(q.dims.as_slice(), q.dtype())?;
    let t0 = Instant::now();
    let ix = run_layer_into(&*be, &qd, &kd, &vd, &layer_cfg.heads, &mut out)?;
    be.synchronize()?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let mut of = StFile::default();
    of.put_float("o", be.download(&out)?);
    let patterns: Vec<String> = layer_cfg.heads.iter().map(|p| p.to_string()).collect();
    of.metadata.insert("patterns".into(), patterns.join(";"));
    of.metadata.insert("backend".into(), be.info().name.into());
    if reps > 0 {
        let (index_ms, attention_ms) =
            time_layer(&*be, &qd, &kd, &vd, &layer_cfg.heads, &mut out, reps)?;
        eprintln!(
            "timing ({reps} reps, medians): index {index_ms:.3} ms, attention {attention_ms:.3} ms, \
             total {:.3} ms on {}",
            index_ms + attention_ms,
            be.info().name
        );
        of.metadata
            .insert("time_ms_index".into(), format!("{index_ms}"));
        of.metadata
            .insert("time_ms_attention".into(), format!("{attention_ms}"));
    }
    if save_index {
        if let Some(ix) = ix {
            put_index(&mut of, &be.download_index(&ix)?);
        } else {
            eprintln!("note: no head uses the sparse index; no index saved");
        }
    }
    of.write(output)?;
    eprintln!(
        "wrote {} ({shape:?}, {ms:.2} ms on {})",
        output.display(),
        be.info().name
    );
    Ok(())
}

/// Medians over `reps` runs of the layer's index building and of its attention kernels
/// (`attend_layer`: A-shape and dense heads in one kernel, sparse heads in another), each
/// timed from the call to the end of a device synchronize.
fn time_layer(
    be: &dyn Backend,
    q: &DeviceTensor,
    k: &DeviceTensor,
    v: &DeviceTensor,
    patterns: &[Pattern],
    out: &mut DeviceTensor,
    reps: usize,
) -> Result<(f64, f64)> {
    let uses_index = patterns.iter().any(Pattern::uses_index);
    let median = |mut t: Vec<f64>| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    };
    let index = if uses_index {
        Some(be.build_index(q, k, patterns)?)
    } else {
        None
    };
    let mut t_index = Vec::with_capacity(reps);
    let mut t_attention = Vec::with_capacity(reps);
    for _ in 0..reps {
        be.synchronize()?;
        if uses_index {
            let t0 = Instant::now();
            be.build_index(q, k, patterns)?;
            be.synchronize()?;
            t_index.push(t0.elapsed().as_secs_f64() * 1e3);
        } else {
            t_index.push(0.0);
        }
        let t0 = Instant::now();
        attend_layer(be, q, k, v, patterns, index.as_ref(), out)?;
        be.synchronize()?;
        t_attention.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    Ok((median(t_index), median(t_attention)))
}

fn check(backend: &str, dir: &Path) -> Result<()> {
    let be = open_backend(backend)?;
    let info = be.info();
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for path in list_cases(dir)? {
        let mut case = VectorCase::read(&path)?;
        if let Some(from) = case.cast_for(&info) {
            println!(
                "note {}: {} lacks {from}, running as {}",
                case.spec.name, info.name, case.spec.dtype
            );
        }
        if let Err(e) = info.check(case.spec.dtype, case.spec.shape.head_dim) {
            println!("SKIP {}: {e}", case.spec.name);
            skipped += 1;
            continue;
        }
        match check_case(&*be, &case) {
            Ok(r) if r.passed => {
                passed += 1;
                println!("PASS {}: {}", r.name, r.detail);
            }
            Ok(r) => {
                failed += 1;
                println!("FAIL {}: {}", r.name, r.detail);
            }
            Err(e) => {
                failed += 1;
                println!("FAIL {}: {e}", case.spec.name);
            }
        }
    }
    println!(
        "{}: {passed} passed, {failed} failed, {skipped} skipped",
        info.name
    );
    if failed > 0 {
        bail!("{failed} vector case(s) failed on {}", info.name);
    }
    Ok(())
}

fn gen_vectors(out: &Path) -> Result<()> {
    for p in minference::vectors::generate_all(out)? {
        let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        println!("wrote {} ({} KiB)", p.display(), size / 1024);
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn demo(
    backend: &str,
    seq_len: Option<usize>,
    heads: usize,
    head_dim: usize,
    dtype: Option<String>,
) -> Result<()> {
    let be = open_backend(backend)?;
    let info = be.info();
    // The CPU backend and software Vulkan (lavapipe) run ~1 GFLOP/s: keep their problem small.
    let on_cpu = info.name == "cpu" || info.device.to_lowercase().contains("llvmpipe");
    let n = seq_len.unwrap_or(if on_cpu { 2048 } else { 4096 });
    let (heads, head_dim) = if on_cpu && seq_len.is_none() {
        (heads.min(4), head_dim.min(64))
    } else {
        (heads, head_dim)
    };
    let dtype: DType = match dtype {
        Some(d) => d.parse()?,
        None if info.dtypes.contains(&DType::F16) => DType::F16,
        None => DType::F32,
    };
    let hkv = (heads / 2).max(1);
    let shape = AttnShape::new(1, heads, hkv, n, head_dim)?;
    let kinds: Vec<HeadKind> = (0..heads).map(|h| HeadKind::CYCLE[h % 3]).collect();
    let (q, k, v) = structured_qkv(1, hkv, n, head_dim, &kinds, dtype, 2024)?;
    println!("demo: B=1 Hq={heads} Hkv={hkv} N={n} D={head_dim} {dtype}, structured heads (a-shape / vertical-slash / block-sparse cycle), backend {}", info.name);
    let (qd, kd, vd) = (be.upload(&q)?, be.upload(&k)?, be.upload(&v)?);
    let rows = n.div_ceil(64);
    let a_shape = Pattern::AShape {
        sink: 64,
        local: n / 8,
    };
    let vertical_slash = Pattern::VerticalSlash {
        vertical: n / 32,
        slash: n / 16,
    };
    let block_sparse = Pattern::BlockSparse {
        top_k: (rows / 8).max(2),
    };
    // Each head with the pattern that matches how it was generated, as a searched config would.
    let per_head: Vec<Pattern> = kinds
        .iter()
        .map(|k| match k {
            HeadKind::AShape => a_shape,
            HeadKind::VerticalSlash => vertical_slash,
            _ => block_sparse,
        })
        .collect();
    let layers: Vec<(String, Vec<Pattern>)> = vec![
        ("dense".into(), vec![Pattern::Dense; heads]),
        (a_shape.to_string(), vec![a_shape; heads]),
        (vertical_slash.to_string(), vec![vertical_slash; heads]),
        (block_sparse.to_string(), vec![block_sparse; heads]),
        ("per-head (matched to each head)".into(), per_head),
    ];
    let reps = if on_cpu { 2 } else { 10 };
    let mut dense_out: Option<Vec<f64>> = None;
    let mut dense_ms = 0.0;
    println!(
        "{:<34} {:>8} {:>12} {:>9} {:>12}",
        "pattern", "density", "latency ms", "speed-up", "rel err"
    );
    for (name, pats) in &layers {
        let mut out = be.empty(&shape.q_dims(), dtype)?;
        let mut times = Vec::new();
        let mut pairs = shape.causal_pairs();
        for r in 0..=reps {
            be.synchronize()?;
            let t0 = Instant::now();
            let ix = run_layer_into(&*be, &qd, &kd, &vd, pats, &mut out)?;
            be.synchronize()?;
            if r > 0 {
                times.push(t0.elapsed().as_secs_f64() * 1e3);
            } else {
                // Pairs computed: the index's for index heads, the window's for the others.
                let index_pairs = match &ix {
                    Some(ix) => minference::bench::index_pairs(&be.download_index(ix)?),
                    None => 0,
                };
                let one_head = AttnShape::new(1, 1, 1, n, head_dim)?;
                let window_pairs: u64 = pats
                    .iter()
                    .filter(|p| !p.uses_index())
                    .map(|p| minference::bench::window_pairs(&one_head, p))
                    .sum();
                pairs = index_pairs + window_pairs;
            }
        }
        let ms = median(times);
        let o = be.download(&out)?.to_f64();
        let rel = match &dense_out {
            None => {
                dense_out = Some(o);
                dense_ms = ms;
                0.0
            }
            Some(d) => reference::rel_error(&o, d),
        };
        println!(
            "{name:<34} {:>8.3} {ms:>12.2} {:>8.2}x {rel:>12.3e}",
            pairs as f64 / shape.causal_pairs() as f64,
            dense_ms / ms
        );
    }
    println!("density = computed (query, key) pairs / causal pairs; latency = median of {reps} after warm-up, index building included; rel err = ||o - o_dense|| / ||o_dense||");
    Ok(())
}
