//! Key groups: the unit in which keyed state is partitioned and moved.
//!
//! Weir uses Flink's scheme so that an operator can reason about it the same
//! way: a key's group is `murmur(hash(key)) % max_parallelism`, and worker `i`
//! of `n` owns the contiguous range `[ceil(i*M/n), ceil((i+1)*M/n))`. State
//! keys start with the key group, so a range can be cut out of a snapshot
//! when the job is rescaled.

use std::fmt;
use std::ops::Range;

/// Flink's `MathUtils.murmurHash(int)`: one murmur3 round plus finaliser,
/// folded to a non-negative `i32`.
pub fn murmur_hash(code: i32) -> i32 {
    let mut h = code.wrapping_mul(0xcc9e_2d51_u32 as i32);
    h = h.rotate_left(15);
    h = h.wrapping_mul(0x1b87_3593);
    h = h.rotate_left(13);
    h = h.wrapping_mul(5).wrapping_add(0xe654_6b64_u32 as i32);
    h ^= 4;
    h = bit_mix(h);
    if h >= 0 {
        h
    } else if h != i32::MIN {
        -h
    } else {
        0
    }
}

fn bit_mix(input: i32) -> i32 {
    let mut h = input as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h as i32
}

/// The key group of a sensor id (Java's `Integer.hashCode` is the value).
#[inline]
pub fn key_group_of(sensor_id: i32, max_parallelism: u16) -> u16 {
    debug_assert!(max_parallelism > 0);
    (murmur_hash(sensor_id) % i32::from(max_parallelism)) as u16
}

/// A contiguous, half-open range of key groups owned by one window task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyGroupRange {
    pub start: u16,
    pub end: u16,
}

impl KeyGroupRange {
    /// The whole key space of a job.
    pub fn all(max_parallelism: u16) -> Self {
        KeyGroupRange {
            start: 0,
            end: max_parallelism,
        }
    }

    /// Flink's assignment of key groups to operator `index` of `parallelism`.
    /// With more operators than key groups, some ranges are empty.
    pub fn for_operator(max_parallelism: u16, parallelism: u16, index: u16) -> Self {
        assert!(parallelism > 0 && index < parallelism);
        let m = u32::from(max_parallelism);
        let n = u32::from(parallelism);
        let i = u32::from(index);
        let ceil_div = |a: u32, b: u32| a.div_ceil(b);
        KeyGroupRange {
            start: ceil_div(i * m, n) as u16,
            end: ceil_div((i + 1) * m, n) as u16,
        }
    }

    pub fn contains(&self, key_group: u16) -> bool {
        (self.start..self.end).contains(&key_group)
    }

    pub fn len(&self) -> usize {
        usize::from(self.end - self.start)
    }

    pub fn is_empty(&self) -> bool {
        self.start >= self.end
    }

    pub fn iter(&self) -> Range<u16> {
        self.start..self.end
    }
}

impl fmt::Display for KeyGroupRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {})", self.start, self.end)
    }
}

/// Which operator index owns a key group (Flink's
/// `computeOperatorIndexForKeyGroup`); agrees with [`KeyGroupRange::for_operator`].
pub fn operator_for_key_group(max_parallelism: u16, parallelism: u16, key_group: u16) -> u16 {
    (u32::from(key_group) * u32::from(parallelism) / u32::from(max_parallelism)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur_is_non_negative_and_spreads_keys() {
        let mut seen = vec![0u32; 128];
        for id in 0..100_000 {
            let h = murmur_hash(id);
            assert!(h >= 0);
            seen[key_group_of(id, 128) as usize] += 1;
        }
        // Every group gets a fair share (expected ~781).
        assert!(seen.iter().all(|&c| (600..1000).contains(&c)), "{seen:?}");
        for id in [i32::MIN, -1, i32::MAX] {
            assert!(murmur_hash(id) >= 0);
        }
    }

    #[test]
    fn ranges_partition_the_key_space_and_agree_with_owner() {
        for m in [1u16, 7, 128, 1000] {
            for n in 1..=m.min(13) {
                let mut next = 0;
                for i in 0..n {
                    let r = KeyGroupRange::for_operator(m, n, i);
                    assert_eq!(r.start, next, "m={m} n={n} i={i}");
                    next = r.end;
                    for kg in r.iter() {
                        assert_eq!(operator_for_key_group(m, n, kg), i, "m={m} n={n} kg={kg}");
                    }
                }
                assert_eq!(next, m);
            }
        }
    }

    #[test]
    fn more_operators_than_key_groups_leaves_some_empty() {
        let ranges: Vec<KeyGroupRange> = (0..5)
            .map(|i| KeyGroupRange::for_operator(3, 5, i))
            .collect();
        assert_eq!(ranges.iter().map(KeyGroupRange::len).sum::<usize>(), 3);
        assert!(ranges.iter().any(KeyGroupRange::is_empty));
    }

    #[test]
    fn flink_formula_examples() {
        // 128 key groups over 3 operators: [0,43) [43,86) [86,128).
        assert_eq!(
            KeyGroupRange::for_operator(128, 3, 0),
            KeyGroupRange { start: 0, end: 43 }
        );
        assert_eq!(
            KeyGroupRange::for_operator(128, 3, 1),
            KeyGroupRange { start: 43, end: 86 }
        );
        assert_eq!(
            KeyGroupRange::for_operator(128, 3, 2),
            KeyGroupRange {
                start: 86,
                end: 128
            }
        );
    }
}
