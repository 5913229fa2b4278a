"""torch SDPA (flash and cuDNN backends) on the bench's dense shape, same GPU, same run."""
import torch
from torch.nn.attention import sdpa_kernel, SDPBackend

def bench(fn, reps=7):
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); fn(); e.record(); torch.cuda.synchronize()
        ts.append(s.elapsed_time(e))
    return sorted(ts)[reps // 2]

def sdpa_causal_ms(q, k, v):
    """(backend name, median ms) of causal SDPA on q, k, v with the flash and cuDNN backends."""
    out = []
    for name, be in [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)]:
        with sdpa_kernel(be):
            out.append((name, bench(lambda: torch.nn.functional.scaled_dot_product_attention(
                q, k, v, is_causal=True))))
    return out


def main():
    for (h, n) in [(32, 16384)]:
        q, k, v = (torch.randn(1, h, n, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        flops = 4 * 128 * h * n * (n + 1) / 2
        for name, ms in sdpa_causal_ms(q, k, v):
            print(f"| torch SDPA {name} dense causal bf16 D=128 | H={h} N={n} | {ms:.3f} ms | {ms/h:.3f} ms/head | {flops/ms/1e9:.1f} | |")


if __name__ == "__main__":
    main()
