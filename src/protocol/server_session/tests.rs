//! The server session without a socket: one test per rule, each feeding
//! frames (or a raw line, a deadline, an outcome) and reading the actions.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};

use super::*;
use crate::codec::{Checksum, Codec, Frame, FrameError};
use crate::exec::{CommandOutput, Held};
use crate::files::{Entry, FileError, Identity, Kind};
use crate::protocol::auth;
use crate::protocol::config::ServerConfig;

const TOKEN: &[u8] = b"session-test-token";
const NONCE: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const CLIENT_NONCE: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

fn fixed_nonce() -> String {
    NONCE.into()
}

fn with_token() -> ServerConfig {
    ServerConfig { token: Some(TOKEN.to_vec()), ..ServerConfig::default() }
}

fn with_root() -> ServerConfig {
    ServerConfig { root: Some(PathBuf::from("/srv/files")), ..ServerConfig::default() }
}

fn session(config: &ServerConfig) -> ServerSession<'_> {
    ServerSession::new(config, false, Channel::Plain).with_nonces(fixed_nonce)
}

/// A frame as a client sends it: the header with `total_size`, and the body.
fn frame(header: Value, body: &[u8]) -> Frame {
    let Value::Object(mut fields) = header else { panic!("headers are objects") };
    fields.insert("total_size".into(), body.len().into());
    Frame { header: Some(Bytes::from(serde_json::to_vec(&fields).unwrap())), body: Bytes::copy_from_slice(body) }
}

fn header_of(reply: &Reply) -> Value {
    serde_json::from_slice(reply.header.as_deref().expect("a header")).expect("JSON")
}

/// The one reply among the actions, as JSON, with its body.
fn reply(actions: &[Action]) -> (Value, Bytes) {
    let replies: Vec<&Reply> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Reply(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(replies.len(), 1, "one reply in {actions:?}");
    (header_of(replies[0]), replies[0].body.clone())
}

/// The error code and message the connection closes with (`None`: quietly).
fn closed(actions: &[Action]) -> Option<(String, String)> {
    match actions.last() {
        Some(Action::Close(Some(reply))) => {
            let h = header_of(reply);
            assert_eq!(h["op"], "error");
            Some((h["error"].as_str().unwrap().into(), h["message"].as_str().unwrap().into()))
        }
        Some(Action::Close(None)) => None,
        _ => panic!("no close in {actions:?}"),
    }
}

fn error_of(actions: &[Action]) -> (String, String) {
    let (h, _) = reply(actions);
    assert_eq!(h["op"], "error", "{h}");
    (h["error"].as_str().unwrap().into(), h["message"].as_str().unwrap().into())
}

fn logs(actions: &[Action]) -> Vec<&str> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Log(_, line) => Some(line.as_str()),
            _ => None,
        })
        .collect()
}

/// Logs in with the test token (on `binding`'s channel), returning the
/// actions the right proof brought.
fn log_in(s: &mut ServerSession<'_>, binding: Option<[u8; 32]>) -> Vec<Action> {
    let (challenge, _) = reply(&s.receive(frame(json!({"op": "auth"}), b"")));
    assert_eq!(challenge["nonce"], NONCE);
    let proof = auth::proof(TOKEN, auth::Role::Client, NONCE, CLIENT_NONCE, binding.as_ref().map(|b| &b[..]));
    let channel = if binding.is_some() { auth::TLS_SERVER_END_POINT } else { auth::NO_BINDING };
    let proof = json!({"op": "auth", "nonce": NONCE, "client_nonce": CLIENT_NONCE, "proof": proof,
                       "channel_binding": channel});
    let mut actions = s.receive(frame(proof, b""));
    let Some(Action::CheckProof(check)) = actions.pop() else { panic!("a proof to check in {actions:?}") };
    assert!(check.verify());
    s.proof_checked(check, true)
}

fn output(stdout: &[u8], stderr: &[u8]) -> CommandOutput {
    CommandOutput {
        returncode: 0,
        stdout: stdout.to_vec(),
        stderr: stderr.to_vec(),
        stdout_truncated: false,
        stderr_truncated: false,
        budget_ran_out: false,
        held: Held::default(),
        timed_out: false,
        duration: Duration::from_millis(5),
    }
}

// --- login -----------------------------------------------------------------

#[test]
fn without_a_token_auth_gets_a_welcome_without_proof() {
    let config = ServerConfig::default();
    let mut s = session(&config);
    assert!(s.authenticated());
    let (h, _) = reply(&s.receive(frame(json!({"op": "auth"}), b"")));
    assert_eq!(h, json!({"op": "welcome", "total_size": 0}));
}

#[test]
fn with_a_token_a_command_before_login_closes_with_auth() {
    let config = with_token();
    let mut s = session(&config);
    assert_eq!(s.codec(), opening_codec(&config));
    assert_eq!(s.codec().max_body, 0);
    let actions = s.receive(frame(json!({"op": "run", "cmd": "ls"}), b""));
    let (code, message) = closed(&actions).unwrap();
    assert_eq!((code.as_str(), message.as_str()), ("auth", "authentication required: send an auth request first"));
    assert!(s.is_closed());
    assert!(!actions.iter().any(|a| matches!(a, Action::Run { .. })));
}

#[test]
fn with_a_token_an_unparsable_header_before_login_closes_with_auth() {
    let config = with_token();
    let mut s = session(&config);
    let (code, message) = closed(&s.receive(frame(json!({"op": "run", "cmd": 5}), b""))).unwrap();
    assert_eq!(code, "auth");
    assert!(message.starts_with("authentication required (bad request header"), "{message}");
}

#[test]
fn a_challenge_carries_the_nonce_version_and_channel() {
    let config = with_token();
    let mut s = session(&config);
    let (h, _) = reply(&s.receive(frame(json!({"op": "auth"}), b"")));
    assert_eq!(h, json!({"op": "challenge", "nonce": NONCE, "version": 1, "channel_binding": "none", "total_size": 0}));
    let mut tls = ServerSession::new(&config, false, Channel::Tls([7; 32])).with_nonces(fixed_nonce);
    let (h, _) = reply(&tls.receive(frame(json!({"op": "auth"}), b"")));
    assert_eq!(h["channel_binding"], "tls-server-end-point");
}

#[test]
fn a_right_proof_logs_in_with_the_servers_codec_and_proves_the_server() {
    let config = ServerConfig { codec: Codec { max_body: 1234, ..Codec::default() }, ..with_token() };
    let mut s = session(&config);
    let actions = log_in(&mut s, None);
    assert!(matches!(actions[0], Action::LoggedIn { codec } if codec == config.codec), "{actions:?}");
    assert_eq!(logs(&actions), ["authenticated"]);
    let (h, _) = reply(&actions);
    assert_eq!(h["op"], "welcome");
    assert_eq!(h["proof"], auth::proof(TOKEN, auth::Role::Server, NONCE, CLIENT_NONCE, None));
    assert!(s.authenticated());
    assert_eq!(s.codec(), config.codec);
    let actions = s.receive(frame(json!({"op": "run", "cmd": "ls"}), b""));
    assert!(matches!(&actions[..], [Action::Run { .. }]), "{actions:?}");
}

#[test]
fn a_tls_login_binds_both_proofs_to_the_certificate() {
    let config = with_token();
    let mut s = ServerSession::new(&config, false, Channel::Tls([9; 32])).with_nonces(fixed_nonce);
    let (h, _) = reply(&log_in(&mut s, Some([9; 32])));
    assert_eq!(h["proof"], auth::proof(TOKEN, auth::Role::Server, NONCE, CLIENT_NONCE, Some(&[9; 32])));
}

#[test]
fn a_wrong_proof_is_answered_after_a_pause_and_closes() {
    let config = with_token();
    let mut s = session(&config);
    s.receive(frame(json!({"op": "auth"}), b""));
    let wrong = auth::proof(b"another token", auth::Role::Client, NONCE, CLIENT_NONCE, None);
    let mut actions =
        s.receive(frame(json!({"op": "auth", "nonce": NONCE, "client_nonce": CLIENT_NONCE, "proof": wrong}), b""));
    let Some(Action::CheckProof(check)) = actions.pop() else { panic!() };
    assert!(!check.verify());
    let actions = s.proof_checked(check, false);
    assert_eq!(logs(&actions)[0], "authentication failed: wrong token");
    assert!(matches!(actions[1], Action::Pause(d) if d == AUTH_FAILURE_DELAY));
    assert_eq!(closed(&actions).unwrap(), ("auth".into(), "authentication failed".into()));
    assert!(!s.authenticated());
}

#[test]
fn a_proof_for_another_challenge_is_wrong() {
    let config = with_token();
    let mut s = session(&config);
    s.receive(frame(json!({"op": "auth"}), b""));
    let other = "ab".repeat(32);
    let proof = auth::proof(TOKEN, auth::Role::Client, &other, CLIENT_NONCE, None);
    let mut actions =
        s.receive(frame(json!({"op": "auth", "nonce": other, "client_nonce": CLIENT_NONCE, "proof": proof}), b""));
    let Some(Action::CheckProof(check)) = actions.pop() else { panic!() };
    assert!(!check.verify());
}

#[test]
fn a_proof_bound_to_another_channel_counts_as_wrong() {
    let config = with_token();
    // The client proved on plaintext (a relay ended its TLS); this connection is TLS.
    let mut s = ServerSession::new(&config, false, Channel::Tls([1; 32])).with_nonces(fixed_nonce);
    s.receive(frame(json!({"op": "auth"}), b""));
    let proof = auth::proof(TOKEN, auth::Role::Client, NONCE, CLIENT_NONCE, None);
    let mut actions =
        s.receive(frame(json!({"op": "auth", "nonce": NONCE, "client_nonce": CLIENT_NONCE, "proof": proof}), b""));
    let Some(Action::CheckProof(check)) = actions.pop() else { panic!() };
    assert!(!check.verify());
    let actions = s.proof_checked(check, false);
    assert!(logs(&actions)[0].starts_with("authentication failed: channel binding mismatch"), "{actions:?}");
    assert_eq!(closed(&actions).unwrap().0, "auth");
}

#[test]
fn a_proof_without_a_challenge_is_refused_without_a_turn() {
    let config = with_token();
    let mut s = session(&config);
    let actions =
        s.receive(frame(json!({"op": "auth", "nonce": NONCE, "client_nonce": CLIENT_NONCE, "proof": "00"}), b""));
    assert!(!actions.iter().any(|a| matches!(a, Action::CheckProof(_))));
    assert_eq!(logs(&actions)[0], "authentication failed: proof without a challenge");
    assert!(actions.iter().any(|a| matches!(a, Action::Pause(_))));
    assert_eq!(closed(&actions).unwrap().0, "auth");
}

#[test]
fn a_challenge_is_answered_once() {
    let config = with_token();
    let mut s = session(&config);
    log_in(&mut s, None);
    // Logged in: a second proof of the same challenge finds none.
    let proof = auth::proof(TOKEN, auth::Role::Client, NONCE, CLIENT_NONCE, None);
    let actions =
        s.receive(frame(json!({"op": "auth", "nonce": NONCE, "client_nonce": CLIENT_NONCE, "proof": proof}), b""));
    assert_eq!(logs(&actions)[0], "authentication failed: proof without a challenge");
}

#[test]
fn plaintext_from_another_machine_on_a_tls_server_is_refused() {
    let config = ServerConfig::default();
    let mut s = ServerSession::new(&config, false, Channel::PlainOnTls { local: false });
    let (code, message) = closed(&s.start()).unwrap();
    assert_eq!(code, "tls-required");
    assert!(message.contains("tls=True"), "{message}");
    let mut local = ServerSession::new(&config, false, Channel::PlainOnTls { local: true });
    assert!(local.start().is_empty());
    assert!(session(&config).start().is_empty());
}

// --- raw command lines -----------------------------------------------------

#[test]
fn raw_lines_are_told_from_frames() {
    let config = ServerConfig::default();
    let s = session(&config);
    assert!(s.raw_line_start(b"ls -l\n"));
    assert!(s.raw_line_start(b"ls"));
    assert!(!s.raw_line_start(&config.codec.encode(Some(br#"{"total_size": 0}"#), b"").unwrap()));
    let handler = ServerSession::new(&config, true, Channel::Plain);
    assert!(!handler.raw_line_start(b"ls -l\n"), "a handler's server takes no raw lines");
}

#[test]
fn a_raw_line_runs_as_a_shell_line() {
    let config = ServerConfig::default();
    let mut s = session(&config);
    let actions = s.receive_raw(b" ls -l\n".to_vec());
    let [Action::Run { spec, shown }] = &actions[..] else { panic!("{actions:?}") };
    assert_eq!(shown, "\"ls -l\"");
    assert_eq!(spec.program, crate::exec::Program::Shell("ls -l".into()));
    let (h, body) = reply(&s.command_done(shown, Ok(output(b"out\n", b"err\n"))));
    assert_eq!(h["op"], "result");
    assert_eq!(
        (h["stdout_size"].as_u64(), h["stderr_size"].as_u64(), h["total_size"].as_u64()),
        (Some(4), Some(4), Some(8))
    );
    assert_eq!(&body[..], b"out\nerr\n");
}

#[test]
fn a_raw_line_with_a_token_closes_with_auth() {
    let config = with_token();
    let mut s = session(&config);
    let (code, message) = closed(&s.receive_raw(b"ls".to_vec())).unwrap();
    assert_eq!((code.as_str(), message.as_str()), ("auth", "this server needs a token: raw command lines are refused"));
}

#[test]
fn a_raw_line_of_64_kib_is_refused_whole() {
    let config = ServerConfig::default();
    let mut s = session(&config);
    let (code, _) = closed(&s.receive_raw(vec![b'x'; MAX_RAW_COMMAND])).unwrap();
    assert_eq!(code, "too-large");
    let mut s = session(&config);
    assert!(matches!(&s.receive_raw(vec![b'x'; MAX_RAW_COMMAND - 1])[..], [Action::Run { .. }]));
}

#[test]
fn a_raw_line_not_utf8_is_a_bad_request() {
    let config = ServerConfig::default();
    let mut s = session(&config);
    assert_eq!(error_of(&s.receive_raw(b"\xff".to_vec())).0, "bad-request");
    assert!(!s.is_closed());
}

#[test]
fn a_raw_line_still_coming_at_the_deadline_times_out() {
    let config = ServerConfig::default();
    let mut s = session(&config);
    let (code, message) = closed(&s.timed_out(Timeout::RawLine)).unwrap();
    assert_eq!((code.as_str(), message.as_str()), ("timeout", "the raw command line did not end in time"));
}

// --- requests --------------------------------------------------------------

#[test]
fn an_unknown_op_is_a_bad_request_and_the_connection_goes_on() {
    let config = ServerConfig::default();
    let mut s = session(&config);
    let (code, message) = error_of(&s.receive(frame(json!({"op": "dance"}), b"")));
    assert_eq!(code, "bad-request");
    assert!(message.starts_with("unknown op \"dance\""), "{message}");
    let (_, message) = error_of(&s.receive(frame(json!({}), b"")));
    assert!(message.starts_with("request header has no \"op\""), "{message}");
    let (_, message) = error_of(&s.receive(frame(json!({"op": "data"}), b"")));
    assert_eq!(message, "a \"data\" frame outside a put");
    assert!(!s.is_closed());
}

#[test]
fn a_bad_header_is_a_bad_request() {
    let config = ServerConfig::default();
    let mut s = session(&config);
    let (code, message) = error_of(&s.receive(frame(json!({"op": "run", "cmd": 5}), b"")));
    assert_eq!(code, "bad-request");
    assert!(message.starts_with("bad request header"), "{message}");
}

#[test]
fn a_refused_command_is_logged_and_answered() {
    let config = ServerConfig { allow: Some(vec!["ls".into()]), ..ServerConfig::default() };
    let mut s = session(&config);
    let actions = s.receive(frame(json!({"op": "run", "cmd": ["rm", "-rf", "/"]}), b""));
    assert_eq!(logs(&actions), [r#"refused ["rm", "-rf", "/"]"#]);
    assert_eq!(error_of(&actions).0, "not-allowed");
}

#[test]
fn a_command_that_cannot_start_is_a_spawn_error() {
    let config = ServerConfig::default();
    let mut s = session(&config);
    let actions = s.receive(frame(json!({"op": "run", "cmd": ["nope"]}), b""));
    let [Action::Run { shown, .. }] = &actions[..] else { panic!() };
    let actions = s.command_done(shown, Err(std::io::Error::from(std::io::ErrorKind::NotFound)));
    let (code, message) = error_of(&actions);
    assert_eq!(code, "spawn");
    assert!(message.starts_with("could not start [\"nope\"]"), "{message}");
}

#[test]
fn a_framing_error_closes_with_its_code() {
    let config = ServerConfig::default();
    let too_large = Codec { max_header: 16, ..Codec::default() }.parse_length([100, 0, 0, 0]).unwrap_err();
    assert!(matches!(too_large, FrameError::TooLarge { .. }));
    let (code, _) = closed(&session(&config).receive_error(&too_large)).unwrap();
    assert_eq!(code, "too-large");
    let config = with_token();
    let (code, message) = closed(&session(&config).receive_error(&too_large)).unwrap();
    assert_eq!(code, "auth");
    assert!(message.starts_with("authentication required ("), "{message}");
}

#[test]
fn deadlines_close_as_the_protocol_says() {
    let config = ServerConfig::default();
    let actions = session(&config).timed_out(Timeout::Idle);
    assert_eq!(logs(&actions), ["idle timeout"]);
    assert_eq!(closed(&actions), None);
    let (code, _) = closed(&session(&config).timed_out(Timeout::Request)).unwrap();
    assert_eq!(code, "timeout");
    let config = with_token();
    for timeout in [Timeout::Idle, Timeout::Request] {
        let (code, message) = closed(&session(&config).timed_out(timeout)).unwrap();
        assert_eq!((code.as_str(), message.as_str()), ("auth", "not authenticated in time"));
    }
}

#[test]
fn a_frame_after_close_is_ignored() {
    let config = with_token();
    let mut s = session(&config);
    s.receive(frame(json!({"op": "run", "cmd": "ls"}), b""));
    assert!(s.is_closed());
    assert!(s.receive(frame(json!({"op": "auth"}), b"")).is_empty());
    assert!(s.receive_raw(b"ls".to_vec()).is_empty());
    assert!(s.timed_out(Timeout::Idle).is_empty());
    assert!(s.connection_lost().is_empty());
}

#[test]
fn a_length_only_server_closes_rather_than_send_an_error() {
    let config = ServerConfig { codec: Codec { json_header: false, ..Codec::default() }, ..ServerConfig::default() };
    let mut s = session(&config);
    let actions = s.receive(Frame { header: None, body: Bytes::new() });
    assert!(matches!(&actions[..], [Action::Close(None)]), "{actions:?}");
    let actions = session(&config).timed_out(Timeout::Request);
    assert!(matches!(&actions[..], [Action::Log(..), Action::Close(None)]), "{actions:?}");
}

#[test]
fn a_handler_gets_every_frame_and_its_error_is_a_handler_error() {
    let config = ServerConfig::default();
    let mut s = ServerSession::new(&config, true, Channel::Plain);
    let sent = frame(json!({"op": "run", "cmd": "ls"}), b"x");
    let actions = s.receive(sent.clone());
    assert!(matches!(&actions[..], [Action::CallHandler(f)] if *f == sent), "{actions:?}");
    let (h, _) = reply(&s.handler_done(Ok(Reply::new(Some(br#"{"total_size": 0}"#.to_vec()), Bytes::new()))));
    assert_eq!(h, json!({"total_size": 0}));
    s.receive(sent);
    let actions = s.handler_done(Err("boom".into()));
    assert_eq!(logs(&actions), ["handler failed: boom"]);
    assert_eq!(error_of(&actions), ("handler".into(), "boom".into()));
}

#[test]
#[should_panic(expected = "the driver fed a frame to a server session awaiting Command")]
fn a_frame_while_a_command_runs_is_a_driver_bug() {
    let config = ServerConfig::default();
    let mut s = session(&config);
    s.receive(frame(json!({"op": "run", "cmd": "ls"}), b""));
    s.receive(frame(json!({"op": "run", "cmd": "ls"}), b""));
}

// --- files -----------------------------------------------------------------

#[test]
fn file_requests_without_a_root_are_not_allowed() {
    let config = ServerConfig::default();
    let mut s = session(&config);
    for op in ["put", "get", "list"] {
        let (code, _) = error_of(&s.receive(frame(json!({"op": op, "name": "a", "size": 1}), b"")));
        assert_eq!(code, "not-allowed");
    }
}

#[test]
fn file_requests_are_checked_before_the_disk() {
    let config = with_root();
    let mut s = session(&config);
    let cases = [
        (json!({"op": "put", "name": "a"}), "a put request needs \"name\" and \"size\""),
        (json!({"op": "get"}), "a get request needs \"name\""),
        (json!({"op": "get", "name": "d/"}), "a get names a file, not a directory ending in \"/\""),
        (
            json!({"op": "get", "name": "a", "checksum": "crc"}),
            "checksum must be one of \"blake3\", \"sha256\", \"md5\", got \"crc\"",
        ),
    ];
    for (request, expected) in cases {
        assert_eq!(error_of(&s.receive(frame(request, b""))), ("bad-request".into(), expected.into()));
    }
}

/// A put of `name`, `size` bytes, up to `ready`.
fn start_put(s: &mut ServerSession<'_>, size: u64) -> Value {
    let actions = s.receive(frame(json!({"op": "put", "name": "a.txt", "size": size, "overwrite": true}), b""));
    assert!(
        matches!(&actions[..], [Action::CreateUpload { name, overwrite: true, mode: None }] if name == "a.txt"),
        "{actions:?}"
    );
    reply(&s.upload_created(Ok(()))).0
}

/// Sends a data frame and writes its chunk as a driver would.
fn put_data(s: &mut ServerSession<'_>, data: &[u8]) {
    let actions = s.receive(frame(json!({"op": "data"}), data));
    write_chunk(s, &actions, data);
}

/// Writes the one chunk `actions` ask for (which must be `data`) as a driver
/// would; its `restart`, if any.
fn write_chunk(s: &mut ServerSession<'_>, actions: &[Action], data: &[u8]) -> Option<Identity> {
    let [Action::WriteChunk { chunk, hasher, restart }] = actions else { panic!("{actions:?}") };
    assert_eq!(&chunk[..], data);
    let mut hasher = hasher.clone();
    hasher.update(chunk);
    let restart = *restart;
    s.chunk_written(Ok(hasher));
    restart
}

#[test]
fn a_put_stores_when_size_and_digest_match() {
    let config = with_root();
    let mut s = session(&config);
    assert_eq!(start_put(&mut s, 11), json!({"op": "ready", "chunk_size": CHUNK, "total_size": 0}));
    put_data(&mut s, b"hello ");
    put_data(&mut s, b"world");
    let digest = Checksum::Sha256.hex_digest(b"hello world");
    let actions = s.receive(frame(json!({"op": "end", "checksum": "sha256", "digest": digest.to_uppercase()}), b""));
    assert!(matches!(&actions[..], [Action::CommitUpload { durable: true, restart: None }]), "{actions:?}");
    let actions = s.upload_committed(Ok(None));
    assert_eq!(logs(&actions), ["stored \"a.txt\": 11 bytes"]);
    let (h, _) = reply(&actions);
    assert_eq!(
        h,
        json!({"op": "stored", "name": "a.txt", "size": 11, "checksum": "sha256", "digest": digest, "total_size": 0})
    );
    // And the next request is served.
    assert!(matches!(&s.receive(frame(json!({"op": "list"}), b""))[..], [Action::ListDir { .. }]));
}

#[test]
fn a_put_whose_digest_differs_stores_nothing_and_stays_in_step() {
    let config = with_root();
    let mut s = session(&config);
    start_put(&mut s, 5);
    put_data(&mut s, b"hello");
    let wrong = Checksum::Sha256.hex_digest(b"jello");
    let actions = s.receive(frame(json!({"op": "end", "digest": wrong}), b""));
    assert!(matches!(actions[0], Action::DiscardUpload), "{actions:?}");
    assert!(!actions.iter().any(|a| matches!(a, Action::CommitUpload { .. })));
    let (code, message) = error_of(&actions);
    assert_eq!(code, "checksum");
    assert!(message.contains("sha256 mismatch"), "{message}");
    assert!(!s.is_closed());
    assert!(matches!(&s.receive(frame(json!({"op": "list"}), b""))[..], [Action::ListDir { .. }]));
}

#[test]
fn a_put_with_md5_checks_md5() {
    let config = with_root();
    let mut s = session(&config);
    let actions = s.receive(frame(json!({"op": "put", "name": "m", "size": 2, "checksum": "md5"}), b""));
    assert!(matches!(&actions[..], [Action::CreateUpload { overwrite: false, .. }]));
    s.upload_created(Ok(()));
    put_data(&mut s, b"hi");
    let digest = Checksum::Md5.hex_digest(b"hi");
    let actions = s.receive(frame(json!({"op": "end", "checksum": "sha256", "digest": digest}), b""));
    assert!(error_of(&actions).1.starts_with("the end frame names another checksum"));
    start_put(&mut s, 2);
}

#[test]
fn a_put_short_of_its_size_or_without_digest_stores_nothing() {
    let config = with_root();
    let mut s = session(&config);
    start_put(&mut s, 10);
    put_data(&mut s, b"abc");
    let actions = s.receive(frame(json!({"op": "end", "digest": Checksum::Sha256.hex_digest(b"abc")}), b""));
    assert_eq!(error_of(&actions).1, "\"a.txt\": the put announced 10 bytes and sent 3: not stored");
    start_put(&mut s, 0);
    let actions = s.receive(frame(json!({"op": "end"}), b""));
    assert_eq!(error_of(&actions).1, "the end frame has no \"digest\": not stored");
}

#[test]
fn a_put_refused_by_the_disk_is_answered() {
    let config = with_root();
    let mut s = session(&config);
    s.receive(frame(json!({"op": "put", "name": "a", "size": 1}), b""));
    let (code, _) = error_of(&s.upload_created(Err(FileError::Exists("a".into()))));
    assert_eq!(code, "exists");
    assert!(!s.is_closed());
}

#[test]
fn more_data_than_announced_closes_the_connection() {
    let config = with_root();
    let mut s = session(&config);
    start_put(&mut s, 3);
    let (code, message) = closed(&s.receive(frame(json!({"op": "data"}), b"abcd"))).unwrap();
    assert_eq!(code, "bad-request");
    assert_eq!(message, "more data than the 3 bytes the put announced: not stored");
}

#[test]
fn a_data_frame_over_the_chunk_size_closes_the_connection() {
    let config = ServerConfig { codec: Codec { max_body: 4, ..Codec::default() }, ..with_root() };
    let mut s = session(&config);
    assert_eq!(start_put(&mut s, 100)["chunk_size"], 4);
    let actions = s.receive(frame(json!({"op": "data"}), b"abcde"));
    assert_eq!(logs(&actions)[0], "put \"a.txt\" cut off: not stored");
    assert_eq!(closed(&actions).unwrap().0, "too-large");
}

#[test]
fn another_frame_in_a_put_closes_the_connection() {
    let config = with_root();
    let mut s = session(&config);
    start_put(&mut s, 3);
    let (code, message) = closed(&s.receive(frame(json!({"op": "run", "cmd": "ls"}), b""))).unwrap();
    assert_eq!(
        (code.as_str(), message.as_str()),
        ("bad-request", "expected a data or end frame of the put in progress")
    );
    let mut s = session(&config);
    start_put(&mut s, 3);
    assert_eq!(closed(&s.receive_raw(b"ls".to_vec())).unwrap().0, "bad-request");
    let mut s = session(&config);
    start_put(&mut s, 3);
    let actions = s.connection_lost();
    assert_eq!(logs(&actions), ["put \"a.txt\" cut off: not stored"]);
    assert_eq!(closed(&actions), None);
}

fn io_error() -> FileError {
    FileError::Io { name: "a.txt".into(), source: std::io::Error::other("disk full") }
}

#[test]
fn a_failed_write_is_told_at_the_end_frame() {
    let config = with_root();
    let mut s = session(&config);
    start_put(&mut s, 4);
    let actions = s.receive(frame(json!({"op": "data"}), b"ab"));
    assert!(matches!(&actions[..], [Action::WriteChunk { .. }]));
    s.chunk_written(Err(io_error()));
    let (code, message) = error_of(&s.receive(frame(json!({"op": "end", "digest": "00"}), b"")));
    assert_eq!((code.as_str(), message.as_str()), ("io", "\"a.txt\": disk full"));
    assert!(!s.is_closed());
}

#[test]
fn a_failed_write_with_more_data_coming_closes_the_connection() {
    let config = with_root();
    let mut s = session(&config);
    start_put(&mut s, 4);
    s.receive(frame(json!({"op": "data"}), b"ab"));
    s.chunk_written(Err(io_error()));
    let (code, message) = closed(&s.receive(frame(json!({"op": "data"}), b"cd"))).unwrap();
    assert_eq!((code.as_str(), message.as_str()), ("io", "\"a.txt\": disk full: not stored"));
}

/// Reads the chunks a get asks for from `file`, as a driver would; returns
/// every reply's header and body in order.
fn drive_get(s: &mut ServerSession<'_>, file: &[u8], mut actions: Vec<Action>) -> Vec<(Value, Bytes)> {
    let mut out = vec![];
    let mut offset = 0;
    loop {
        let mut read = None;
        for action in actions {
            match action {
                Action::ReadChunk { want, hasher } => read = Some((want, hasher)),
                Action::Reply(r) => out.push((header_of(&r), r.body)),
                Action::Log(..) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        let Some((want, mut hasher)) = read else { return out };
        let chunk = &file[offset..(offset + want).min(file.len())];
        offset += chunk.len();
        hasher.update(chunk);
        actions = s.chunk_read(Ok((hasher, chunk.to_vec())));
    }
}

#[test]
fn a_get_sends_the_file_in_chunks_and_its_digest() {
    let config = with_root();
    let mut s = session(&config);
    let actions = s.receive(frame(json!({"op": "get", "name": "f", "chunk_size": 2}), b""));
    assert!(matches!(&actions[..], [Action::OpenFile { name }] if name == "f"), "{actions:?}");
    let opened = s_file_opened(&mut s, 5);
    let replies = drive_get(&mut s, b"hello", opened);
    let ops: Vec<&str> = replies.iter().map(|(h, _)| h["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["file", "data", "data", "data", "end"]);
    assert_eq!(replies[0].0, json!({"op": "file", "name": "f", "size": 5, "checksum": "sha256", "total_size": 0}));
    let bodies: Vec<&[u8]> = replies[1..4].iter().map(|(_, b)| &b[..]).collect();
    assert_eq!(bodies, [&b"he"[..], b"ll", b"o"]);
    assert_eq!(replies[4].0["digest"], Checksum::Sha256.hex_digest(b"hello"));
    assert!(matches!(&s.receive(frame(json!({"op": "list"}), b""))[..], [Action::ListDir { .. }]));
}

fn s_file_opened(s: &mut ServerSession<'_>, size: u64) -> Vec<Action> {
    let actions = s.file_opened(Ok(size));
    assert!(matches!(&actions[..], [Action::ReadChunk { .. }, Action::Reply(_)]), "read ahead of the head");
    actions
}

#[test]
fn a_get_of_an_empty_file_is_a_head_and_an_end() {
    let config = with_root();
    let mut s = session(&config);
    s.receive(frame(json!({"op": "get", "name": "e", "checksum": "md5"}), b""));
    let opened = s_file_opened(&mut s, 0);
    let replies = drive_get(&mut s, b"", opened);
    assert_eq!(replies.len(), 2);
    assert_eq!(replies[1].0["digest"], Checksum::Md5.hex_digest(b""));
}

#[test]
fn a_file_that_shrinks_while_sent_ends_with_an_io_error() {
    let config = with_root();
    let mut s = session(&config);
    s.receive(frame(json!({"op": "get", "name": "f"}), b""));
    let opened = s_file_opened(&mut s, 10);
    let replies = drive_get(&mut s, b"abc", opened);
    let (last, _) = replies.last().unwrap();
    assert_eq!(last["error"], "io");
    assert_eq!(last["message"], "\"f\" shrank from 10 to 3 bytes while it was sent");
}

#[test]
fn a_get_of_a_missing_file_is_not_found() {
    let config = with_root();
    let mut s = session(&config);
    s.receive(frame(json!({"op": "get", "name": "nope"}), b""));
    assert_eq!(error_of(&s.file_opened(Err(FileError::NotFound("nope".into())))).0, "not-found");
}

#[test]
fn a_send_failing_in_a_get_is_logged_as_cut_off() {
    let config = with_root();
    let mut s = session(&config);
    s.receive(frame(json!({"op": "get", "name": "f"}), b""));
    s.file_opened(Ok(3));
    let actions = s.send_failed(&std::io::Error::from(std::io::ErrorKind::BrokenPipe));
    assert!(logs(&actions)[0].starts_with("get \"f\" cut off"), "{actions:?}");
    assert_eq!(closed(&actions), None);
}

#[test]
fn a_listing_is_a_json_array_within_the_limit() {
    let config = ServerConfig { codec: Codec { max_body: 60, ..Codec::default() }, ..with_root() };
    let mut s = session(&config);
    let actions = s.receive(frame(json!({"op": "list", "name": "d"}), b""));
    assert!(
        matches!(&actions[..], [Action::ListDir { name, recursive: false, checksum: None, after: None }] if name == "d")
    );
    let entry = |name: &str| Entry { name: name.into(), size: 1, kind: Kind::File, mtime: 2.0, ..Entry::default() };
    let (h, body) = reply(&s.listed(Ok((vec![entry("a"), entry("b")], false))));
    assert_eq!(h, json!({"op": "listing", "name": "d", "count": 1, "truncated": true, "total_size": body.len()}));
    let items: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(items, json!([{"name": "a", "type": "file", "size": 1, "mtime": 2.0, "mode": 0}]));
}

// Moved from server::connection::transfer with `json_array_within`, unchanged.
#[test]
fn a_listing_fits_its_limit_exactly() {
    let items = || ["1", "22", "333"].into_iter().map(|s| s.as_bytes().to_vec());
    let whole = b"[1, 22, 333]";
    assert_eq!(json_array_within(items(), whole.len()), (whole.to_vec(), 3, false));
    // One byte less: the last item goes, whole, and the array still closes.
    assert_eq!(json_array_within(items(), whole.len() - 1), (b"[1, 22]".to_vec(), 2, true));
    for limit in 0..=whole.len() + 2 {
        let (body, count, cut) = json_array_within(items(), limit);
        assert!(body.len() <= limit.max(2), "limit {limit}: {} bytes", body.len());
        assert_eq!(cut, count < 3);
        let parsed: Vec<u64> = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed.len(), count);
    }
}

#[test]
fn an_inline_put_is_verified_then_stored_in_one_action() {
    let config = with_root();
    let mut s = session(&config);
    let digest = Checksum::Sha256.hex_digest(b"small");
    let request = json!({"op": "put", "name": "d/f", "size": 5, "inline": true, "digest": digest, "mode": 0o640});
    let actions = s.receive(frame(request, b"small"));
    let [Action::StoreFile { name, overwrite: false, mode: Some(0o640), data, durable: true }] = &actions[..] else {
        panic!("{actions:?}")
    };
    assert_eq!((name.as_str(), &data[..]), ("d/f", &b"small"[..]));
    let (h, _) = reply(&s.upload_committed(Ok(None)));
    assert_eq!(h["op"], "stored");
    assert_eq!(h["digest"], digest.as_str());
}

#[test]
fn an_inline_put_that_does_not_add_up_stores_nothing_and_stays_in_step() {
    let config = ServerConfig { codec: Codec { max_body: 8, ..Codec::default() }, ..with_root() };
    let mut s = session(&config);
    let put = |size: u64, digest: Option<String>| {
        let mut h = json!({"op": "put", "name": "f", "size": size, "inline": true});
        if let Some(d) = digest {
            h["digest"] = d.into();
        }
        h
    };
    let good = Checksum::Sha256.hex_digest(b"abc");
    let cases = [
        (put(3, Some(Checksum::Sha256.hex_digest(b"abd"))), &b"abc"[..], "checksum"),
        (put(4, Some(good.clone())), &b"abc"[..], "bad-request"),
        (put(3, None), &b"abc"[..], "bad-request"),
        (put(9, Some(good.clone())), &b"123456789"[..], "too-large"),
    ];
    for (request, body, code) in cases {
        let actions = s.receive(frame(request, body));
        assert!(!actions.iter().any(|a| matches!(a, Action::StoreFile { .. })), "{actions:?}");
        assert_eq!(error_of(&actions).0, code);
        assert!(!s.is_closed());
    }
    // A body on a put that is not inline is refused too.
    let actions = s.receive(frame(json!({"op": "put", "name": "f", "size": 3}), b"abc"));
    assert_eq!(error_of(&actions), ("bad-request".into(), "a put request has no body".into()));
    assert!(matches!(&s.receive(frame(put(3, Some(good)), b"abc"))[..], [Action::StoreFile { .. }]));
}

#[test]
fn files_stored_without_sync_are_synced_by_a_sync_request() {
    let config = with_root();
    let mut s = session(&config);
    // Nothing owed: answered at once.
    assert_eq!(reply(&s.receive(frame(json!({"op": "sync"}), b""))).0["op"], "synced");
    let digest = Checksum::Sha256.hex_digest(b"x");
    let request = json!({"op": "put", "name": "f", "size": 1, "inline": true, "digest": digest, "sync": false});
    assert!(matches!(&s.receive(frame(request, b"x"))[..], [Action::StoreFile { durable: false, .. }]));
    s.upload_committed(Ok(None));
    assert!(matches!(&s.receive(frame(json!({"op": "sync"}), b""))[..], [Action::Sync]));
    let (h, _) = reply(&s.synced(Ok(())));
    assert_eq!(h["op"], "synced");
    assert_eq!(reply(&s.receive(frame(json!({"op": "sync"}), b""))).0["op"], "synced");
    // A streamed put asks for the same.
    let actions = s.receive(frame(json!({"op": "put", "name": "g", "size": 0, "sync": false}), b""));
    assert!(matches!(&actions[..], [Action::CreateUpload { .. }]));
    s.upload_created(Ok(()));
    let end = json!({"op": "end", "digest": Checksum::Sha256.hex_digest(b"")});
    assert!(matches!(&s.receive(frame(end, b""))[..], [Action::CommitUpload { durable: false, restart: None }]));
    s.upload_committed(Ok(None));
    assert!(matches!(&s.receive(frame(json!({"op": "sync"}), b""))[..], [Action::Sync]));
    let (code, _) =
        error_of(&s.synced(Err(FileError::Io { name: ".".into(), source: std::io::ErrorKind::Other.into() })));
    assert_eq!(code, "io");
}

#[test]
fn mkdir_makes_a_directory_with_its_mode() {
    let config = with_root();
    let mut s = session(&config);
    let actions = s.receive(frame(json!({"op": "mkdir", "name": "a/b", "mode": 0o750}), b""));
    assert!(matches!(&actions[..], [Action::MakeDir { name, mode: Some(0o750) }] if name == "a/b"), "{actions:?}");
    assert_eq!(reply(&s.dir_made(Ok(()))).0["op"], "made");
    s.receive(frame(json!({"op": "mkdir", "name": "f"}), b""));
    assert_eq!(error_of(&s.dir_made(Err(FileError::NotDirectory("f".into())))).0, "bad-request");
    assert_eq!(error_of(&s.receive(frame(json!({"op": "mkdir"}), b""))).0, "bad-request");
    let actions = s.receive(frame(json!({"op": "mkdir", "name": "../x"}), b""));
    assert!(matches!(&actions[..], [Action::MakeDir { .. }]), "the files layer checks the name: {actions:?}");
}

#[test]
fn a_symlink_out_of_the_root_is_refused_before_the_disk() {
    let config = with_root();
    let mut s = session(&config);
    for target in ["/etc/passwd", "../x", "a/../../x", ""] {
        let actions = s.receive(frame(json!({"op": "symlink", "name": "l", "target": target}), b""));
        assert_eq!(error_of(&actions).0, "not-allowed", "{target}");
    }
    let actions = s.receive(frame(json!({"op": "symlink", "name": "d/l", "target": "../f", "overwrite": true}), b""));
    assert!(matches!(&actions[..], [Action::MakeLink { target, overwrite: true, .. }] if target == "../f"));
    assert_eq!(reply(&s.link_made(Ok(()))).0["op"], "linked");
}

#[test]
fn a_recursive_listing_carries_modes_targets_and_digests() {
    let config = with_root();
    let mut s = session(&config);
    let request = json!({"op": "list", "name": "t", "recursive": true, "checksum": "md5", "after": "d"});
    let actions = s.receive(frame(request, b""));
    assert!(
        matches!(&actions[..], [Action::ListDir { recursive: true, checksum: Some(Checksum::Md5), after: Some(a), .. }] if a == "d"),
        "{actions:?}"
    );
    let entries = vec![
        Entry { name: "d/f".into(), size: 1, mode: 0o644, digest: Some("ab".into()), ..Entry::default() },
        Entry { name: "l".into(), kind: Kind::Link, target: Some("d/f".into()), ..Entry::default() },
    ];
    let (h, body) = reply(&s.listed(Ok((entries, false))));
    assert_eq!(h["recursive"], true);
    let items: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(items[0]["digest"], "ab");
    assert_eq!(items[0]["mode"], 0o644);
    assert_eq!(items[1]["target"], "d/f");
    // Digests only when asked for, and only in a tree.
    let actions = s.receive(frame(json!({"op": "list", "recursive": true}), b""));
    assert!(matches!(&actions[..], [Action::ListDir { recursive: true, checksum: None, .. }]));
    s.listed(Ok((vec![], false)));
    let actions = s.receive(frame(json!({"op": "list", "checksum": "md5", "after": "x"}), b""));
    assert!(matches!(&actions[..], [Action::ListDir { recursive: false, checksum: None, after: None, .. }]));
}

// --- resume ------------------------------------------------------------------

const SOURCE: Identity = Identity { size: 10, mtime_ns: 7 };

/// A resumable put of 10 bytes (the source of [`SOURCE`]) whose part kept
/// `kept` with `recorded` beside it: the actions after `kept_opened`.
fn start_resumable_put(s: &mut ServerSession<'_>, kept: &[u8], recorded: Option<Identity>) -> Vec<Action> {
    let put = json!({"op": "put", "name": "a.txt", "size": 10, "resume": true, "mtime_ns": 7, "overwrite": true});
    let actions = s.receive(frame(put, b""));
    let [Action::CreateKept { name, checksum: Checksum::Sha256, .. }] = &actions[..] else { panic!("{actions:?}") };
    assert_eq!(name, "a.txt");
    let mut hasher = Hasher::new(Checksum::Sha256);
    hasher.update(kept);
    s.kept_opened(Ok(Kept { len: kept.len() as u64, recorded, hasher }))
}

#[test]
fn a_resumable_put_with_a_matching_kept_part_offers_its_prefix_and_takes_the_rest() {
    let config = with_root();
    let mut s = session(&config);
    let (ready, _) = reply(&start_resumable_put(&mut s, b"0123", Some(SOURCE)));
    assert_eq!(ready["offset"], 4);
    assert_eq!(ready["prefix_digest"], Checksum::Sha256.hex_digest(b"0123"));
    let actions = s.receive(frame(json!({"op": "data", "offset": 4}), b"456789"));
    assert_eq!(write_chunk(&mut s, &actions, b"456789"), None);
    // The receiver's digest covers the kept prefix and the rest.
    let digest = Checksum::Sha256.hex_digest(b"0123456789");
    let actions = s.receive(frame(json!({"op": "end", "digest": digest}), b""));
    assert!(matches!(&actions[..], [Action::CommitUpload { restart: None, .. }]), "{actions:?}");
}

#[test]
fn a_resumable_put_whose_client_refuses_the_prefix_starts_over() {
    let config = with_root();
    let mut s = session(&config);
    start_resumable_put(&mut s, b"XXXX", Some(SOURCE));
    let actions = s.receive(frame(json!({"op": "data", "offset": 0}), b"0123456789"));
    assert_eq!(write_chunk(&mut s, &actions, b"0123456789"), Some(SOURCE));
    let digest = Checksum::Sha256.hex_digest(b"0123456789");
    let actions = s.receive(frame(json!({"op": "end", "digest": digest}), b""));
    assert!(matches!(&actions[..], [Action::CommitUpload { restart: None, .. }]), "{actions:?}");
}

#[test]
fn a_resumable_put_of_a_changed_source_is_refused_and_the_part_kept() {
    let config = with_root();
    let mut s = session(&config);
    for recorded in [Identity { size: 11, mtime_ns: 7 }, Identity { size: 10, mtime_ns: 8 }] {
        let actions = start_resumable_put(&mut s, b"0123", Some(recorded));
        assert!(matches!(actions[0], Action::KeepUpload), "{actions:?}");
        let (code, message) = error_of(&actions);
        assert_eq!(code, "changed");
        assert!(message.contains("the source changed"), "{message}");
        assert!(!s.is_closed());
    }
}

#[test]
fn a_resumable_put_without_a_usable_part_offers_nothing_and_records_its_source() {
    let config = with_root();
    let mut s = session(&config);
    // Nothing kept; kept bytes with no identity; more kept than announced.
    for (kept, recorded) in [(&b""[..], None), (b"0123", None), (b"0123456789ab", Some(SOURCE))] {
        let (ready, _) = reply(&start_resumable_put(&mut s, kept, recorded));
        assert_eq!((ready["offset"].clone(), ready.get("prefix_digest")), (json!(0), None));
        let actions = s.receive(frame(json!({"op": "data", "offset": 0}), b"0123456789"));
        assert!(matches!(&actions[..], [Action::WriteChunk { restart: Some(SOURCE), .. }]), "{actions:?}");
        s.chunk_written(Ok(Hasher::new(Checksum::Sha256)));
        s.receive(frame(json!({"op": "end", "digest": "00"}), b""));
    }
}

#[test]
fn a_resumable_put_starting_at_an_offset_not_offered_closes() {
    let config = with_root();
    let mut s = session(&config);
    start_resumable_put(&mut s, b"0123", Some(SOURCE));
    let (code, message) = closed(&s.receive(frame(json!({"op": "data", "offset": 2}), b"23456789"))).unwrap();
    assert_eq!(code, "bad-request");
    assert!(message.contains("offset 2"), "{message}");
}

/// A resumed get of `file` (mtime 7) whose client kept `kept` (with the
/// recorded identity `recorded`): every reply.
fn resumed_get(file: &[u8], kept: &[u8], recorded: Identity) -> Vec<(Value, Bytes)> {
    let config = with_root();
    let mut s = session(&config);
    let request = json!({"op": "get", "name": "f", "offset": kept.len(), "size": recorded.size,
        "mtime_ns": recorded.mtime_ns, "prefix_digest": Checksum::Sha256.hex_digest(kept)});
    assert!(matches!(&s.receive(frame(request, b""))[..], [Action::OpenFile { .. }]));
    let mut actions = s.file_opened_at(Ok((file.len() as u64, Some(7))));
    if let [Action::HashPrefix { len, hasher }] = &actions[..] {
        let mut hasher = hasher.clone();
        hasher.update(&file[..*len as usize]);
        actions = s.prefix_hashed(Ok((*len, hasher)));
    }
    let mut start = 0;
    if let Some(Action::Rewind) = actions.first() {
        actions.remove(0);
    } else if !matches!(actions.first(), Some(Action::Reply(r)) if header_of(r)["op"] == "error") {
        start = kept.len();
    }
    let mut replies = drive_get(&mut s, &file[start..], actions);
    // drive_get reads from the start of what it is given: the digest is the whole file's either way.
    replies.retain(|(h, _)| h["op"] != "end" || h["digest"] == Checksum::Sha256.hex_digest(file));
    replies
}

#[test]
fn a_resumed_get_with_the_right_prefix_sends_only_the_rest() {
    let file = b"0123456789";
    let replies = resumed_get(file, b"0123", Identity { size: 10, mtime_ns: 7 });
    assert_eq!(replies[0].0["offset"], 4);
    assert_eq!(replies[0].0["mtime_ns"], 7);
    let body: Vec<u8> = replies[1..replies.len() - 1].iter().flat_map(|(_, b)| b.to_vec()).collect();
    assert_eq!(body, b"456789");
    assert_eq!(replies.last().unwrap().0["op"], "end", "the whole file's digest");
}

#[test]
fn a_resumed_get_with_a_wrong_prefix_sends_everything() {
    let file = b"0123456789";
    let replies = resumed_get(file, b"0X23", Identity { size: 10, mtime_ns: 7 });
    assert_eq!(replies[0].0["offset"], 0);
    let body: Vec<u8> = replies[1..replies.len() - 1].iter().flat_map(|(_, b)| b.to_vec()).collect();
    assert_eq!(body, file);
    assert_eq!(replies.last().unwrap().0["op"], "end");
}

#[test]
fn a_resumed_get_of_a_changed_file_is_refused() {
    for recorded in [Identity { size: 9, mtime_ns: 7 }, Identity { size: 10, mtime_ns: 6 }] {
        let replies = resumed_get(b"0123456789", b"0123", recorded);
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].0["error"], "changed");
    }
}

#[test]
fn a_resumed_get_missing_a_field_is_a_bad_request() {
    let config = with_root();
    let mut s = session(&config);
    let (code, _) = error_of(&s.receive(frame(json!({"op": "get", "name": "f", "offset": 3}), b"")));
    assert_eq!(code, "bad-request");
}

#[test]
fn the_wait_after_an_offer_grows_with_the_bytes_offered() {
    assert_eq!(hashing_allowance(0), Duration::ZERO);
    assert_eq!(hashing_allowance(1), Duration::from_secs(1));
    assert_eq!(hashing_allowance(10_000_000_000), Duration::from_secs(100), "10 GB at 100 MB/s");
}

#[test]
fn features_name_every_checksum_the_fastest_first_with_or_without_a_root() {
    for config in [ServerConfig::default(), with_root()] {
        let mut s = session(&config);
        let (h, body) = reply(&s.receive(frame(json!({"op": "features"}), b"")));
        assert_eq!(h, json!({"op": "features", "checksums": ["blake3", "sha256", "md5"], "total_size": 0}));
        assert!(body.is_empty());
        // and the connection goes on
        assert_eq!(reply(&s.receive(frame(json!({"op": "features"}), b""))).0["op"], "features");
    }
    // Each one offered is one a transfer may name.
    for c in crate::protocol::CHECKSUMS_OFFERED {
        assert_eq!(Checksum::from_name(c.name()), Some(c));
    }
}
