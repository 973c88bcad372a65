//! Window state in RocksDB.
//!
//! Keys are `key_group (u16) | window_end (i64) | sensor_id (i32)`, all
//! big-endian with the sign bit flipped so that byte order is numeric order:
//! a key-group range is one contiguous key range (what a rescale cuts out of
//! a snapshot), and one window of one key group is a prefix.
//!
//! Values are encoded [`Accumulator`]s, written as *merge operands*: the
//! window operator spills partial accumulators without reading what is
//! already stored, and RocksDB's merge operator (accumulator `merge`, which
//! is associative) combines them on read or compaction. No per-record reads.
//!
//! The write-ahead log is off: this state is only as durable as the
//! operator's snapshots make it, never more.

use std::path::{Path, PathBuf};

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBCompressionType, MergeOperands, Options,
    WriteBatch, WriteOptions, DB,
};
use weir_common::aggregate::{codec, Accumulator};
use weir_common::keygroup::KeyGroupRange;

const KEY_LEN: usize = 14;

/// Why the state store failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store at {path}: {source}")]
    RocksDb {
        path: PathBuf,
        #[source]
        source: rocksdb::Error,
    },
    #[error("state store at {path}: cannot prepare the directory: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state store at {path}: corrupt value under key {key:02x?}: {source}")]
    Corrupt {
        path: PathBuf,
        key: Vec<u8>,
        #[source]
        source: codec::CorruptState,
    },
}

/// Builds the state key of (key group, window end, sensor).
#[inline]
pub fn state_key(key_group: u16, window_end: i64, sensor_id: i32) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    k[..2].copy_from_slice(&key_group.to_be_bytes());
    k[2..10].copy_from_slice(&((window_end as u64) ^ (1 << 63)).to_be_bytes());
    k[10..].copy_from_slice(&((sensor_id as u32) ^ (1 << 31)).to_be_bytes());
    k
}

/// The parts of a state key.
pub fn parse_key(k: &[u8]) -> Option<(u16, i64, i32)> {
    if k.len() != KEY_LEN {
        return None;
    }
    let kg = u16::from_be_bytes([k[0], k[1]]);
    let mut end = [0u8; 8];
    end.copy_from_slice(&k[2..10]);
    let mut id = [0u8; 4];
    id.copy_from_slice(&k[10..]);
    Some((
        kg,
        (u64::from_be_bytes(end) ^ (1 << 63)) as i64,
        (u32::from_be_bytes(id) ^ (1 << 31)) as i32,
    ))
}

/// The merge operator: folds operands into the existing accumulator. A
/// value that does not decode makes the merge fail, which RocksDB reports
/// as corruption on the read that needed it (never silently dropped).
fn merge_accumulators(
    _key: &[u8],
    existing: Option<&[u8]>,
    operands: &MergeOperands,
) -> Option<Vec<u8>> {
    let mut acc: Option<Accumulator> = match existing {
        Some(bytes) => Some(codec::decode(bytes).ok()?),
        None => None,
    };
    for op in operands {
        let next = codec::decode(op).ok()?;
        match &mut acc {
            Some(a) => a.merge(&next),
            None => acc = Some(next),
        }
    }
    let mut out = Vec::with_capacity(300);
    codec::encode(&acc?, &mut out);
    Some(out)
}

/// The RocksDB instance of one window task.
pub struct StateStore {
    db: DB,
    path: PathBuf,
    write_opts: WriteOptions,
}

impl StateStore {
    /// Opens a fresh store at `path`, removing whatever an earlier run left
    /// there (state is restored from checkpoints, never from leftovers).
    pub fn open_fresh(path: &Path) -> Result<Self, StateError> {
        if path.exists() {
            std::fs::remove_dir_all(path).map_err(|source| StateError::Dir {
                path: path.to_owned(),
                source,
            })?;
        }
        std::fs::create_dir_all(path).map_err(|source| StateError::Dir {
            path: path.to_owned(),
            source,
        })?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Small, bounded memory: the accumulators' hot set lives in the
        // operator's own cache, RocksDB holds the cold rest.
        opts.set_write_buffer_size(8 << 20);
        opts.set_max_write_buffer_number(2);
        opts.set_max_background_jobs(2);
        opts.set_compression_type(DBCompressionType::Lz4);
        opts.set_merge_operator_associative("weir-accumulator", merge_accumulators);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&Cache::new_lru_cache(8 << 20));
        opts.set_block_based_table_factory(&table);
        let cf = ColumnFamilyDescriptor::new(rocksdb::DEFAULT_COLUMN_FAMILY_NAME, opts.clone());
        let db = DB::open_cf_descriptors(&opts, path, vec![cf]).map_err(|source| {
            StateError::RocksDb {
                path: path.to_owned(),
                source,
            }
        })?;
        let mut write_opts = WriteOptions::default();
        write_opts.disable_wal(true);
        Ok(StateStore {
            db,
            path: path.to_owned(),
            write_opts,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn rocks(&self, source: rocksdb::Error) -> StateError {
        StateError::RocksDb {
            path: self.path.clone(),
            source,
        }
    }

    /// Writes partial accumulators as merge operands, in one batch.
    pub fn merge_all<'a>(
        &self,
        items: impl IntoIterator<Item = ([u8; KEY_LEN], &'a Accumulator)>,
    ) -> Result<usize, StateError> {
        let mut batch = WriteBatch::default();
        let mut buf = Vec::with_capacity(300);
        let mut n = 0;
        for (key, acc) in items {
            buf.clear();
            codec::encode(acc, &mut buf);
            batch.merge(key, &buf);
            n += 1;
        }
        if n > 0 {
            self.db
                .write_opt(batch, &self.write_opts)
                .map_err(|e| self.rocks(e))?;
        }
        Ok(n)
    }

    /// Reads and deletes every accumulator of window `end` in `range`,
    /// calling `f(sensor_id, accumulator)` for each, in key order.
    pub fn take_window(
        &self,
        range: KeyGroupRange,
        end: i64,
        mut f: impl FnMut(i32, Accumulator),
    ) -> Result<(), StateError> {
        let mut deletes = WriteBatch::default();
        for kg in range.iter() {
            let from = state_key(kg, end, i32::MIN);
            let to = state_key(kg, end.saturating_add(1), i32::MIN);
            let mut read_opts = rocksdb::ReadOptions::default();
            read_opts.set_iterate_upper_bound(to.to_vec());
            let iter = self.db.iterator_opt(
                rocksdb::IteratorMode::From(&from, rocksdb::Direction::Forward),
                read_opts,
            );
            let mut any = false;
            for item in iter {
                let (key, value) = item.map_err(|e| self.rocks(e))?;
                let Some((_, _, sensor)) = parse_key(&key) else {
                    continue;
                };
                let acc = codec::decode(&value).map_err(|source| StateError::Corrupt {
                    path: self.path.clone(),
                    key: key.to_vec(),
                    source,
                })?;
                f(sensor, acc);
                any = true;
            }
            if any {
                deletes.delete_range(from, to);
            }
        }
        self.db
            .write_opt(deletes, &self.write_opts)
            .map_err(|e| self.rocks(e))
    }

    /// Number of keys in the store (RocksDB's estimate), for tests and stats.
    pub fn estimate_keys(&self) -> u64 {
        self.db
            .property_int_value("rocksdb.estimate-num-keys")
            .ok()
            .flatten()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_common::reading::Reading;

    #[test]
    fn keys_sort_numerically_and_round_trip() {
        let samples = [
            (0u16, -120_000i64, -5i32),
            (0, -120_000, 7),
            (0, 0, i32::MIN),
            (0, 60_000, -1),
            (0, 60_000, 0),
            (1, i64::MIN, 0),
            (127, i64::MAX, i32::MAX),
        ];
        let keys: Vec<[u8; KEY_LEN]> = samples
            .iter()
            .map(|&(a, b, c)| state_key(a, b, c))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        for (&s, k) in samples.iter().zip(&keys) {
            assert_eq!(parse_key(k), Some(s));
        }
    }

    fn acc(temp: f64, ts: i64) -> Accumulator {
        Accumulator::new(&Reading {
            temperature: temp,
            timestamp_ms: ts,
            ..Reading::default()
        })
    }

    #[test]
    fn merges_spilled_partials_and_takes_windows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open_fresh(&dir.path().join("state")).expect("opens");
        let (a1, a2, b) = (acc(10.0, 5), acc(20.0, 1), acc(7.0, 3));
        store
            .merge_all([
                (state_key(3, 60_000, 1), &a1),
                (state_key(3, 120_000, 1), &b),
            ])
            .expect("merge");
        store
            .merge_all([(state_key(3, 60_000, 1), &a2)])
            .expect("merge");
        store
            .merge_all([(state_key(9, 60_000, 2), &b)])
            .expect("merge");
        let mut got = Vec::new();
        store
            .take_window(KeyGroupRange { start: 0, end: 8 }, 60_000, |id, a| {
                got.push((id, a))
            })
            .expect("take");
        assert_eq!(got.len(), 1, "key group 9 is outside the range");
        let (id, merged) = &got[0];
        assert_eq!(*id, 1);
        assert_eq!(merged.count, 2);
        assert_eq!(merged.temperature.sum, 30.0);
        assert_eq!(merged.earliest.timestamp_ms, 1);
        // Taken windows are gone; others stay.
        let mut again = Vec::new();
        store
            .take_window(KeyGroupRange { start: 0, end: 16 }, 60_000, |id, _| {
                again.push(id)
            })
            .expect("take");
        assert_eq!(again, vec![2]);
        let mut later = Vec::new();
        store
            .take_window(KeyGroupRange::all(128), 120_000, |id, a| {
                later.push((id, a.count))
            })
            .expect("take");
        assert_eq!(later, vec![(1, 1)]);
    }

    #[test]
    fn opening_fresh_discards_leftovers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state");
        {
            let store = StateStore::open_fresh(&path).expect("opens");
            store
                .merge_all([(state_key(0, 60_000, 1), &acc(1.0, 1))])
                .expect("merge");
        }
        let store = StateStore::open_fresh(&path).expect("reopens");
        let mut got = 0;
        store
            .take_window(KeyGroupRange::all(128), 60_000, |_, _| got += 1)
            .expect("take");
        assert_eq!(got, 0);
    }

    #[test]
    fn unusable_directory_is_a_clear_error() {
        let err = StateStore::open_fresh(Path::new("/proc/weir-state"))
            .err()
            .expect("fails");
        assert!(err.to_string().contains("/proc/weir-state"), "{err}");
    }
}
