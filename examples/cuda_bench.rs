//! Timing harness for the CUDA backend: warm-up, then the median of repeats with a device
//! synchronize before the clock stops; useful FLOPs = 4 * D * (attended (query, key) pairs).
//!
//! `cargo run --release --features cuda --example cuda_bench [-- quick] [dense-only]`
#[cfg(feature = "cuda")]
fn main() -> minference::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    bench::run(
        args.iter().any(|a| a == "quick"),
        args.iter().any(|a| a == "dense-only"),
    )
}

#[cfg(not(feature = "cuda"))]
fn main() {
    eprintln!("cuda_bench needs `--features cuda`");
}

#[cfg(feature = "cuda")]
mod bench {
    use minference::bench::{index_pairs, window_pairs};
    use minference::cuda_backend::{CudaBackend, MmaTiling, WGMMA_WINDOW_ROWS};
    use minference::generate::{structured_qkv, HeadKind};
    use minference::{AttnShape, Backend, DType, DeviceTensor, HostTensor, Pattern};
    use std::time::Instant;

    /// Tensor-core kernel configurations timed for dense and A-shape heads: the mma.sync
    /// kernel's tilings (CTA rows, m16 tiles per warp) and, on sm_90, the wgmma kernel's
    /// CTA rows.
    #[derive(Clone, Copy)]
    enum Kernel {
        Mma(usize, usize),
        Wgmma(usize),
    }

    const CONFIGS: [(Kernel, &str); 6] = [
        (
            Kernel::Mma(64, 1),
            "mma.sync, 64-row CTAs, 4 warps x 16 rows",
        ),
        (
            Kernel::Mma(64, 2),
            "mma.sync, 64-row CTAs, 2 warps x 32 rows",
        ),
        (
            Kernel::Mma(128, 1),
            "mma.sync, 128-row CTAs, 8 warps x 16 rows",
        ),
        (
            Kernel::Mma(128, 2),
            "mma.sync, 128-row CTAs, 4 warps x 32 rows",
        ),
        (Kernel::Wgmma(64), "wgmma, 64-row CTAs, 1 warpgroup"),
        (Kernel::Wgmma(128), "wgmma, 128-row CTAs, 2 warpgroups"),
    ];

    /// The configurations this device runs.
    fn configs(b: &CudaBackend) -> impl Iterator<Item = (Kernel, &'static str)> + '_ {
        CONFIGS
            .into_iter()
            .filter(|(k, _)| b.has_wgmma() || matches!(k, Kernel::Mma(..)))
    }

    /// Select `k` for dense and A-shape heads, or (`sparse`) for sparse heads (64-row CTAs).
    fn select(b: &CudaBackend, k: Kernel, sparse: bool) -> minference::Result<()> {
        match k {
            Kernel::Mma(block_m, warp_mt) => {
                b.set_wgmma(None)?;
                if sparse {
                    b.set_sparse_tiling(MmaTiling {
                        block_m: 64,
                        warp_mt,
                    })
                } else {
                    b.set_window_tiling(MmaTiling { block_m, warp_mt })
                }
            }
            Kernel::Wgmma(rows) => b.set_wgmma(Some(rows)),
        }
    }

    /// Back to the backend's defaults.
    fn reset(b: &CudaBackend) -> minference::Result<()> {
        b.set_window_tiling(MmaTiling::WINDOW_DEFAULT)?;
        b.set_sparse_tiling(MmaTiling::SPARSE_DEFAULT)?;
        b.set_wgmma(b.has_wgmma().then_some(WGMMA_WINDOW_ROWS))
    }

    const WARMUP: usize = 2;
    const REPEATS: usize = 7;

    fn median_ms(
        b: &dyn Backend,
        mut f: impl FnMut() -> minference::Result<()>,
    ) -> minference::Result<f64> {
        for _ in 0..WARMUP {
            f()?;
        }
        b.synchronize()?;
        let mut t = Vec::with_capacity(REPEATS);
        for _ in 0..REPEATS {
            let s = Instant::now();
            f()?;
            b.synchronize()?;
            t.push(s.elapsed().as_secs_f64() * 1e3);
        }
        t.sort_by(f64::total_cmp);
        Ok(t[REPEATS / 2])
    }

    /// Uniform values in [-1, 1) from a xorshift stream (fast for big tensors).
    fn random(dims: &[usize], dtype: DType, seed: u64) -> minference::Result<HostTensor> {
        let n: usize = dims.iter().product();
        let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
        let v: Vec<f32> = (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        HostTensor::from_f32(dims, &v, dtype)
    }

    fn qkv(
        b: &CudaBackend,
        shape: &AttnShape,
        dtype: DType,
    ) -> minference::Result<[DeviceTensor; 3]> {
        Ok([
            b.upload(&random(&shape.q_dims(), dtype, 1)?)?,
            b.upload(&random(&shape.kv_dims(), dtype, 2)?)?,
            b.upload(&random(&shape.kv_dims(), dtype, 3)?)?,
        ])
    }

    fn row(name: &str, heads: usize, n: usize, ms: f64, pairs: u64, d: usize, extra: &str) {
        let tflops = 4.0 * d as f64 * pairs as f64 / (ms * 1e-3) / 1e12;
        println!(
            "| {name} | H={heads} N={n} | {ms:.3} ms | {:.3} ms/head | {tflops:.1} | {extra} |",
            ms / heads as f64
        );
    }

    pub fn run(quick: bool, dense_only: bool) -> minference::Result<()> {
        let b = CudaBackend::new()?;
        println!("device: {}", b.info().device);
        println!("| what | shape | time | per head | useful TFLOP/s | notes |");
        println!("|---|---|---|---|---|---|");
        let d = 128;
        let dt = DType::BF16;
        // Dense causal.
        let (h, n) = if quick { (4, 4096) } else { (32, 16384) };
        let shape = AttnShape::new(1, h, h, n, d)?;
        let [q, k, v] = qkv(&b, &shape, dt)?;
        let mut out = b.empty(&shape.q_dims(), dt)?;
        for (kernel, note) in configs(&b) {
            select(&b, kernel, false)?;
            let ms = median_ms(&b, || b.dense_attention(&q, &k, &v, &mut out))?;
            row(
                "dense causal bf16 D=128",
                h,
                n,
                ms,
                shape.causal_pairs(),
                d,
                note,
            );
        }
        reset(&b)?;
        drop((q, k, v, out));
        if dense_only {
            return Ok(());
        }
        // Long context, few heads.
        let (h, n) = if quick { (2, 16384) } else { (4, 131072) };
        let shape = AttnShape::new(1, h, h, n, d)?;
        let [q, k, v] = qkv(&b, &shape, dt)?;
        let mut out = b.empty(&shape.q_dims(), dt)?;
        // A-shape 1024 + 4096.
        let (sink, local) = (1024, 4096);
        let windows = vec![Some((sink, local)); h];
        let pairs = window_pairs(&shape, &Pattern::AShape { sink, local });
        for (kernel, note) in configs(&b) {
            select(&b, kernel, false)?;
            let ms = median_ms(&b, || b.a_shape_attention(&q, &k, &v, &windows, &mut out))?;
            row("A-shape 1024+4096 bf16 D=128", h, n, ms, pairs, d, note);
        }
        reset(&b)?;
        // Block-sparse top-100, index included.
        let pats = vec![Pattern::BlockSparse { top_k: 100 }; h];
        let ms_ix = median_ms(&b, || b.build_index(&q, &k, &pats).map(|_| ()))?;
        let ix = b.build_index(&q, &k, &pats)?;
        let pairs = index_pairs(&b.download_index(&ix)?);
        let mut ms_att = f64::INFINITY;
        for (kernel, note) in
            configs(&b).filter(|(k, _)| matches!(k, Kernel::Mma(64, 1) | Kernel::Wgmma(64)))
        {
            select(&b, kernel, true)?;
            let ms = median_ms(&b, || b.sparse_attention(&q, &k, &v, &ix, &mut out))?;
            ms_att = ms_att.min(ms);
            row(
                "block-sparse top-100 attention only",
                h,
                n,
                ms,
                pairs,
                d,
                note,
            );
        }
        reset(&b)?;
        row(
            "block-sparse top-100 incl. index",
            h,
            n,
            ms_ix + ms_att,
            pairs,
            d,
            &format!("index {ms_ix:.3} ms + attention {ms_att:.3} ms (fastest kernel)"),
        );
        drop(ix);
        drop((q, k, v));
        // Vertical-slash 1000/6096 on the structured generator's vertical-slash heads.
        let kinds = vec![HeadKind::VerticalSlash; h];
        let (qs, ks, vs) = structured_qkv(1, h, n, d, &kinds, dt, 7)?;
        let (q, k, v) = (b.upload(&qs)?, b.upload(&ks)?, b.upload(&vs)?);
        drop((qs, ks, vs));
        let pats = vec![
            Pattern::VerticalSlash {
                vertical: 1000,
                slash: 6096
            };
            h
        ];
        let ms_ix = median_ms(&b, || b.build_index(&q, &k, &pats).map(|_| ()))?;
        let ix = b.build_index(&q, &k, &pats)?;
        let pairs = index_pairs(&b.download_index(&ix)?);
        let mut ms_att = f64::INFINITY;
        for (kernel, note) in
            configs(&b).filter(|(k, _)| !matches!(k, Kernel::Mma(128, _) | Kernel::Wgmma(128)))
        {
            select(&b, kernel, true)?;
            let ms = median_ms(&b, || b.sparse_attention(&q, &k, &v, &ix, &mut out))?;
            ms_att = ms_att.min(ms);
            row(
                "vertical-slash 1000/6096 sparse kernel (structured)",
                h,
                n,
                ms,
                pairs,
                d,
                note,
            );
        }
        reset(&b)?;
        row(
            "vertical-slash 1000/6096 incl. index (structured)",
            h,
            n,
            ms_ix + ms_att,
            pairs,
            d,
            &format!(
                "index {ms_ix:.3} ms = {:.1}% of total (fastest kernel)",
                100.0 * ms_ix / (ms_ix + ms_att)
            ),
        );
        Ok(())
    }
}
