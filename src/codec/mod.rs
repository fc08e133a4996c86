//! The sans-IO protocol core: frame layout, limits, encoding and incremental
//! decoding. Nothing here touches a socket or Python.
//!
//! A frame is a 4-byte signed length (`struct.pack('i', n)`), then either
//! - JSON-header mode: `n` bytes of a JSON object holding `total_size`, then
//!   `total_size` bytes of body; or
//! - length-only mode: `n` bytes of body.

mod checksum;
mod decode;
mod error;
pub mod json;

pub use checksum::{Checksum, Hasher};
pub use decode::Decoder;
pub use error::{escape_bytes, FrameError, Part, TextPrefix};

use bytes::{Bytes, BytesMut};

pub use json::HeaderFacts;

/// Size of the length prefix.
pub const PREFIX_LEN: usize = 4;

/// The largest length the signed 4-byte prefix can carry.
pub const MAX_PREFIX_VALUE: u64 = i32::MAX as u64;

pub const DEFAULT_MAX_HEADER: u64 = 64 * 1024;
pub const DEFAULT_MAX_BODY: u64 = 256 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ByteOrder {
    Little,
    Big,
}

impl ByteOrder {
    pub fn from_name(name: &str) -> Option<ByteOrder> {
        match name {
            "little" => Some(ByteOrder::Little),
            "big" => Some(ByteOrder::Big),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ByteOrder::Little => "little",
            ByteOrder::Big => "big",
        }
    }
}

/// A decoded frame, as the decoder's [`FrameModel`] makes it. By default
/// ([`RawFrame`]) `header` is the header's JSON text, checked by the codec (an
/// object with a valid `total_size`), and `body` shares the decoder's buffer;
/// `header` is `None` in length-only mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<H = Bytes, B = Bytes> {
    pub header: Option<H>,
    pub body: B,
}

/// How a decoder turns the bytes of a frame into the header and body it hands
/// out. The model must report the codec's facts (`total_size`, the digest
/// field) exactly as [`json::parse_header`] would, and refuse what it refuses.
pub trait FrameModel {
    type Header;
    type Body;
    /// Reads a whole header; the decoder consumes its bytes afterwards.
    fn parse(&mut self, header: &[u8], digest_key: Option<&str>) -> Result<(Self::Header, HeaderFacts), FrameError>;
    /// Takes a whole (and verified) body, the first `len` bytes of `buf`, off the buffer.
    fn take_body(&mut self, buf: &mut BytesMut, len: usize) -> Self::Body;
}

/// The default model: the header's JSON text, scanned without being built,
/// and the body split off the buffer without a copy.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawFrame;

impl FrameModel for RawFrame {
    type Header = Bytes;
    type Body = Bytes;
    fn parse(&mut self, header: &[u8], digest_key: Option<&str>) -> Result<(Bytes, HeaderFacts), FrameError> {
        let facts = json::parse_header(header, digest_key)?;
        Ok((Bytes::copy_from_slice(header), facts))
    }
    fn take_body(&mut self, buf: &mut BytesMut, len: usize) -> Bytes {
        buf.split_to(len).freeze()
    }
}

/// What the length prefix announced, once it is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announced {
    Header(usize),
    Body(usize),
}

/// The frame layout and the limits a reader enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Codec {
    pub json_header: bool,
    pub byteorder: ByteOrder,
    pub max_header: u64,
    pub max_body: u64,
    pub checksum: Option<Checksum>,
}

impl Default for Codec {
    fn default() -> Codec {
        Codec {
            json_header: true,
            byteorder: ByteOrder::Little,
            max_header: DEFAULT_MAX_HEADER,
            max_body: DEFAULT_MAX_BODY,
            checksum: None,
        }
    }
}

impl Codec {
    /// Checks a codec's settings; the message names the bad one.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_header == 0 && self.json_header {
            return Err("max_header must be positive: an empty header is not a JSON object".into());
        }
        if self.json_header && self.max_header > MAX_PREFIX_VALUE {
            return Err(format!("max_header must be at most {MAX_PREFIX_VALUE} (the 4-byte length field)"));
        }
        if !self.json_header && self.max_body > MAX_PREFIX_VALUE {
            return Err(format!(
                "max_body must be at most {MAX_PREFIX_VALUE} in length-only mode (the 4-byte length field)"
            ));
        }
        if self.checksum.is_some() && !self.json_header {
            return Err("checksum needs json_header=True: the digest travels in the header".into());
        }
        Ok(())
    }

    /// Reads and checks a length prefix. Oversize and negative lengths are refused
    /// here, before a byte of what they announce is buffered.
    pub fn parse_length(&self, raw: [u8; 4]) -> Result<Announced, FrameError> {
        let value = match self.byteorder {
            ByteOrder::Little => i32::from_le_bytes(raw),
            ByteOrder::Big => i32::from_be_bytes(raw),
        };
        if value < 0 {
            return Err(FrameError::NegativeLength { raw, value, text: TextPrefix::detect(raw) });
        }
        let len = value as u64;
        let (part, limit, limit_name) = if self.json_header {
            (Part::Header, self.max_header, "max_header")
        } else {
            (Part::Body, self.max_body, "max_body")
        };
        if len > limit {
            return Err(FrameError::TooLarge { part, size: len, limit, limit_name, text: TextPrefix::detect(raw) });
        }
        Ok(match part {
            Part::Header => Announced::Header(len as usize),
            _ => Announced::Body(len as usize),
        })
    }

    /// Checks a JSON header and the body length it announces.
    pub fn parse_header(&self, bytes: &[u8]) -> Result<HeaderFacts, FrameError> {
        let facts = json::parse_header(bytes, self.digest_key())?;
        self.check_body_len(facts.total_size)?;
        Ok(facts)
    }

    /// The header field that carries the body's digest, if the codec checks one.
    pub fn digest_key(&self) -> Option<&'static str> {
        self.checksum.map(Checksum::name)
    }

    pub fn check_body_len(&self, len: u64) -> Result<(), FrameError> {
        if len > self.max_body {
            return Err(FrameError::TooLarge {
                part: Part::Body,
                size: len,
                limit: self.max_body,
                limit_name: "max_body",
                text: None,
            });
        }
        Ok(())
    }

    /// Verifies the body against the header's digest when the codec has a checksum.
    pub fn verify(&self, facts: Option<&HeaderFacts>, body: &[u8]) -> Result<(), FrameError> {
        let (Some(checksum), Some(facts)) = (self.checksum, facts) else {
            return Ok(());
        };
        let actual = checksum.hex_digest(body);
        match &facts.digest {
            Some(expected) if expected.eq_ignore_ascii_case(&actual) => Ok(()),
            expected => Err(FrameError::Checksum { algorithm: checksum.name(), expected: expected.clone(), actual }),
        }
    }

    /// A writer for a header, primed with the fields the codec sets itself.
    pub fn header_writer(&self, body: &[u8]) -> json::HeaderWriter {
        let digest = self.checksum.map(|c| (c.name(), c.hex_digest(body)));
        json::HeaderWriter::new(body.len() as u64, digest)
    }

    fn prefix(&self, len: usize, part: Part, limit: u64, limit_name: &'static str) -> Result<[u8; 4], FrameError> {
        let len = len as u64;
        let limit = limit.min(MAX_PREFIX_VALUE);
        if len > limit {
            return Err(FrameError::TooLarge { part, size: len, limit, limit_name, text: None });
        }
        let value = len as i32;
        Ok(match self.byteorder {
            ByteOrder::Little => value.to_le_bytes(),
            ByteOrder::Big => value.to_be_bytes(),
        })
    }

    /// The length prefix of a frame with this header (JSON-header mode) or no
    /// header (length-only mode). Refuses lengths the reader would refuse, so a
    /// peer with the same codec never loses sync (tokio 5080).
    pub fn encode_prefix(&self, header: Option<&[u8]>, body_len: usize) -> Result<[u8; 4], FrameError> {
        self.check_body_len(body_len as u64)?;
        match (self.json_header, header) {
            (true, Some(header)) => self.prefix(header.len(), Part::Header, self.max_header, "max_header"),
            (false, None) => self.prefix(body_len, Part::Body, self.max_body, "max_body"),
            (true, None) => Err(FrameError::header("a JSON-header codec needs a header to encode")),
            (false, Some(_)) => Err(FrameError::header("a length-only codec carries no header")),
        }
    }

    /// Everything that goes on the wire before the body: the prefix and, in
    /// JSON-header mode, the header.
    pub fn encode_head(&self, header: Option<&[u8]>, body_len: usize) -> Result<Vec<u8>, FrameError> {
        let prefix = self.encode_prefix(header, body_len)?;
        let header = header.unwrap_or_default();
        let mut head = Vec::with_capacity(PREFIX_LEN + header.len());
        head.extend_from_slice(&prefix);
        head.extend_from_slice(header);
        Ok(head)
    }

    /// A whole frame in one buffer.
    pub fn encode(&self, header: Option<&[u8]>, body: &[u8]) -> Result<Vec<u8>, FrameError> {
        let mut out = self.encode_head(header, body.len())?;
        out.extend_from_slice(body);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codecs_are_equal_and_hash_alike_by_every_setting() {
        // `rframe.Codec`'s == and hash() are these.
        let base = Codec::default();
        let variants = [
            Codec { json_header: false, ..base },
            Codec { byteorder: ByteOrder::Big, ..base },
            Codec { max_header: base.max_header - 1, ..base },
            Codec { max_body: base.max_body - 1, ..base },
            Codec { checksum: Some(Checksum::Md5), ..base },
            Codec { checksum: Some(Checksum::Sha256), ..base },
        ];
        let mut set: HashSet<Codec> = variants.into_iter().collect();
        assert_eq!(set.len(), variants.len(), "each setting tells codecs apart");
        assert!(set.insert(base));
        assert!(!set.insert(Codec::default()), "equal settings: one codec");
    }
}
