//! Incremental decoding: bytes in, whole frames out, however the stream was split.

use bytes::{Buf, Bytes, BytesMut};

use super::{Announced, Codec, Frame, FrameError, FrameModel, HeaderFacts, Part, RawFrame, PREFIX_LEN};

#[derive(Debug)]
enum State<H> {
    Length,
    Header { len: usize },
    Body { header: Option<(H, HeaderFacts)>, len: usize, head_len: usize },
}

/// A sans-IO frame decoder in the style of tokio-util's `Decoder`: the caller
/// owns the buffer, appends what arrives, and calls [`Decoder::decode`] until it
/// returns `Ok(None)`.
///
/// Memory is bounded by the codec's limits: a length is checked as soon as its
/// four bytes are in, and nothing is reserved for what a peer announces; the
/// buffer grows only with bytes that actually arrive (tokio 333).
///
/// After an error the decoder is poisoned: every later call returns the same
/// error, because the stream has lost its place and any "frame" read after it
/// would be garbage.
///
/// Headers and bodies are made by a [`FrameModel`] the caller passes to
/// [`Decoder::decode_with`] (so a model may borrow what it needs for one call);
/// [`Decoder::decode`] uses [`RawFrame`]: a frame carries its header's checked
/// JSON text and its body's bytes. `H` is the model's header type, which the
/// decoder keeps while a frame's body is still arriving.
#[derive(Debug)]
pub struct Decoder<H = Bytes> {
    codec: Codec,
    state: State<H>,
    error: Option<FrameError>,
}

impl Decoder {
    /// A decoder of raw frames (see [`Decoder::decode`]).
    pub fn new(codec: Codec) -> Decoder {
        Decoder::with_codec(codec)
    }

    /// Takes the next whole frame off the front of `buf`, or returns `Ok(None)`
    /// if more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        self.decode_with(buf, &mut RawFrame)
    }

    /// Called when the stream has ended: see [`Decoder::decode_eof_with`].
    pub fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        self.decode_eof_with(buf, &mut RawFrame)
    }
}

impl<H> Decoder<H> {
    /// A decoder for a model whose headers are `H`.
    pub fn with_codec(codec: Codec) -> Decoder<H> {
        Decoder { codec, state: State::Length, error: None }
    }

    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    /// Bytes of the current frame already taken out of the buffer (its length
    /// prefix and header, once parsed).
    pub fn consumed(&self) -> usize {
        match self.state {
            State::Length => 0,
            State::Header { .. } => PREFIX_LEN,
            State::Body { head_len, .. } => head_len,
        }
    }

    /// How many more bytes `buf` must hold before the decoder can take its next
    /// step (finish the length, the header, or the body). Never more than the
    /// codec's limits allow, since lengths are checked before they are waited on.
    pub fn needed(&self, buf: &BytesMut) -> usize {
        let want = match &self.state {
            State::Length => PREFIX_LEN,
            State::Header { len } => *len,
            State::Body { len, .. } => *len,
        };
        want.saturating_sub(buf.len())
    }

    /// True once the current frame's length (and header) are in and only body
    /// bytes are awaited.
    pub fn in_body(&self) -> bool {
        matches!(self.state, State::Body { .. })
    }

    /// The error that poisoned the decoder, if any.
    pub fn error(&self) -> Option<&FrameError> {
        self.error.as_ref()
    }

    /// Takes the next whole frame off the front of `buf`, made by `model`, or
    /// returns `Ok(None)` if more bytes are needed.
    pub fn decode_with<M: FrameModel<Header = H>>(
        &mut self,
        buf: &mut BytesMut,
        model: &mut M,
    ) -> Result<Option<Frame<H, M::Body>>, FrameError> {
        if let Some(err) = &self.error {
            return Err(err.clone());
        }
        self.step(buf, model).inspect_err(|err| {
            // The refused part has left the buffer: what is left is what followed it.
            self.state = State::Length;
            self.error = Some(err.clone());
        })
    }

    fn step<M: FrameModel<Header = H>>(
        &mut self,
        buf: &mut BytesMut,
        model: &mut M,
    ) -> Result<Option<Frame<H, M::Body>>, FrameError> {
        // The three parts in order; a call resumes at the part it stopped in.
        if let State::Length = self.state {
            let Some(raw) = buf.get(..PREFIX_LEN) else { return Ok(None) };
            let raw: [u8; 4] = raw.try_into().expect("four bytes");
            let announced = self.codec.parse_length(raw);
            buf.advance(PREFIX_LEN);
            let announced = announced?;
            self.state = match announced {
                Announced::Header(len) => State::Header { len },
                Announced::Body(len) => State::Body { header: None, len, head_len: PREFIX_LEN },
            };
        }
        if let State::Header { len } = self.state {
            if buf.len() < len {
                return Ok(None);
            }
            let parsed = model.parse(&buf[..len], self.codec.digest_key());
            buf.advance(len);
            let (header, facts) = parsed?;
            self.codec.check_body_len(facts.total_size)?;
            let body_len = facts.total_size as usize;
            self.state = State::Body { header: Some((header, facts)), len: body_len, head_len: PREFIX_LEN + len };
        }
        let State::Body { len, .. } = &self.state else { unreachable!("the header leads to the body") };
        let len = *len;
        if buf.len() < len {
            return Ok(None);
        }
        let State::Body { header, .. } = std::mem::replace(&mut self.state, State::Length) else {
            unreachable!("matched State::Body above")
        };
        if let Err(err) = self.codec.verify(header.as_ref().map(|(_, facts)| facts), &buf[..len]) {
            buf.advance(len);
            return Err(err);
        }
        let header = header.map(|(header, _)| header);
        let body = model.take_body(buf, len);
        Ok(Some(Frame { header, body }))
    }

    /// Called when the stream has ended: decodes what is left, and reports a
    /// frame cut short as [`FrameError::Incomplete`]. `Ok(None)` means the
    /// stream ended cleanly between frames.
    pub fn decode_eof_with<M: FrameModel<Header = H>>(
        &mut self,
        buf: &mut BytesMut,
        model: &mut M,
    ) -> Result<Option<Frame<H, M::Body>>, FrameError> {
        if let Some(frame) = self.decode_with(buf, model)? {
            return Ok(Some(frame));
        }
        let (part, expected) = match self.state {
            State::Length if buf.is_empty() => return Ok(None),
            State::Length => (Part::Length, PREFIX_LEN),
            State::Header { len } => (Part::Header, len),
            State::Body { len, .. } => (Part::Body, len),
        };
        let err = FrameError::Incomplete { part, expected: expected as u64, received: buf.len() as u64 };
        self.error = Some(err.clone());
        Err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{ByteOrder, Checksum};

    fn json_frame(header: &str, body: &[u8]) -> Vec<u8> {
        let mut out = (header.len() as i32).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(body);
        out
    }

    fn hello() -> Vec<u8> {
        json_frame(r#"{"file_name": "a", "total_size": 5}"#, b"hello")
    }

    /// Feeds `data` in chunks of `chunk` bytes and collects every frame.
    fn decode_all(codec: Codec, data: &[u8], chunk: usize) -> Result<Vec<Frame>, FrameError> {
        let mut dec = Decoder::new(codec);
        let mut buf = BytesMut::new();
        let mut frames = vec![];
        for piece in data.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            while let Some(f) = dec.decode(&mut buf)? {
                frames.push(f);
            }
        }
        if let Some(f) = dec.decode_eof(&mut buf)? {
            frames.push(f);
        }
        Ok(frames)
    }

    #[test]
    fn empty_input_gives_nothing() {
        assert!(decode_all(Codec::default(), b"", 1).unwrap().is_empty());
    }

    #[test]
    fn one_whole_frame() {
        let frames = decode_all(Codec::default(), &hello(), 1024).unwrap();
        assert_eq!(frames.len(), 1);
        assert_eq!(&frames[0].body[..], b"hello");
        assert_eq!(&frames[0].header.as_ref().unwrap()[..], br#"{"file_name": "a", "total_size": 5}"#);
    }

    #[test]
    fn glued_frames_in_one_chunk() {
        let data = [hello(), hello(), hello()].concat();
        assert_eq!(decode_all(Codec::default(), &data, data.len()).unwrap().len(), 3);
    }

    #[test]
    fn every_chunk_size_from_one_to_nine() {
        let data = [hello(), json_frame(r#"{"total_size": 0}"#, b""), hello()].concat();
        for chunk in 1..=9 {
            let frames = decode_all(Codec::default(), &data, chunk).unwrap();
            let bodies: Vec<&[u8]> = frames.iter().map(|f| &f.body[..]).collect();
            assert_eq!(bodies, [&b"hello"[..], b"", b"hello"], "chunk {chunk}");
        }
    }

    #[test]
    fn body_that_looks_like_framing() {
        let inner = hello();
        let header = format!(r#"{{"total_size": {}}}"#, inner.len());
        let frames = decode_all(Codec::default(), &json_frame(&header, &inner), 3).unwrap();
        assert_eq!(&frames[0].body[..], &inner[..]);
    }

    #[test]
    fn length_only_both_byte_orders() {
        for order in [ByteOrder::Little, ByteOrder::Big] {
            let codec = Codec { json_header: false, byteorder: order, ..Codec::default() };
            let data = [codec.encode(None, b"abc").unwrap(), codec.encode(None, b"").unwrap()].concat();
            let frames = decode_all(codec, &data, 1).unwrap();
            assert_eq!(frames.len(), 2);
            assert_eq!(&frames[0].body[..], b"abc");
            assert!(frames[0].header.is_none());
        }
        let big = Codec { json_header: false, byteorder: ByteOrder::Big, ..Codec::default() };
        assert_eq!(big.encode(None, b"hi").unwrap(), b"\0\0\0\x02hi");
    }

    #[test]
    fn eof_inside_length_header_and_body_is_incomplete() {
        let data = hello();
        for (cut, part) in [(2, Part::Length), (10, Part::Header), (data.len() - 1, Part::Body)] {
            match decode_all(Codec::default(), &data[..cut], 1) {
                Err(FrameError::Incomplete { part: p, .. }) => assert_eq!(p, part, "cut at {cut}"),
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
    }

    #[test]
    fn incomplete_says_what_was_expected_and_what_came() {
        let data = hello();
        let err = decode_all(Codec::default(), &data[..data.len() - 2], 4).unwrap_err();
        assert_eq!(err, FrameError::Incomplete { part: Part::Body, expected: 5, received: 3 });
        assert_eq!(err.to_string(), "stream ended in the middle of a frame: expected a 5-byte body, received 3 bytes");
    }

    #[test]
    fn header_of_exactly_max_is_accepted_and_one_more_refused_before_buffering() {
        let header = r#"{"total_size": 0}"#;
        let exact = Codec { max_header: header.len() as u64, ..Codec::default() };
        assert_eq!(decode_all(exact, &json_frame(header, b""), 1).unwrap().len(), 1);

        let tight = Codec { max_header: header.len() as u64 - 1, ..Codec::default() };
        let mut dec = Decoder::new(tight);
        let mut buf = BytesMut::from(&json_frame(header, b"")[..4]);
        match dec.decode(&mut buf) {
            Err(FrameError::TooLarge { part: Part::Header, size, limit, .. }) => {
                assert_eq!((size, limit), (header.len() as u64, header.len() as u64 - 1))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn body_of_exactly_max_is_accepted_and_one_more_refused_after_the_header() {
        let exact = Codec { max_body: 5, ..Codec::default() };
        assert_eq!(decode_all(exact, &hello(), 1).unwrap().len(), 1);

        let tight = Codec { max_body: 4, ..Codec::default() };
        let data = hello();
        let header_end = data.len() - 5;
        let mut dec = Decoder::new(tight);
        let mut buf = BytesMut::from(&data[..header_end]);
        assert!(matches!(dec.decode(&mut buf), Err(FrameError::TooLarge { part: Part::Body, size: 5, limit: 4, .. })));
    }

    #[test]
    fn total_size_beyond_64_bits_is_too_large() {
        let frame = json_frame(r#"{"total_size": 1180591620717411303424}"#, b"");
        assert!(matches!(
            decode_all(Codec::default(), &frame, 100),
            Err(FrameError::TooLarge { part: Part::Body, .. })
        ));
    }

    #[test]
    fn length_only_oversize_is_refused_at_the_prefix() {
        let codec = Codec { json_header: false, max_body: 3, ..Codec::default() };
        let mut buf = BytesMut::from(&4i32.to_le_bytes()[..]);
        assert!(matches!(Decoder::new(codec).decode(&mut buf), Err(FrameError::TooLarge { size: 4, limit: 3, .. })));
    }

    #[test]
    fn declared_size_is_never_reserved() {
        let codec = Codec { json_header: false, max_body: i32::MAX as u64, ..Codec::default() };
        let mut dec = Decoder::new(codec);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&i32::MAX.to_le_bytes());
        assert!(dec.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b"some");
        assert!(dec.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() < 1024 * 1024, "capacity {}", buf.capacity());
    }

    #[test]
    fn negative_length_is_refused() {
        let mut buf = BytesMut::from(&(-1i32).to_le_bytes()[..]);
        assert!(matches!(
            Decoder::new(Codec::default()).decode(&mut buf),
            Err(FrameError::NegativeLength { value: -1, .. })
        ));
    }

    #[test]
    fn text_on_a_binary_port_is_named() {
        for (text, order) in
            [(&b"GET / HTTP/1.1\r\n"[..], ByteOrder::Little), (b"dir\n", ByteOrder::Big), (b"dir\n", ByteOrder::Little)]
        {
            let codec = Codec { byteorder: order, ..Codec::default() };
            let mut buf = BytesMut::from(text);
            let err = Decoder::new(codec).decode(&mut buf).unwrap_err().to_string();
            assert!(err.contains("text"), "{err}");
        }
    }

    #[test]
    fn poisoned_decoder_repeats_its_error() {
        let mut dec = Decoder::new(Codec::default());
        let mut buf = BytesMut::from(&json_frame("[]", b"")[..]);
        let first = dec.decode(&mut buf).unwrap_err();
        let mut good = BytesMut::from(&hello()[..]);
        assert_eq!(dec.decode(&mut good).unwrap_err(), first);
        assert!(matches!(first, FrameError::Header(_)));
    }

    #[test]
    fn checksum_is_verified() {
        let codec = Codec { checksum: Some(Checksum::Md5), ..Codec::default() };
        let good = json_frame(r#"{"md5": "5d41402abc4b2a76b9719d911017c592", "total_size": 5}"#, b"hello");
        assert_eq!(decode_all(codec, &good, 7).unwrap().len(), 1);
        let bad = json_frame(r#"{"md5": "5d41402abc4b2a76b9719d911017c592", "total_size": 5}"#, b"jello");
        assert!(matches!(decode_all(codec, &bad, 7), Err(FrameError::Checksum { .. })));
        let missing = json_frame(r#"{"total_size": 5}"#, b"hello");
        assert!(matches!(decode_all(codec, &missing, 7), Err(FrameError::Checksum { expected: None, .. })));
    }

    #[test]
    fn needed_says_how_much_to_read_next() {
        let data = hello();
        let mut dec = Decoder::new(Codec::default());
        let mut buf = BytesMut::new();
        let mut reads = 0;
        let frame = loop {
            let n = dec.needed(&buf);
            assert!(n > 0);
            buf.extend_from_slice(&data[dec.consumed() + buf.len()..][..n]);
            reads += 1;
            if let Some(f) = dec.decode(&mut buf).unwrap() {
                break f;
            }
        };
        assert_eq!((reads, &frame.body[..]), (3, &b"hello"[..]));
    }

    #[test]
    fn consumed_counts_the_parsed_head() {
        let data = hello();
        let mut dec = Decoder::new(Codec::default());
        let mut buf = BytesMut::from(&data[..data.len() - 2]);
        assert!(dec.decode(&mut buf).unwrap().is_none());
        assert_eq!(dec.consumed() + buf.len(), data.len() - 2);
    }

    #[test]
    fn encoder_refuses_what_the_reader_would_refuse() {
        let codec = Codec { max_body: 2, ..Codec::default() };
        assert!(matches!(codec.encode(Some(b"{}"), b"abc"), Err(FrameError::TooLarge { part: Part::Body, .. })));
        let codec = Codec { max_header: 1, ..Codec::default() };
        assert!(matches!(codec.encode(Some(b"{}"), b""), Err(FrameError::TooLarge { part: Part::Header, .. })));
    }
}
