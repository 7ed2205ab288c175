//! Layer stream compression: gzip, zstd or plain, told apart by their magic
//! bytes (as moby's `DetectCompression` does) and decompressed as a stream,
//! so memory does not grow with the layer.

use std::io::{Cursor, Read};

use super::error::ArchiveError;

/// The compression of a layer stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// An uncompressed tar.
    None,
    /// gzip (RFC 1952), possibly several members.
    Gzip,
    /// Zstandard, possibly several frames.
    Zstd,
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b, 0x08];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const BZIP2_MAGIC: &[u8] = b"BZh";
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];

/// Bytes needed to tell every supported format apart.
const MAGIC_LEN: usize = 6;

/// Recognises the compression from the first bytes of a stream.
pub fn detect(head: &[u8]) -> Result<Compression, ArchiveError> {
    let is_zstd_skippable =
        head.len() >= 4 && head[0] & 0xf0 == 0x50 && head[1..4] == [0x2a, 0x4d, 0x18];
    if head.starts_with(GZIP_MAGIC) {
        Ok(Compression::Gzip)
    } else if head.starts_with(ZSTD_MAGIC) || is_zstd_skippable {
        Ok(Compression::Zstd)
    } else if head.starts_with(BZIP2_MAGIC) {
        Err(ArchiveError::UnsupportedCompression("bzip2"))
    } else if head.starts_with(XZ_MAGIC) {
        Err(ArchiveError::UnsupportedCompression("xz"))
    } else {
        Ok(Compression::None)
    }
}

/// Reads the first bytes of `reader`, detects its compression and returns a
/// reader of the uncompressed stream (the peeked bytes included).
pub fn decompress<'a>(
    mut reader: impl Read + 'a,
) -> Result<(Compression, Box<dyn Read + 'a>), ArchiveError> {
    let mut head = Vec::with_capacity(MAGIC_LEN);
    (&mut reader)
        .take(MAGIC_LEN as u64)
        .read_to_end(&mut head)
        .map_err(|source| ArchiveError::Corrupt {
            location: "at its first bytes".into(),
            source,
        })?;
    let kind = detect(&head)?;
    let whole = Cursor::new(head).chain(reader);
    let stream: Box<dyn Read + 'a> = match kind {
        Compression::None => Box::new(whole),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(whole)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(whole).map_err(|source| {
                ArchiveError::Corrupt {
                    location: "zstd decoder".into(),
                    source,
                }
            })?)
        }
    };
    Ok((kind, stream))
}

/// [`decompress`] for callers that only want the stream.
pub fn decompressed<'a>(reader: impl Read + 'a) -> Result<Box<dyn Read + 'a>, ArchiveError> {
    decompress(reader).map(|(_, r)| r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn roundtrip(kind: Compression, data: &[u8]) {
        let packed = match kind {
            Compression::None => data.to_vec(),
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::Zstd => zstd::encode_all(data, 1).unwrap(),
        };
        let (got, mut r) = decompress(&packed[..]).unwrap();
        assert_eq!(got, kind);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn detects_and_streams_every_format() {
        for kind in [Compression::None, Compression::Gzip, Compression::Zstd] {
            roundtrip(kind, b"hello layer");
            roundtrip(kind, b"");
        }
        assert!(detect(b"BZh91AY").is_err());
        assert!(detect(&[0xfd, b'7', b'z', b'X', b'Z', 0]).is_err());
    }
}
