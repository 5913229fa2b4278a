// Top-k selection on the GPU by radix select (src/index.rs `select_top`): per list, the
// indices of the `k` highest scores, ties to the smaller index, +inf first, written in
// ascending index order, then the optional appended index, then -1 up to the row width.
//
// Scores become order-preserving u32 keys; four 8-bit radix passes (most significant digit
// first: a histogram in workgroup atomics, then one workgroup scan over the bins finds the
// digit) give the k-th largest key T and how many keys equal to T to take (`need`). The
// compaction then places every invocation's kept keys (> T, and the first `need` == T) by
// one workgroup scan of the (above T, equal to T) counts of the consecutive keys each
// invocation owns, so they are written compacted, hence ascending. Two entry points, the
// host picks one per dispatch by its longest list (both exact, same results):
// - `top_k_select`: one workgroup of WG = 256 invocations per list of any length; every
//   pass reads the list from storage (UNROLL keys in flight per invocation), the compaction
//   walks it in steps of WG * ITEMS keys;
// - `top_k_select_short`: lists of at most SHORT_LEN keys (block-sparse rows; vertical-slash
//   at N <= SHORT_LEN), one workgroup of SHORT_WG = 64 per list: the keys are read from
//   storage once into workgroup memory, the passes and the one compaction step run there,
//   and each invocation adds a run of keys falling in the same bin with one atomic (the top
//   digit is mostly sign and exponent, so most keys share a bin).
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
/// Consecutive keys each invocation owns per compaction step (lists read from storage).
const ITEMS: u32 = 8u;
/// Invocations per list of `top_k_select_short`.
const SHORT_WG: u32 = 64u;
/// Keys each invocation of `top_k_select_short` owns at most.
const SHORT_ITEMS: u32 = 32u;
/// Longest list `top_k_select_short` takes (`TOP_K_SHORT_LEN` on the host).
const SHORT_LEN: u32 = SHORT_WG * SHORT_ITEMS;

var<workgroup> histogram: array<atomic<u32>, BUCKETS>;
var<workgroup> scan: array<vec2<u32>, WG>;
var<workgroup> wg_list: array<u32, 6>;
var<workgroup> wg_digit: vec2<u32>; // (digit, remaining rank)
/// The keys of a short list, key i at `short_slot(i)`.
var<workgroup> short_keys: array<u32, SHORT_LEN + SHORT_LEN / 32u>;

var<private> at: u32;  // the list's first score
var<private> len: u32; // the list's length
var<private> staged: bool; // the list's keys are in `short_keys`

/// Order-preserving map of an f32 to u32 (larger float, larger key).
fn ordered_key(x: f32) -> u32 {
    let bits = bitcast<u32>(x);
    if (bits & 0x80000000u) != 0u {
        return ~bits;
    }
    return bits | 0x80000000u;
}

/// Slot of key i in `short_keys`: one padding word after every 32, so invocations reading
/// keys a power of two apart hit distinct banks.
fn short_slot(i: u32) -> u32 {
    return i + (i >> 5u);
}

/// Key i of the list (i < len): from workgroup memory when the list is staged.
fn key_at(i: u32) -> u32 {
    if staged {
        return short_keys[short_slot(i)];
    }
    return ordered_key(scores[at + i]);
}

/// Exclusive prefix sum of `value` over the workgroup of `threads` (<= WG) invocations, in
/// invocation order; returns (exclusive, total).
fn workgroup_exclusive_scan(value: vec2<u32>, lid: u32, threads: u32) -> array<vec2<u32>, 2> {
    scan[lid] = value;
    workgroupBarrier();
    for (var stride = 1u; stride < threads; stride <<= 1u) {
        var add = vec2<u32>(0u);
        if lid >= stride {
            add = scan[lid - stride];
        }
        workgroupBarrier();
        scan[lid] += add;
        workgroupBarrier();
    }
    let inclusive = scan[lid];
    let total = scan[threads - 1u];
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

/// Add this invocation's share of the keys with `prefix` to the histogram (of the digit at
/// `shift`). Staged: keys lid, lid + threads, ..., each run of keys in one bin added with a
/// single atomic. From storage: UNROLL keys in flight, one atomic per key.
fn count_keys(prefix: u32, prefix_mask: u32, shift: u32, lid: u32, threads: u32) {
    if staged {
        var run_bin = 0u;
        var run = 0u;
        for (var i = lid; i < len; i += threads) {
            let key = short_keys[short_slot(i)];
            if (key & prefix_mask) == prefix {
                let bin = (key >> shift) & (BUCKETS - 1u);
                if bin != run_bin && run > 0u {
                    atomicAdd(&histogram[run_bin], run);
                    run = 0u;
                }
                run_bin = bin;
                run += 1u;
            }
        }
        if run > 0u {
            atomicAdd(&histogram[run_bin], run);
        }
    } else {
        for (var i = lid; i < len; i += UNROLL * threads) {
            count_key(i, prefix, prefix_mask, shift);
            count_key(i + threads, prefix, prefix_mask, shift);
            count_key(i + 2u * threads, prefix, prefix_mask, shift);
            count_key(i + 3u * threads, prefix, prefix_mask, shift);
        }
    }
}

/// One radix pass: the digit at `shift` of the `remaining`-th largest key among those with
/// `prefix`, and its rank among the keys with that digit: (digit, remaining rank).
fn radix_pass(prefix: u32, prefix_mask: u32, shift: u32, remaining: u32, lid: u32, threads: u32) -> vec2<u32> {
    for (var bin = lid; bin < BUCKETS; bin += threads) {
        atomicStore(&histogram[bin], 0u);
    }
    workgroupBarrier();
    count_keys(prefix, prefix_mask, shift, lid, threads);
    workgroupBarrier();
    // Invocation lid holds the `per` bins from `top` down: the scan gives the keys in
    // higher bins, then the invocation whose bins hold the remaining rank finds the digit.
    let per = BUCKETS / threads;
    let top = BUCKETS - 1u - per * lid;
    var count = 0u;
    for (var j = 0u; j < per; j++) {
        count += atomicLoad(&histogram[top - j]);
    }
    var above = workgroup_exclusive_scan(vec2<u32>(count, 0u), lid, threads)[0].x;
    for (var j = 0u; j < per; j++) {
        let bin = top - j;
        let c = atomicLoad(&histogram[bin]);
        if above < remaining && above + c >= remaining {
            wg_digit = vec2<u32>(bin, remaining - above);
        }
        above += c;
    }
    return workgroupUniformLoad(&wg_digit);
}

/// Select list `list_id` with a workgroup of `threads` invocations; `may_stage`: read a
/// list of at most SHORT_LEN keys into workgroup memory first.
fn select_list(list_id: u32, lid: u32, threads: u32, may_stage: bool) {
    // Step 1: the list's descriptor, made workgroup-uniform.
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

    // Step 2: a short list's keys into workgroup memory (one coalesced read).
    let stage = may_stage && list_len <= SHORT_LEN;
    if stage {
        for (var i = lid; i < list_len; i += threads) {
            short_keys[short_slot(i)] = ordered_key(scores[at + i]);
        }
        workgroupBarrier();
    }
    staged = stage;

    // Step 3: radix select: the k-th largest key `threshold` and how many equal keys to take.
    var threshold = 0xffffffffu;
    var need = 0u;
    if k > 0u {
        var prefix = 0u;
        var prefix_mask = 0u;
        var remaining = k;
        for (var pass_index = 0u; pass_index < 4u; pass_index++) {
            let shift = 24u - pass_index * RADIX_BITS;
            let found = radix_pass(prefix, prefix_mask, shift, remaining, lid, threads);
            prefix |= found.x << shift;
            prefix_mask |= (BUCKETS - 1u) << shift;
            remaining = found.y;
        }
        threshold = prefix;
        need = remaining;
    }

    // Step 4: compaction in index order, `items` consecutive keys per invocation per step
    // (a staged list in one step). Invariant: written = keys > T so far + min(need, equal_seen).
    var items = ITEMS;
    if stage {
        items = max((list_len + threads - 1u) / threads, 1u);
    }
    let span = threads * items;
    var equal_seen = 0u;
    var written = 0u;
    for (var base = 0u; base < list_len; base += span) {
        let first = base + lid * items;
        let last = min(first + items, list_len);
        var counts = vec2<u32>(0u); // (above, equal) among this invocation's keys
        if k > 0u {
            for (var i = first; i < last; i++) {
                let key = key_at(i);
                counts += vec2<u32>(select(0u, 1u, key > threshold), select(0u, 1u, key == threshold));
            }
        }
        let sc = workgroup_exclusive_scan(counts, lid, threads);
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

    // Step 5: the appended index, then -1 to the row width.
    if append >= 0 {
        if lid == 0u {
            selected[out_at + written] = append;
        }
        written += 1u;
    }
    for (var p = written + lid; p < width; p += threads) {
        selected[out_at + p] = -1;
    }
}

@compute @workgroup_size(WG)
fn top_k_select(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let list_id = wid.y * params.grid_x + wid.x;
    if list_id >= params.list_count {
        return;
    }
    select_list(list_id, lid, WG, false);
}

@compute @workgroup_size(SHORT_WG)
fn top_k_select_short(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let list_id = wid.y * params.grid_x + wid.x;
    if list_id >= params.list_count {
        return;
    }
    select_list(list_id, lid, SHORT_WG, true);
}
