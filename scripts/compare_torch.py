"""Our CUDA kernels next to torch on the same inputs and the same sparse index (GPU machine).

usage: python3 scripts/compare_torch.py BIN WORKDIR [N] [H]

1. `BIN gen-capture` writes structured q, k, v (bf16, D = 128, H heads, N tokens).
2. For each pattern, `BIN run --backend cuda --save-index --reps 5` times our index building and
   attention on them and exports the output and the index (safetensors).
3. torch on the same q, k, v: SDPA dense causal (flash and cuDNN backends), and FlexAttention
   with a BlockMask built from our exported index (BLOCK_SIZE 64; blocks wholly inside the
   pattern are "full", the others carry a mask_mod that admits exactly the pattern's keys).
   FlexAttention's output is compared with ours (it must agree: same index, same keys).
One table with ratios (reference time / ours: above 1 means ours is faster); medians of CUDA events after warm-up for torch, medians of host time
after a device synchronize for ours (`run --reps`).
"""
import json
import struct
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

from sdpa_compare import bench, sdpa_causal_ms  # same folder: the shared timing loop

BLOCK = 64


def metadata(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n)).get("__metadata__", {})


def masks_from_blocks(partial, full):
    """BlockMask inputs from [B, H, R, C] booleans: counts and indices (listed blocks first)."""
    def lists(m):
        count = m.sum(-1, dtype=torch.int32)
        index = torch.argsort((~m).to(torch.int8), dim=-1, stable=True).to(torch.int32)
        return count.contiguous(), index.contiguous()
    kv_num, kv_idx = lists(partial)
    full_num, full_idx = lists(full)
    return kv_num, kv_idx, full_num, full_idx


def a_shape_mask(b, h, n, sink, local):
    r = (n + BLOCK - 1) // BLOCK
    m = torch.arange(r, device="cuda")[:, None]
    c = torch.arange(r, device="cuda")[None, :]
    q_lo, q_hi = m * BLOCK, torch.clamp(m * BLOCK + BLOCK - 1, max=n - 1)
    k_lo, k_hi = c * BLOCK, c * BLOCK + BLOCK - 1
    causal_any = k_lo <= q_hi
    # Some pair with kv <= q inside the window: a sink key, or the smallest distance q - kv
    # (first row, last key) under `local`.
    any_ = causal_any & ((k_lo < sink) | (q_lo - k_hi < local))
    full = (c < m) & ((k_hi < sink) | (q_hi - k_lo < local))
    partial = any_ & ~full

    def mask_mod(b_, h_, q, kv):
        return (kv <= q) & ((kv < sink) | (q - kv < local))

    args = masks_from_blocks(partial.expand(b, h, r, r), full.expand(b, h, r, r))
    return args, mask_mod


def block_sparse_mask(ix, n):
    count, offset = ix["block_count"].cuda(), ix["block_offset"].cuda()
    b, h, r, w = offset.shape
    valid = torch.arange(w, device="cuda") < count[..., None]
    cols = torch.where(valid, offset // BLOCK, torch.full_like(offset, r))
    listed = torch.zeros(b, h, r, r + 1, dtype=torch.bool, device="cuda")
    listed.scatter_(-1, cols.long(), True)
    listed = listed[..., :r]
    m = torch.arange(r, device="cuda")
    diag = m[:, None] == m[None, :]
    full = listed & (m[None, :] < m[:, None])
    partial = listed & diag

    def mask_mod(b_, h_, q, kv):
        return kv <= q

    return masks_from_blocks(partial, full), mask_mod


def vertical_slash_mask(ix, n):
    """The index's keys per row block as a [H, R, N] boolean (batch 1), and its BlockMask."""
    bc, bo = ix["block_count"].cuda(), ix["block_offset"].cuda()
    cc, ci = ix["column_count"].cuda(), ix["column_index"].cuda()
    b, h, r, ws = bo.shape
    assert b == 1, "batch 1 only"
    wide = r * BLOCK + BLOCK
    # Chunks [s, s + 64) as +1/-1 steps, summed along the keys.
    steps = torch.zeros(h, r, wide + 1, dtype=torch.int16, device="cuda")
    valid = torch.arange(ws, device="cuda") < bc[0, ..., None]
    start = torch.where(valid, bo[0], torch.full_like(bo[0], wide)).long()
    one = valid.to(torch.int16)
    steps.scatter_add_(-1, start, one)
    steps.scatter_add_(-1, torch.clamp(start + BLOCK, max=wide), -one)
    allowed = torch.cumsum(steps, -1, dtype=torch.int16)[..., :wide] > 0
    del steps
    wv = ci.shape[-1]
    valid = torch.arange(wv, device="cuda") < cc[0, ..., None]
    col = torch.where(valid, ci[0], torch.full_like(ci[0], wide - 1)).long()
    allowed.scatter_(-1, col, True)
    allowed[..., wide - BLOCK:] = False  # the dump slot and the padding past the last block
    allowed = allowed[..., : r * BLOCK].contiguous()
    m = torch.arange(r, device="cuda")
    per_block = allowed.view(h, r, r, BLOCK)
    lower = m[None, :] < m[:, None]
    full = per_block.all(-1) & lower
    partial = per_block.any(-1) & ~full
    allowed = allowed[..., :n].contiguous()

    def mask_mod(b_, h_, q, kv):
        return allowed[h_, q // BLOCK, kv] & (kv <= q)

    return masks_from_blocks(partial[None], full[None]), mask_mod


def main():
    binary, work = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 131072
    h = int(sys.argv[4]) if len(sys.argv) > 4 else 4
    cap = f"{work}/capture.safetensors"
    t0 = time.time()
    subprocess.run([binary, "gen-capture", "--heads", str(h), "--kv-heads", str(h), "--seq-len",
                    str(n), "--head-dim", "128", "--kinds", "vertical-slash", "--dtype", "bf16",
                    "--output", cap], check=True)
    print(f"capture: {time.time() - t0:.1f} s", flush=True)
    x = load_file(cap)
    q, k, v = (x[name].cuda() for name in ("q", "k", "v"))
    if q.dim() == 5:
        q, k, v = q[0], k[0], v[0]
    b = q.shape[0]
    flops_dense = 4 * 128 * b * h * n * (n + 1) / 2
    sdpa = dict(sdpa_causal_ms(q, k, v))
    for name, ms in sdpa.items():
        print(f"dense causal, torch SDPA {name}: {ms:.3f} ms ({flops_dense / ms / 1e9:.1f} TFLOP/s)", flush=True)
    # Table rows: (what, ours ms, reference, reference ms, note).
    rows = []
    flex = torch.compile(flex_attention, dynamic=False)
    for spec in ["dense", "a-shape:1024,4096", "block-sparse:100", "vertical-slash:1000,6096"]:
        out = f"{work}/ours_{spec.split(':')[0]}.safetensors"
        res = subprocess.run([binary, "run", "--input", cap, "--pattern", spec, "--backend", "cuda",
                              "--output", out, "--save-index", "--reps", "5"],
                             capture_output=True, text=True)
        print(res.stderr.strip().splitlines()[-2:] if res.stderr else "", flush=True)
        if res.returncode != 0:
            print(f"{spec}: our run failed: {res.stderr}")
            continue
        meta = metadata(out)
        ours_ix, ours_att = float(meta["time_ms_index"]), float(meta["time_ms_attention"])
        total = ours_ix + ours_att
        what = f"{spec}: ours (index {ours_ix:.3f} + attention {ours_att:.3f} ms)"
        if spec == "dense":
            tf = flops_dense / total / 1e9
            for name, ms in sdpa.items():
                rows.append((what, total, f"torch SDPA {name}", ms,
                             f"ours {tf:.1f} TFLOP/s, SDPA {flops_dense / ms / 1e9:.1f}"))
            continue
        got = load_file(out)
        ours_o = got["o"].cuda()
        if ours_o.dim() == 5:
            ours_o = ours_o[0]
        try:
            t0 = time.time()
            if spec.startswith("a-shape"):
                sink, local = map(int, spec.split(":")[1].split(","))
                args, mod = a_shape_mask(b, h, n, sink, local)
            elif spec.startswith("block-sparse"):
                args, mod = block_sparse_mask(got, n)
            else:
                args, mod = vertical_slash_mask(got, n)
            bm = BlockMask.from_kv_blocks(*args, BLOCK_SIZE=BLOCK, mask_mod=mod, seq_lengths=(n, n))
            opts = None
            try:
                o_flex = flex(q, k, v, block_mask=bm)
            except Exception as e:  # kernel tiles larger than the 64-blocks: use 64 x 64
                print(f"{spec}: default flex tiles failed ({type(e).__name__}); 64x64 tiles", flush=True)
                opts = {"BLOCK_M": 64, "BLOCK_N": 64}
                o_flex = flex(q, k, v, block_mask=bm, kernel_options=opts)
            torch.cuda.synchronize()
            print(f"{spec}: flex mask + compile {time.time() - t0:.1f} s", flush=True)
            ms_flex = bench(lambda: flex(q, k, v, block_mask=bm, kernel_options=opts))
            err = ((o_flex.float() - ours_o.float()).abs().max() / ours_o.float().abs().max()).item()
            tiles = "64x64 tiles" if opts else "default tiles"
            rows.append((what, total, "FlexAttention on our index", ms_flex,
                         f"{tiles}; max |flex - ours| / max |ours| = {err:.2e}"))
        except Exception as e:  # report and go on with the other patterns
            print(f"{spec}: FlexAttention failed: {type(e).__name__}: {e}", flush=True)
        if spec.startswith("a-shape"):
            # FlexAttention's best case: its own 128-blocks and default kernel tiles.
            try:
                own = create_block_mask(mod, 1, 1, n, n, device="cuda", _compile=True)
                o_own = flex(q, k, v, block_mask=own)
                ms_own = bench(lambda: flex(q, k, v, block_mask=own))
                err = ((o_own.float() - ours_o.float()).abs().max() / ours_o.float().abs().max()).item()
                rows.append((what, total, "FlexAttention, own 128-block mask", ms_own,
                             f"default tiles; max |flex - ours| / max |ours| = {err:.2e}"))
            except Exception as e:
                print(f"{spec}: FlexAttention (own mask) failed: {type(e).__name__}: {e}", flush=True)
        print(rows[-1] if rows else "", flush=True)
    print(f"\n| what (B={b} H={h} N={n} D=128 bf16) | ours ms | ours ms/head | reference | reference ms "
          "| reference / ours | notes |")
    print("|---|---|---|---|---|---|---|")
    for what, ms, ref, ref_ms, note in rows:
        print(f"| {what} | {ms:.3f} | {ms / h:.3f} | {ref} | {ref_ms:.3f} | {ref_ms / ms:.2f}x | {note} |")


if __name__ == "__main__":
    main()
