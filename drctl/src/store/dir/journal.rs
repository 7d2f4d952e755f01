//! Run journals in the directory backend: `runs/RUN/journal.jsonl`,
//! appended with one `write(2)` per batch under `O_APPEND`, each batch
//! conditional on the writer's lease and record count, a torn tail cut only
//! on request. Separate from the lease and document code because it alone
//! keeps open handles and record counts between calls.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use super::files::{fsync_dir, io, Flock};
use super::{Inner, JournalChunk, Lease, StoreError};

pub(super) struct OpenJournal {
    file: File,
    records: u64,
    len: u64,
    /// The file ended in an incomplete line when it was read: appending
    /// would turn the torn bytes into a corrupt record.
    torn: bool,
}

impl Inner {
    /// The open handle of a journal, counting its records on first use.
    pub(super) fn journal_handle<'a>(
        &self,
        open: &'a mut HashMap<String, OpenJournal>,
        run_id: &str,
    ) -> Result<&'a mut OpenJournal, StoreError> {
        let path = self.journal_path(run_id);
        let stale = match open.get(run_id) {
            Some(j) => j.file.metadata().map(|m| m.len()).ok() != Some(j.len),
            None => true,
        };
        if stale {
            let mut file = match OpenOptions::new().read(true).append(true).open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(StoreError::RunNotFound(run_id.to_string()))
                }
                Err(e) => return Err(io("open journal", &path)(e)),
            };
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)
                .map_err(io("read journal", &path))?;
            let records = bytes.iter().filter(|b| **b == b'\n').count() as u64;
            let len = bytes.len() as u64;
            let torn = bytes.last().is_some_and(|b| *b != b'\n');
            open.insert(
                run_id.to_string(),
                OpenJournal {
                    file,
                    records,
                    len,
                    torn,
                },
            );
        }
        open.get_mut(run_id)
            .ok_or_else(|| StoreError::RunNotFound(run_id.to_string()))
    }

    pub(super) fn append(
        &self,
        run_id: &str,
        lease: &Lease,
        seq: u64,
        lines: &[Vec<u8>],
    ) -> Result<(), StoreError> {
        let _lock = Flock::take(&self.lock_path(&lease.name), false)?;
        self.check_lease(lease)?;
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.journal_path(run_id);
        // Known from when the handle was (re)read: every append of ours
        // ends in a newline, so the last byte needs no read per record.
        let j = self.journal_handle(&mut open, run_id)?;
        if j.torn {
            return Err(StoreError::Corrupt {
                path: path.display().to_string(),
                reason: "the journal ends in a torn record; resume repairs it".into(),
            });
        }
        if j.records != seq {
            return Err(StoreError::SeqConflict {
                run_id: run_id.to_string(),
                expected: seq,
                found: j.records,
            });
        }
        let mut buf = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for line in lines {
            buf.extend_from_slice(line);
            buf.push(b'\n');
        }
        // One write(2) per batch with O_APPEND: never interleaved, and a
        // torn tail after a crash is detectable.
        let res = j
            .file
            .write_all(&buf)
            .map_err(io("append to journal", &path))
            .and_then(|_| j.file.sync_data().map_err(io("fsync journal", &path)));
        match res {
            Ok(()) => {
                j.records += lines.len() as u64;
                j.len += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                // We no longer know what is on disk: recount next time.
                open.remove(run_id);
                Err(e)
            }
        }
    }

    pub(super) fn create(
        &self,
        run_id: &str,
        lease: &Lease,
        first: &[u8],
    ) -> Result<(), StoreError> {
        let _lock = Flock::take(&self.lock_path(&lease.name), false)?;
        self.check_lease(lease)?;
        let dir = self.run_dir(run_id);
        fs::create_dir_all(&dir).map_err(io("create run directory", &dir))?;
        let path = self.journal_path(run_id);
        let mut file = match OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StoreError::RunExists(run_id.to_string()))
            }
            Err(e) => return Err(io("create journal", &path)(e)),
        };
        let mut buf = first.to_vec();
        buf.push(b'\n');
        file.write_all(&buf)
            .map_err(io("append to journal", &path))?;
        file.sync_data().map_err(io("fsync journal", &path))?;
        fsync_dir(&dir)?;
        fsync_dir(&self.root.join("runs"))?;
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.insert(
            run_id.to_string(),
            OpenJournal {
                file,
                records: 1,
                len: buf.len() as u64,
                torn: false,
            },
        );
        Ok(())
    }

    pub(super) fn repair(
        &self,
        run_id: &str,
        lease: &Lease,
        complete_len: u64,
    ) -> Result<u64, StoreError> {
        let _lock = Flock::take(&self.lock_path(&lease.name), false)?;
        self.check_lease(lease)?;
        let path = self.journal_path(run_id);
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io("open journal", &path))?;
        let len = file.metadata().map_err(io("stat journal", &path))?.len();
        if len <= complete_len {
            return Ok(0);
        }
        file.set_len(complete_len)
            .map_err(io("truncate journal", &path))?;
        file.sync_all().map_err(io("fsync journal", &path))?;
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.remove(run_id);
        Ok(len - complete_len)
    }

    /// The journal opened for reading, with its path (for errors).
    fn open_to_read(&self, run_id: &str) -> Result<(PathBuf, File), StoreError> {
        let path = self.journal_path(run_id);
        match File::open(&path) {
            Ok(f) => Ok((path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::RunNotFound(run_id.to_string()))
            }
            Err(e) => Err(io("read journal", &path)(e)),
        }
    }

    pub(super) fn read_from(&self, run_id: &str, cursor: u64) -> Result<JournalChunk, StoreError> {
        let (path, mut file) = self.open_to_read(run_id)?;
        file.seek(SeekFrom::Start(cursor))
            .map_err(io("read journal", &path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(io("read journal", &path))?;
        // Only complete records: a line being written is left for later.
        let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
        Ok(complete_lines(cursor, bytes, keep))
    }

    /// Up to `max_bytes` of complete lines from `cursor` (the whole next
    /// line when it alone is longer).
    pub(super) fn read_chunk(
        &self,
        run_id: &str,
        cursor: u64,
        max_bytes: usize,
    ) -> Result<JournalChunk, StoreError> {
        let (path, file) = self.open_to_read(run_id)?;
        let mut file = std::io::BufReader::new(file);
        file.seek(SeekFrom::Start(cursor))
            .map_err(io("read journal", &path))?;
        let mut bytes = Vec::with_capacity(max_bytes.min(1 << 20));
        let mut limited = (&mut file).take(max_bytes as u64);
        limited
            .read_to_end(&mut bytes)
            .map_err(io("read journal", &path))?;
        let mut keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
        if keep == 0 && bytes.len() == max_bytes {
            // One line longer than the bound: the whole line, if complete.
            file.read_until(b'\n', &mut bytes)
                .map_err(io("read journal", &path))?;
            keep = if bytes.last() == Some(&b'\n') {
                bytes.len()
            } else {
                0
            };
        }
        Ok(complete_lines(cursor, bytes, keep))
    }
}

/// The chunk read from `cursor`: the first `keep` bytes (complete lines);
/// when there are none, what was read counts as a torn tail.
fn complete_lines(cursor: u64, mut bytes: Vec<u8>, keep: usize) -> JournalChunk {
    let torn = if keep == 0 { bytes.len() } else { 0 };
    bytes.truncate(keep);
    JournalChunk {
        next: cursor + bytes.len() as u64,
        bytes,
        torn,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::DirStore;
    use crate::store::{HolderId, LeaseMode, Store};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_torn_tail_is_cut_at_every_byte_offset() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path()).unwrap();
        let holder = HolderId::this_process("torn");
        let lease = store
            .acquire_lease(
                "torn",
                LeaseMode::Exclusive,
                &holder,
                Duration::from_secs(60),
            )
            .await
            .unwrap()
            .lease;
        store
            .create_journal("r", &lease, b"{\"a\":0}")
            .await
            .unwrap();
        let line = b"{\"record\":\"one more, long enough to be torn anywhere\"}";
        let path = dir.path().join("runs/r/journal.jsonl");
        let good = std::fs::read(&path).unwrap();
        for k in 1..=line.len() {
            std::fs::write(&path, [&good[..], &line[..k]].concat()).unwrap();
            let cut = store
                .repair_torn_tail("r", &lease, good.len() as u64)
                .await
                .unwrap();
            assert_eq!(cut, k as u64);
            store.append_journal("r", &lease, 1, line).await.unwrap();
            let bytes = store.read_journal("r").await.unwrap();
            assert_eq!(bytes, [&good[..], &line[..], b"\n"].concat(), "torn at {k}");
            std::fs::write(&path, &good).unwrap();
        }
    }
}
