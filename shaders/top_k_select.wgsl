// Top-k selection on the GPU by radix select (src/index.rs `select_top`): per list, the
// indices of the `k` highest scores, ties to the smaller index, +inf first, written in
// ascending index order, then the optional appended index, then -1 up to the row width.
//
// One workgroup (WG = 256 invocations) per list. Scores become order-preserving u32 keys;
// four 8-bit radix passes (most significant digit first: a histogram in workgroup atomics,
// UNROLL keys in flight per invocation, then one workgroup scan over the bins finds the
// digit) give the k-th largest key T and how many keys equal to T to take (`need`). The
// compaction then walks the list in steps of SPAN = WG * ITEMS keys, each invocation owning
// ITEMS consecutive keys: one workgroup scan of the (above T, equal to T) counts per step
// places every invocation's output, so the kept keys (> T, and the first `need` == T) are
// written compacted, hence ascending.
// Grid: (min(lists, 65535), cdiv(lists, 65535)).

struct TopKSelectParams {
    list_count: u32,
    grid_x: u32,
    _pad0: u32,
    _pad1: u32,
}

/// One selection problem.
struct TopKList {
    scores_at: u32, // first score in `scores`
    len: u32,       // number of scores
    k: u32,         // how many to select (<= len)
    out_at: u32,    // first output slot in `selected`
    width: u32,     // output row width (selected + appended + -1 padding)
    append: i32,    // index written after the selection, or -1
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: TopKSelectParams;
@group(0) @binding(1) var<storage, read> lists: array<TopKList>;       // [list_count]
@group(0) @binding(2) var<storage, read> scores: array<f32>;           // packed score rows
@group(0) @binding(3) var<storage, read_write> selected: array<i32>;   // packed output rows

const WG: u32 = 256u;
const RADIX_BITS: u32 = 8u;
const BUCKETS: u32 = 256u;
/// Keys each invocation loads per histogram iteration (independent loads in flight).
const UNROLL: u32 = 4u;
/// Consecutive keys each invocation owns per compaction step.
const ITEMS: u32 = 8u;
const SPAN: u32 = WG * ITEMS;

var<workgroup> histogram: array<atomic<u32>, BUCKETS>;
var<workgroup> scan: array<vec2<u32>, WG>;
var<workgroup> wg_list: array<u32, 6>;
var<workgroup> wg_digit: vec2<u32>; // (digit, remaining rank)

var<private> at: u32;  // the list's first score
var<private> len: u32; // the list's length

/// Order-preserving map of an f32 to u32 (larger float, larger key).
fn ordered_key(x: f32) -> u32 {
    let bits = bitcast<u32>(x);
    if (bits & 0x80000000u) != 0u {
        return ~bits;
    }
    return bits | 0x80000000u;
}

/// Key i of the list (i < len).
fn key_at(i: u32) -> u32 {
    return ordered_key(scores[at + i]);
}

/// Exclusive prefix sum of `value` over the workgroup, in invocation order; returns
/// (exclusive, total).
fn workgroup_exclusive_scan(value: vec2<u32>, lid: u32) -> array<vec2<u32>, 2> {
    scan[lid] = value;
    workgroupBarrier();
    for (var stride = 1u; stride < WG; stride <<= 1u) {
        var add = vec2<u32>(0u);
        if lid >= stride {
            add = scan[lid - stride];
        }
        workgroupBarrier();
        scan[lid] += add;
        workgroupBarrier();
    }
    let inclusive = scan[lid];
    let total = scan[WG - 1u];
    workgroupBarrier();
    return array<vec2<u32>, 2>(inclusive - value, total);
}

/// Count key i in the histogram when it has the digits found so far.
fn count_key(i: u32, prefix: u32, prefix_mask: u32, shift: u32) {
    if i < len {
        let key = key_at(i);
        if (key & prefix_mask) == prefix {
            atomicAdd(&histogram[(key >> shift) & (BUCKETS - 1u)], 1u);
        }
    }
}

/// One radix pass: the digit at `shift` of the `remaining`-th largest key among those with
/// `prefix`, and its rank among the keys with that digit: (digit, remaining rank).
fn radix_pass(prefix: u32, prefix_mask: u32, shift: u32, remaining: u32, lid: u32) -> vec2<u32> {
    atomicStore(&histogram[lid], 0u);
    workgroupBarrier();
    for (var i = lid; i < len; i += UNROLL * WG) {
        count_key(i, prefix, prefix_mask, shift);
        count_key(i + WG, prefix, prefix_mask, shift);
        count_key(i + 2u * WG, prefix, prefix_mask, shift);
        count_key(i + 3u * WG, prefix, prefix_mask, shift);
    }
    workgroupBarrier();
    // Invocation lid holds bin 255 - lid: the scan gives the keys in higher bins.
    let bin = BUCKETS - 1u - lid;
    let count = atomicLoad(&histogram[bin]);
    let above = workgroup_exclusive_scan(vec2<u32>(count, 0u), lid)[0].x;
    if above < remaining && above + count >= remaining {
        wg_digit = vec2<u32>(bin, remaining - above);
    }
    return workgroupUniformLoad(&wg_digit);
}

@compute @workgroup_size(256)
fn top_k_select(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let list_id = wid.y * params.grid_x + wid.x;
    if list_id >= params.list_count {
        return;
    }
    if lid == 0u {
        let l = lists[list_id];
        wg_list[0] = l.scores_at;
        wg_list[1] = l.len;
        wg_list[2] = min(l.k, l.len);
        wg_list[3] = l.out_at;
        wg_list[4] = l.width;
        wg_list[5] = bitcast<u32>(l.append);
    }
    let desc = workgroupUniformLoad(&wg_list);
    at = desc[0];
    len = desc[1];
    let list_len = desc[1]; // workgroup-uniform (loops with barriers use it, not `len`)
    let k = desc[2];
    let out_at = desc[3];
    let width = desc[4];
    let append = bitcast<i32>(desc[5]);

    // Radix select: the k-th largest key `threshold` and how many equal keys to take.
    var threshold = 0xffffffffu;
    var need = 0u;
    if k > 0u {
        var prefix = 0u;
        var prefix_mask = 0u;
        var remaining = k;
        for (var pass_index = 0u; pass_index < 4u; pass_index++) {
            let shift = 24u - pass_index * RADIX_BITS;
            let found = radix_pass(prefix, prefix_mask, shift, remaining, lid);
            prefix |= found.x << shift;
            prefix_mask |= (BUCKETS - 1u) << shift;
            remaining = found.y;
        }
        threshold = prefix;
        need = remaining;
    }

    // Compaction in index order. Invariant: written = keys > T so far + min(need, equal_seen).
    var equal_seen = 0u;
    var written = 0u;
    for (var base = 0u; base < list_len; base += SPAN) {
        let first = base + lid * ITEMS;
        let last = min(first + ITEMS, list_len);
        var counts = vec2<u32>(0u); // (above, equal) among this invocation's keys
        if k > 0u {
            for (var i = first; i < last; i++) {
                let key = key_at(i);
                counts += vec2<u32>(select(0u, 1u, key > threshold), select(0u, 1u, key == threshold));
            }
        }
        let sc = workgroup_exclusive_scan(counts, lid);
        // Equal keys before this invocation's: equal_seen + sc[0].y, of which the first
        // `need` are taken.
        var equal_before = equal_seen + sc[0].y;
        var slot = out_at + written + sc[0].x + min(need, equal_before) - min(need, equal_seen);
        if counts.x + counts.y > 0u {
            for (var i = first; i < last; i++) {
                let key = key_at(i);
                var take = key > threshold;
                if key == threshold {
                    take = equal_before < need;
                    equal_before += 1u;
                }
                if take {
                    selected[slot] = i32(i);
                    slot += 1u;
                }
            }
        }
        written += sc[1].x + min(need, equal_seen + sc[1].y) - min(need, equal_seen);
        equal_seen += sc[1].y;
    }
    if append >= 0 {
        if lid == 0u {
            selected[out_at + written] = append;
        }
        written += 1u;
    }
    for (var p = written + lid; p < width; p += WG) {
        selected[out_at + p] = -1;
    }
}
