//! Staged rows: an epoch's output for ClickHouse, kept in a local file from
//! the moment the window task emits it until the epoch commits.
//!
//! Rows reach ClickHouse only after the checkpoint of their epoch has
//! completed, and a recovery commits them again from the checkpoint's copy
//! of this file — never recomputed — so a reading's fate (which window, or
//! late) is decided once. The file is a sequence of records, each a
//! little-endian `u32` length and the row in postcard (serde) encoding:
//! compact, and read back without parsing text. Batches are appended whole
//! (a failed append is cut back, see [`JsonlFile`]), so a retry after a full
//! disk stages each row once.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::jsonl::JsonlFile;
use super::SinkError;

/// Appends rows to a staged file.
#[derive(Debug)]
pub struct StagedRowsWriter {
    file: JsonlFile,
    rows: u64,
}

impl StagedRowsWriter {
    /// Creates (or empties) the file.
    pub fn create(path: &Path) -> Result<Self, SinkError> {
        Ok(StagedRowsWriter {
            file: JsonlFile::create(path)?,
            rows: 0,
        })
    }

    /// Appends `rows`, all or nothing.
    pub fn append<T: Serialize>(&mut self, rows: &[T]) -> Result<(), SinkError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut failed = None;
        self.file.append_with(|buf| {
            for row in rows {
                let at = buf.len();
                buf.extend_from_slice(&[0; 4]);
                // Into a Vec, only a row type serde cannot encode fails.
                if let Err(e) = postcard::to_io(row, &mut *buf) {
                    failed = Some(e);
                    return;
                }
                let len = u32::try_from(buf.len() - at - 4).unwrap_or(u32::MAX);
                buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
            }
        })?;
        if let Some(e) = failed {
            return Err(SinkError::Io {
                path: self.file.path().to_owned(),
                source: io::Error::other(format!("cannot encode a row: {e}")),
            });
        }
        self.rows += rows.len() as u64;
        Ok(())
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Forces the file to disk; returns its rows and bytes.
    pub fn finish(mut self) -> Result<(u64, u64), SinkError> {
        self.file.sync()?;
        Ok((self.rows, self.file.len()))
    }
}

/// Reads a staged file back, a batch at a time.
pub struct StagedRowsReader {
    path: PathBuf,
    reader: BufReader<File>,
    buf: Vec<u8>,
}

impl StagedRowsReader {
    pub fn open(path: &Path) -> Result<Self, SinkError> {
        let file = File::open(path).map_err(|source| SinkError::Io {
            path: path.to_owned(),
            source,
        })?;
        Ok(StagedRowsReader {
            path: path.to_owned(),
            reader: BufReader::with_capacity(1 << 20, file),
            buf: Vec::new(),
        })
    }

    /// Replaces `out` with the next (up to) `max` rows; `Ok(0)` at the end.
    pub fn read<T: DeserializeOwned>(
        &mut self,
        max: usize,
        out: &mut Vec<T>,
    ) -> Result<usize, SinkError> {
        out.clear();
        while out.len() < max {
            let mut len = [0u8; 4];
            match read_full(&mut self.reader, &mut len) {
                Ok(0) => break,
                Ok(4) => {}
                Ok(_) => return Err(self.corrupt("a record's length is cut off")),
                Err(e) => return Err(self.io(e)),
            }
            let len = u32::from_le_bytes(len) as usize;
            self.buf.resize(len, 0);
            self.reader.read_exact(&mut self.buf).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    self.corrupt("a record is cut off")
                } else {
                    self.io(e)
                }
            })?;
            let row = postcard::from_bytes(&self.buf)
                .map_err(|e| self.corrupt(&format!("a record does not decode: {e}")))?;
            out.push(row);
        }
        Ok(out.len())
    }

    fn io(&self, source: io::Error) -> SinkError {
        SinkError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// A damaged file: not something a retry can fix.
    fn corrupt(&self, what: &str) -> SinkError {
        self.io(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("staged rows are damaged: {what}"),
        ))
    }
}

/// Reads until `buf` is full or the input ends; how many bytes were read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::ShortStr;
    use crate::rows::{LateReadingRow, SensorAggregatesRow};

    fn late(i: u32) -> LateReadingRow {
        LateReadingRow {
            device_id: ShortStr::new(&format!("sensor_{i}")),
            event_time: i,
            timestamp_ms: i64::from(i) * 1000,
            window_end: 60,
            watermark_ms: -5,
            source: "p0".into(),
            position: format!("{i}:0"),
            reading: "{\"a\":\"\\u00e9\"}".into(),
        }
    }

    #[test]
    fn rows_come_back_as_written_in_batches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("e1.rows");
        let mut w = StagedRowsWriter::create(&path).expect("create");
        let rows: Vec<_> = (0..1000).map(late).collect();
        w.append(&rows[..10]).expect("append");
        w.append::<LateReadingRow>(&[]).expect("empty");
        w.append(&rows[10..]).expect("append");
        assert_eq!(w.finish().expect("finish").0, 1000);
        let mut r = StagedRowsReader::open(&path).expect("open");
        let mut back = Vec::new();
        let mut all = Vec::new();
        while r.read::<LateReadingRow>(300, &mut back).expect("read") > 0 {
            assert!(back.len() <= 300);
            all.append(&mut back);
        }
        assert_eq!(all, rows);
    }

    #[test]
    fn a_cut_off_file_is_a_damaged_file_not_fewer_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("e1.rows");
        let mut w = StagedRowsWriter::create(&path).expect("create");
        w.append(&[late(1), late(2)]).expect("append");
        let (_, bytes) = w.finish().expect("finish");
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        f.set_len(bytes - 3).expect("cut");
        let mut r = StagedRowsReader::open(&path).expect("open");
        let err = r.read::<LateReadingRow>(10, &mut Vec::new()).unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        assert!(err.to_string().contains("damaged"), "{err}");
        // The wrong row type is caught too, not read as garbage rows.
        let mut w = StagedRowsWriter::create(&path).expect("create");
        w.append(&[late(1)]).expect("append");
        w.finish().expect("finish");
        let mut r = StagedRowsReader::open(&path).expect("open");
        assert!(r.read::<SensorAggregatesRow>(10, &mut Vec::new()).is_err());
    }
}
