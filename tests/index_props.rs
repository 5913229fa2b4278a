//! Property tests of the index builders against the contract, and of the conversion against
//! an independent, literal port of MInference's `convert_vertical_slash_indexes` loop.

use minference::generate::random_qkv;
use minference::index::{
    block_sparse_select, build_index, convert_vertical_slash_row, select_top,
    vertical_slash_select, HostIndex,
};
use minference::{AttnShape, DType, Pattern, BLOCK};
use proptest::prelude::*;

mod common;
use common::independent::minference_convert;

fn sorted_unique(max: usize, len: usize) -> impl Strategy<Value = Vec<i32>> {
    proptest::collection::btree_set(0..max as i32, 0..=len).prop_map(|s| s.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn conversion_matches_minference_loop(n in 1usize..700, vs in sorted_unique(700, 40), ss in sorted_unique(700, 40)) {
        let vs: Vec<i32> = vs.into_iter().filter(|&x| (x as usize) < n).collect();
        let ss: Vec<i32> = ss.into_iter().filter(|&x| (x as usize) < n).collect();
        for m in 0..n.div_ceil(BLOCK) {
            let ours = convert_vertical_slash_row(m, &vs, &ss);
            let mut desc = ss.clone();
            desc.reverse();
            let (blocks, cols) = minference_convert(m, &vs, &desc);
            prop_assert_eq!(&ours.block_offset, &blocks, "row block {}", m);
            prop_assert_eq!(&ours.column_index, &cols, "row block {}", m);
            // Disjoint: no column lies in a chunk; chunks are distinct and ascending.
            for c in &ours.column_index {
                prop_assert!(ours.block_offset.iter().all(|&s| !(s <= *c && *c < s + BLOCK as i32)));
                prop_assert!((*c as usize) < m * BLOCK);
            }
            prop_assert!(ours.block_offset.windows(2).all(|w| w[0] + BLOCK as i32 <= w[1]));
            // The diagonal block is always covered.
            let start = (m * BLOCK) as i32;
            prop_assert!((start..start + BLOCK as i32).all(|c| ours.block_offset.iter().any(|&s| s <= c && c < s + BLOCK as i32)));
        }
    }

    #[test]
    fn selection_is_sorted_in_range_with_forced_entries(n in 1usize..300, v in 0usize..400, s in 0usize..400, seed in 0u64..1000) {
        let d = 64;
        let (q, k, _) = random_qkv(1, 1, 1, n, d, DType::F32, seed).unwrap();
        let (cols, offs) = vertical_slash_select(&q.to_f64(), &k.to_f64(), n, d, 0.125, v, s);
        let (nv, ns) = Pattern::vertical_slash_budgets(v, s, n);
        prop_assert_eq!(cols.len(), nv);
        prop_assert_eq!(offs.len(), ns);
        prop_assert!(cols.windows(2).all(|w| w[0] < w[1]) && offs.windows(2).all(|w| w[0] < w[1]));
        prop_assert!(cols.iter().chain(&offs).all(|&x| x >= 0 && (x as usize) < n));
        // Forced entries are taken first, in index order: the sink columns and offset 0.
        prop_assert!((0..nv.min(30) as i32).all(|c| cols.contains(&c)));
        prop_assert!((0..ns.min(100) as i32).all(|o| offs.contains(&o)));
    }

    #[test]
    fn block_sparse_keeps_diagonal_and_is_causal(n in 1usize..700, top_k in 1usize..8, seed in 0u64..1000) {
        let d = 64;
        let (q, k, _) = random_qkv(1, 1, 1, n, d, DType::F32, seed).unwrap();
        let rows = block_sparse_select(&q.to_f64(), &k.to_f64(), n, d, top_k);
        prop_assert_eq!(rows.len(), n.div_ceil(BLOCK));
        for (m, sel) in rows.iter().enumerate() {
            prop_assert_eq!(sel.len(), top_k.min(m + 1));
            prop_assert!(sel.contains(&(m as i32)));
            prop_assert!(sel.windows(2).all(|w| w[0] < w[1]));
            prop_assert!(sel.iter().all(|&c| c >= 0 && c as usize <= m));
        }
    }

    #[test]
    fn layer_index_is_valid_and_self_consistent(n in 1usize..400, hq in 1usize..4, seed in 0u64..1000, v in 0usize..100, s in 0usize..200, top_k in 1usize..6) {
        let shape = AttnShape::new(2, hq * 2, hq, n, 64).unwrap();
        let (q, k, _) = random_qkv(2, hq * 2, hq, n, 64, DType::F32, seed).unwrap();
        let pats: Vec<Pattern> = (0..hq * 2).map(|h| if h % 2 == 0 { Pattern::VerticalSlash { vertical: v, slash: s } } else { Pattern::BlockSparse { top_k } }).collect();
        let ix: HostIndex = build_index(&shape, &q.to_f64(), &k.to_f64(), &pats).unwrap();
        ix.validate().unwrap();
        prop_assert_eq!(&ix.reconverted().unwrap(), &ix);
        // Every row sees itself, keys are causal and distinct.
        for b in 0..2 {
            for h in 0..hq * 2 {
                for i in (0..n).step_by(7) {
                    let keys = ix.keys_of_row(b, h, i);
                    prop_assert!(keys.contains(&i));
                    prop_assert!(keys.iter().all(|&j| j <= i));
                    prop_assert!(keys.windows(2).all(|w| w[0] < w[1]));
                }
            }
        }
    }
}

#[test]
fn select_top_breaks_ties_to_smaller_index() {
    let s = [1.0, 3.0, 3.0, f64::INFINITY, 3.0, 0.0];
    assert_eq!(select_top(&s, 3), vec![1, 2, 3]);
    assert_eq!(select_top(&s, 1), vec![3]);
}
