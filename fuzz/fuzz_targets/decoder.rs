//! The frame decoder, fed arbitrary bytes in arbitrary pieces.
//!
//! Flags (byte 0): bit 0 length-only (else JSON header), bit 1 big endian,
//! bits 2-3 checksum (1 md5, 2 sha256, else none; JSON header only).
//! Limits (byte 1): low nibble n: max_header = 16n (0: the default, 64 KiB);
//! high nibble m: max_body = 8(m-1) (0: the default, 256 MiB).
//!
//! Checks, for every input:
//! - decoding piece by piece gives exactly the frames and the end (clean, the
//!   same error, or the same "incomplete") that decoding the whole stream at
//!   once gives, and so does the blocking reader (`io::read::read_frame`) fed
//!   reads of the same sizes;
//! - nothing panics; a decoder that failed refuses every later call with the
//!   same error;
//! - while it waits, the decoder holds less than the limits allow, waits for
//!   no more than they allow, and has lost no byte (fed = frames + consumed + buffer);
//! - every frame is valid (header, total_size, limits, digest), and encoding
//!   the frames again gives back the stream's bytes exactly; a header that
//!   `json::scan_flat` (the bindings' fast path) accepts is valid JSON with
//!   the same members; every error formats a message;
//! - round trip: a header written by the codec's header writer, encoded with a
//!   body, decodes to that header and body whenever encoding succeeds, and
//!   encoding refuses only sizes over the limits.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;

use _rframe::codec::{
    json, ByteOrder, Checksum, Codec, Decoder, Frame, FrameError, DEFAULT_MAX_BODY, DEFAULT_MAX_HEADER, PREFIX_LEN,
};
use _rframe::io::read::{read_frame, ReadError};
use rframe_fuzz::{pieces, GrowingBody, Input, Trickle};

fn codec_from(flags: u8, limits: u8) -> Codec {
    let json_header = flags & 1 == 0;
    let checksum = match (flags >> 2) & 3 {
        1 if json_header => Some(Checksum::Md5),
        2 if json_header => Some(Checksum::Sha256),
        _ => None,
    };
    let max_header = match limits & 0x0f {
        0 => DEFAULT_MAX_HEADER,
        n => 16 * n as u64,
    };
    let max_body = match limits >> 4 {
        0 => DEFAULT_MAX_BODY,
        m => 8 * (m as u64 - 1),
    };
    let byteorder = if flags & 2 == 0 { ByteOrder::Little } else { ByteOrder::Big };
    let codec = Codec { json_header, byteorder, max_header, max_body, checksum };
    codec.validate().expect("the fuzz configurations are valid codecs");
    codec
}

/// What a stream decodes to: its frames, then how it ended (`None`: cleanly,
/// between frames).
#[derive(Debug, PartialEq)]
struct Outcome {
    frames: Vec<Frame>,
    end: Option<FrameError>,
}

fn wire_len(frame: &Frame) -> usize {
    PREFIX_LEN + frame.header.as_ref().map_or(0, |h| h.len()) + frame.body.len()
}

/// The largest part the decoder may wait for: the prefix, a header, a body.
fn largest_part(codec: &Codec) -> usize {
    let header = if codec.json_header { codec.max_header } else { 0 };
    PREFIX_LEN.max(header as usize).max(codec.max_body as usize)
}

/// Feeds the pieces to one decoder, as a socket's reads would, checking the
/// decoder's invariants along the way.
fn decode_pieces(codec: Codec, pieces: &[&[u8]]) -> Outcome {
    let mut dec = Decoder::new(codec);
    let mut buf = BytesMut::new();
    let mut frames = vec![];
    let mut end = None;
    let (mut fed, mut taken) = (0usize, 0usize);
    for piece in pieces {
        buf.extend_from_slice(piece);
        fed += piece.len();
        if let Some(err) = &end {
            assert_eq!(dec.decode(&mut buf).as_ref(), Err(err), "a failed decoder repeats its error");
            continue;
        }
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    taken += wire_len(&frame);
                    frames.push(frame);
                }
                Ok(None) => {
                    let needed = dec.needed(&buf);
                    assert!(needed > 0, "waiting for nothing");
                    assert!(buf.len() + needed <= largest_part(&codec), "waits for more than the limits allow");
                    assert_eq!(fed, taken + dec.consumed() + buf.len(), "bytes lost or invented");
                    let head = if codec.json_header { codec.max_header as usize } else { 0 };
                    assert!(dec.consumed() <= PREFIX_LEN + head);
                    break;
                }
                Err(err) => {
                    assert_eq!(dec.error(), Some(&err));
                    assert!(!err.to_string().is_empty(), "an error says what went wrong");
                    end = Some(err);
                    break;
                }
            }
        }
    }
    if end.is_none() {
        loop {
            match dec.decode_eof(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => {
                    assert!(buf.is_empty() && dec.consumed() == 0, "clean end with bytes left");
                    break;
                }
                Err(err) => {
                    assert!(matches!(err, FrameError::Incomplete { .. }), "only incomplete is new at the end: {err:?}");
                    assert!(!err.to_string().is_empty());
                    end = Some(err);
                    break;
                }
            }
        }
    }
    if let Some(err) = &end {
        assert_eq!(dec.decode(&mut buf).as_ref(), Err(err));
        assert_eq!(dec.decode_eof(&mut buf).as_ref(), Err(err));
        buf.extend_from_slice(b"\x05\0\0\0hello");
        assert_eq!(dec.decode(&mut buf).as_ref(), Err(err));
    }
    Outcome { frames, end }
}

/// The blocking reader, one frame after another until the stream ends or fails.
fn read_all(codec: Codec, stream: &[u8], sizes: &[u8]) -> Outcome {
    let mut src = Trickle::new(stream, sizes);
    let mut frames = vec![];
    loop {
        match read_frame(&codec, &mut src, |n| Ok(GrowingBody::new(n))) {
            Ok(raw) => frames.push(Frame { header: raw.header.map(Bytes::from), body: raw.body.into_vec().into() }),
            Err(ReadError::Eof) => return Outcome { frames, end: None },
            Err(ReadError::Frame(err)) => return Outcome { frames, end: Some(err) },
            Err(ReadError::Source(never)) => match never {},
        }
    }
}

fn check_frame(codec: &Codec, frame: &Frame) {
    assert!(frame.body.len() as u64 <= codec.max_body);
    match &frame.header {
        None => assert!(!codec.json_header),
        Some(header) => {
            assert!(codec.json_header);
            assert!(header.len() as u64 <= codec.max_header);
            let facts = json::parse_header(header, codec.digest_key()).expect("a frame's header is valid");
            check_scan_flat(header);
            assert_eq!(facts.total_size, frame.body.len() as u64);
            codec.verify(Some(&facts), &frame.body).expect("a frame's digest matches");
        }
    }
}

/// `json::scan_flat` (the bindings' fast path, with an `unsafe` UTF-8 step)
/// accepts only valid JSON, and reads it as a full parser does: the same
/// members, a repeated key counting with its last value. Given the keys it
/// read as known keys, it reads the same members again.
fn check_scan_flat(bytes: &[u8]) {
    let mut pairs = vec![];
    let text = |key| match key {
        json::FlatKey::Text(text) => text,
        json::FlatKey::Known => panic!("scan_flat reported a known key when none was given"),
    };
    if json::scan_flat(bytes, |_| None, |key, value| pairs.push((text(key), value))).is_none() {
        return;
    }
    let tokens: Vec<Option<Box<[u8]>>> = pairs.iter().map(|(key, _)| json::key_token(key)).collect();
    let mut again = vec![];
    json::scan_flat(bytes, |p| tokens.get(p).and_then(|t| t.as_deref()), |key, value| again.push((key, value)))
        .expect("scan_flat refused a header it accepted, given its keys");
    // A key with white space before its colon is read as text, the same text;
    // any other spelling is known.
    assert_eq!(again.len(), pairs.len(), "scan_flat with known keys read other members");
    for ((key, value), (first_key, first_value)) in again.iter().zip(&pairs) {
        assert_eq!(value, first_value, "scan_flat with known keys read another value");
        if let json::FlatKey::Text(text) = key {
            assert_eq!(text, first_key, "scan_flat with known keys read another key");
        }
    }
    // The first member, when its token opens the object, must be known...
    let opening = bytes.trim_ascii_start().strip_prefix(b"{").map(<[u8]>::trim_ascii_start);
    if let (Some(rest), Some(Some(token))) = (opening, tokens.first()) {
        if rest.starts_with(token) {
            assert_eq!(again.first().map(|(key, _)| *key), Some(json::FlatKey::Known), "a key's token was missed");
        }
    }
    // ...and a token one byte off is never taken for the key.
    let altered: Vec<Option<Box<[u8]>>> = tokens
        .iter()
        .map(|t| {
            t.clone().map(|mut t| {
                t[1] ^= 0x01; // the key's first byte (or its closing quote)
                t
            })
        })
        .collect();
    json::scan_flat(bytes, |p| altered.get(p).and_then(|t| t.as_deref()), |key, _| {
        assert_ne!(key, json::FlatKey::Known, "scan_flat matched a token that differs from the key");
    })
    .expect("scan_flat refused a header it accepted, given other keys");
    let full: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(bytes).expect("scan_flat accepted invalid JSON");
    // Python's json.loads reads `-0` as the int 0; serde_json as the float -0.0.
    let same = |flat: &json::FlatValue, full: &serde_json::Value| match flat {
        json::FlatValue::Str(s) => full.as_str() == Some(*s),
        json::FlatValue::Int(n) => full.as_i64() == Some(*n) || (*n == 0 && full.as_f64() == Some(0.0)),
        json::FlatValue::Bool(b) => full.as_bool() == Some(*b),
        json::FlatValue::Null => full.is_null(),
    };
    let mut keys = std::collections::BTreeSet::new();
    for (i, (key, value)) in pairs.iter().enumerate() {
        keys.insert(*key);
        // A repeated key counts with its last value.
        if pairs[i + 1..].iter().all(|(later, _)| later != key) {
            assert!(same(value, &full[*key]), "scan_flat reads {key:?} as {value:?}, JSON as {}", full[*key]);
        }
    }
    assert_eq!(keys.len(), full.len(), "scan_flat and JSON see different keys");
}

/// Header text for the round trip: up to 64 bytes of the stream, as a string.
fn text(stream: &[u8]) -> (String, &[u8]) {
    let Some((&n, rest)) = stream.split_first() else { return (String::new(), stream) };
    let (text, rest) = rest.split_at((n as usize % 64).min(rest.len()));
    (String::from_utf8_lossy(text).into_owned(), rest)
}

fn round_trip(codec: Codec, stream: &[u8], sizes: &[u8]) {
    let (key, rest) = text(stream);
    let (value, body) = text(rest);
    let header = codec.json_header.then(|| {
        let mut w = codec.header_writer(body);
        if !key.is_empty() && w.key(&key) == json::Entry::WriteValue {
            w.writer().string(&value);
        }
        w.finish()
    });
    let wire = match codec.encode(header.as_deref(), body) {
        Ok(wire) => wire,
        Err(FrameError::TooLarge { .. }) => {
            let header_len = header.as_ref().map_or(0, |h| h.len()) as u64;
            assert!(header_len > codec.max_header || body.len() as u64 > codec.max_body, "refused within the limits");
            return;
        }
        Err(err) => panic!("encode refused a codec-written header: {err:?}"),
    };
    if let Some(header) = &header {
        check_scan_flat(header);
    }
    let expected = Frame { header: header.map(Bytes::from), body: Bytes::copy_from_slice(body) };
    let outcome = decode_pieces(codec, &pieces(&wire, sizes));
    assert_eq!(outcome, Outcome { frames: vec![expected], end: None });
}

fuzz_target!(|data: &[u8]| {
    // The fast path on any bytes, not only headers the codec accepted.
    check_scan_flat(data);
    let Some(input) = Input::parse(data) else { return };
    let codec = codec_from(input.flags, input.limits);

    let whole = decode_pieces(codec, &[input.stream]);
    let chunked = decode_pieces(codec, &input.pieces());
    assert_eq!(chunked, whole, "piece by piece differs from all at once");
    let blocking = read_all(codec, input.stream, input.sizes);
    assert_eq!(blocking, whole, "the blocking reader differs from the decoder");

    let mut again = vec![];
    for frame in &whole.frames {
        check_frame(&codec, frame);
        again.extend(codec.encode(frame.header.as_deref(), &frame.body).expect("a decoded frame encodes"));
    }
    assert_eq!(again, input.stream[..again.len()], "re-encoding the frames changes the bytes");

    round_trip(codec, input.stream, input.sizes);
});
