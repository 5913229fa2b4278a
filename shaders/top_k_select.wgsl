// Top-k selection on the GPU by radix select (src/index.rs `select_top`): per list, the
// indices of the `k` highest scores, ties to the smaller index, +inf first, written in
// ascending index order, then the optional appended index, then -1 up to the row width.
//
// One workgroup (WG = 256 invocations) per list. Scores become order-preserving u32 keys;
// four 8-bit radix passes (histogram in workgroup atomics, most significant digit first)
// find the k-th largest key T and how many keys equal to T to take; a final radix_pass in index
// order (two workgroup prefix sums per 256 elements) keeps keys > T and the first `need`
// keys == T, and writes them compacted, hence ascending.
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

var<workgroup> histogram: array<atomic<u32>, BUCKETS>;
var<workgroup> scan: array<u32, WG>;
var<workgroup> wg_list: array<u32, 6>;
var<workgroup> wg_digit: vec2<u32>; // (digit, remaining rank)
var<workgroup> wg_total: u32;

/// Order-preserving map of an f32 to u32 (larger float, larger key).
fn ordered_key(x: f32) -> u32 {
    let bits = bitcast<u32>(x);
    if (bits & 0x80000000u) != 0u {
        return ~bits;
    }
    return bits | 0x80000000u;
}

/// Exclusive prefix sum of `value` over the workgroup; returns (exclusive, total).
fn workgroup_exclusive_scan(value: u32, lid: u32) -> vec2<u32> {
    scan[lid] = value;
    workgroupBarrier();
    for (var stride = 1u; stride < WG; stride <<= 1u) {
        var add = 0u;
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
    return vec2<u32>(inclusive - value, total);
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
    let at = desc[0];
    let len = desc[1];
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
        for (var radix_pass = 0u; radix_pass < 4u; radix_pass++) {
            let shift = 24u - radix_pass * RADIX_BITS;
            atomicStore(&histogram[lid], 0u);
            workgroupBarrier();
            for (var i = lid; i < len; i += WG) {
                let key = ordered_key(scores[at + i]);
                if (key & prefix_mask) == prefix {
                    atomicAdd(&histogram[(key >> shift) & (BUCKETS - 1u)], 1u);
                }
            }
            workgroupBarrier();
            if lid == 0u {
                var above = 0u;
                var digit = 0u;
                for (var b = i32(BUCKETS) - 1; b >= 0; b--) {
                    let c = atomicLoad(&histogram[u32(b)]);
                    if above + c >= remaining {
                        digit = u32(b);
                        break;
                    }
                    above += c;
                }
                wg_digit = vec2<u32>(digit, remaining - above);
            }
            let found = workgroupUniformLoad(&wg_digit);
            prefix |= found.x << shift;
            prefix_mask |= (BUCKETS - 1u) << shift;
            remaining = found.y;
        }
        threshold = prefix;
        need = remaining;
    }

    // Compaction in index order.
    var equal_seen = 0u;
    var written = 0u;
    for (var i0 = 0u; i0 < len; i0 += WG) {
        let i = i0 + lid;
        var key = 0u;
        if i < len {
            key = ordered_key(scores[at + i]);
        }
        let above = i < len && k > 0u && key > threshold;
        let equal = i < len && k > 0u && key == threshold;
        let eq_scan = workgroup_exclusive_scan(select(0u, 1u, equal), lid);
        let take = above || (equal && equal_seen + eq_scan.x < need);
        let take_scan = workgroup_exclusive_scan(select(0u, 1u, take), lid);
        if take {
            selected[out_at + written + take_scan.x] = i32(i);
        }
        equal_seen += eq_scan.y;
        written += take_scan.y;
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
