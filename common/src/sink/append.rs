//! Appending to a file without filling the page cache.
//!
//! Output files grow by gigabytes when a job has millions of devices, and
//! nothing reads them back while the job runs. Written through the page
//! cache, every new 4 KiB page must be allocated (and, on a virtual machine,
//! often faulted in from the host): on the benchmark VM that cost 2 to 3.5 s
//! of system time per GB, more than everything else the job does. Written
//! with `O_DIRECT`, the same bytes cost about 0.2 s per GB.
//!
//! `O_DIRECT` writes must start, end and sit in memory on block boundaries.
//! An [`Appender`] therefore writes every whole block of an append straight
//! to the device and the last, partial block through the page cache, and
//! keeps that partial block's bytes: the next append rewrites the block
//! whole, directly. The file always holds exactly the bytes appended, a
//! reader sees them all, and a file system that refuses `O_DIRECT` (tmpfs)
//! gets plain writes.
//!
//! Callers write an append straight into the appender's buffer
//! ([`Appender::begin`], then [`Appender::commit`]), placed so that the kept
//! partial block sits right before it on a block boundary: the bytes are
//! never copied again on their way to the device.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Alignment of direct writes: the largest logical block size in use.
const BLOCK: usize = 4096;

/// Appends bytes at the end of a file (see the module documentation).
#[derive(Debug)]
pub struct Appender {
    file: File,
    /// The same file opened with `O_DIRECT`, while the file system takes it.
    direct: Option<File>,
    len: u64,
    /// The file's bytes from the start of its last partial block.
    tail: Vec<u8>,
    /// The next append, after `head` bytes: alignment padding, then a copy
    /// of `tail`.
    buf: Vec<u8>,
    head: usize,
}

impl Appender {
    /// Appends to `file` (open for reading and writing, at `path`) after its
    /// first `len` bytes; whatever follows them is overwritten.
    pub fn new(file: File, path: &Path, len: u64) -> io::Result<Self> {
        let mut tail = vec![0u8; (len % BLOCK as u64) as usize];
        if !tail.is_empty() {
            let mut f = &file;
            f.seek(SeekFrom::Start(len - tail.len() as u64))?;
            f.read_exact(&mut tail)?;
        }
        Ok(Appender {
            direct: open_direct(path),
            file,
            len,
            tail,
            buf: Vec::new(),
            head: 0,
        })
    }

    /// A plain appender, as on a file system without `O_DIRECT`.
    pub fn buffered(file: File, len: u64) -> Self {
        Appender {
            file,
            direct: None,
            len,
            tail: Vec::new(),
            buf: Vec::new(),
            head: 0,
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether whole blocks go straight to the device.
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Appends `data` (see [`Appender::commit`]).
    pub fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.begin().extend_from_slice(data);
        self.commit()
    }

    /// The buffer to push the next append's bytes onto. Whatever it holds
    /// already belongs to the appender: push only.
    pub fn begin(&mut self) -> &mut Vec<u8> {
        self.buf.clear();
        if self.direct.is_some() {
            // Room so that the kept partial block starts on a boundary.
            let pad = (BLOCK - self.buf.as_ptr().addr() % BLOCK) % BLOCK;
            self.buf.resize(pad, 0);
            self.buf.extend_from_slice(&self.tail);
        }
        self.head = self.buf.len();
        &mut self.buf
    }

    /// Appends what was pushed since [`Appender::begin`]. On error the file
    /// may hold part of it beyond [`Appender::len`], which is unchanged:
    /// cut the file back to it ([`Appender::truncate`]) before appending
    /// again.
    pub fn commit(&mut self) -> io::Result<()> {
        let added = self.buf.len() - self.head;
        let Some(direct) = &self.direct else {
            self.file.write_all_at(&self.buf[self.head..], self.len)?;
            self.len += added as u64;
            return Ok(());
        };
        // From the kept partial block on.
        let mut start = self.head - self.tail.len();
        if !self.buf[start..].as_ptr().addr().is_multiple_of(BLOCK) {
            // The buffer grew, and moved, while it was filled: shift it onto
            // a boundary once (reserving first, so that it moves no more).
            self.buf.reserve(BLOCK);
            let shift = (BLOCK - self.buf[start..].as_ptr().addr() % BLOCK) % BLOCK;
            let end = self.buf.len();
            self.buf.resize(end + shift, 0);
            self.buf.copy_within(start..end, start + shift);
            start += shift;
            self.head += shift;
        }
        let block_start = self.len - self.tail.len() as u64;
        let whole = (self.buf.len() - start) / BLOCK * BLOCK;
        if whole > 0 {
            match direct.write_all_at(&self.buf[start..start + whole], block_start) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    // Not on this file system after all: plain writes from now.
                    tracing::debug!(error = %e, "O_DIRECT refused; writing through the page cache");
                    self.direct = None;
                    self.tail.clear();
                    return self.commit();
                }
                Err(e) => return Err(e),
            }
        }
        let rest_at = (start + whole).max(self.head);
        self.file
            .write_all_at(&self.buf[rest_at..], block_start + (rest_at - start) as u64)?;
        self.tail.clear();
        self.tail.extend_from_slice(&self.buf[start + whole..]);
        self.len += added as u64;
        Ok(())
    }

    /// Cuts the file back to [`Appender::len`] (after a failed append).
    pub fn truncate(&mut self) -> io::Result<()> {
        self.file.set_len(self.len)
    }

    /// Forces what was appended to disk.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_path: &Path) -> Option<File> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(path: &Path) -> File {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .expect("open")
    }

    /// Appends of every size, across block boundaries (and growing the
    /// buffer while it is filled), leave exactly the bytes appended, directly
    /// or not, and a reopened file continues after its partial block.
    #[test]
    fn the_file_holds_exactly_what_was_appended() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sizes = [
            1usize, 4095, 1, 4096, 10_000, 0, 3, 8192, 70_000, 5, 300_000, 7,
        ];
        for direct in [true, false] {
            let path = dir.path().join(format!("out-{direct}"));
            let mut want = Vec::new();
            let mut a = if direct {
                Appender::new(open(&path), &path, 0).expect("appender")
            } else {
                Appender::buffered(open(&path), 0)
            };
            assert_eq!(a.is_direct(), direct && cfg!(target_os = "linux"));
            for (i, &n) in sizes.iter().enumerate() {
                let data: Vec<u8> = (0..n).map(|j| (i * 31 + j) as u8).collect();
                a.append(&data).expect("append");
                want.extend_from_slice(&data);
                assert_eq!(
                    std::fs::read(&path).expect("read"),
                    want,
                    "after append {i}"
                );
                assert_eq!(a.len(), want.len() as u64);
            }
            drop(a);
            let mut a = Appender::new(open(&path), &path, want.len() as u64).expect("reopen");
            a.append(b"more").expect("append");
            want.extend_from_slice(b"more");
            assert_eq!(std::fs::read(&path).expect("read"), want);
        }
    }

    /// On tmpfs (which takes `O_DIRECT` only since Linux 6.6) the result
    /// is the same, whichever way the appender writes.
    #[test]
    fn appends_on_tmpfs_hold_what_was_appended() {
        let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
            return; // no tmpfs here
        };
        let path = dir.path().join("out");
        let mut a = Appender::new(open(&path), &path, 0).expect("appender");
        a.append(&[1u8; 5000]).expect("append");
        a.append(b"23").expect("append");
        let got = std::fs::read(&path).expect("read");
        assert_eq!((got.len(), &got[4999..]), (5002, &b"\x0123"[..]));
    }

    #[test]
    fn truncate_cuts_back_to_what_was_appended() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out");
        let mut a = Appender::new(open(&path), &path, 0).expect("appender");
        a.append(&[7u8; 5000]).expect("append");
        a.file()
            .write_all_at(b"partial garbage", 5000)
            .expect("write");
        a.truncate().expect("truncate");
        a.append(b"x").expect("append");
        let got = std::fs::read(&path).expect("read");
        assert_eq!(got.len(), 5001);
        assert_eq!(got[5000], b'x');
    }
}
