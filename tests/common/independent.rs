//! An independent float64 implementation of the contract (masks built from first
//! principles, MInference's conversion loop ported literally), for cross-checking.
#![allow(dead_code, clippy::needless_range_loop)]

use minference::BLOCK;

/// MInference's CUDA loop, ported literally (with its out-of-bounds read guarded: offsets
/// are walked in descending order and only those below end_m are used, offset 0 added).
pub fn minference_convert(m: usize, vertical: &[i32], slash_desc: &[i32]) -> (Vec<i32>, Vec<i32>) {
    let bsz = BLOCK as i64;
    let end_m = (m as i64 + 1) * bsz;
    let mut slash: Vec<i64> = slash_desc
        .iter()
        .map(|&x| x as i64)
        .filter(|&o| o < end_m)
        .collect();
    if !slash.contains(&0) {
        slash.push(0);
    }
    slash.sort_unstable_by(|a, b| b.cmp(a));
    let (mut blocks, mut cols) = (Vec::new(), Vec::new());
    let save = |blocks: &mut Vec<i32>, s: i64, e: i64| {
        let mut i = s;
        while i < e {
            blocks.push(i as i32);
            i += bsz;
        }
    };
    let (mut s, mut v) = (0usize, 0usize);
    let mut v_idx: i64 = if vertical.is_empty() {
        end_m + bsz
    } else {
        v += 1;
        vertical[0] as i64
    };
    let mut s_idx = (end_m - slash[s]).max(bsz);
    s += 1;
    let (mut range_start, mut range_end) = (s_idx - bsz, s_idx);
    loop {
        if v_idx < range_end {
            if v_idx < range_start {
                cols.push(v_idx as i32);
            }
            if v < vertical.len() {
                v_idx = vertical[v] as i64;
                v += 1;
            } else {
                v_idx = end_m + bsz;
            }
        } else {
            if s < slash.len() {
                s_idx = (end_m - slash[s]).max(bsz);
                s += 1;
            } else {
                save(&mut blocks, range_start, range_end);
                break;
            }
            if s_idx > range_end + bsz {
                save(&mut blocks, range_start, range_end);
                range_start = s_idx - bsz;
                range_end = s_idx;
            } else if s_idx > range_end {
                range_end += bsz;
            }
        }
    }
    (blocks, cols)
}

fn dotp(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn top(scores: &[f64], count: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    // Stable sort by descending score keeps the smaller index first among ties.
    idx.sort_by(|&a, &b| scores[b].partial_cmp(&scores[a]).unwrap());
    let mut t: Vec<usize> = idx.into_iter().take(count).collect();
    t.sort();
    t
}

/// The key mask `[N][N]` of one head (q `[N, D]`, k `[N, D]`) under `pattern`.
pub fn mask(pattern: &str, q: &[f64], k: &[f64], n: usize, d: usize) -> Vec<Vec<bool>> {
    let mut m = vec![vec![false; n]; n];
    let parts: Vec<&str> = pattern.split(':').collect();
    let nums: Vec<usize> = parts
        .get(1)
        .map(|a| a.split(',').map(|x| x.parse().unwrap()).collect())
        .unwrap_or_default();
    match parts[0] {
        "dense" => (0..n).for_each(|i| (0..=i).for_each(|j| m[i][j] = true)),
        "a-shape" => {
            (0..n).for_each(|i| (0..=i).for_each(|j| m[i][j] = j < nums[0] || i - j < nums[1]))
        }
        "vertical-slash" => {
            let scale = 1.0 / (d as f64).sqrt();
            let (mut vsum, mut ssum) = (vec![0.0; n], vec![0.0; n]);
            for i in n - n.min(64)..n {
                let s: Vec<f64> = (0..=i)
                    .map(|j| scale * dotp(&q[i * d..(i + 1) * d], &k[j * d..(j + 1) * d]))
                    .collect();
                let mx = s.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = s.iter().map(|x| (x - mx).exp()).sum();
                for j in 0..=i {
                    let p = (s[j] - mx).exp() / z;
                    vsum[j] += p;
                    ssum[i - j] += p;
                }
            }
            (0..n.min(30)).for_each(|j| vsum[j] = f64::INFINITY);
            (0..n.min(100)).for_each(|o| ssum[o] = f64::INFINITY);
            let cols: Vec<i32> = top(&vsum, n.min(nums[0].max(30)))
                .into_iter()
                .map(|x| x as i32)
                .collect();
            let mut offs: Vec<i32> = top(&ssum, n.min(nums[1].max(50)))
                .into_iter()
                .map(|x| x as i32)
                .collect();
            offs.reverse();
            for row in 0..n.div_ceil(BLOCK) {
                let (chunks, single) = minference_convert(row, &cols, &offs);
                for i in row * BLOCK..((row + 1) * BLOCK).min(n) {
                    for &s in &chunks {
                        for j in s as usize..(s as usize + BLOCK).min(i + 1) {
                            m[i][j] = true;
                        }
                    }
                    for &c in &single {
                        m[i][c as usize] = true;
                    }
                }
            }
        }
        "block-sparse" => {
            let rows = n.div_ceil(BLOCK);
            let pool = |x: &[f64], r: usize| -> Vec<f64> {
                let (lo, hi) = (r * BLOCK, ((r + 1) * BLOCK).min(n));
                (0..d)
                    .map(|c| (lo..hi).map(|i| x[i * d + c]).sum::<f64>() / (hi - lo) as f64)
                    .collect()
            };
            for r in 0..rows {
                let qp = pool(q, r);
                let scores: Vec<f64> = (0..r).map(|c| dotp(&qp, &pool(k, c))).collect();
                let mut keep = top(&scores, nums[0].saturating_sub(1).min(r));
                keep.push(r);
                for i in r * BLOCK..((r + 1) * BLOCK).min(n) {
                    for &c in &keep {
                        for j in c * BLOCK..((c + 1) * BLOCK).min(i + 1) {
                            m[i][j] = true;
                        }
                    }
                }
            }
        }
        other => panic!("unknown pattern {other}"),
    }
    m
}

/// Masked softmax attention of one head in float64.
pub fn attend(mask: &[Vec<bool>], q: &[f64], k: &[f64], v: &[f64], n: usize, d: usize) -> Vec<f64> {
    let scale = 1.0 / (d as f64).sqrt();
    let mut out = vec![0.0; n * d];
    for i in 0..n {
        let js: Vec<usize> = (0..n).filter(|&j| mask[i][j]).collect();
        let s: Vec<f64> = js
            .iter()
            .map(|&j| scale * dotp(&q[i * d..(i + 1) * d], &k[j * d..(j + 1) * d]))
            .collect();
        let mx = s.iter().cloned().fold(f64::MIN, f64::max);
        let z: f64 = s.iter().map(|x| (x - mx).exp()).sum();
        for (&j, &sj) in js.iter().zip(&s) {
            let p = (sj - mx).exp() / z;
            for c in 0..d {
                out[i * d + c] += p * v[j * d + c];
            }
        }
    }
    out
}
