//! The tee under the tar parser: every byte of the uncompressed stream goes
//! into the diff-id hash, and, while the parser is between entries (reading
//! headers, padding, end blocks), into the current tar-split segment.
//! Bytes read from an entry's content are payload and are not kept.

use std::cell::RefCell;
use std::io::{self, Read};
use std::rc::Rc;

use sha2::{Digest, Sha256};

/// State shared between the tee (owned by the tar parser) and the applier.
pub(crate) struct Recorder {
    hasher: Sha256,
    total: u64,
    keep_segments: bool,
    in_segment: bool,
    segment: Vec<u8>,
}

impl Recorder {
    pub(crate) fn new(keep_segments: bool) -> Rc<RefCell<Recorder>> {
        Rc::new(RefCell::new(Recorder {
            hasher: Sha256::new(),
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

    /// The segment bytes gathered since the last call.
    pub(crate) fn take_segment(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.segment)
    }

    /// `sha256:<hex>` of everything read so far, and its length.
    pub(crate) fn digest(&self) -> (String, u64) {
        let hex = hex::encode(self.hasher.clone().finalize());
        (format!("sha256:{hex}"), self.total)
    }

    fn record(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.total += bytes.len() as u64;
        if self.keep_segments && self.in_segment {
            self.segment.extend_from_slice(bytes);
        }
    }
}

/// A reader that feeds a [`Recorder`] with everything it passes on.
pub(crate) struct TeeReader<R> {
    inner: R,
    recorder: Rc<RefCell<Recorder>>,
}

impl<R: Read> TeeReader<R> {
    pub(crate) fn new(inner: R, recorder: Rc<RefCell<Recorder>>) -> Self {
        TeeReader { inner, recorder }
    }
}

impl<R: Read> Read for TeeReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.recorder.borrow_mut().record(&buf[..n]);
        Ok(n)
    }
}
