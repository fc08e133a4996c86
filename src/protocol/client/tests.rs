//! The client session's rules, one test each, with no socket: the tests play
//! the server with bytes.

use super::*;
use crate::codec::Part;
use serde_json::json;

/// A frame as the server sends it: `fields` is a JSON object's members
/// without `total_size`, which is added.
fn frame(fields: &str, body: &[u8]) -> Vec<u8> {
    let header = if fields.is_empty() {
        format!(r#"{{"total_size": {}}}"#, body.len())
    } else {
        format!(r#"{{{fields}, "total_size": {}}}"#, body.len())
    };
    Codec::default().encode(Some(header.as_bytes()), body).unwrap()
}

/// The JSON header and body of the one frame in `bytes` (what the client sent).
fn sent(bytes: &[u8]) -> (serde_json::Value, Vec<u8>) {
    let mut buf = BytesMut::from(bytes);
    let f = Decoder::new(Codec::default()).decode(&mut buf).unwrap().expect("a whole frame");
    assert!(buf.is_empty(), "one frame");
    (serde_json::from_slice(&f.header.unwrap()).unwrap(), f.body.to_vec())
}

fn header_text(bytes: &[u8]) -> String {
    let mut buf = BytesMut::from(bytes);
    let f = Decoder::new(Codec::default()).decode(&mut buf).unwrap().unwrap();
    String::from_utf8(f.header.unwrap().to_vec()).unwrap()
}

fn session() -> ClientSession {
    ClientSession::new(Codec::default(), None, None).unwrap()
}

fn feed(s: &mut ClientSession, data: &[u8]) -> Vec<Event> {
    s.receive_data(data);
    s.events()
}

fn feed_bytewise(s: &mut ClientSession, data: &[u8]) -> Vec<Event> {
    let mut events = vec![];
    for b in data {
        s.receive_data(std::slice::from_ref(b));
        events.extend(s.events());
    }
    events
}

fn run_header() -> Vec<u8> {
    br#"{"op": "run", "cmd": "true", "total_size": 0}"#.to_vec()
}

fn result(out: &[u8]) -> Vec<u8> {
    frame(&format!(r#""op": "result", "returncode": 0, "stdout_size": {}, "stderr_size": 0"#, out.len()), out)
}

fn error(code: &str, message: &str) -> Vec<u8> {
    frame(&format!(r#""op": "error", "error": "{code}", "message": "{message}""#), b"")
}

fn reply_body(e: &Event) -> (RequestId, Vec<u8>) {
    match e {
        Event::Reply { id, frame } => (*id, frame.body.to_vec()),
        other => panic!("not a reply: {other:?}"),
    }
}

// ---------------------------------------------------------------- requests and replies

#[test]
fn replies_come_in_the_order_requests_were_made() {
    let mut s = session();
    let ids: Vec<_> = (0..3).map(|_| s.run(&run_header(), b"").unwrap().0).collect();
    assert_eq!(ids, [0, 1, 2]);
    let events = feed(&mut s, &[result(b"a"), result(b"b"), result(b"c")].concat());
    let got: Vec<_> = events.iter().map(reply_body).collect();
    assert_eq!(got, [(0, b"a".to_vec()), (1, b"b".to_vec()), (2, b"c".to_vec())]);
    assert_eq!(s.in_flight(), 0);
}

#[test]
fn a_request_is_its_frame_as_given() {
    let mut s = session();
    let (_, bytes) = s.request(Some(br#"{"x": 1, "total_size": 2}"#), b"hi").unwrap();
    assert_eq!(bytes, frame(r#""x": 1"#, b"hi"));
    let length_only = Codec { json_header: false, ..Codec::default() };
    let mut s = ClientSession::new(length_only, None, None).unwrap();
    let (id, bytes) = s.request(None, b"hi").unwrap();
    assert_eq!(bytes, b"\x02\x00\x00\x00hi");
    let reply = length_only.encode(None, b"HI").unwrap();
    assert_eq!(
        feed(&mut s, &reply),
        [Event::Reply { id, frame: Frame { header: None, body: Bytes::from_static(b"HI") } }]
    );
    assert!(matches!(s.run(&run_header(), b""), Err(SessionError::Usage(_))));
}

#[test]
fn a_frame_nobody_asked_for_is_unsolicited_until_someone_expects_it() {
    let mut s = session();
    let events = feed(&mut s, &result(b"x"));
    assert!(matches!(&events[..], [Event::Unsolicited { .. }]));
    let id = s.expect_reply().unwrap();
    assert_eq!(reply_body(&feed(&mut s, &result(b"y"))[0]), (id, b"y".to_vec()));
}

#[test]
fn a_run_reply_must_be_a_result() {
    let mut s = session();
    let (id, _) = s.run(&run_header(), b"").unwrap();
    let events = feed(&mut s, &frame(r#""op": "listing", "n": 1.5"#, b""));
    assert_eq!(
        events,
        [Event::Violation {
            id: Some(id),
            kind: ViolationKind::UnexpectedReply,
            message: "expected a result frame, got {'op': 'listing', 'n': 1.5, 'total_size': 0}".into(),
            closes: false,
            header: Bytes::from_static(br#"{"op": "listing", "n": 1.5, "total_size": 0}"#),
        }]
    );
    assert!(s.closed().is_none());
}

// ---------------------------------------------------------------- error frames

#[test]
fn an_error_frame_is_a_remote_error_that_keeps_the_connection() {
    let mut s = session();
    let (id, _) = s.run(&run_header(), b"").unwrap();
    let bytes = error("spawn", "no such program");
    let events = feed(&mut s, &bytes);
    let [Event::RemoteError { id: Some(got), error }] = &events[..] else { panic!("{events:?}") };
    assert_eq!(
        (*got, error.code.as_str(), error.message.as_str(), error.closes),
        (id, "spawn", "no such program", false)
    );
    assert!(error.header.starts_with(br#"{"op": "error""#));
    assert!(s.closed().is_none());
    s.run(&run_header(), b"").unwrap();
}

#[test]
fn error_codes_after_which_the_server_closes_close_the_session() {
    let all = [
        "bad-request",
        "not-allowed",
        "auth",
        "busy",
        "too-large",
        "timeout",
        "handler",
        "spawn",
        "not-found",
        "exists",
        "checksum",
        "io",
        "tls-required",
    ];
    for code in all {
        let mut s = session();
        let (id, _) = s.request(Some(br#"{"total_size": 0}"#), b"").unwrap();
        s.request(Some(br#"{"total_size": 0}"#), b"").unwrap();
        let events = feed(&mut s, &[error(code, "why"), result(b"")].concat());
        let closing = ["auth", "busy", "too-large", "timeout", "tls-required"].contains(&code);
        assert_eq!(closes_connection(code), closing, "{code}");
        match &events[..] {
            [Event::RemoteError { id: Some(got), error }, Event::Closed { reason, error: None }] => {
                assert!(closing, "{code} closed");
                assert_eq!((*got, error.closes), (id, true));
                assert_eq!(reason, "the server refused: why");
                assert_eq!(s.closed(), Some("the server refused: why"));
            }
            [Event::RemoteError { id: Some(got), error }, Event::Reply { .. }] => {
                assert!(!closing, "{code} did not close");
                assert_eq!((*got, error.closes), (id, false));
            }
            other => panic!("{code}: {other:?}"),
        }
    }
}

#[test]
fn an_error_before_any_request_is_reported_and_may_close() {
    let mut s = session();
    let events = feed(&mut s, &frame(r#""op": "error", "error": "busy""#, b""));
    let [Event::RemoteError { id: None, error }, Event::Closed { reason, .. }] = &events[..] else {
        panic!("{events:?}")
    };
    assert_eq!((error.code.as_str(), error.message.as_str()), ("busy", ""));
    assert_eq!(reason, "the server refused: busy");
    // An odd code is still an error, named as Python's str() names it.
    let mut s = session();
    let events = feed(&mut s, &frame(r#""op": "error", "error": 7"#, b""));
    let [Event::RemoteError { error, .. }] = &events[..] else { panic!("{events:?}") };
    assert_eq!((error.code.as_str(), error.closes), ("7", false));
    let events = feed(&mut s, &frame(r#""op": "error""#, b""));
    let [Event::RemoteError { error, .. }] = &events[..] else { panic!("{events:?}") };
    assert_eq!(error.code, "unknown");
}

// ---------------------------------------------------------------- cancelling

#[test]
fn a_cancelled_request_has_its_reply_dropped() {
    let mut s = session();
    let (a, _) = s.request(Some(br#"{"total_size": 0}"#), b"").unwrap();
    let (b, _) = s.request(Some(br#"{"total_size": 0}"#), b"").unwrap();
    let (c, _) = s.list("").unwrap();
    assert_eq!(s.cancel(a), Cancelled::ReplyDropped);
    assert_eq!(s.cancel(c), Cancelled::ReplyDropped);
    let events = feed(&mut s, &[result(b"a"), error("handler", "boom"), frame(r#""op": "listing""#, b"[]")].concat());
    let [Event::RemoteError { id: Some(got), .. }] = &events[..] else { panic!("{events:?}") };
    assert_eq!(*got, b);
    assert_eq!(s.cancel(b), Cancelled::NotPending);
    assert!(s.closed().is_none());
}

#[test]
fn an_op_key_written_with_an_escape_still_makes_an_error() {
    // The reply's fast path skips headers that cannot name `op`; json.loads
    // reads "\u006fp" as "op", and so must the session.
    let mut s = session();
    let (id, _) = s.request(Some(br#"{"total_size": 0}"#), b"").unwrap();
    let events = feed(&mut s, &frame(r#""\u006fp": "error", "error": "not-found""#, b""));
    assert!(
        matches!(&events[..], [Event::RemoteError { id: Some(got), error }] if *got == id && error.code == "not-found")
    );
    // "op" as a value is not the key: still the reply.
    let (id, _) = s.request(Some(br#"{"total_size": 0}"#), b"").unwrap();
    assert_eq!(reply_body(&feed(&mut s, &frame(r#""x": "op""#, b"r"))[0]), (id, b"r".to_vec()));
}

#[test]
fn a_driver_that_reads_frames_itself_reports_its_framing_errors() {
    // A frame cut short by the end of the stream is the server closing.
    let mut s = session();
    let (id, _) = s.request(Some(br#"{"total_size": 0}"#), b"").unwrap();
    s.receive_frame_error(FrameError::Incomplete { part: Part::Body, expected: 5, received: 2 });
    let events = s.events();
    assert!(
        matches!(&events[..], [Event::Closed { reason, error: Some(FrameError::Incomplete { .. }) }] if reason == SERVER_CLOSED)
    );
    assert_eq!(s.cancel(id), Cancelled::NotPending);
    // Any other error is the frame that could not be read.
    let mut s = session();
    s.receive_frame_error(FrameError::NegativeLength { raw: [0xff; 4], value: -1, text: None });
    assert!(
        matches!(&s.events()[..], [Event::Closed { reason, .. }] if reason == "reading a frame failed: FrameError")
    );
    assert!(s.closed().is_some());
}

#[test]
fn a_cancelled_claim_with_none_behind_it_is_withdrawn() {
    // Client.recv / AsyncClient.recv: nothing was sent for a claim, so a
    // caller who leaves takes its place in the queue with it...
    let mut s = session();
    let a = s.expect_reply().unwrap();
    let b = s.expect_reply().unwrap();
    assert_eq!(s.cancel(b), Cancelled::Withdrawn);
    assert_eq!(s.cancel(a), Cancelled::Withdrawn);
    let (c, _) = s.request(Some(br#"{"total_size": 0}"#), b"").unwrap();
    assert_eq!(reply_body(&feed(&mut s, &result(b"c"))[0]), (c, b"c".to_vec()));
    // ...unless someone waits behind it: then the frame it claimed is dropped.
    let a = s.expect_reply().unwrap();
    let b = s.expect_reply().unwrap();
    assert_eq!(s.cancel(a), Cancelled::ReplyDropped);
    let events = feed(&mut s, &[result(b"a"), result(b"b")].concat());
    assert_eq!(events.len(), 1);
    assert_eq!(reply_body(&events[0]), (b, b"b".to_vec()));
}

#[test]
fn a_cancelled_request_answered_by_a_closing_error_still_closes() {
    let mut s = session();
    let (a, _) = s.request(Some(br#"{"total_size": 0}"#), b"").unwrap();
    s.cancel(a);
    let events = feed(&mut s, &error("too-large", "big"));
    assert_eq!(events, [Event::Closed { reason: "the server refused: big".into(), error: None }]);
}

#[test]
fn cancelling_a_transfer_or_a_run_demands_the_close() {
    // A download with data under way.
    let mut s = session();
    let (id, _) = s.get("f", "sha256").unwrap();
    feed(&mut s, &[frame(r#""op": "file", "size": 4"#, b""), frame(r#""op": "data""#, b"ab")].concat());
    assert_eq!(s.cancel(id), Cancelled::MustClose(TRANSFER_CUT));
    assert_eq!(s.closed(), Some(TRANSFER_CUT));
    assert_eq!(feed(&mut s, &frame(r#""op": "data""#, b"cd")), []);
    assert_eq!(s.list(""), Err(SessionError::Closed(TRANSFER_CUT.into())));
    // An upload whose data is going out.
    let mut s = session();
    let (id, _) = s.put("f", 4, false, "sha256").unwrap();
    feed(&mut s, &frame(r#""op": "ready", "chunk_size": 2"#, b""));
    s.put_data(b"ab").unwrap();
    assert_eq!(s.cancel(id), Cancelled::MustClose(TRANSFER_CUT));
    assert!(matches!(s.put_data(b"cd"), Err(SessionError::Closed(_))));
    // A command that may still run.
    let mut s = session();
    let (id, _) = s.run(&run_header(), b"").unwrap();
    assert_eq!(s.cancel(id), Cancelled::MustClose(RUN_CANCELLED));
}

// ---------------------------------------------------------------- login

const TOKEN: &[u8] = b"a token of at least thirty-two bytes";

/// Plays the server's side of the handshake: the challenge for `binding`
/// (`None`: plaintext), then checks the client's answer as the server does
/// and returns the welcome (with a wrong proof if `lie`).
struct FakeServer {
    nonce: String,
    binding: Option<Vec<u8>>,
}

impl FakeServer {
    fn challenge(&self) -> Vec<u8> {
        let cb = if self.binding.is_some() { auth::TLS_SERVER_END_POINT } else { auth::NO_BINDING };
        frame(&format!(r#""op": "challenge", "nonce": "{}", "version": 1, "channel_binding": "{cb}""#, self.nonce), b"")
    }

    fn welcome(&self, answer: &[u8], lie: bool) -> Vec<u8> {
        let (h, _) = sent(answer);
        assert_eq!(h["op"], "auth");
        assert_eq!(h["nonce"], self.nonce.as_str());
        let cn = h["client_nonce"].as_str().unwrap();
        let binding = self.binding.as_deref();
        let expected_cb = if binding.is_some() { json!("tls-server-end-point") } else { serde_json::Value::Null };
        assert_eq!(h.get("channel_binding").cloned().unwrap_or_default(), expected_cb);
        assert!(auth::verify(TOKEN, Role::Client, &self.nonce, cn, binding, h["proof"].as_str().unwrap()));
        let token: &[u8] = if lie { b"another token" } else { TOKEN };
        let proof = auth::proof(token, Role::Server, &self.nonce, cn, binding);
        frame(&format!(r#""op": "welcome", "proof": "{proof}""#), b"")
    }
}

fn login_session(binding: Option<Vec<u8>>) -> (ClientSession, RequestId, FakeServer) {
    let mut s = ClientSession::new(Codec::default(), Some(TOKEN.to_vec()), binding.clone()).unwrap();
    let (id, hello) = s.login().unwrap();
    assert_eq!(header_text(&hello), r#"{"op": "auth", "total_size": 0}"#);
    (s, id, FakeServer { nonce: auth::nonce(), binding })
}

fn answer_of(events: &[Event]) -> Vec<u8> {
    match events {
        [Event::Send(answer)] => answer.clone(),
        other => panic!("no answer: {other:?}"),
    }
}

#[test]
fn a_login_proves_the_token_both_ways_in_plaintext_and_on_tls() {
    for binding in [None, Some(vec![7u8; 32])] {
        let (mut s, id, server) = login_session(binding);
        assert_eq!(s.run(&run_header(), b""), Err(SessionError::Busy("the login is under way")));
        let answer = answer_of(&feed(&mut s, &server.challenge()));
        assert_eq!(feed(&mut s, &server.welcome(&answer, false)), [Event::LoggedIn { id }]);
        assert!(s.logged_in());
        s.run(&run_header(), b"").unwrap();
    }
}

#[test]
fn a_binding_set_after_the_session_was_made_binds_the_login() {
    // An asyncio driver makes its session before the TLS handshake ends.
    let binding = vec![9u8; 32];
    let mut s = ClientSession::new(Codec::default(), Some(TOKEN.to_vec()), None).unwrap();
    s.bind_channel(binding.clone()).unwrap();
    let (id, _) = s.login().unwrap();
    let server = FakeServer { nonce: auth::nonce(), binding: Some(binding.clone()) };
    let answer = answer_of(&feed(&mut s, &server.challenge()));
    assert_eq!(feed(&mut s, &server.welcome(&answer, false)), [Event::LoggedIn { id }]);
    // Too late once the login began: its proofs are already bound (or not).
    assert!(matches!(s.bind_channel(binding), Err(SessionError::Usage(_))));
}

#[test]
fn a_challenge_from_a_server_before_channel_binding_is_answered_in_plaintext() {
    let (mut s, id, server) = login_session(None);
    let old = frame(&format!(r#""op": "challenge", "nonce": "{}""#, server.nonce), b"");
    let answer = answer_of(&feed(&mut s, &old));
    assert_eq!(feed(&mut s, &server.welcome(&answer, false)), [Event::LoggedIn { id }]);
}

#[test]
fn a_wrong_server_proof_fails_the_login_and_closes() {
    let (mut s, id, server) = login_session(None);
    let answer = answer_of(&feed(&mut s, &server.challenge()));
    assert_eq!(
        feed(&mut s, &server.welcome(&answer, true)),
        [
            Event::LoginFailed { id, message: LOGIN_SERVER_UNPROVEN.into() },
            Event::Closed { reason: AUTH_SERVER_FAILED.into(), error: None }
        ]
    );
    // A welcome without a proof is no better.
    let (mut s, id, server) = login_session(None);
    feed(&mut s, &server.challenge());
    let events = feed(&mut s, &frame(r#""op": "welcome""#, b""));
    assert_eq!(events[0], Event::LoginFailed { id, message: LOGIN_SERVER_UNPROVEN.into() });
}

#[test]
fn a_tls_client_refuses_a_challenge_not_bound_to_tls_and_sends_no_proof() {
    let (mut s, id, mut server) = login_session(Some(vec![1u8; 32]));
    server.binding = None; // something in the middle ended TLS
    let events = feed(&mut s, &server.challenge());
    assert_eq!(
        events,
        [
            Event::LoginFailed { id, message: LOGIN_TLS_UNBOUND.into() },
            Event::Closed { reason: LOGIN_TLS_UNBOUND.into(), error: None }
        ]
    );
}

#[test]
fn a_plaintext_client_refuses_a_challenge_bound_to_tls_and_sends_no_proof() {
    let (mut s, id, mut server) = login_session(None);
    server.binding = Some(vec![1u8; 32]);
    let events = feed(&mut s, &server.challenge());
    let message = "the server binds its handshake to 'tls-server-end-point', and this connection is plaintext: \
                   something in the middle stripped TLS? Connect with TLS (tls=True); no proof was sent";
    assert_eq!(events[0], Event::LoginFailed { id, message: message.into() });
    assert!(matches!(events[1], Event::Closed { .. }) && events.len() == 2);
}

#[test]
fn a_welcome_without_a_challenge_is_refused_when_a_token_is_used() {
    let (mut s, id, _) = login_session(None);
    let events = feed(&mut s, &frame(r#""op": "welcome""#, b""));
    assert_eq!(events[0], Event::LoginFailed { id, message: LOGIN_NO_TOKEN.into() });
    assert_eq!(s.closed(), Some(LOGIN_NO_TOKEN));
    // Anything else is no answer either.
    let (mut s, id, _) = login_session(None);
    let events = feed(&mut s, &frame(r#""op": "challenge", "nonce": 5"#, b""));
    let message = "the server did not answer the handshake (got {'op': 'challenge', 'nonce': 5, 'total_size': 0})";
    assert_eq!(events[0], Event::LoginFailed { id, message: message.into() });
}

#[test]
fn an_auth_error_fails_the_login_with_the_servers_words() {
    let (mut s, id, server) = login_session(None);
    feed(&mut s, &server.challenge());
    let events = feed(&mut s, &error("auth", "wrong token"));
    assert_eq!(
        events,
        [
            Event::LoginFailed { id, message: "wrong token".into() },
            Event::Closed { reason: "the server refused: wrong token".into(), error: None }
        ]
    );
    let (mut s, id, _) = login_session(None);
    let events = feed(&mut s, &frame(r#""op": "error", "error": "auth""#, b""));
    assert_eq!(events[0], Event::LoginFailed { id, message: LOGIN_REFUSED.into() });
}

#[test]
fn a_login_needs_a_token_and_happens_once() {
    assert!(matches!(session().login(), Err(SessionError::Usage(_))));
    let length_only = Codec { json_header: false, ..Codec::default() };
    assert!(ClientSession::new(length_only, Some(b"t".to_vec()), None).is_err());
    assert!(ClientSession::new(Codec::default(), Some(vec![]), None).is_err());
}

// ---------------------------------------------------------------- put

#[test]
fn an_upload_goes_ready_data_end_stored() {
    let mut s = session();
    let (id, put) = s.put("docs/a.txt", 5, false, "sha256").unwrap();
    assert_eq!(
        header_text(&put),
        r#"{"op": "put", "name": "docs/a.txt", "size": 5, "overwrite": false, "checksum": "sha256", "total_size": 0}"#
    );
    assert!(matches!(s.put_data(b"x"), Err(SessionError::Usage(_))), "data before ready");
    assert_eq!(s.list(""), Err(SessionError::Busy("a file upload holds the connection")));
    assert_eq!(
        feed(&mut s, &frame(r#""op": "ready", "chunk_size": 3"#, b"")),
        [Event::UploadReady { id, chunk_size: 3, offset: 0, prefix_digest: None }]
    );
    assert!(matches!(s.put_data(b"abcd"), Err(SessionError::Usage(_))), "over the chunk size");
    assert_eq!(s.put_data(b"hel").unwrap(), frame(r#""op": "data""#, b"hel"));
    assert!(matches!(s.put_end("d"), Err(SessionError::Usage(_))), "end before all data");
    let head = s.put_data_head(b"lo").unwrap();
    assert_eq!([head, b"lo".to_vec()].concat(), frame(r#""op": "data""#, b"lo"));
    assert!(matches!(s.put_data(b"!"), Err(SessionError::Usage(_))), "past the size");
    let end = s.put_end("abc123").unwrap();
    assert_eq!(header_text(&end), r#"{"op": "end", "checksum": "sha256", "digest": "abc123", "total_size": 0}"#);
    assert!(!s.uploading());
    let (next, _) = s.list("").unwrap(); // pipelined behind the upload's end
    let stored =
        frame(r#""op": "stored", "name": "docs/a.txt", "size": 5, "checksum": "sha256", "digest": "abc123""#, b"");
    let events = feed(&mut s, &[stored.clone(), frame(r#""op": "listing""#, b"[]")].concat());
    let [Event::TransferEnd { id: got, end }, Event::Reply { id: listed, .. }] = &events[..] else {
        panic!("{events:?}")
    };
    assert_eq!((*got, *listed), (id, next));
    assert_eq!(
        (end.name.as_deref(), end.size, end.checksum.as_deref(), end.digest.as_deref()),
        (Some("docs/a.txt"), 5, Some("sha256"), Some("abc123"))
    );
}

#[test]
fn an_upload_refused_or_stored_wrong_is_reported() {
    let mut s = session();
    let (id, _) = s.put("a", 1, false, "md5").unwrap();
    let events = feed(&mut s, &error("exists", "a exists"));
    assert!(
        matches!(&events[..], [Event::RemoteError { id: Some(got), error }] if *got == id && error.code == "exists")
    );
    assert!(!s.uploading(), "refused: the connection is free again");
    let (id, _) = s.put("a", 0, true, "md5").unwrap();
    feed(&mut s, &frame(r#""op": "ready""#, b""));
    s.put_end("d41d").unwrap();
    let events = feed(&mut s, &frame(r#""op": "stored", "size": 0, "checksum": "md5", "digest": "0000""#, b""));
    let message = "the server stored something else: {'op': 'stored', 'size': 0, 'checksum': 'md5', 'digest': '0000', 'total_size': 0}";
    assert_eq!(
        events,
        [Event::Violation {
            id: Some(id),
            kind: ViolationKind::StoredElse,
            message: message.into(),
            closes: false,
            header: Bytes::from_static(
                br#"{"op": "stored", "size": 0, "checksum": "md5", "digest": "0000", "total_size": 0}"#
            ),
        }]
    );
    assert!(
        matches!(s.put("a", 1, false, "crc"), Err(SessionError::Usage(m)) if m == "checksum must be one of 'blake3', 'sha256', 'md5', got 'crc'")
    );
}

#[test]
fn an_upload_asks_for_no_more_than_a_chunk_and_hears_no_frame_while_sending() {
    let mut s = session();
    let (id, _) = s.put("a", 10, false, "sha256").unwrap();
    assert_eq!(
        feed(&mut s, &frame(r#""op": "ready", "chunk_size": 99999999"#, b"")),
        [Event::UploadReady { id, chunk_size: CHUNK, offset: 0, prefix_digest: None }]
    );
    let events = feed(&mut s, &frame(r#""op": "stored""#, b""));
    assert!(matches!(
        &events[..],
        [Event::Violation { kind: ViolationKind::UploadData, closes: true, .. }, Event::Closed { .. }]
    ));
    // A server that refuses mid-upload ends it.
    let mut s = session();
    s.put("a", 10, false, "sha256").unwrap();
    feed(&mut s, &frame(r#""op": "ready""#, b""));
    let events = feed(&mut s, &error("bad-request", "no"));
    assert!(matches!(&events[..], [Event::RemoteError { .. }]));
    assert!(matches!(s.put_data(b"x"), Err(SessionError::Usage(_))));
}

#[test]
fn a_resumable_upload_announces_its_source_and_takes_a_matching_prefix() {
    let mut s = session();
    let options = PutOptions { overwrite: false, checksum: "sha256", mode: None, sync: true, resume: Some(-5) };
    let (id, put) = s.put_with("a", 10, &options).unwrap();
    assert_eq!((sent(&put).0["resume"].clone(), sent(&put).0["mtime_ns"].clone()), (json!(true), json!(-5)));
    let events = feed(&mut s, &frame(r#""op": "ready", "offset": 4, "prefix_digest": "AB""#, b""));
    assert_eq!(events, [Event::UploadReady { id, chunk_size: CHUNK, offset: 4, prefix_digest: Some("AB".into()) }]);
    assert!(matches!(s.put_data(b"x"), Err(SessionError::Usage(_))), "data before put_resume");
    assert_eq!(s.put_resume("ab").unwrap(), 4);
    assert_eq!(s.put_data(b"4567").unwrap(), frame(r#""op": "data", "offset": 4"#, b"4567"));
    assert_eq!(
        s.put_data(b"89").unwrap(),
        frame(r#""op": "data""#, b"89"),
        "the offset goes with the first frame only"
    );
    assert!(s.put_end("d").is_ok());
}

#[test]
fn a_resumable_upload_whose_prefix_differs_starts_over() {
    let mut s = session();
    let options = PutOptions { overwrite: false, checksum: "sha256", mode: None, sync: true, resume: Some(1) };
    s.put_with("a", 4, &options).unwrap();
    feed(&mut s, &frame(r#""op": "ready", "offset": 4, "prefix_digest": "ab""#, b""));
    assert_eq!(s.put_resume("cd").unwrap(), 0);
    assert!(matches!(s.put_resume("ab"), Err(SessionError::Usage(_))), "once");
    assert!(matches!(s.put_end("d"), Err(SessionError::Usage(_))), "nothing sent yet");
    assert_eq!(s.put_data(b"0123").unwrap(), frame(r#""op": "data", "offset": 0"#, b"0123"));
}

#[test]
fn a_resumable_upload_to_an_old_server_is_a_whole_one() {
    // No offset in ready: nothing to resume; the data says it starts at 0
    // (a field an old server ignores).
    let mut s = session();
    let options = PutOptions { overwrite: false, checksum: "sha256", mode: None, sync: true, resume: Some(1) };
    let (id, _) = s.put_with("a", 0, &options).unwrap();
    let events = feed(&mut s, &frame(r#""op": "ready""#, b""));
    assert_eq!(events, [Event::UploadReady { id, chunk_size: CHUNK, offset: 0, prefix_digest: None }]);
    assert!(matches!(s.put_resume("x"), Err(SessionError::Usage(_))));
    assert_eq!(sent(&s.put_end("d").unwrap()).0["offset"], 0);
    // An offer past the size, or to an upload that did not ask, is none.
    let mut s = session();
    let (id, _) = s.put("a", 3, false, "sha256").unwrap();
    let events = feed(&mut s, &frame(r#""op": "ready", "offset": 2, "prefix_digest": "ab""#, b""));
    assert_eq!(events, [Event::UploadReady { id, chunk_size: CHUNK, offset: 0, prefix_digest: None }]);
    assert_eq!(s.put_data(b"abc").unwrap(), frame(r#""op": "data""#, b"abc"));
}

// ---------------------------------------------------------------- get

#[test]
fn a_resumed_download_asks_with_its_kept_prefix_and_goes_on_from_the_offset_given() {
    let resume = GetResume { offset: 3, prefix_digest: "ab", size: 5, mtime_ns: 9 };
    for (offset, rest) in [(3u64, &b"lo"[..]), (0, b"hello")] {
        let mut s = session();
        let (id, get) = s.get_with("f", "sha256", Some(&resume)).unwrap();
        let h = sent(&get).0;
        assert_eq!((h["offset"].clone(), h["prefix_digest"].clone()), (json!(3), json!("ab")));
        assert_eq!((h["size"].clone(), h["mtime_ns"].clone()), (json!(5), json!(9)));
        let head = format!(r#""op": "file", "name": "f", "size": 5, "mtime_ns": 9, "offset": {offset}"#);
        let mut data = frame(&head, b"");
        data.extend(frame(r#""op": "data""#, rest));
        data.extend(frame(r#""op": "end", "size": 5, "digest": "x""#, b""));
        let events = feed(&mut s, &data);
        assert_eq!(events[0], Event::DownloadStarted { id, size: 5, offset, mtime_ns: Some(9) });
        assert!(matches!(&events[2], Event::TransferEnd { .. }), "{events:?}");
    }
}

#[test]
fn a_download_resumed_at_an_offset_not_asked_for_breaks_the_protocol() {
    let mut s = session();
    let (id, _) = s.get("f", "sha256").unwrap();
    let events = feed(&mut s, &frame(r#""op": "file", "name": "f", "size": 5, "offset": 2"#, b""));
    assert!(
        matches!(&events[..], [Event::Violation { id: Some(got), kind: ViolationKind::BadOffset, closes: true, .. }, Event::Closed { .. }] if *got == id),
        "{events:?}"
    );
}

fn file_frames(size: u64, chunks: &[&[u8]], digest: &str) -> Vec<u8> {
    let mut out = frame(&format!(r#""op": "file", "name": "f", "size": {size}, "checksum": "sha256""#), b"");
    for c in chunks {
        out.extend(frame(r#""op": "data""#, c));
    }
    out.extend(frame(
        &format!(r#""op": "end", "name": "f", "size": {size}, "checksum": "sha256", "digest": "{digest}""#),
        b"",
    ));
    out
}

#[test]
fn a_download_goes_file_data_end() {
    let mut s = session();
    let (id, get) = s.get("f", "sha256").unwrap();
    assert_eq!(
        header_text(&get),
        r#"{"op": "get", "name": "f", "checksum": "sha256", "chunk_size": 1048576, "total_size": 0}"#
    );
    let events = feed(&mut s, &file_frames(5, &[b"hel", b"lo"], "beef"));
    assert_eq!(events[0], Event::DownloadStarted { id, size: 5, offset: 0, mtime_ns: None });
    assert_eq!(events[1], Event::FileChunk { id, data: Bytes::from_static(b"hel") });
    assert_eq!(events[2], Event::FileChunk { id, data: Bytes::from_static(b"lo") });
    let Event::TransferEnd { id: got, end } = &events[3] else { panic!("{events:?}") };
    assert_eq!((*got, end.size, end.digest.as_deref(), end.checksum.as_deref()), (id, 5, Some("beef"), Some("sha256")));
    assert_eq!(events.len(), 4);
    // A small codec asks for small chunks.
    let mut s = ClientSession::new(Codec { max_body: 1000, ..Codec::default() }, None, None).unwrap();
    assert_eq!(sent(&s.get("f", "md5").unwrap().1).0["chunk_size"], 1000);
}

#[test]
fn a_download_with_too_many_bytes_breaks_the_protocol_and_closes() {
    let mut s = session();
    let (id, _) = s.get("f", "sha256").unwrap();
    let events = feed(&mut s, &file_frames(3, &[b"ab", b"cd"], "x"));
    assert_eq!(events[1], Event::FileChunk { id, data: Bytes::from_static(b"ab") });
    assert_eq!(
        events[2..],
        [
            Event::Violation {
                id: Some(id),
                kind: ViolationKind::DownloadData,
                message: "expected 3 bytes of data, got Frame(header={'op': 'data', 'total_size': 2}, body=b'cd')"
                    .into(),
                closes: true,
                header: Bytes::new(),
            },
            Event::Closed { reason: DOWNLOAD_BROKEN.into(), error: None }
        ]
    );
    // A frame that is neither data nor end, too.
    let mut s = session();
    s.get("f", "sha256").unwrap();
    let events = feed(&mut s, &[frame(r#""op": "file", "size": 3"#, b""), result(b"")].concat());
    assert!(matches!(&events[1], Event::Violation { kind: ViolationKind::DownloadData, closes: true, .. }));
}

#[test]
fn a_download_without_a_size_or_cut_short_is_refused() {
    let mut s = session();
    let (id, _) = s.get("it's", "sha256").unwrap();
    let events = feed(&mut s, &frame(r#""op": "file", "size": -1"#, b""));
    let message = r#"the server announced no size for "it's""#;
    assert_eq!(
        events[0],
        Event::Violation {
            id: Some(id),
            kind: ViolationKind::NoSize,
            message: message.into(),
            closes: true,
            header: Bytes::from_static(br#"{"op": "file", "size": -1, "total_size": 0}"#),
        }
    );
    assert_eq!(events[1], Event::Closed { reason: DOWNLOAD_BROKEN.into(), error: None });
    let mut s = session();
    let (id, _) = s.get("f", "sha256").unwrap();
    let events = feed(&mut s, &file_frames(5, &[b"hel"], "x"));
    let Event::Violation { kind: ViolationKind::ShortDownload, message, closes: false, .. } = &events[2] else {
        panic!("{events:?}")
    };
    assert!(message.starts_with("the server announced 5 bytes and sent 3: {'op': 'end'"), "{message}");
    assert!(s.closed().is_none());
    s.cancel(id);
}

#[test]
fn a_download_answered_or_ended_by_an_error_frame_stays_in_step() {
    let mut s = session();
    let (id, _) = s.get("nope", "sha256").unwrap();
    let events = feed(&mut s, &error("not-found", "no such file"));
    assert!(matches!(&events[..], [Event::RemoteError { id: Some(got), error }] if *got == id && !error.closes));
    let (id, _) = s.get("f", "sha256").unwrap();
    let (next, _) = s.list("").unwrap();
    let bytes = [
        frame(r#""op": "file", "size": 4"#, b""),
        frame(r#""op": "data""#, b"ab"),
        error("io", "the file shrank"),
        frame(r#""op": "listing""#, b"[]"),
    ]
    .concat();
    let events = feed(&mut s, &bytes);
    assert!(matches!(&events[2], Event::RemoteError { id: Some(got), .. } if *got == id));
    assert!(matches!(&events[3], Event::Reply { id: got, .. } if *got == next));
}

// ---------------------------------------------------------------- list

#[test]
fn a_listing_is_the_reply_to_list() {
    let mut s = session();
    let (id, bytes) = s.list("docs").unwrap();
    assert_eq!(header_text(&bytes), r#"{"op": "list", "name": "docs", "total_size": 0}"#);
    let body = br#"[{"name": "a", "type": "file", "size": 1, "mtime": 2.5}]"#;
    let events = feed(&mut s, &frame(r#""op": "listing", "name": "docs", "count": 1, "truncated": false"#, body));
    assert_eq!(reply_body(&events[0]), (id, body.to_vec()));
    let (id, _) = s.list("").unwrap();
    let events = feed(&mut s, &result(b""));
    let Event::Violation { id: got, message, closes: false, .. } = &events[0] else { panic!("{events:?}") };
    assert_eq!(*got, Some(id));
    assert!(message.starts_with("expected a 'listing' frame, got {'op': 'result'"), "{message}");
}

// ---------------------------------------------------------------- bytes and the end

/// Every kind of reply, as one stream from the server.
fn script() -> (ClientSession, Vec<u8>) {
    let mut s = session();
    s.run(&run_header(), b"").unwrap();
    s.get("f", "sha256").unwrap();
    s.list("").unwrap();
    s.request(Some(br#"{"total_size": 0}"#), b"").unwrap();
    let (_, _) = s.run(&run_header(), b"").unwrap();
    let bytes = [
        result(b"out"),
        file_frames(5, &[b"hel", b"lo"], "beef"),
        frame(r#""op": "listing""#, b"[]"),
        error("handler", "boom"),
        error("timeout", "slow"),
        result(b"never seen"),
    ]
    .concat();
    (s, bytes)
}

#[test]
fn bytes_split_anywhere_make_the_same_events() {
    let (mut s, bytes) = script();
    let whole = feed(&mut s, &bytes);
    assert_eq!(whole.len(), 9, "{whole:?}");
    assert!(matches!(whole.last(), Some(Event::Closed { .. })));
    let (mut s, _) = script();
    assert_eq!(feed_bytewise(&mut s, &bytes), whole);
    for cut in 0..bytes.len() {
        let (mut s, _) = script();
        let mut events = feed(&mut s, &bytes[..cut]);
        events.extend(feed(&mut s, &bytes[cut..]));
        assert_eq!(events, whole, "cut at {cut}");
    }
}

#[test]
fn a_login_fed_one_byte_at_a_time_succeeds() {
    let (mut s, id, server) = login_session(Some(vec![9u8; 32]));
    let answer = answer_of(&feed_bytewise(&mut s, &server.challenge()));
    assert_eq!(feed_bytewise(&mut s, &server.welcome(&answer, false)), [Event::LoggedIn { id }]);
}

#[test]
fn nothing_comes_after_the_close() {
    let mut s = session();
    s.run(&run_header(), b"").unwrap();
    let events = feed(&mut s, &[error("busy", "full"), result(b"")].concat());
    assert!(matches!(events.last(), Some(Event::Closed { .. })));
    assert_eq!(feed(&mut s, &result(b"")), []);
    s.receive_eof();
    assert_eq!(s.next_event(), None);
    assert_eq!(s.run(&run_header(), b""), Err(SessionError::Closed("the server refused: full".into())));
    // Closed by the driver: what was not yet read is dropped too.
    let mut s = session();
    s.run(&run_header(), b"").unwrap();
    s.receive_data(&result(b""));
    s.abort("the client was closed");
    assert_eq!(s.next_event(), None);
    assert_eq!(s.closed(), Some("the client was closed"));
}

#[test]
fn the_end_of_the_stream_closes_cleanly_or_with_the_cut_frame() {
    let mut s = session();
    s.run(&run_header(), b"").unwrap();
    let reply = result(b"abc");
    s.receive_data(&reply);
    s.receive_eof();
    let events = s.events();
    assert!(matches!(events[0], Event::Reply { .. }));
    assert_eq!(events[1], Event::Closed { reason: SERVER_CLOSED.into(), error: None });
    let mut s = session();
    s.receive_data(&reply[..reply.len() - 1]);
    s.receive_eof();
    let events = s.events();
    let [Event::Closed { reason, error: Some(FrameError::Incomplete { part: Part::Body, expected: 3, received: 2 }) }] =
        &events[..]
    else {
        panic!("{events:?}")
    };
    assert_eq!(reason, SERVER_CLOSED);
}

#[test]
fn bytes_that_are_no_frame_close_the_session() {
    let mut s = session();
    let events = feed(&mut s, b"\xff\xff\xff\xffmore");
    let [Event::Closed { reason, error: Some(FrameError::NegativeLength { .. }) }] = &events[..] else {
        panic!("{events:?}")
    };
    assert_eq!(reason, "reading a frame failed: FrameError");
}

// ---------------------------------------------------------------- frames read by the driver

/// The frames in `bytes`, as a driver that reads whole frames has them.
fn frames_of(bytes: &[u8]) -> Vec<Frame> {
    let mut buf = BytesMut::from(bytes);
    let mut decoder = Decoder::new(Codec::default());
    std::iter::from_fn(|| decoder.decode(&mut buf).unwrap()).collect()
}

#[test]
fn a_frame_read_whole_by_the_driver_means_what_its_bytes_mean() {
    let server = [
        frame(r#""op": "file", "size": 4"#, b""),
        frame(r#""op": "data""#, b"ab"),
        frame(r#""op": "data""#, b"cd"),
        frame(r#""op": "end", "size": 4, "checksum": "sha256", "digest": "x""#, b""),
        result(b"out"),
        error("busy", "full"),
    ]
    .concat();
    let (mut by_bytes, mut by_frames) = (session(), session());
    for s in [&mut by_bytes, &mut by_frames] {
        s.get("f", "sha256").unwrap();
        s.run(&run_header(), b"").unwrap();
        s.request(Some(br#"{"total_size": 0}"#), b"").unwrap();
    }
    let expected = feed(&mut by_bytes, &server);
    let mut got = Vec::new();
    for f in frames_of(&server) {
        by_frames.receive_frame(f);
        got.extend(by_frames.events());
    }
    assert_eq!(got, expected);
    assert!(matches!(got.last(), Some(Event::Closed { .. })), "{got:?}");
    // Once closed, frames are ignored.
    by_frames.receive_frame(frames_of(&result(b"")).remove(0));
    assert_eq!(by_frames.next_event(), None);
}

#[test]
fn a_violation_names_the_header_that_broke_the_protocol() {
    let mut s = session();
    s.list("").unwrap();
    let events = feed(&mut s, &result(b""));
    let [Event::Violation { header, .. }] = &events[..] else { panic!("{events:?}") };
    assert_eq!(header_text(&result(b"")), String::from_utf8(header.to_vec()).unwrap());
    // Data past the announced size names none: the frame is not a reply.
    let mut s = session();
    s.get("f", "sha256").unwrap();
    let events = feed(&mut s, &file_frames(1, &[b"ab"], "x"));
    assert!(
        matches!(&events[1], Event::Violation { kind: ViolationKind::DownloadData, header, .. } if header.is_empty())
    );
}

// ---------------------------------------------------------------- trees

#[test]
fn inline_puts_go_back_to_back_and_each_is_checked_when_stored() {
    let mut s = session();
    let options = PutOptions { overwrite: true, checksum: "sha256", mode: Some(0o644), sync: false, resume: None };
    let (a, put_a) = s.put_inline("d/a", b"aa", "da", &options).unwrap();
    // The connection stays free: the next one goes out before any reply.
    let (b, _) = s.put_inline("d/b", b"b", "db", &options).unwrap();
    assert!(!s.uploading());
    assert_eq!(s.in_flight(), 2);
    let (h, body) = sent(&put_a);
    assert_eq!(body, b"aa");
    assert_eq!(
        h,
        serde_json::json!({"op": "put", "name": "d/a", "size": 2, "overwrite": true, "checksum": "sha256",
            "mode": 0o644, "sync": false, "inline": true, "digest": "da", "total_size": 2})
    );
    let stored = |name: &str, size: u64, digest: &str| {
        frame(
            &format!(r#""op": "stored", "name": "{name}", "size": {size}, "checksum": "sha256", "digest": "{digest}""#),
            b"",
        )
    };
    let events = feed(&mut s, &[stored("d/a", 2, "da"), stored("d/b", 1, "other")].concat());
    assert!(matches!(&events[0], Event::TransferEnd { id, end } if *id == a && end.digest.as_deref() == Some("da")));
    assert!(matches!(&events[1], Event::Violation { id: Some(id), kind: ViolationKind::StoredElse, .. } if *id == b));
    let too_big = vec![0u8; CHUNK + 1];
    assert!(matches!(s.put_inline("x", &too_big, "d", &options), Err(SessionError::Usage(_))));
}

#[test]
fn an_inline_put_refused_leaves_the_others_in_step() {
    let mut s = session();
    let options = PutOptions { overwrite: false, checksum: "md5", mode: None, sync: true, resume: None };
    let (a, put_a) = s.put_inline("a", b"", "e0", &options).unwrap();
    assert!(sent(&put_a).0.get("sync").is_none(), "sync is the default");
    let (b, _) = s.put_inline("b", b"", "e1", &options).unwrap();
    let stored = frame(r#""op": "stored", "name": "b", "size": 0, "checksum": "md5", "digest": "e1""#, b"");
    let events = feed(&mut s, &[error("exists", "there"), stored].concat());
    assert!(matches!(&events[0], Event::RemoteError { id: Some(id), error } if *id == a && error.code == "exists"));
    assert!(matches!(&events[1], Event::TransferEnd { id, .. } if *id == b));
}

#[test]
fn mkdir_symlink_sync_and_tree_listings_expect_their_replies() {
    let mut s = session();
    let (m, mk) = s.mkdir("a/b", Some(0o700)).unwrap();
    assert_eq!(sent(&mk).0, serde_json::json!({"op": "mkdir", "name": "a/b", "mode": 0o700, "total_size": 0}));
    let (l, link) = s.symlink("a/l", "b", true).unwrap();
    assert_eq!(sent(&link).0["target"], "b");
    let (y, _) = s.sync().unwrap();
    let (t, tree) = s.list_tree("a", Some("sha256"), Some("b/c")).unwrap();
    assert_eq!(sent(&tree).0["recursive"], true);
    assert_eq!(sent(&tree).0["checksum"], "sha256");
    assert_eq!(sent(&tree).0["after"], "b/c");
    assert!(matches!(s.list_tree("a", Some("crc"), None), Err(SessionError::Usage(_))));
    let replies = [
        frame(r#""op": "made""#, b""),
        frame(r#""op": "linked""#, b""),
        frame(r#""op": "synced""#, b""),
        frame(r#""op": "made""#, b""),
    ];
    let events = feed(&mut s, &replies.concat());
    for (event, id) in events.iter().zip([m, l, y]) {
        assert!(matches!(event, Event::Reply { id: got, .. } if *got == id), "{event:?}");
    }
    assert!(
        matches!(&events[3], Event::Violation { id: Some(id), kind: ViolationKind::UnexpectedReply, message, .. }
            if *id == t && message == "expected a 'listing' frame, got {'op': 'made', 'total_size': 0}"),
        "{:?}",
        events[3]
    );
    // A plain list has no recursive field.
    let (_, plain) = s.list("a").unwrap();
    assert!(sent(&plain).0.get("recursive").is_none());
}

// ------------------------------------------------------------ features

#[test]
fn the_default_checksum_is_the_fastest_the_server_offers_once_it_said() {
    let mut s = session();
    assert_eq!(s.default_checksum(), None, "nothing is known before the answer");
    let (id, data) = s.features().unwrap();
    assert_eq!(sent(&data).0, json!({"op": "features", "total_size": 0}));
    let events = feed(&mut s, &frame(r#""op": "features", "checksums": ["blake3", "sha256", "md5"]"#, b""));
    assert_eq!(events, vec![Event::Features { id, checksums: vec!["blake3".into(), "sha256".into(), "md5".into()] }]);
    assert_eq!(s.default_checksum(), Some("blake3"));

    // Only what is offered is picked, and md5 never: sha256 is every server's.
    for (offered, picked) in [(r#"["md5", "sha256"]"#, "sha256"), (r#"["md5"]"#, "sha256"), (r#"[1, "x"]"#, "sha256")] {
        let mut s = session();
        s.features().unwrap();
        let events = feed(&mut s, &frame(&format!(r#""op": "features", "checksums": {offered}"#), b""));
        assert!(matches!(events[..], [Event::Features { .. }]), "{events:?}");
        assert_eq!(s.default_checksum(), Some(picked), "{offered}");
    }
}

#[test]
fn a_server_older_than_features_is_taken_to_verify_sha256() {
    let mut s = session();
    let (id, _) = s.features().unwrap();
    let events = feed(&mut s, &error("bad-request", "unknown op \\\"features\\\""));
    assert_eq!(events, vec![Event::Features { id, checksums: vec![] }]);
    assert_eq!(s.default_checksum(), Some("sha256"));
    assert!(s.closed().is_none(), "the connection goes on");
    // Any other error is one: the answer is still to be had.
    let mut s = session();
    let (id, _) = s.features().unwrap();
    let events = feed(&mut s, &error("io", "disk on fire"));
    assert!(matches!(&events[..], [Event::RemoteError { id: Some(i), .. }] if *i == id), "{events:?}");
    assert_eq!(s.default_checksum(), None);
}

#[test]
fn a_features_answer_without_its_checksums_breaks_the_protocol() {
    let mut s = session();
    let (id, _) = s.features().unwrap();
    let events = feed(&mut s, &frame(r#""op": "file", "size": 5"#, b""));
    assert!(
        matches!(&events[..], [Event::Violation { id: Some(i), kind: ViolationKind::UnexpectedReply, .. }] if *i == id),
        "{events:?}"
    );
    assert_eq!(s.default_checksum(), None);
}

#[test]
fn a_cancelled_features_request_leaves_the_choice_to_the_next_one() {
    let mut s = session();
    let (first, _) = s.features().unwrap();
    assert_eq!(s.cancel(first), Cancelled::ReplyDropped);
    let events = feed(&mut s, &frame(r#""op": "features", "checksums": ["blake3"]"#, b""));
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(s.default_checksum(), None, "a dropped answer decides nothing");
    let (second, _) = s.features().unwrap();
    let events = feed(&mut s, &frame(r#""op": "features", "checksums": ["blake3"]"#, b""));
    assert_eq!(events, vec![Event::Features { id: second, checksums: vec!["blake3".into()] }]);
    // A closing error is that, not an old server.
    let mut s = session();
    let (id, _) = s.features().unwrap();
    let events = feed(&mut s, &error("busy", "too many"));
    assert!(matches!(&events[..], [Event::RemoteError { id: Some(i), .. }, Event::Closed { .. }] if *i == id));
    assert_eq!(s.default_checksum(), None);
}
