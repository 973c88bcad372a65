//! Who runs what: partitions and key groups over the live workers.
//!
//! Workers are ordered by id, so the same membership always gives the same
//! assignment. Key groups follow Flink's formula (worker `i` of `n` owns
//! `[ceil(i*M/n), ceil((i+1)*M/n))`); partitions go round-robin, so each
//! worker reads `⌈P/n⌉` or `⌊P/n⌋` of them.

use weir_common::keygroup::KeyGroupRange;
use weir_proto::cluster as pb;

/// A live worker as the scheduler sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub data_address: String,
}

/// The assignment of `partitions` input partitions and `max_parallelism`
/// key groups to `members` (any order; the result is sorted by id).
pub fn assign(members: &[Member], partitions: usize, max_parallelism: u16) -> pb::Assignment {
    let mut sorted: Vec<&Member> = members.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    let n = sorted.len().min(usize::from(u16::MAX)) as u16;
    let workers = sorted
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let range = KeyGroupRange::for_operator(max_parallelism, n, i as u16);
            pb::WorkerSlot {
                worker_id: m.id.clone(),
                data_address: m.data_address.clone(),
                key_group_start: u32::from(range.start),
                key_group_end: u32::from(range.end),
            }
        })
        .collect();
    pb::Assignment {
        max_parallelism: u32::from(max_parallelism),
        workers,
        partition_owner: (0..partitions)
            .map(|p| (p % usize::from(n.max(1))) as u32)
            .collect(),
        ..pb::Assignment::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(ids: &[&str]) -> Vec<Member> {
        ids.iter()
            .map(|id| Member {
                id: id.to_string(),
                data_address: format!("{id}:1"),
            })
            .collect()
    }

    #[test]
    fn three_workers_four_partitions() {
        let a = assign(&members(&["w-c", "w-a", "w-b"]), 4, 128);
        let ids: Vec<&str> = a.workers.iter().map(|w| w.worker_id.as_str()).collect();
        assert_eq!(ids, ["w-a", "w-b", "w-c"], "sorted by id");
        let ranges: Vec<(u32, u32)> = a
            .workers
            .iter()
            .map(|w| (w.key_group_start, w.key_group_end))
            .collect();
        assert_eq!(ranges, [(0, 43), (43, 86), (86, 128)]);
        assert_eq!(a.partition_owner, [0, 1, 2, 0]);
        assert_eq!(a.workers[1].data_address, "w-b:1");
    }

    #[test]
    fn same_membership_same_assignment() {
        let x = assign(&members(&["b", "a"]), 5, 128);
        let y = assign(&members(&["a", "b"]), 5, 128);
        assert_eq!(x, y);
    }

    #[test]
    fn one_worker_takes_everything() {
        let a = assign(&members(&["only"]), 3, 128);
        assert_eq!(
            (a.workers[0].key_group_start, a.workers[0].key_group_end),
            (0, 128)
        );
        assert_eq!(a.partition_owner, [0, 0, 0]);
    }
}
