//! Live commands in the client session, one rule each: the tests play the
//! server with bytes.

use bytes::BytesMut;

use super::super::*;
use crate::protocol::live::STDIN_CHUNK;

fn frame(fields: &str, body: &[u8]) -> Vec<u8> {
    let header = format!(r#"{{{fields}, "total_size": {}}}"#, body.len());
    Codec::default().encode(Some(header.as_bytes()), body).unwrap()
}

fn sent(bytes: &[u8]) -> Vec<(serde_json::Value, Vec<u8>)> {
    let mut buf = BytesMut::from(bytes);
    let mut decoder = Decoder::new(Codec::default());
    let mut frames = vec![];
    while let Some(f) = decoder.decode(&mut buf).unwrap() {
        frames.push((serde_json::from_slice(&f.header.unwrap()).unwrap(), f.body.to_vec()));
    }
    assert!(buf.is_empty());
    frames
}

fn feed(s: &mut ClientSession, data: &[u8]) -> Vec<Event> {
    s.receive_data(data);
    s.events()
}

const START: &[u8] = br#"{"op": "start", "cmd": "cat", "total_size": 0}"#;

fn started() -> (ClientSession, RequestId) {
    let mut s = ClientSession::new(Codec::default(), None, None).unwrap();
    let (id, data) = s.start(START).unwrap();
    assert_eq!(sent(&data)[0].0["op"], "start");
    assert_eq!(feed(&mut s, &frame(r#""op": "started""#, b"")), [Event::Started { id }]);
    (s, id)
}

#[test]
fn output_comes_as_events_of_its_fd_and_exit_ends_the_command() {
    let (mut s, id) = started();
    let bytes = [
        frame(r#""op": "output", "fd": 1"#, b"out\n"),
        frame(r#""op": "output", "fd": 2"#, b"\xffbin"),
        frame(r#""op": "exit", "returncode": -2, "duration": 0.5, "timed_out": false"#, b""),
    ]
    .concat();
    let events = feed(&mut s, &bytes);
    assert_eq!(events[0], Event::Output { id, fd: 1, data: Bytes::from_static(b"out\n") });
    assert_eq!(events[1], Event::Output { id, fd: 2, data: Bytes::from_static(b"\xffbin") });
    let Event::Exit { id: exited, returncode, duration, timed_out, .. } = &events[2] else { panic!("{events:?}") };
    assert_eq!((*exited, *returncode, duration.as_secs_f64(), *timed_out), (id, -2, 0.5, false));
    assert_eq!((s.live(), s.in_flight()), (None, 0));
    assert!(s.run(br#"{"op": "run", "cmd": "true", "total_size": 0}"#, b"").is_ok(), "the connection is free again");
}

#[test]
fn the_connection_is_dedicated_to_the_command_while_it_runs() {
    let (mut s, _) = started();
    assert!(matches!(s.request(None, b""), Err(SessionError::Busy(_))));
    assert!(matches!(s.start(START), Err(SessionError::Busy(_))));
}

#[test]
fn stdin_is_cut_in_chunks_and_eof_closes_it() {
    let (mut s, _) = started();
    let big = vec![7u8; STDIN_CHUNK + 1];
    let frames = sent(&s.stdin(&big, true).unwrap());
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0].1.len(), STDIN_CHUNK);
    assert_eq!(frames[0].0.get("eof"), None);
    assert_eq!(frames[1].0["eof"], true);
    assert!(matches!(s.stdin(b"more", false), Err(SessionError::Usage(_))));
    let (mut s, _) = started();
    let frames = sent(&s.stdin(b"", true).unwrap());
    assert_eq!((frames.len(), frames[0].0["eof"].as_bool()), (1, Some(true)));
}

#[test]
fn signals_are_checked_before_they_are_sent() {
    let (mut s, _) = started();
    assert_eq!(sent(&s.signal("SIGINT").unwrap())[0].0["signal"], "INT");
    assert_eq!(sent(&s.signal("term").unwrap())[0].0["signal"], "TERM");
    let Err(SessionError::Usage(why)) = s.signal("STOP") else { panic!() };
    assert!(why.contains("'STOP'") && why.contains("INT"), "{why}");
}

#[test]
fn resize_needs_a_terminal() {
    let (mut s, _) = started();
    assert!(matches!(s.resize(80, 24), Err(SessionError::Usage(_))));
    let mut s = ClientSession::new(Codec::default(), None, None).unwrap();
    s.start(br#"{"op": "start", "cmd": "sh", "pty": true, "total_size": 0}"#).unwrap();
    assert_eq!(sent(&s.resize(100, 40).unwrap())[0].0["columns"], 100);
}

#[test]
fn a_refused_start_frees_the_connection() {
    let mut s = ClientSession::new(Codec::default(), None, None).unwrap();
    let (id, _) = s.start(START).unwrap();
    let events = feed(&mut s, &frame(r#""op": "error", "error": "not-allowed", "message": "no""#, b""));
    assert!(matches!(&events[..], [Event::RemoteError { id: Some(i), .. }] if *i == id));
    assert_eq!(s.live(), None);
    assert!(s.run(br#"{"op": "run", "cmd": "true", "total_size": 0}"#, b"").is_ok());
}

#[test]
fn a_refused_signal_leaves_the_command_running() {
    let (mut s, id) = started();
    let events = feed(&mut s, &frame(r#""op": "error", "error": "bad-request", "message": "no such signal""#, b""));
    assert!(matches!(&events[..], [Event::RemoteError { id: Some(i), .. }] if *i == id));
    assert_eq!(s.live(), Some(id));
    let events = feed(&mut s, &frame(r#""op": "output", "fd": 1"#, b"x"));
    assert!(matches!(&events[..], [Event::Output { .. }]));
}

#[test]
fn an_output_frame_without_its_fd_breaks_the_protocol() {
    let (mut s, _) = started();
    let events = feed(&mut s, &frame(r#""op": "output", "fd": 3"#, b"x"));
    assert!(matches!(&events[..], [Event::Violation { closes: true, .. }, Event::Closed { .. }]), "{events:?}");
}

#[test]
fn abandoning_a_live_command_closes_the_connection() {
    let (mut s, id) = started();
    assert_eq!(s.cancel(id), Cancelled::MustClose(LIVE_CANCELLED));
    assert!(s.closed().is_some());
}
