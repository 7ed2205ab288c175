//! Writing tar entries the way moby's Go writer does for layers: USTAR
//! headers, with a PAX extended header in front whenever a value does not
//! fit (names or link targets over 100 bytes or not ASCII, ids over
//! 2097151, huge sizes, times before 1970) and for every xattr
//! (`SCHILY.xattr.<name>`). Headers carry numeric ids only.

use std::io::{self, Read, Write};

use tar::{EntryType, Header};

use super::xattrs::Xattrs;

/// Largest value of an 8-byte octal field (uid, gid, mode).
const MAX_OCTAL_8: u64 = 0o7777777;
/// Largest value of a 12-byte octal field (size, mtime).
const MAX_OCTAL_12: u64 = 0o77777777777;

/// One entry to write.
#[derive(Debug, Clone)]
pub(crate) struct EntrySpec {
    /// Name in the tar (directories end with `/`).
    pub name: Vec<u8>,
    pub kind: EntryType,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Seconds since the epoch (moby truncates to seconds).
    pub mtime: i64,
    pub size: u64,
    pub link: Vec<u8>,
    pub dev_major: u32,
    pub dev_minor: u32,
    /// Sorted `(name, value)` pairs.
    pub xattrs: Xattrs,
}

impl EntrySpec {
    /// An entry of `kind` named `name`, everything else zero.
    pub(crate) fn new(name: Vec<u8>, kind: EntryType) -> Self {
        EntrySpec {
            name,
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: 0,
            size: 0,
            link: Vec::new(),
            dev_major: 0,
            dev_minor: 0,
            xattrs: Vec::new(),
        }
    }
}

/// Counts what passes through.
pub(crate) struct Counting<W> {
    inner: W,
    pub(crate) bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Fails instead of ending early, so a file that shrinks while it is read
/// cannot make the tar's sizes disagree.
struct Exact<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "file shrank while being archived ({} bytes missing)",
                    self.remaining
                ),
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// A PAX record: `"<len> <key>=<value>\n"`, the length counting itself.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn fits_ustar_string(s: &[u8], size: usize) -> bool {
    s.len() <= size && s.is_ascii() && !s.contains(&0)
}

fn put_truncated(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

/// A tar stream of [`EntrySpec`]s.
pub(crate) struct TarWriter<W: Write> {
    builder: tar::Builder<Counting<W>>,
}

impl<W: Write> TarWriter<W> {
    pub(crate) fn new(out: W) -> Self {
        TarWriter {
            builder: tar::Builder::new(Counting {
                inner: out,
                bytes: 0,
            }),
        }
    }

    /// Writes one entry; `data` must hold exactly `spec.size` bytes.
    pub(crate) fn append(
        &mut self,
        spec: &EntrySpec,
        data: Option<&mut dyn Read>,
    ) -> io::Result<()> {
        let mut pax = Vec::new();
        if !fits_ustar_string(&spec.name, 100) {
            pax_record(&mut pax, b"path", &spec.name);
        }
        if !fits_ustar_string(&spec.link, 100) {
            pax_record(&mut pax, b"linkpath", &spec.link);
        }
        if spec.uid > MAX_OCTAL_8 {
            pax_record(&mut pax, b"uid", spec.uid.to_string().as_bytes());
        }
        if spec.gid > MAX_OCTAL_8 {
            pax_record(&mut pax, b"gid", spec.gid.to_string().as_bytes());
        }
        if spec.size > MAX_OCTAL_12 {
            pax_record(&mut pax, b"size", spec.size.to_string().as_bytes());
        }
        if spec.mtime < 0 || spec.mtime as u64 > MAX_OCTAL_12 {
            pax_record(&mut pax, b"mtime", spec.mtime.to_string().as_bytes());
        }
        for (key, value) in &spec.xattrs {
            let mut k = b"SCHILY.xattr.".to_vec();
            k.extend_from_slice(key);
            pax_record(&mut pax, &k, value);
        }
        if !pax.is_empty() {
            // Go names it <dir>/PaxHeaders.0/<base>.
            let name = &spec.name[..spec.name.len() - usize::from(spec.name.ends_with(b"/"))];
            let (dir, base) = match name.iter().rposition(|b| *b == b'/') {
                Some(i) => (&name[..=i], &name[i + 1..]),
                None => (&b""[..], name),
            };
            let mut pax_name = dir.to_vec();
            pax_name.extend_from_slice(b"PaxHeaders.0/");
            pax_name.extend_from_slice(base);
            let mut h = Header::new_ustar();
            put_truncated(&mut h.as_old_mut().name, &pax_name);
            h.set_entry_type(EntryType::XHeader);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_size(pax.len() as u64);
            h.set_cksum();
            self.builder.append(&h, &pax[..])?;
        }

        let mut h = Header::new_ustar();
        put_truncated(&mut h.as_old_mut().name, &spec.name);
        put_truncated(&mut h.as_old_mut().linkname, &spec.link);
        h.set_entry_type(spec.kind);
        h.set_mode(spec.mode & 0o7777);
        h.set_uid(spec.uid.min(MAX_OCTAL_8));
        h.set_gid(spec.gid.min(MAX_OCTAL_8));
        h.set_mtime(u64::try_from(spec.mtime).unwrap_or(0).min(MAX_OCTAL_12));
        h.set_size(spec.size);
        if matches!(spec.kind, EntryType::Char | EntryType::Block) {
            h.set_device_major(spec.dev_major)?;
            h.set_device_minor(spec.dev_minor)?;
        }
        h.set_cksum();
        match data {
            Some(data) => {
                let exact = Exact {
                    inner: data,
                    remaining: spec.size,
                };
                self.builder.append(&h, exact)
            }
            None => self.builder.append(&h, io::empty()),
        }
    }

    /// Writes the two end blocks and returns the output and its length.
    pub(crate) fn finish(self) -> io::Result<(W, u64)> {
        let counting = self.builder.into_inner()?;
        Ok((counting.inner, counting.bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        let mut out = Vec::new();
        pax_record(&mut out, b"path", b"a");
        assert_eq!(out, b"9 path=a\n");
        let mut out = Vec::new();
        let v = vec![b'x'; 93];
        pax_record(&mut out, b"path", &v);
        assert_eq!(out.len(), 103);
        assert!(out.starts_with(b"103 path="));
    }
}
