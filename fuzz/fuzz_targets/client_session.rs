//! The client session (`protocol::client`), driven as the clients drive it,
//! with arbitrary bytes from the server: through the login, a pipeline of
//! requests, and `put` / `get` / `list` transfers.
//!
//! Flags (byte 0): bit 0 a token (the session logs in first), bit 1 TLS (the
//! channel binding is 32 bytes of 7), bits 2-3 what the driver asks after the
//! login: 0 a `run` and two `request`s, 1 a `get`, 2 a `put` of 5 bytes, 3 a
//! `features`, a `list` and a `run`; bit 4 the first request is cancelled after the first
//! piece; bit 5 the driver sends its data and end as soon as an upload is
//! ready (else it never does); bit 6 the stream ends with the peer leaving
//! (else it just stops); bit 7 the driver reads whole frames itself and hands
//! each over (`receive_frame`, as the blocking client does), a framing error
//! closing it, rather than giving the session the bytes. Limits (byte 1): bits 0-1 max_header 64 KiB / 4 KiB /
//! 512 / 64; bits 2-3 max_body 16 MiB / 1 KiB / 16 / 0.
//!
//! Checks: nothing panics; the login's answer goes only to a challenge bound as
//! the connection is (a shadow decoder reads the server's bytes); with a token
//! nothing but the login is sent before `LoggedIn`, and `LoggedIn` never comes
//! (the fuzzer cannot make the server's proof of a token over the session's
//! own random nonce); replies and
//! transfer events name requests in the order they were made, never one that
//! was cancelled or already answered; a download's chunks add up to at most
//! the size it announced, and its end comes only after all of it; after
//! `Closed` (always the last event) the session says nothing more and
//! refuses every request.
#![no_main]

use std::collections::VecDeque;

use libfuzzer_sys::fuzz_target;

use bytes::BytesMut;

use _rframe::codec::{ByteOrder, Codec, Decoder};
use _rframe::protocol::client::{Cancelled, ClientSession, Event, RequestId, SessionError};
use rframe_fuzz::Input;

const TOKEN: &[u8] = b"fuzz-token";
const BINDING: [u8; 32] = [7; 32];

fn codec_from(limits: u8) -> Codec {
    Codec {
        json_header: true,
        byteorder: ByteOrder::Little,
        max_header: [64 << 10, 4 << 10, 512, 64][(limits & 3) as usize],
        max_body: [16 << 20, 1 << 10, 16, 0][((limits >> 2) & 3) as usize],
        checksum: None,
    }
}

/// What the driver knows of its requests, to check the session's events by.
#[derive(Default)]
struct Book {
    /// Requests made and not yet answered, oldest first.
    waiting: VecDeque<RequestId>,
    cancelled: Vec<RequestId>,
    /// A download under way: its announced size and what came so far.
    download: Option<(RequestId, u64, u64)>,
    closed: bool,
    /// The server's bytes, decoded beside the session's own decoder: the
    /// `channel_binding` of the last `challenge` it sent, if any
    /// (`Some(None)`: a challenge without one).
    shadow: Option<(Decoder, BytesMut)>,
    challenge: Option<Option<String>>,
    /// What the session must see in a challenge before it sends a proof.
    expected_binding: &'static str,
}

impl Book {
    fn saw(&mut self, piece: &[u8]) {
        let Some((decoder, buf)) = self.shadow.as_mut() else { return };
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(buf) {
                Ok(Some(frame)) => {
                    let header: Option<serde_json::Value> =
                        frame.header.as_deref().and_then(|h| serde_json::from_slice(h).ok());
                    if let Some(h) = header.filter(|h| h["op"] == "challenge") {
                        self.challenge = Some(h["channel_binding"].as_str().map(str::to_owned));
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    self.shadow = None;
                    break;
                }
            }
        }
    }

    fn made(&mut self, id: RequestId) {
        self.waiting.push_back(id);
    }

    /// An event about `id` that ends its request.
    fn answered(&mut self, id: RequestId) {
        assert!(!self.cancelled.contains(&id), "an event for cancelled request {id}");
        assert_eq!(self.waiting.front(), Some(&id), "replies out of order: {id} before {:?}", self.waiting);
        self.waiting.pop_front();
    }

    /// An event about `id` on its way (a transfer's steps).
    fn step(&self, id: RequestId) {
        assert!(!self.cancelled.contains(&id), "an event for cancelled request {id}");
        assert_eq!(self.waiting.front(), Some(&id), "a step of {id} while {:?} wait", self.waiting);
    }
}

fn drain(session: &mut ClientSession, book: &mut Book, token: bool, send_upload: bool) {
    while let Some(event) = session.next_event() {
        assert!(!book.closed, "an event after Closed: {event:?}");
        match event {
            Event::Reply { id, .. } => book.answered(id),
            Event::Unsolicited { .. } => {}
            Event::RemoteError { id, error } => {
                if let Some(id) = id {
                    book.answered(id);
                    if book.download.is_some_and(|(d, _, _)| d == id) {
                        book.download = None;
                    }
                }
                assert!(!error.code.is_empty());
            }
            Event::Send(bytes) => {
                // the login's answer: only to a challenge bound as this
                // connection is (tls-server-end-point on TLS, none without)
                assert!(!bytes.is_empty());
                if let Some(seen) = &book.challenge {
                    let binding = seen.as_deref().unwrap_or("none");
                    assert_eq!(binding, book.expected_binding, "a proof sent to a challenge bound to {binding}");
                }
            }
            Event::LoggedIn { .. } => panic!("logged in without the server's proof"),
            Event::LoginFailed { id, .. } => book.answered(id),
            Event::UploadReady { id, chunk_size, offset, prefix_digest } => {
                book.step(id);
                assert!(chunk_size >= 1);
                // No offer reaches an upload that did not ask to resume.
                assert!(offset == 0 && prefix_digest.is_none(), "an offer to a put that did not resume");
                if send_upload {
                    // In chunks of the size the server asked for, as a driver
                    // must. One the session refuses (over this client's own
                    // max_body) fails the upload: the driver closes, as the
                    // clients do when a send fails mid-transfer.
                    let sent = b"hello".chunks(chunk_size).try_for_each(|chunk| {
                        let data = session.put_data(chunk)?;
                        assert!(data.len() > chunk.len());
                        Ok::<_, SessionError>(())
                    });
                    match sent.and_then(|()| session.put_end("0".repeat(64).as_str())) {
                        Ok(end) => assert!(!end.is_empty()),
                        Err(_) => {
                            session.abort("the upload failed");
                            book.closed = true;
                            return;
                        }
                    }
                }
            }
            Event::DownloadStarted { id, size, offset, .. } => {
                book.step(id);
                assert!(book.download.is_none());
                assert_eq!(offset, 0, "a get that did not resume resumed");
                book.download = Some((id, size, 0));
            }
            Event::FileChunk { id, data } => {
                book.step(id);
                let (d, size, got) = book.download.as_mut().expect("a chunk outside a download");
                assert_eq!(*d, id);
                *got += data.len() as u64;
                assert!(*got <= *size, "{got} bytes of a download of {size}");
            }
            Event::TransferEnd { id, .. } => {
                if let Some((d, size, got)) = book.download.take() {
                    assert_eq!(d, id);
                    assert_eq!(got, size, "a download ended after {got} of {size} bytes");
                }
                book.answered(id);
            }
            Event::Violation { id, .. } => {
                // the request it names is over (its caller gets bad-response)
                if let Some(id) = id {
                    book.answered(id);
                    if book.download.is_some_and(|(d, _, _)| d == id) {
                        book.download = None;
                    }
                }
            }
            // no live command is started by this target: a started, output
            // or exit frame is another request's unexpected reply
            Event::Started { .. } | Event::Output { .. } | Event::Exit { .. } => {
                panic!("a live command's event without a start: {event:?}")
            }
            Event::Features { id, .. } => {
                book.answered(id);
                assert!(session.default_checksum().is_some(), "features answered, and no checksum to pick");
            }
            Event::Closed { .. } => book.closed = true,
        }
        if token {
            assert!(!session.logged_in());
        }
    }
    if book.closed {
        assert!(session.closed().is_some());
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else { return };
    let flags = input.flags;
    let token = flags & 1 != 0;
    let binding = (flags & 2 != 0).then(|| BINDING.to_vec());
    let Ok(mut session) = ClientSession::new(codec_from(input.limits), token.then(|| TOKEN.to_vec()), binding) else {
        return;
    };
    let codec = *session.codec();
    let mut book = Book {
        shadow: Some((Decoder::new(codec), BytesMut::new())),
        expected_binding: if flags & 2 != 0 { "tls-server-end-point" } else { "none" },
        ..Book::default()
    };
    if token {
        let (id, bytes) = session.login().expect("a new session logs in");
        assert!(!bytes.is_empty());
        book.made(id);
        // Nothing but the login until it is done.
        assert!(session.run(br#"{"op": "run", "cmd": "true"}"#, b"").is_err());
    } else {
        let made = match (flags >> 2) & 3 {
            0 => vec![
                session.run(br#"{"op": "run", "cmd": "true"}"#, b""),
                session.request(Some(br#"{"seq": 1}"#), b"x"),
                session.request(None, b"y"),
            ],
            1 => vec![session.get("f", "sha256")],
            2 => vec![session.put("f", 5, false, "sha256")],
            _ => vec![session.features(), session.list(""), session.run(br#"{"op": "run", "cmd": ["ls"]}"#, b"")],
        };
        for request in made.into_iter().flatten() {
            book.made(request.0);
        }
    }
    let send_upload = flags & 32 != 0;
    // bit 7: the blocking client's way, whole frames read by the driver
    let mut frames = (flags & 128 != 0).then(|| (Decoder::new(codec), BytesMut::new()));
    for (i, piece) in input.pieces().into_iter().enumerate() {
        book.saw(piece);
        match frames.as_mut() {
            None => {
                session.receive_data(piece);
                drain(&mut session, &mut book, token, send_upload);
            }
            Some((decoder, buf)) => {
                buf.extend_from_slice(piece);
                loop {
                    match decoder.decode(buf) {
                        Ok(Some(frame)) => {
                            session.receive_frame(frame);
                            drain(&mut session, &mut book, token, send_upload);
                            if book.closed {
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(_) => {
                            // read_frame's error reaches the caller; the client closes
                            session.abort("a frame could not be read");
                            book.closed = true;
                            break;
                        }
                    }
                }
            }
        }
        if i == 0 && flags & 16 != 0 {
            if let Some(&first) = book.waiting.front() {
                match session.cancel(first) {
                    Cancelled::ReplyDropped => {
                        book.waiting.pop_front();
                        book.cancelled.push(first);
                    }
                    Cancelled::MustClose(_) => {
                        session.abort("cancelled");
                        book.closed = true;
                    }
                    // A claim (expect_reply) with none behind it: gone, no frame is its.
                    Cancelled::Withdrawn => {
                        book.waiting.pop_front();
                    }
                    Cancelled::NotPending => {}
                }
            }
        }
        if book.closed {
            break;
        }
    }
    if flags & 64 != 0 && !book.closed {
        session.receive_eof();
        drain(&mut session, &mut book, token, send_upload);
        assert!(book.closed, "the end of the stream closes the session");
    }
    if book.closed {
        assert!(session.closed().is_some());
        assert!(session.request(None, b"after").is_err(), "a closed session makes no request");
        assert!(session.next_event().is_none());
    }
});
