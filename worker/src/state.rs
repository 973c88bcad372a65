//! Window state beyond the memory budget, in RocksDB.
//!
//! When the window operator's accumulators outgrow its memory budget it
//! spills them: each open window's partial accumulators are sorted by key and
//! written as one SST file, which is ingested (moved, not copied) into the
//! window's own column family (`w<end>`, created at its first spill). When
//! the window closes, its column family is read once, in key order, merging
//! the partials of each device, and then dropped with all its files.
//!
//! Window state lives a minute or two and is read exactly once. Writing spills
//! as ready-made sorted files skips everything a general write path pays for
//! (write batches, memtables, flushes, merge operators); a column family per
//! window means nothing is ever compacted (compaction would rewrite data that
//! is about to be thrown away) and dropping it deletes its files at once,
//! leaving no tombstones behind.
//!
//! Keys are `key_group (u16) | sensor_id (i32) | spill (u32)`, big-endian with
//! the sensor's sign bit flipped so that byte order is numeric order: a
//! key-group range is one contiguous key range within every window (what a
//! rescale cuts out of a snapshot), a window is read in (key group, sensor)
//! order by one forward scan, and the partials of one device are adjacent.
//! Values are encoded [`Accumulator`]s; merging is associative and
//! commutative, so the order partials are merged in does not matter.
//!
//! Nothing is compressed: the state is too short-lived to be worth the CPU.
//!
//! Checkpoints need no RocksDB checkpoint of their own: the files a window's
//! state consists of are exactly the spill files, which never change once
//! written. The store keeps a hard link to each (`files/`, next to the
//! database in `db/`) so that it can hand them to the checkpoint upload
//! under names of its own, and writes the in-memory part of a snapshot as
//! one more file of the same kind, which is not ingested (memory keeps
//! it). Restoring ingests the files of a checkpoint as spills.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use rocksdb::{
    BlockBasedOptions, Cache, DBCompressionType, IngestExternalFileOptions, Options, ReadOptions,
    SstFileWriter, DB,
};
use weir_common::aggregate::{codec, Accumulator};
use weir_common::keygroup::KeyGroupRange;

/// Key group and sensor: what names one device's state in a window.
const DEVICE_KEY_LEN: usize = 6;
const KEY_LEN: usize = DEVICE_KEY_LEN + 4;

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
    #[error("state store at {path}: {what}: {source}")]
    File {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{readings} readings of input {input} pre-aggregated by another worker arrived after \
         their window (ending {window_end} ms) closed at watermark {watermark} ms: they cannot be \
         written as late readings one by one. This is a bug in Weir; the job restarts from its \
         last checkpoint"
    )]
    LatePartials {
        input: u32,
        window_end: i64,
        watermark: i64,
        readings: u64,
    },
    #[error("pre-aggregated readings of input {input} from another worker: {problem}")]
    MalformedPartials { input: u32, problem: String },
    #[error("state store at {path}: window {end} has no column family")]
    NoWindow { path: PathBuf, end: i64 },
    #[error("state store at {path}: corrupt value under key {key:02x?}: {source}")]
    Corrupt {
        path: PathBuf,
        key: Vec<u8>,
        #[source]
        source: codec::CorruptState,
    },
}

/// Builds the key of (key group, sensor) within a window: where a scan for
/// that device starts.
#[inline]
pub fn device_key(key_group: u16, sensor_id: i32) -> [u8; DEVICE_KEY_LEN] {
    let mut k = [0u8; DEVICE_KEY_LEN];
    k[..2].copy_from_slice(&key_group.to_be_bytes());
    k[2..].copy_from_slice(&((sensor_id as u32) ^ (1 << 31)).to_be_bytes());
    k
}

/// The key of one spill's partial accumulator of a device.
#[inline]
fn partial_key(key_group: u16, sensor_id: i32, spill: u32) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    k[..DEVICE_KEY_LEN].copy_from_slice(&device_key(key_group, sensor_id));
    k[DEVICE_KEY_LEN..].copy_from_slice(&spill.to_be_bytes());
    k
}

/// The device of a partial's key.
pub fn parse_key(k: &[u8]) -> Option<(u16, i32)> {
    let k: &[u8; KEY_LEN] = k.try_into().ok()?;
    Some((
        u16::from_be_bytes([k[0], k[1]]),
        (u32::from_be_bytes([k[2], k[3], k[4], k[5]]) ^ (1 << 31)) as i32,
    ))
}

fn cf_name(window_end: i64) -> String {
    format!("w{window_end}")
}

/// One file of a window's state: a spill, a restored file, or the
/// in-memory part of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateFile {
    pub path: PathBuf,
    /// The spill number in its keys.
    pub spill: u32,
    pub bytes: u64,
    /// The key groups it has accumulators of.
    pub key_groups: KeyGroupRange,
    /// Part of the state in RocksDB (a spill or a restored file), which
    /// later checkpoints reference as long as its window is open; `false`
    /// for a snapshot of in-memory state, written anew for every checkpoint.
    pub lasting: bool,
}

/// The RocksDB instance of one window task.
pub struct StateStore {
    db: DB,
    path: PathBuf,
    /// Hard links to the files of each window's state, and snapshot files.
    files_dir: PathBuf,
    /// By window: the files its column family was made of.
    files: BTreeMap<i64, Vec<StateFile>>,
    /// Options of every window's column family (and of the files spilled
    /// into them).
    window_opts: Options,
    /// Windows that have a column family.
    windows: BTreeSet<i64>,
    /// Spills so far: numbers the spill files and the partials' keys.
    spills: u32,
    /// Files restored so far (names their links).
    restored: u64,
}

impl StateStore {
    /// Opens a fresh store at `path`, removing whatever an earlier run left
    /// there (state is restored from checkpoints, never from leftovers).
    pub fn open_fresh(path: &Path) -> Result<Self, StateError> {
        let dir_err = |source| StateError::Dir {
            path: path.to_owned(),
            source,
        };
        if path.exists() {
            std::fs::remove_dir_all(path).map_err(dir_err)?;
        }
        let (db_dir, files_dir) = (path.join("db"), path.join("files"));
        std::fs::create_dir_all(&db_dir).map_err(dir_err)?;
        std::fs::create_dir_all(&files_dir).map_err(dir_err)?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_max_background_jobs(1);
        let db = DB::open(&opts, &db_dir).map_err(|source| StateError::RocksDb {
            path: path.to_owned(),
            source,
        })?;
        Ok(StateStore {
            db,
            path: path.to_owned(),
            files_dir,
            files: BTreeMap::new(),
            window_opts: window_options(),
            windows: BTreeSet::new(),
            spills: 0,
            restored: 0,
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

    /// Writes partial accumulators of window `end`, which must come in
    /// ascending (key group, sensor) order, one per device, as one spill.
    /// Returns how many were written.
    pub fn spill<'a>(
        &mut self,
        end: i64,
        partials: impl IntoIterator<Item = (u16, i32, &'a Accumulator)>,
    ) -> Result<usize, StateError> {
        let Some(file) = self.write_new(true, partials)? else {
            return Ok(0);
        };
        let n = file.1;
        let ingested = self.files_dir.join(format!("ingest-{}.sst", file.0.spill));
        let link = std::fs::hard_link(&file.0.path, &ingested).map_err(|source| StateError::File {
            path: self.path.clone(),
            what: "cannot link a spill file",
            source,
        });
        if let Err(e) = link {
            let _ = std::fs::remove_file(&file.0.path);
            return Err(e);
        }
        self.ingest(end, &ingested)?;
        self.files.entry(end).or_default().push(file.0);
        Ok(n)
    }

    /// Writes partials as a new numbered file in `files/` (not ingested): a
    /// spill when `lasting`, else a snapshot of in-memory state. Returns the
    /// file and how many it holds, `None` when there were none.
    fn write_new<'a>(
        &mut self,
        lasting: bool,
        partials: impl IntoIterator<Item = (u16, i32, &'a Accumulator)>,
    ) -> Result<Option<(StateFile, usize)>, StateError> {
        // Unique within a window as long as a window sees fewer than 2^32
        // spills; each spill is a memory budget's worth of state.
        let spill = self.spills;
        self.spills = self.spills.wrapping_add(1);
        let prefix = if lasting { "spill" } else { "snap" };
        let path = self.files_dir.join(format!("{prefix}-{spill}.sst"));
        match self.write_file(&path, spill, partials) {
            Ok((0, _)) => {
                let _ = std::fs::remove_file(&path);
                Ok(None)
            }
            Ok((n, key_groups)) => {
                let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                Ok(Some((
                    StateFile {
                        path,
                        spill,
                        bytes,
                        key_groups,
                        lasting,
                    },
                    n,
                )))
            }
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// Ingests (moves) the SST `file` into window `end`'s column family.
    fn ingest(&mut self, end: i64, file: &Path) -> Result<(), StateError> {
        let name = cf_name(end);
        if !self.windows.contains(&end) {
            self.db
                .create_cf(&name, &self.window_opts)
                .map_err(|e| self.rocks(e))?;
            self.windows.insert(end);
        }
        let Some(cf) = self.db.cf_handle(&name) else {
            return Err(StateError::NoWindow {
                path: self.path.clone(),
                end,
            });
        };
        let mut ingest = IngestExternalFileOptions::default();
        ingest.set_move_files(true);
        let result = self
            .db
            .ingest_external_file_cf_opts(cf, &ingest, vec![file])
            .map_err(|e| self.rocks(e));
        if result.is_err() {
            let _ = std::fs::remove_file(file);
        }
        result
    }

    /// Writes the partials of window `end` that are in memory as a
    /// snapshot file (in ascending (key group, sensor) order, like a spill),
    /// which is not ingested: the caller uploads it, then deletes it.
    pub fn snapshot_file<'a>(
        &mut self,
        partials: impl IntoIterator<Item = (u16, i32, &'a Accumulator)>,
    ) -> Result<Option<StateFile>, StateError> {
        Ok(self.write_new(false, partials)?.map(|(f, _)| f))
    }

    /// Gathers the state of checkpoint `checkpoint` in a directory of its
    /// own: a hard link to every file of every window's state in RocksDB,
    /// and the snapshot files of in-memory state (moved there). Windows
    /// closing later delete their files; the links keep what the upload
    /// needs. Returns the directory and the files by window.
    pub fn stage(
        &mut self,
        checkpoint: u64,
        in_memory: Vec<(i64, StateFile)>,
    ) -> Result<(PathBuf, BTreeMap<i64, Vec<StateFile>>), StateError> {
        let dir = self.files_dir.join(format!("chk-{checkpoint}"));
        let err = |what, source| StateError::File {
            path: self.path.clone(),
            what,
            source,
        };
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| err("cannot clear a snapshot", e))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| err("cannot create a snapshot", e))?;
        let mut staged: BTreeMap<i64, Vec<StateFile>> = BTreeMap::new();
        for (&end, files) in &self.files {
            for f in files {
                let Some(name) = f.path.file_name() else {
                    continue;
                };
                let to = dir.join(name);
                std::fs::hard_link(&f.path, &to).map_err(|e| err("cannot link a state file", e))?;
                staged.entry(end).or_default().push(StateFile {
                    path: to,
                    ..f.clone()
                });
            }
        }
        for (end, f) in in_memory {
            let Some(name) = f.path.file_name() else {
                continue;
            };
            let to = dir.join(name);
            std::fs::rename(&f.path, &to).map_err(|e| err("cannot move a snapshot file", e))?;
            staged
                .entry(end)
                .or_default()
                .push(StateFile { path: to, ..f });
        }
        Ok((dir, staged))
    }

    /// Adds the state file `local` (from a checkpoint) to window `end`,
    /// moving it into the store. Its keys use spill number `spill`; later
    /// spills get higher numbers.
    pub fn restore_file(
        &mut self,
        end: i64,
        local: &Path,
        spill: u32,
        key_groups: KeyGroupRange,
    ) -> Result<StateFile, StateError> {
        let seq = self.restored;
        self.restored += 1;
        let path = self.files_dir.join(format!("restored-{seq}.sst"));
        std::fs::hard_link(local, &path).map_err(|source| StateError::File {
            path: self.path.clone(),
            what: "cannot link a restored file",
            source,
        })?;
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        self.ingest(end, local)?;
        self.spills = self.spills.max(spill.saturating_add(1));
        let file = StateFile {
            path,
            spill,
            bytes,
            key_groups,
            lasting: true,
        };
        self.files.entry(end).or_default().push(file.clone());
        Ok(file)
    }

    /// Writes the file; returns how many partials it holds and the key
    /// groups they are in.
    fn write_file<'a>(
        &self,
        file: &Path,
        spill: u32,
        partials: impl IntoIterator<Item = (u16, i32, &'a Accumulator)>,
    ) -> Result<(usize, KeyGroupRange), StateError> {
        let mut writer = SstFileWriter::create(&self.window_opts);
        writer.open(file).map_err(|e| self.rocks(e))?;
        let mut buf = Vec::with_capacity(400);
        let mut n = 0;
        let (mut first, mut last) = (u16::MAX, 0u16);
        for (key_group, sensor, acc) in partials {
            buf.clear();
            codec::encode(acc, &mut buf);
            writer
                .put(partial_key(key_group, sensor, spill), &buf)
                .map_err(|e| self.rocks(e))?;
            first = first.min(key_group);
            last = last.max(key_group);
            n += 1;
        }
        if n == 0 {
            return Ok((0, KeyGroupRange { start: 0, end: 0 }));
        }
        writer.finish().map_err(|e| self.rocks(e))?;
        Ok((
            n,
            KeyGroupRange {
                start: first,
                end: last.saturating_add(1),
            },
        ))
    }

    /// Whether window `end` has state here.
    pub fn has_window(&self, end: i64) -> bool {
        self.windows.contains(&end)
    }

    /// Reads the accumulators of up to `max` devices of window `end` in
    /// `range`, in key order (key group, then sensor), each with its
    /// partials merged, starting after device `after` (from the beginning
    /// if `None`), calling `f(key_group, sensor, accumulator)` for each.
    /// Returns the last device read when it stopped at `max` (more may
    /// follow: pass it as `after`), `None` when the window is read. Holds no
    /// iterator between calls, so a window of any size is read in bounded
    /// memory.
    pub fn read_window(
        &self,
        range: KeyGroupRange,
        end: i64,
        after: Option<(u16, i32)>,
        max: usize,
        mut f: impl FnMut(u16, i32, Accumulator),
    ) -> Result<Option<(u16, i32)>, StateError> {
        let Some(cf) = self.db.cf_handle(&cf_name(end)) else {
            return Ok(None);
        };
        let from = match after {
            None => device_key(range.start, i32::MIN),
            Some((kg, sensor)) => match sensor.checked_add(1) {
                Some(next) => device_key(kg, next),
                None => match kg.checked_add(1) {
                    Some(next) => device_key(next, i32::MIN),
                    None => return Ok(None),
                },
            },
        };
        let mut read_opts = ReadOptions::default();
        read_opts.set_iterate_upper_bound(device_key(range.end, i32::MIN).to_vec());
        // Each value is read once, when its window closes, then dropped.
        read_opts.fill_cache(false);
        let mut it = self.db.raw_iterator_cf_opt(cf, read_opts);
        it.seek(from);
        let mut n = 0;
        let mut current: Option<(u16, i32, Accumulator)> = None;
        while let (Some(key), Some(value)) = (it.key(), it.value()) {
            let corrupt = |source| StateError::Corrupt {
                path: self.path.clone(),
                key: key.to_vec(),
                source,
            };
            let Some((kg, sensor)) = parse_key(key) else {
                return Err(corrupt(codec::CorruptState::Truncated));
            };
            let partial = codec::decode(value).map_err(corrupt)?;
            match &mut current {
                Some((ckg, cs, acc)) if (*ckg, *cs) == (kg, sensor) => acc.merge(&partial),
                _ => {
                    if let Some((ckg, cs, acc)) = current.take() {
                        f(ckg, cs, acc);
                        n += 1;
                        if n >= max {
                            // `partial` starts the next device: read again
                            // from there next time.
                            return Ok(Some((ckg, cs)));
                        }
                    }
                    current = Some((kg, sensor, partial));
                }
            }
            it.next();
        }
        it.status().map_err(|e| self.rocks(e))?;
        if let Some((kg, sensor, acc)) = current {
            f(kg, sensor, acc);
        }
        Ok(None)
    }

    /// Deletes window `end` with all its files.
    pub fn drop_window(&mut self, end: i64) -> Result<(), StateError> {
        for f in self.files.remove(&end).unwrap_or_default() {
            // A checkpoint upload may still read it: it holds its own handle
            // once it opened it, and a file it could not open is a failed
            // upload, not lost state (the window is closed and written).
            let _ = std::fs::remove_file(&f.path);
        }
        if self.windows.remove(&end) {
            self.db.drop_cf(&cf_name(end)).map_err(|e| self.rocks(e))?;
        }
        Ok(())
    }

    /// Windows with state here, oldest first.
    pub fn windows(&self) -> impl Iterator<Item = i64> + '_ {
        self.windows.iter().copied()
    }
}

/// Options of a window's column family and of its spill files: no
/// compression, no compaction (a window's files are read once and dropped
/// with it), and no write stalls for the number of files a large window
/// gathers. The block cache holds index blocks; data blocks are read once.
fn window_options() -> Options {
    let mut opts = Options::default();
    opts.set_compression_type(DBCompressionType::None);
    opts.set_disable_auto_compactions(true);
    opts.set_level_zero_slowdown_writes_trigger(-1);
    opts.set_level_zero_stop_writes_trigger(i32::MAX);
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(&Cache::new_lru_cache(8 << 20));
    table.set_block_size(32 << 10);
    opts.set_block_based_table_factory(&table);
    opts
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_common::reading::Reading;

    #[test]
    fn keys_sort_numerically_and_round_trip() {
        let samples = [
            (0u16, i32::MIN, 0u32),
            (0, -5, 3),
            (0, -5, 4),
            (0, 0, 0),
            (0, 7, u32::MAX),
            (1, i32::MIN, 0),
            (1, 0, 1),
            (127, i32::MAX, 2),
        ];
        let keys: Vec<[u8; KEY_LEN]> = samples
            .iter()
            .map(|&(a, b, c)| partial_key(a, b, c))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        for (&(kg, sensor, _), k) in samples.iter().zip(&keys) {
            assert_eq!(parse_key(k), Some((kg, sensor)));
            assert!(k.starts_with(&device_key(kg, sensor)));
        }
        assert_eq!(parse_key(&[0, 1, 2]), None);
    }

    fn acc(temp: f64, ts: i64) -> Accumulator {
        Accumulator::new(&Reading {
            temperature: temp,
            timestamp_ms: ts,
            ..Reading::default()
        })
    }

    /// Reads window `end` of `range` in chunks of `chunk` devices.
    fn read(
        store: &StateStore,
        range: KeyGroupRange,
        end: i64,
        chunk: usize,
    ) -> Vec<(u16, i32, Accumulator)> {
        let mut got = Vec::new();
        let mut after = None;
        loop {
            let before = got.len();
            after = store
                .read_window(range, end, after, chunk, |kg, id, a| got.push((kg, id, a)))
                .expect("read");
            assert!(got.len() - before <= chunk);
            if after.is_none() {
                break;
            }
        }
        got
    }

    #[test]
    fn merges_spilled_partials_and_drops_windows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = StateStore::open_fresh(&dir.path().join("state")).expect("opens");
        let (a1, a2, b) = (acc(10.0, 5), acc(20.0, 1), acc(7.0, 3));
        store.spill(60_000, [(3, 1, &a1)]).expect("spill");
        store.spill(120_000, [(3, 1, &b)]).expect("spill");
        store
            .spill(60_000, [(3, 1, &a2), (9, 2, &b)])
            .expect("spill");
        assert_eq!(store.windows().collect::<Vec<_>>(), vec![60_000, 120_000]);
        let got = read(&store, KeyGroupRange { start: 0, end: 8 }, 60_000, 10);
        assert_eq!(got.len(), 1, "key group 9 is outside the range");
        let (kg, id, merged) = &got[0];
        assert_eq!((*kg, *id), (3, 1));
        assert_eq!(merged.count, 2);
        assert_eq!(merged.temperature.sum, 30.0);
        assert_eq!(merged.earliest.timestamp_ms, 1);
        // Dropped windows are gone with their files; others stay.
        store.drop_window(60_000).expect("drop");
        assert!(!store.has_window(60_000));
        assert!(read(&store, KeyGroupRange::all(128), 60_000, 10).is_empty());
        let later: Vec<(i32, u64)> = read(&store, KeyGroupRange::all(128), 120_000, 10)
            .into_iter()
            .map(|(_, id, a)| (id, a.count))
            .collect();
        assert_eq!(later, vec![(1, 1)]);
        store.drop_window(120_000).expect("drop");
        assert_eq!(store.windows().count(), 0);
        let sst = std::fs::read_dir(dir.path().join("state"))
            .expect("dir")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sst"))
            })
            .count();
        assert_eq!(sst, 0, "dropped windows leave no files");
    }

    /// Chunked reads return every device of the window once, in key order,
    /// with all its partials merged, whatever the chunk size, and nothing of
    /// other windows or key groups.
    #[test]
    fn windows_are_read_in_chunks_in_key_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = StateStore::open_fresh(&dir.path().join("state")).expect("opens");
        let a = acc(1.0, 1);
        let sensors = [i32::MIN, -7, 0, 5, 6, i32::MAX];
        for spill in 0..3 {
            let mut partials = Vec::new();
            for kg in [0u16, 2, 3, 127] {
                // Every third device misses the middle spill.
                for (i, &s) in sensors.iter().enumerate() {
                    if spill != 1 || i % 3 != 0 {
                        partials.push((kg, s, &a));
                    }
                }
            }
            store.spill(60_000, partials).expect("spill");
            store.spill(120_000, [(2, 1, &a)]).expect("spill");
        }
        let mut want: Vec<(u16, i32, u64)> = Vec::new();
        for kg in [2u16, 3] {
            for (i, &s) in sensors.iter().enumerate() {
                want.push((kg, s, if i % 3 == 0 { 2 } else { 3 }));
            }
        }
        for chunk in [1, 2, 5, 6, 7, 100] {
            let got: Vec<(u16, i32, u64)> =
                read(&store, KeyGroupRange { start: 1, end: 4 }, 60_000, chunk)
                    .into_iter()
                    .map(|(kg, s, a)| (kg, s, a.count))
                    .collect();
            assert_eq!(got, want, "chunks of {chunk}");
        }
    }

    /// Partials must come in key order; a spill that breaks it fails with
    /// RocksDB's words and leaves no file behind.
    #[test]
    fn unordered_spills_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = StateStore::open_fresh(&dir.path().join("state")).expect("opens");
        let a = acc(1.0, 1);
        let err = store
            .spill(60_000, [(3, 5, &a), (3, 1, &a)])
            .expect_err("out of order");
        assert!(err.to_string().contains("state store at"), "{err}");
        assert!(!dir.path().join("state/spill-0.sst").exists());
        assert_eq!(store.spill(60_000, []).expect("empty"), 0);
        assert!(!store.has_window(60_000));
    }

    #[test]
    fn opening_fresh_discards_leftovers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state");
        {
            let mut store = StateStore::open_fresh(&path).expect("opens");
            store.spill(60_000, [(0, 1, &acc(1.0, 1))]).expect("spill");
        }
        let store = StateStore::open_fresh(&path).expect("reopens");
        assert!(!store.has_window(60_000));
        assert!(read(&store, KeyGroupRange::all(128), 60_000, 10).is_empty());
    }

    #[test]
    fn unusable_directory_is_a_clear_error() {
        let err = StateStore::open_fresh(Path::new("/proc/weir-state"))
            .err()
            .expect("fails");
        assert!(err.to_string().contains("/proc/weir-state"), "{err}");
    }
}
