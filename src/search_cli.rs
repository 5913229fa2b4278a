//! The `gen-capture`, `search` and `eval` subcommands (the logic is in `minference::search`).

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use minference::generate::HeadKind;
use minference::search::{self, Capture, SearchOptions};
use minference::{DType, LayerConfig};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Arguments of `gen-capture`.
#[derive(Args)]
pub struct GenCaptureArgs {
    /// Query heads.
    #[arg(long, default_value_t = 8)]
    heads: usize,
    /// kv heads (default: heads / 2).
    #[arg(long)]
    kv_heads: Option<usize>,
    /// Sequence length.
    #[arg(long, default_value_t = 8192)]
    seq_len: usize,
    /// Head dim (at least 32).
    #[arg(long, default_value_t = 128)]
    head_dim: usize,
    /// Layers (more than 1 writes rank-5 [L,B,H,N,D] tensors).
    #[arg(long, default_value_t = 1)]
    layers: usize,
    /// Batch.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Head kinds, comma-separated (a-shape, vertical-slash, block-sparse, noise), cycled
    /// over the heads; default: a-shape,vertical-slash,block-sparse.
    #[arg(long)]
    kinds: Option<String>,
    /// Storage dtype (f32, f16, bf16).
    #[arg(long, default_value = "f16")]
    dtype: String,
    /// Seed (layer l uses seed + l).
    #[arg(long, default_value_t = 2024)]
    seed: u64,
    /// Output safetensors.
    #[arg(long)]
    output: PathBuf,
}

/// Arguments of `search`.
#[derive(Args)]
pub struct SearchArgs {
    /// Capture(s): q [B,Hq,N,D], k/v [B,Hkv,N,D], or rank 5 with a leading layer axis;
    /// repeat for one file per layer.
    #[arg(long, required = true)]
    input: Vec<PathBuf>,
    /// Where to write the MInference config (JSON).
    #[arg(long)]
    output: PathBuf,
    /// Kernel cost of every candidate, as a fraction of the causal (query, key) pairs.
    #[arg(long, default_value_t = 0.1)]
    budget: f64,
    /// Query rows scored per head (the last 64 plus a strided sample); 0 = every row.
    #[arg(long, default_value_t = 512)]
    sample_rows: usize,
    /// Recall margin within which a pattern with a cheaper online index wins.
    #[arg(long, default_value_t = 0.01)]
    tie: f64,
}

/// Arguments of `eval`.
#[derive(Args)]
pub struct EvalArgs {
    /// Capture(s), as for `search`.
    #[arg(long, required = true)]
    input: Vec<PathBuf>,
    /// A MInference config (JSON), one entry per captured layer.
    #[arg(long)]
    config: PathBuf,
    /// Query rows scored per head (the last 64 plus a strided sample); 0 = every row.
    #[arg(long, default_value_t = 1024)]
    sample_rows: usize,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn progress(total: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} heads")
    {
        bar.set_style(style);
    }
    bar.set_message(what.to_string());
    bar
}

fn read_capture(inputs: &[PathBuf]) -> Result<Capture> {
    let paths: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    let c = Capture::read(&paths)?;
    let s = c.layers[0].shape;
    eprintln!(
        "capture: {} layer(s), B={} Hq={} Hkv={} N={} D={}",
        c.layers.len(),
        s.batch,
        s.q_heads,
        s.kv_heads,
        s.seq_len,
        s.head_dim
    );
    Ok(c)
}

/// Write `text` to `path` through a temporary file, so no partial file is left behind.
fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("json.partial");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

pub fn gen_capture(a: GenCaptureArgs) -> Result<()> {
    let kinds: Vec<HeadKind> = match &a.kinds {
        Some(s) => s
            .split(',')
            .map(search::parse_kind)
            .collect::<minference::Result<_>>()?,
        None => HeadKind::CYCLE.to_vec(),
    };
    let kinds: Vec<HeadKind> = (0..a.heads).map(|h| kinds[h % kinds.len()]).collect();
    let kv = a.kv_heads.unwrap_or((a.heads / 2).max(1));
    let dtype: DType = a.dtype.parse()?;
    let f = search::structured_capture(
        a.layers, a.batch, kv, a.seq_len, a.head_dim, &kinds, dtype, a.seed,
    )?;
    f.write(&a.output)?;
    let names: Vec<&str> = kinds.iter().map(|&k| search::kind_family(k)).collect();
    eprintln!(
        "wrote {} (L={} B={} Hq={} Hkv={kv} N={} D={} {dtype}; heads: {})",
        a.output.display(),
        a.layers,
        a.batch,
        a.heads,
        a.seq_len,
        a.head_dim,
        names.join(",")
    );
    Ok(())
}

pub fn search(a: SearchArgs) -> Result<()> {
    let t0 = Instant::now();
    let capture = read_capture(&a.input)?;
    let options = SearchOptions {
        budget: a.budget,
        sample_rows: a.sample_rows,
        tie: a.tie,
    };
    options.validate()?;
    let bar = progress(capture.layers.len() * capture.q_heads(), "search");
    let report = search::search(&capture, &options, &|_, _| bar.inc(1))?;
    bar.finish_and_clear();
    let json = serde_json::to_string_pretty(&report.to_minference_json())?;
    write_atomic(&a.output, &json)?;
    print!("{}", report.table());
    println!(
        "budget {} of the causal pairs per candidate; recall and rel err on {} rows per head \
         (0 = all); a-shape / v-slash / b-sparse: best recall of each family",
        a.budget, a.sample_rows
    );
    eprintln!(
        "wrote {} in {:.1} s",
        a.output.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

pub fn eval(a: EvalArgs) -> Result<()> {
    let t0 = Instant::now();
    let capture = read_capture(&a.input)?;
    let text = std::fs::read_to_string(&a.config)
        .with_context(|| format!("reading config {}", a.config.display()))?;
    let name = a.config.display().to_string();
    let configs: Vec<LayerConfig> = (0..capture.layers.len())
        .map(|l| LayerConfig::from_minference_json(&text, l, capture.q_heads(), &name))
        .collect::<minference::Result<_>>()?;
    let bar = progress(capture.layers.len() * capture.q_heads(), "eval");
    let layers = search::eval(&capture, &configs, a.sample_rows, &|_, _| bar.inc(1))?;
    bar.finish_and_clear();
    print!("{}", search::eval_table(&layers));
    println!(
        "density exact over all rows; recall and rel err on {} rows per head (0 = all)",
        a.sample_rows
    );
    if let Some(p) = &a.json {
        write_atomic(
            p,
            &serde_json::to_string_pretty(&search::eval_json(&layers))?,
        )?;
        eprintln!("wrote {}", p.display());
    }
    eprintln!("eval took {:.1} s", t0.elapsed().as_secs_f64());
    Ok(())
}
