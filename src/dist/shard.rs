//! How `--zero1` splits the flat parameter buffer: rank `r` of `N` owns one contiguous slice,
//! the slices in rank order, their lengths differing by at most one. A rank keeps AdamW's
//! moments for its slice only and updates only those parameters; an all-gather then gives every
//! rank the whole updated buffer.

use std::ops::Range;

/// Elements of the slice of `total` that each of `world` ranks owns, in rank order.
pub fn counts(total: usize, world: usize) -> Vec<usize> {
    let world = world.max(1);
    (0..world)
        .map(|r| total / world + usize::from(r < total % world))
        .collect()
}

/// The slice of `0..total` that `rank` of `world` owns.
pub fn range(total: usize, rank: usize, world: usize) -> Range<usize> {
    let counts = counts(total, world);
    let start: usize = counts[..rank.min(counts.len())].iter().sum();
    start..start + counts.get(rank).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_the_buffer_once_in_rank_order() {
        for (total, world) in [(10, 3), (3, 4), (0, 2), (7, 1), (1000, 7)] {
            let mut next = 0;
            for r in 0..world {
                let s = range(total, r, world);
                assert_eq!(s.start, next, "total {total}, world {world}, rank {r}");
                assert!(s.len() == total / world || s.len() == total / world + 1);
                next = s.end;
            }
            assert_eq!(next, total);
            assert_eq!(counts(total, world).iter().sum::<usize>(), total);
        }
    }
}
