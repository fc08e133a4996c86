//! Reading exactly one frame from a blocking byte source.
//!
//! Only the bytes of that frame are taken from the source (prefix, then header,
//! then body), so a caller can interleave frame reads with its own reads, as
//! course code does with `recv`.

use crate::codec::{Announced, Codec, FrameError, Part, PREFIX_LEN};

/// Something that yields bytes: a socket, a file, a Python object.
pub trait ByteSource {
    type Error;
    /// Reads at least one byte into `buf` (which is never empty), or returns 0 at
    /// the end of the stream.
    fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error>;
}

#[derive(Debug)]
pub enum ReadError<E> {
    /// The bytes are not a valid frame, or the stream ended inside one.
    Frame(FrameError),
    /// The stream ended cleanly before the first byte of a frame.
    Eof,
    /// The source failed (I/O error, timeout, interrupt).
    Source(E),
}

impl<E> From<FrameError> for ReadError<E> {
    fn from(e: FrameError) -> Self {
        ReadError::Frame(e)
    }
}

/// Fills `buf` unless the stream ends first; returns how many bytes were read.
pub fn read_full<S: ByteSource>(src: &mut S, buf: &mut [u8]) -> Result<usize, S::Error> {
    let mut filled = 0;
    while filled < buf.len() {
        match src.read_some(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// One frame as read: the header's JSON text (checked by the codec; `None` for
/// a length-only codec) and the body in the caller's buffer.
#[derive(Debug)]
pub struct RawFrame<B> {
    pub header: Option<Vec<u8>>,
    pub body: B,
}

/// Where a body is read to. `window(filled)` is the memory for the bytes from
/// `filled` on (at least one byte, never past the end): a buffer may prepare
/// it lazily, so that a peer that announces a large body and sends nothing
/// costs no memory (tokio 333).
pub trait BodyBuffer: AsRef<[u8]> {
    /// The body's whole length.
    fn size(&self) -> usize;
    fn window(&mut self, filled: usize) -> &mut [u8];
}

impl BodyBuffer for Vec<u8> {
    fn size(&self) -> usize {
        self.len()
    }
    fn window(&mut self, filled: usize) -> &mut [u8] {
        &mut self[filled..]
    }
}

/// Fills `buf` (the header, or the body), or reports the frame cut short.
fn read_part<S: ByteSource, B: BodyBuffer>(src: &mut S, buf: &mut B, part: Part) -> Result<(), ReadError<S::Error>> {
    let len = buf.size();
    let mut filled = 0;
    while filled < len {
        match src.read_some(buf.window(filled)).map_err(ReadError::Source)? {
            0 => return Err(FrameError::Incomplete { part, expected: len as u64, received: filled as u64 }.into()),
            n => filled += n,
        }
    }
    Ok(())
}

/// Reads one frame. `alloc_body(len)` makes the buffer the body is read into,
/// once the header has been checked, so a large body lands in its final home
/// without an intermediate copy.
pub fn read_frame<S, B>(
    codec: &Codec,
    src: &mut S,
    alloc_body: impl FnOnce(usize) -> Result<B, S::Error>,
) -> Result<RawFrame<B>, ReadError<S::Error>>
where
    S: ByteSource,
    B: BodyBuffer,
{
    let mut raw = [0u8; PREFIX_LEN];
    let got = read_full(src, &mut raw).map_err(ReadError::Source)?;
    match got {
        0 => return Err(ReadError::Eof),
        PREFIX_LEN => {}
        _ => {
            return Err(FrameError::Incomplete {
                part: Part::Length,
                expected: PREFIX_LEN as u64,
                received: got as u64,
            }
            .into())
        }
    }
    let (header, facts, body_len) = match codec.parse_length(raw)? {
        Announced::Body(len) => (None, None, len),
        Announced::Header(len) => {
            let mut bytes = vec![0u8; len];
            read_part(src, &mut bytes, Part::Header)?;
            let facts = codec.parse_header(&bytes)?;
            let body_len = facts.total_size as usize;
            (Some(bytes), Some(facts), body_len)
        }
    };
    let mut body = alloc_body(body_len).map_err(ReadError::Source)?;
    read_part(src, &mut body, Part::Body)?;
    codec.verify(facts.as_ref(), body.as_ref())?;
    Ok(RawFrame { header, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out at most `step` bytes per read, like a socket under load.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl ByteSource for Trickle<'_> {
        type Error = std::convert::Infallible;
        fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
            let n = buf.len().min(self.step).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn read(data: &[u8], step: usize) -> Result<RawFrame<Vec<u8>>, ReadError<std::convert::Infallible>> {
        read_frame(&Codec::default(), &mut Trickle { data, step }, |n| Ok(vec![0u8; n]))
    }

    fn frame() -> Vec<u8> {
        Codec::default().encode(Some(br#"{"total_size": 3}"#), b"abc").unwrap()
    }

    #[test]
    fn reads_one_frame_and_leaves_the_rest() {
        let mut data = frame();
        data.extend_from_slice(b"next");
        let mut src = Trickle { data: &data, step: 2 };
        let frame =
            read_frame(&Codec::default(), &mut src, |n| Ok::<_, std::convert::Infallible>(vec![0u8; n])).unwrap();
        assert_eq!(frame.body, b"abc");
        assert_eq!(frame.header.unwrap(), br#"{"total_size": 3}"#);
        assert_eq!(src.data, b"next");
    }

    #[test]
    fn clean_end_is_eof_and_a_cut_frame_is_incomplete() {
        assert!(matches!(read(b"", 1), Err(ReadError::Eof)));
        let data = frame();
        for (cut, part) in [(1, Part::Length), (6, Part::Header), (data.len() - 1, Part::Body)] {
            match read(&data[..cut], 1) {
                Err(ReadError::Frame(FrameError::Incomplete { part: p, .. })) => assert_eq!(p, part),
                other => panic!("cut {cut}: {other:?}"),
            }
        }
    }
}
