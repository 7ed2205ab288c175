//! The tee under the tar parser: every byte of the uncompressed stream goes
//! into the diff-id hash, and, while the parser is between entries (reading
//! headers, padding, end blocks), into the current tar-split segment.
//!
//! The hashing and the tar-split records run on a worker thread fed through
//! a bounded channel: the sha256 of the stream, the CRC-64 of each entry's
//! content and the JSON lines cost about as much CPU as extracting the
//! files, and on a second core they overlap with it instead of adding to
//! it. The applying thread never waits for the worker until the end. Jobs
//! go over in batches of about [`BATCH_BYTES`]: a layer of small files
//! reads a few hundred bytes at a time, and one channel message (one
//! wake-up of the worker) per read cost a quarter of the apply time in
//! context switches.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::{Scope, ScopedJoinHandle};

use sha2::{Digest, Sha256};

use super::error::ArchiveError;
use super::tar_split::{CRC64, TarSplitWriter};

/// Batches in flight to the worker; each holds about [`BATCH_BYTES`]
/// (plus at most one read of 128 KiB), so memory stays bounded.
const QUEUE: usize = 16;
/// Stream bytes gathered before a batch goes to the worker.
const BATCH_BYTES: usize = 256 * 1024;
/// Reads join the previous job only while it stays this small: large
/// reads (file content, 128 KiB at a time) go as they are, uncopied.
const MERGE_BELOW: usize = 16 * 1024;
/// Jobs gathered before a batch goes, whatever their size.
const BATCH_JOBS: usize = 1024;

/// Where an entry's tar-split CRC comes from.
pub(crate) enum EntryCrc {
    /// The stored bytes the tee passed since the previous entry.
    Stream,
    /// Computed by the applier (sparse entries, whose holes are expanded).
    Inline(u64),
    /// No payload (size 0).
    Empty,
}

enum Job {
    /// Stream bytes; `content` ones also go into the current entry's CRC.
    Bytes { data: Vec<u8>, content: bool },
    /// A raw segment record.
    Segment(Vec<u8>),
    /// An entry's record, closing its CRC.
    Entry {
        name: Vec<u8>,
        size: u64,
        crc: EntryCrc,
    },
}

/// What the worker hands back when the stream ends.
struct Finished {
    sha256: [u8; 32],
    split_error: Option<ArchiveError>,
}

fn worker(batches: Receiver<Vec<Job>>, mut split: Option<TarSplitWriter<'_>>) -> Finished {
    let mut sha = Sha256::new();
    let mut crc = CRC64.digest();
    let mut split_error = None;
    for job in batches.into_iter().flatten() {
        match job {
            Job::Bytes { data, content } => {
                sha.update(&data);
                if content {
                    crc.update(&data);
                }
            }
            Job::Segment(bytes) => {
                if let (Some(s), None) = (split.as_mut(), &split_error) {
                    split_error = s.segment(&bytes).err();
                }
            }
            Job::Entry {
                name,
                size,
                crc: source,
            } => {
                let stream = std::mem::replace(&mut crc, CRC64.digest()).finalize();
                let value = match source {
                    EntryCrc::Stream => Some(stream),
                    EntryCrc::Inline(value) => Some(value),
                    EntryCrc::Empty => None,
                };
                if let (Some(s), None) = (split.as_mut(), &split_error) {
                    split_error = s.file(&name, size, value.map(u64::to_be_bytes)).err();
                }
            }
        }
    }
    Finished {
        sha256: sha.finalize().into(),
        split_error,
    }
}

/// State shared between the tee (owned by the tar parser) and the applier.
pub(crate) struct Recorder<'scope> {
    jobs: Option<SyncSender<Vec<Job>>>,
    batch: Vec<Job>,
    batch_bytes: usize,
    worker: Option<ScopedJoinHandle<'scope, Finished>>,
    total: u64,
    keep_segments: bool,
    in_segment: bool,
    segment: Vec<u8>,
}

impl<'scope> Recorder<'scope> {
    /// Starts the worker in `scope`; with `tar_split` it also writes the
    /// records there.
    pub(crate) fn new<'env>(
        scope: &'scope Scope<'scope, 'env>,
        tar_split: Option<&'env mut (dyn Write + Send)>,
    ) -> Rc<RefCell<Recorder<'scope>>> {
        let keep_segments = tar_split.is_some();
        let (jobs, queue) = sync_channel(QUEUE);
        let worker = std::thread::Builder::new()
            .name("layer-hash".into())
            .spawn_scoped(scope, move || {
                let split = tar_split.map(|out| TarSplitWriter::new(out as &mut dyn Write));
                worker(queue, split)
            })
            .expect("spawn the hashing thread");
        Rc::new(RefCell::new(Recorder {
            jobs: Some(jobs),
            batch: Vec::new(),
            batch_bytes: 0,
            worker: Some(worker),
            total: 0,
            keep_segments,
            in_segment: true,
            segment: Vec::new(),
        }))
    }

    /// Marks whether the next bytes belong to a segment (true) or to an
    /// entry's content (false).
    pub(crate) fn set_in_segment(&mut self, in_segment: bool) {
        self.in_segment = in_segment;
    }

    /// Records the segment bytes gathered since the last call.
    pub(crate) fn flush_segment(&mut self) {
        let bytes = std::mem::take(&mut self.segment);
        if !bytes.is_empty() {
            self.send(Job::Segment(bytes));
        }
    }

    /// Records an entry; its CRC covers the content since the last entry.
    pub(crate) fn entry(&mut self, name: Vec<u8>, size: u64, crc: EntryCrc) {
        self.send(Job::Entry { name, size, crc });
    }

    /// Stops the worker: `sha256:<hex>` of the whole stream, its length,
    /// or the error writing the tar-split records.
    pub(crate) fn finish(&mut self) -> Result<(String, u64), ArchiveError> {
        self.flush_batch();
        drop(self.jobs.take());
        let finished = self
            .worker
            .take()
            .expect("finish is called once")
            .join()
            .expect("the hashing thread does not panic");
        if let Some(e) = finished.split_error {
            return Err(e);
        }
        Ok((
            format!("sha256:{}", hex::encode(finished.sha256)),
            self.total,
        ))
    }

    fn send(&mut self, job: Job) {
        self.batch_bytes += match &job {
            Job::Bytes { data, .. } => data.len(),
            Job::Segment(bytes) => bytes.len(),
            Job::Entry { name, .. } => name.len(),
        };
        self.batch.push(job);
        if self.batch_bytes >= BATCH_BYTES || self.batch.len() >= BATCH_JOBS {
            self.flush_batch();
        }
    }

    fn flush_batch(&mut self) {
        self.batch_bytes = 0;
        let batch = std::mem::take(&mut self.batch);
        if let (Some(jobs), false) = (&self.jobs, batch.is_empty()) {
            // The worker only stops when `jobs` is dropped.
            let _ = jobs.send(batch);
        }
    }

    fn record(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.total += bytes.len() as u64;
        let content = !self.in_segment;
        // Consecutive reads of one kind join one job: a header, its
        // padding and the next small file are several short reads.
        if let Some(Job::Bytes {
            data,
            content: same,
        }) = self.batch.last_mut()
            && *same == content
            && data.len() + bytes.len() <= MERGE_BELOW
        {
            data.extend_from_slice(bytes);
            self.batch_bytes += bytes.len();
            if self.batch_bytes >= BATCH_BYTES {
                self.flush_batch();
            }
        } else {
            self.send(Job::Bytes {
                data: bytes.to_vec(),
                content,
            });
        }
        if self.keep_segments && self.in_segment {
            self.segment.extend_from_slice(bytes);
        }
    }
}

impl Drop for Recorder<'_> {
    fn drop(&mut self) {
        // On an early return the worker still has to end before the scope.
        drop(self.jobs.take());
    }
}

/// A reader that feeds a [`Recorder`] with everything it passes on.
pub(crate) struct TeeReader<'scope, R> {
    inner: R,
    recorder: Rc<RefCell<Recorder<'scope>>>,
}

impl<'scope, R: Read> TeeReader<'scope, R> {
    pub(crate) fn new(inner: R, recorder: Rc<RefCell<Recorder<'scope>>>) -> Self {
        TeeReader { inner, recorder }
    }
}

impl<R: Read> Read for TeeReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.recorder.borrow_mut().record(&buf[..n]);
        Ok(n)
    }
}
