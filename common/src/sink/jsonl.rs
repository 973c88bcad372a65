//! Append-only JSON-lines files that stay whole when a write fails.
//!
//! Each append writes a whole batch at once (through an [`Appender`], which
//! keeps large outputs out of the page cache). If that fails (a full disk,
//! most often) the file is cut back to its length before the batch, so the
//! file never holds half a line and a retry of the batch writes it exactly
//! once.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::append::Appender;
use super::json::JsonLine;
use super::{SinkError, TableRows};
use crate::rows::Table;

/// Whether an I/O error may go away by itself (space freed, quota raised,
/// a transient device error) rather than needing an operator to fix paths
/// or permissions.
pub fn io_error_is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull
            | io::ErrorKind::QuotaExceeded
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut
    ) || matches!(e.raw_os_error(), Some(5)) // EIO
}

/// One JSON-lines file.
#[derive(Debug)]
pub struct JsonlFile {
    path: PathBuf,
    /// Writes at the end of the file; its length is up to the last whole
    /// batch.
    out: Appender,
    /// A failed append could not be rolled back yet.
    needs_rollback: bool,
}

/// How an output file starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Empty: a new run.
    Empty,
    /// After what it holds: a run that resumes an earlier one. A line that
    /// an interrupted write left unfinished is removed.
    Append,
}

impl JsonlFile {
    /// Creates (or empties) the file, creating its directory.
    pub fn create(path: &Path) -> Result<Self, SinkError> {
        Self::open(path, Start::Empty)
    }

    /// Opens the file for writing, creating it and its directory.
    pub fn open(path: &Path, start: Start) -> Result<Self, SinkError> {
        let io_err = |source| SinkError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io_err)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(start == Start::Empty)
            .open(path)
            .map_err(io_err)?;
        let len = match start {
            Start::Empty => 0,
            Start::Append => {
                let len = whole_lines_len(&mut file).map_err(io_err)?;
                file.set_len(len).map_err(io_err)?;
                len
            }
        };
        Ok(JsonlFile {
            path: path.to_owned(),
            out: Appender::new(file, path, len).map_err(io_err)?,
            needs_rollback: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line per output row, all or nothing.
    pub fn append_rows<T: JsonLine>(&mut self, rows: &[T]) -> Result<(), SinkError> {
        if rows.is_empty() {
            return Ok(());
        }
        self.rollback_if_needed().map_err(|e| self.io_error(e))?;
        let buf = self.out.begin();
        for row in rows {
            row.write_json_line(buf);
        }
        self.commit()
    }

    /// Appends one line per value (through serde), all or nothing.
    pub fn append<T: Serialize>(&mut self, rows: &[T]) -> Result<(), SinkError> {
        if rows.is_empty() {
            return Ok(());
        }
        self.rollback_if_needed().map_err(|e| self.io_error(e))?;
        let buf = self.out.begin();
        for row in rows {
            // Serializing plain row structs into a Vec cannot fail.
            serde_json::to_writer(&mut *buf, row).map_err(|e| SinkError::Io {
                path: self.path.clone(),
                source: io::Error::other(e),
            })?;
            buf.push(b'\n');
        }
        self.commit()
    }

    /// Appends whatever `encode` pushes onto the buffer it is given, all or
    /// nothing (for encodings other than JSON lines, such as staged rows).
    pub fn append_with(&mut self, encode: impl FnOnce(&mut Vec<u8>)) -> Result<(), SinkError> {
        self.rollback_if_needed().map_err(|e| self.io_error(e))?;
        encode(self.out.begin());
        self.commit()
    }

    /// Bytes in the file.
    pub fn len(&self) -> u64 {
        self.out.len()
    }

    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    fn commit(&mut self) -> Result<(), SinkError> {
        self.out.commit().map_err(|source| {
            self.needs_rollback = true;
            // Best effort now; retried before the next append otherwise.
            let _ = self.rollback_if_needed();
            self.io_error(source)
        })
    }

    fn io_error(&self, source: io::Error) -> SinkError {
        SinkError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn rollback_if_needed(&mut self) -> io::Result<()> {
        if self.needs_rollback {
            self.out.truncate()?;
            self.needs_rollback = false;
        }
        Ok(())
    }

    /// Forces written lines to disk.
    pub fn sync(&mut self) -> Result<(), SinkError> {
        self.out.sync().map_err(|source| SinkError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

/// Length of the file up to and including its last newline.
fn whole_lines_len(file: &mut File) -> io::Result<u64> {
    use std::io::Read;
    let mut end = file.seek(SeekFrom::End(0))?;
    let mut chunk = vec![0u8; 64 << 10];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk[..n])?;
        if let Some(i) = chunk[..n].iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// The JSONL sink: one `<table>.jsonl` per output table in a directory.
#[derive(Debug)]
pub struct JsonlWriter {
    files: Vec<(Table, JsonlFile)>,
}

impl JsonlWriter {
    /// Creates (empties) the files of `tables` under `dir`.
    pub fn create(dir: &Path, tables: &[Table]) -> Result<Self, SinkError> {
        Self::open(dir, tables, Start::Empty)
    }

    /// Opens the files of `tables` under `dir`.
    pub fn open(dir: &Path, tables: &[Table], start: Start) -> Result<Self, SinkError> {
        let files = tables
            .iter()
            .map(|t| {
                let path = dir.join(format!("{}.jsonl", t.default_name()));
                JsonlFile::open(&path, start).map(|f| (*t, f))
            })
            .collect::<Result<_, _>>()?;
        Ok(JsonlWriter { files })
    }

    /// Appends rows to their table's file, all or nothing.
    pub fn write(&mut self, rows: TableRows<'_>) -> Result<(), SinkError> {
        let table = rows.table();
        let Some((_, file)) = self.files.iter_mut().find(|(t, _)| *t == table) else {
            return Err(SinkError::Schema {
                table: table.default_name().to_owned(),
                problem: "the JSON-lines sink has no file for this table".into(),
            });
        };
        match rows {
            TableRows::SensorsLocal(r) => file.append_rows(r),
            TableRows::SensorAggregates(r) => file.append_rows(r),
            TableRows::LateReadings(r) => file.append_rows(r),
        }
    }

    pub fn sync(&mut self) -> Result<(), SinkError> {
        self.files.iter_mut().try_for_each(|(_, f)| f.sync())
    }

    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|(_, f)| f.path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Row {
        a: u32,
    }

    #[test]
    fn appends_whole_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/x.jsonl");
        let mut f = JsonlFile::create(&path).expect("create");
        f.append(&[Row { a: 1 }, Row { a: 2 }]).expect("append");
        f.append::<Row>(&[]).expect("empty append");
        f.append(&[Row { a: 3 }]).expect("append");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n"
        );
        // Re-creating empties the file.
        drop(f);
        JsonlFile::create(&path).expect("create");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "");
    }

    #[test]
    fn appending_continues_after_the_last_whole_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.jsonl");
        // An earlier run was killed in the middle of a line.
        std::fs::write(&path, "{\"a\":1}\n{\"a\":2}\n{\"a\":").expect("write");
        let mut f = JsonlFile::open(&path, Start::Append).expect("open");
        f.append(&[Row { a: 3 }]).expect("append");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n"
        );
        // A file without any whole line starts empty; a missing one is made.
        std::fs::write(&path, "{\"a").expect("write");
        drop(JsonlFile::open(&path, Start::Append).expect("open"));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "");
        let fresh = dir.path().join("new/y.jsonl");
        drop(JsonlFile::open(&fresh, Start::Append).expect("open"));
        assert!(fresh.exists());
    }

    /// /dev/full fails every write with ENOSPC: the error says so, is
    /// retryable, and names the file.
    #[test]
    fn full_disk_is_a_retryable_error_naming_the_file() {
        let Ok(file) = OpenOptions::new().write(true).open("/dev/full") else {
            return; // not on Linux
        };
        let mut f = JsonlFile {
            path: PathBuf::from("/dev/full"),
            out: Appender::buffered(file, 0),
            needs_rollback: false,
        };
        let err = f.append(&[Row { a: 1 }]).unwrap_err();
        assert!(err.is_retryable(), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("/dev/full") && text.contains("space"),
            "{text}"
        );
    }

    #[test]
    fn a_missing_directory_is_not_retryable() {
        let err = JsonlFile::create(Path::new("/proc/weir-cannot-exist/x.jsonl")).unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        assert!(err.to_string().contains("/proc/weir-cannot-exist"));
    }
}
