//! Output files made visible one epoch at a time (Flink's FileSink
//! pattern).
//!
//! A task writes an epoch's lines of one output to a hidden in-progress file
//! in the output directory. When the epoch commits (its checkpoint has
//! completed) the file is renamed to its part name, `part-<epoch>-kg<start>-
//! <end>.jsonl` — an atomic step, so a reader sees an epoch's lines whole or
//! not at all. The part name depends only on the epoch and the key groups of
//! the task that staged it, so whoever commits the epoch again after a
//! failure (another generation, another worker) finds the part there and
//! does nothing: every line is in the output exactly once. Epoch numbers are
//! zero-padded, so a directory listing is in output order.
//!
//! Parts are only ever replaced whole: a new run of a job (one that does not
//! resume an earlier one) removes the parts it would replace before it
//! starts, and a part of the same name renamed over an old one replaces it
//! atomically.

use std::io;
use std::path::{Path, PathBuf};

use super::SinkError;
use crate::keygroup::KeyGroupRange;

const IN_PROGRESS: &str = ".inprogress";

/// The committed part of `epoch` staged by the task of `key_groups`.
pub fn part_path(dir: &Path, epoch: u64, key_groups: KeyGroupRange) -> PathBuf {
    dir.join(format!(
        "part-{epoch:012}-kg{}-{}.jsonl",
        key_groups.start, key_groups.end
    ))
}

/// A hidden in-progress file of generation `generation`'s task of
/// `key_groups`; `seq` tells its files apart (the epoch number is not known
/// until the epoch's barrier arrives).
pub fn in_progress_path(
    dir: &Path,
    generation: u64,
    key_groups: KeyGroupRange,
    seq: u64,
) -> PathBuf {
    dir.join(format!(
        ".part-g{generation}-kg{}-{}-{seq}.jsonl{IN_PROGRESS}",
        key_groups.start, key_groups.end
    ))
}

fn io_error(path: &Path, source: io::Error) -> SinkError {
    SinkError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Makes the in-progress file `staged` (already synced) visible as `part`,
/// replacing any file of that name. The directory is synced, so the rename
/// survives a crash.
pub fn commit_part(staged: &Path, part: &Path) -> Result<(), SinkError> {
    std::fs::rename(staged, part).map_err(|e| io_error(part, e))?;
    sync_dir(part)
}

/// Syncs the directory holding `path` (its entries: a new or renamed file).
pub fn sync_dir(path: &Path) -> Result<(), SinkError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, e))
}

/// Removes the in-progress files in `dir` that another generation's task
/// left there and that are now this task's to clean up: those of
/// generations other than `generation` whose key groups start in `mine`
/// (so that of several workers, exactly one removes each). Their epochs
/// were never committed from them: a committed epoch's file was renamed,
/// and an epoch a checkpoint holds is committed again from the
/// checkpoint's copy.
pub fn remove_stale_in_progress(
    dir: &Path,
    generation: u64,
    mine: KeyGroupRange,
) -> Result<usize, SinkError> {
    remove_where(dir, |name| {
        parse_in_progress(name).is_some_and(|(g, start)| g != generation && mine.contains(start))
    })
}

/// Removes the parts in `dir` whose key groups start in `mine`: a new run
/// of the job replaces the output of earlier ones.
pub fn remove_parts(dir: &Path, mine: KeyGroupRange) -> Result<usize, SinkError> {
    remove_where(dir, |name| {
        parse_part(name).is_some_and(|start| mine.contains(start))
    })
}

fn remove_where(dir: &Path, doomed: impl Fn(&str) -> bool) -> Result<usize, SinkError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_error(dir, e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        if !entry.file_name().to_str().is_some_and(&doomed) {
            continue;
        }
        let path = entry.path();
        match std::fs::remove_file(&path) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&path, e)),
        }
    }
    Ok(removed)
}

/// `part-<epoch>-kg<start>-<end>.jsonl` → start.
fn parse_part(name: &str) -> Option<u16> {
    let rest = name.strip_prefix("part-")?.strip_suffix(".jsonl")?;
    let (_, rest) = rest.split_once("-kg")?;
    let (start, _) = rest.split_once('-')?;
    start.parse().ok()
}

/// `.part-g<gen>-kg<start>-<end>-<seq>.jsonl.inprogress` → (gen, start).
fn parse_in_progress(name: &str) -> Option<(u64, u16)> {
    let rest = name.strip_prefix(".part-g")?.strip_suffix(IN_PROGRESS)?;
    let (g, rest) = rest.split_once("-kg")?;
    let (start, _) = rest.split_once('-')?;
    Some((g.parse().ok()?, start.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kg(start: u16, end: u16) -> KeyGroupRange {
        KeyGroupRange { start, end }
    }

    #[test]
    fn a_part_appears_whole_and_replaces_an_older_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let part = part_path(dir.path(), 7, kg(0, 64));
        assert!(part.ends_with("part-000000000007-kg0-64.jsonl"));
        let staged = in_progress_path(dir.path(), 3, kg(0, 64), 1);
        std::fs::write(&staged, "a\n").expect("write");
        commit_part(&staged, &part).expect("commit");
        assert_eq!(std::fs::read_to_string(&part).expect("read"), "a\n");
        assert!(!staged.exists());
        let again = in_progress_path(dir.path(), 4, kg(0, 64), 1);
        std::fs::write(&again, "b\n").expect("write");
        commit_part(&again, &part).expect("commit");
        assert_eq!(std::fs::read_to_string(&part).expect("read"), "b\n");
    }

    #[test]
    fn a_new_run_removes_the_parts_it_owns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = part_path(dir.path(), 1, kg(0, 64));
        let b = part_path(dir.path(), 1, kg(64, 128));
        let other = dir.path().join("notes.txt");
        for p in [&a, &b, &other] {
            std::fs::write(p, "x\n").expect("write");
        }
        assert_eq!(remove_parts(dir.path(), kg(0, 32)).expect("remove"), 1);
        assert!(!a.exists() && b.exists() && other.exists());
    }

    #[test]
    fn stale_in_progress_files_are_removed_by_the_owner_of_their_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old_a = in_progress_path(dir.path(), 2, kg(0, 64), 5);
        let old_b = in_progress_path(dir.path(), 2, kg(64, 128), 5);
        // A leftover of an earlier run, whose generations counted higher.
        let earlier_run = in_progress_path(dir.path(), 9, kg(16, 32), 5);
        let current = in_progress_path(dir.path(), 3, kg(0, 32), 1);
        let part = part_path(dir.path(), 1, kg(0, 64));
        for p in [&old_a, &old_b, &earlier_run, &current, &part] {
            std::fs::write(p, "x\n").expect("write");
        }
        assert_eq!(
            remove_stale_in_progress(dir.path(), 3, kg(0, 32)).expect("clean"),
            2
        );
        assert!(!old_a.exists() && !earlier_run.exists());
        assert!(old_b.exists() && current.exists() && part.exists());
        assert_eq!(
            remove_stale_in_progress(&dir.path().join("missing"), 3, kg(0, 32)).expect("clean"),
            0
        );
    }
}
