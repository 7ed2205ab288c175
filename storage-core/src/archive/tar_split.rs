//! Docker's `tar-split` metadata (vbatts/tar-split `storage` package): one
//! JSON object per line, `{"type":2,"payload":"<base64>","position":N}` for
//! raw stream bytes that are not file content (headers, padding, the end
//! blocks and anything after them) and
//! `{"type":1,"name":"<name>","size":N,"payload":"<base64 crc64>","position":N}`
//! for each entry's content, whose bytes live on disk. Field order, Go's
//! string escaping and `null` payloads match Go's `encoding/json`, so the
//! file is byte-identical to the one dockerd writes for the same stream.

use std::collections::HashSet;
use std::io::{self, Read, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;

use super::entry_name;
use super::error::ArchiveError;

/// CRC-64 with the ISO polynomial as Go's `hash/crc64` computes it
/// (`crc64.MakeTable(crc64.ISO)`), the checksum tar-split stores.
pub const CRC64: crc::Crc<u64, crc::Table<16>> =
    crc::Crc::<u64, crc::Table<16>>::new(&crc::CRC_64_GO_ISO);

/// `storage.FileType`: a file's content, stored on disk.
pub const FILE_TYPE: u8 = 1;
/// `storage.SegmentType`: raw bytes kept in the metadata.
pub const SEGMENT_TYPE: u8 = 2;

/// One tar-split record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Raw stream bytes.
    Segment(Vec<u8>),
    /// An entry's content: its name (raw bytes), size and the CRC-64 of the
    /// content (`None` when the size is 0).
    File {
        name: Vec<u8>,
        size: u64,
        crc: Option<[u8; 8]>,
    },
}

/// Go's `filepath.Clean`, used for tar-split's duplicate-path check.
pub(crate) fn clean_for_dedup(name: &[u8]) -> Vec<u8> {
    let rooted = name.first() == Some(&b'/');
    let mut out: Vec<&[u8]> = Vec::new();
    for comp in name.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                if out.last().is_some_and(|c| *c != b"..") {
                    out.pop();
                } else if !rooted {
                    out.push(comp);
                }
            }
            c => out.push(c),
        }
    }
    let mut joined = out.join(&b'/');
    if rooted {
        joined.insert(0, b'/');
    }
    if joined.is_empty() {
        joined.push(b'.');
    }
    joined
}

/// Appends `s` as a JSON string the way Go's `encoding/json` does (HTML
/// characters and U+2028/U+2029 escaped).
fn push_go_json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for ch in s.chars() {
        match ch {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            c if (c as u32) < 0x20 || c == '<' || c == '>' || c == '&' => {
                let v = c as u32;
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(v >> 4) as usize]);
                out.push(HEX[(v & 0xf) as usize]);
            }
            '\u{2028}' => out.extend_from_slice(b"\\u2028"),
            '\u{2029}' => out.extend_from_slice(b"\\u2029"),
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// Writes tar-split records as JSON lines, numbering their positions.
pub struct TarSplitWriter<'w> {
    out: &'w mut dyn Write,
    position: u64,
    seen: HashSet<Vec<u8>>,
    line: Vec<u8>,
}

impl<'w> TarSplitWriter<'w> {
    /// A writer of records to `out` (uncompressed JSON lines).
    pub fn new(out: &'w mut dyn Write) -> Self {
        TarSplitWriter {
            out,
            position: 0,
            seen: HashSet::new(),
            line: Vec::with_capacity(1024),
        }
    }

    fn write_err(source: io::Error) -> ArchiveError {
        ArchiveError::Write {
            what: "tar-split",
            source,
        }
    }

    /// Records raw stream bytes; an empty slice records nothing.
    pub fn segment(&mut self, bytes: &[u8]) -> Result<(), ArchiveError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.line.clear();
        self.line.extend_from_slice(b"{\"type\":2,\"payload\":\"");
        let encoded = BASE64.encode(bytes);
        self.line.extend_from_slice(encoded.as_bytes());
        self.line.extend_from_slice(b"\",\"position\":");
        self.finish_line()
    }

    /// Records one entry's content. Returns `false` (recording nothing)
    /// when the cleaned name was already recorded: tar-split, like Docker,
    /// cannot represent two entries with the same path.
    pub fn file(
        &mut self,
        name: &[u8],
        size: u64,
        crc: Option<[u8; 8]>,
    ) -> Result<bool, ArchiveError> {
        if !self.seen.insert(clean_for_dedup(name)) {
            return Ok(false);
        }
        self.line.clear();
        self.line.extend_from_slice(b"{\"type\":1,");
        match std::str::from_utf8(name) {
            Ok(s) if !s.is_empty() => {
                self.line.extend_from_slice(b"\"name\":");
                push_go_json_string(&mut self.line, s);
                self.line.push(b',');
            }
            Ok(_) => {}
            Err(_) => {
                self.line.extend_from_slice(b"\"name_raw\":\"");
                self.line.extend_from_slice(BASE64.encode(name).as_bytes());
                self.line.extend_from_slice(b"\",");
            }
        }
        if size != 0 {
            self.line
                .extend_from_slice(format!("\"size\":{size},").as_bytes());
        }
        match crc {
            Some(c) => {
                self.line.extend_from_slice(b"\"payload\":\"");
                self.line.extend_from_slice(BASE64.encode(c).as_bytes());
                self.line.extend_from_slice(b"\",\"position\":");
            }
            None => self
                .line
                .extend_from_slice(b"\"payload\":null,\"position\":"),
        }
        self.finish_line()?;
        Ok(true)
    }

    fn finish_line(&mut self) -> Result<(), ArchiveError> {
        self.line
            .extend_from_slice(format!("{}}}\n", self.position).as_bytes());
        self.position += 1;
        self.out.write_all(&self.line).map_err(Self::write_err)
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.position
    }
}

#[derive(Deserialize)]
struct JsonEntry {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    name_raw: Option<String>,
    #[serde(default)]
    size: i64,
    #[serde(default)]
    payload: Option<String>,
}

/// Reads tar-split records from uncompressed JSON (one object per line,
/// or any whitespace between objects, as Go's decoder accepts).
pub struct TarSplitReader<R: Read> {
    stream: serde_json::StreamDeserializer<'static, serde_json::de::IoRead<R>, JsonEntry>,
    index: u64,
    seen: HashSet<Vec<u8>>,
}

impl<R: Read> TarSplitReader<R> {
    /// A reader of the records in `input`.
    pub fn new(input: R) -> Self {
        TarSplitReader {
            stream: serde_json::Deserializer::from_reader(input).into_iter(),
            index: 0,
            seen: HashSet::new(),
        }
    }

    fn bad(&self, problem: impl Into<String>) -> ArchiveError {
        ArchiveError::TarSplit {
            position: self.index,
            problem: problem.into(),
        }
    }

    fn decode(&self, field: &str, text: &str) -> Result<Vec<u8>, ArchiveError> {
        BASE64
            .decode(text)
            .map_err(|e| self.bad(format!("{field} is not base64: {e}")))
    }

    fn convert(&mut self, e: JsonEntry) -> Result<Record, ArchiveError> {
        let payload = match &e.payload {
            Some(p) => Some(self.decode("payload", p)?),
            None => None,
        };
        match e.kind {
            SEGMENT_TYPE => Ok(Record::Segment(payload.unwrap_or_default())),
            FILE_TYPE => {
                let name = match (&e.name_raw, e.name) {
                    (Some(raw), _) if !raw.is_empty() => self.decode("name_raw", raw)?,
                    (_, Some(n)) => n.into_bytes(),
                    _ => Vec::new(),
                };
                if !self.seen.insert(clean_for_dedup(&name)) {
                    return Err(self.bad(format!("duplicate path {}", entry_name::display(&name))));
                }
                let size = u64::try_from(e.size)
                    .map_err(|_| self.bad(format!("negative size {}", e.size)))?;
                let crc =
                    match payload {
                        None => None,
                        Some(p) if p.is_empty() => None,
                        Some(p) => Some(<[u8; 8]>::try_from(p.as_slice()).map_err(|_| {
                            self.bad(format!("checksum of {} bytes, want 8", p.len()))
                        })?),
                    };
                Ok(Record::File { name, size, crc })
            }
            other => Err(self.bad(format!("unknown record type {other}"))),
        }
    }
}

impl<R: Read> Iterator for TarSplitReader<R> {
    type Item = Result<Record, ArchiveError>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = match self.stream.next()? {
            Ok(e) => self.convert(e),
            Err(err) => Err(self.bad(format!("invalid JSON: {err}"))),
        };
        self.index += 1;
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc64_matches_go_iso() {
        // Go: crc64.Checksum([]byte("123456789"), crc64.MakeTable(crc64.ISO))
        assert_eq!(CRC64.checksum(b"123456789"), 0xb909_56c7_75a4_1001);
    }

    #[test]
    fn json_matches_go_encoding() {
        let mut out = Vec::new();
        {
            let mut w = TarSplitWriter::new(&mut out);
            w.segment(b"hdr").unwrap();
            w.file(b"etc/<a&b>", 3, Some([1, 2, 3, 4, 5, 6, 7, 8]))
                .unwrap();
            w.file(b"dir/", 0, None).unwrap();
            w.file(b"\xff", 0, None).unwrap();
            assert!(!w.file(b"./dir", 0, None).unwrap());
        }
        let text = String::from_utf8(out.clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], r#"{"type":2,"payload":"aGRy","position":0}"#);
        assert_eq!(
            lines[1],
            r#"{"type":1,"name":"etc/\u003ca\u0026b\u003e","size":3,"payload":"AQIDBAUGBwg=","position":1}"#
        );
        assert_eq!(
            lines[2],
            r#"{"type":1,"name":"dir/","payload":null,"position":2}"#
        );
        assert_eq!(
            lines[3],
            r#"{"type":1,"name_raw":"/w==","payload":null,"position":3}"#
        );
        let back: Vec<Record> = TarSplitReader::new(&out[..]).map(Result::unwrap).collect();
        assert_eq!(back[0], Record::Segment(b"hdr".to_vec()));
        assert_eq!(
            back[1],
            Record::File {
                name: b"etc/<a&b>".to_vec(),
                size: 3,
                crc: Some([1, 2, 3, 4, 5, 6, 7, 8])
            }
        );
        assert_eq!(
            back[3],
            Record::File {
                name: vec![0xff],
                size: 0,
                crc: None
            }
        );
    }
}
