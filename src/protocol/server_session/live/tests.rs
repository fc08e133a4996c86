//! Live commands in the server session, one rule each, without a process.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};

use crate::codec::{Codec, Frame};
use crate::exec::Program;
use crate::protocol::live::Exit;
use crate::protocol::server_session::{Action, Channel, ServerSession};
use crate::protocol::ErrorCode;
use crate::server::{Reply, ServerConfig};

fn frame(header: Value, body: &[u8]) -> Frame {
    let Value::Object(mut fields) = header else { panic!("headers are objects") };
    fields.insert("total_size".into(), body.len().into());
    Frame { header: Some(Bytes::from(serde_json::to_vec(&fields).unwrap())), body: Bytes::copy_from_slice(body) }
}

fn replies(actions: &[Action]) -> Vec<(Value, Bytes, Option<ErrorCode>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Reply(Reply { header, body, error }) => {
                Some((serde_json::from_slice(header.as_deref().unwrap()).unwrap(), body.clone(), *error))
            }
            _ => None,
        })
        .collect()
}

/// A session with `cat` started and running.
fn running(config: &ServerConfig) -> ServerSession<'_> {
    let mut s = ServerSession::new(config, false, Channel::Plain);
    let actions = s.receive(frame(json!({"op": "start", "cmd": "cat"}), b""));
    assert!(matches!(actions.as_slice(), [Action::Start { .. }]), "{actions:?}");
    let actions = s.started(Ok(()));
    assert_eq!(replies(&actions)[0].0["op"], "started");
    assert!(s.is_live());
    s
}

#[test]
fn start_is_checked_like_run_and_pipes_stdin() {
    let config = ServerConfig::default();
    let mut s = ServerSession::new(&config, false, Channel::Plain);
    let actions = s.receive(frame(json!({"op": "start", "cmd": ["echo", "hi"], "timeout": 2}), b""));
    let [Action::Start { spec, .. }] = actions.as_slice() else { panic!("{actions:?}") };
    assert_eq!(spec.program, Program::Argv(vec!["echo".into(), "hi".into()]));
    assert_eq!(spec.timeout, Duration::from_secs(2));
    assert_eq!(spec.input, Some(Bytes::new()), "stdin is a pipe, fed by stdin frames");
}

#[test]
fn the_allow_list_applies_to_start() {
    let config = ServerConfig { allow: Some(vec!["ls".into()]), ..ServerConfig::default() };
    let mut s = ServerSession::new(&config, false, Channel::Plain);
    let actions = s.receive(frame(json!({"op": "start", "cmd": ["rm", "-rf", "/"]}), b""));
    let got = replies(&actions);
    assert_eq!(got[0].2, Some(ErrorCode::NotAllowed));
    assert!(!s.is_live() && !s.is_closed());
}

#[test]
#[cfg(unix)]
fn a_terminal_gets_its_term_and_size_and_resize_frames_reach_it() {
    let config = ServerConfig::default();
    let mut s = ServerSession::new(&config, false, Channel::Plain);
    let start = json!({"op": "start", "cmd": "tty", "pty": true, "term": "vt100", "columns": 100, "lines": 30,
                       "env": {"TERM": "dumb", "A": "b"}});
    let actions = s.receive(frame(start, b""));
    let [Action::Start { spec, terminal, .. }] = actions.as_slice() else { panic!("{actions:?}") };
    assert_eq!(*terminal, Some((100, 30)));
    let env: Vec<(&str, &str)> = spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(env, [("A", "b"), ("TERM", "vt100")], "the terminal's TERM wins");
    s.started(Ok(()));
    let actions = s.receive(frame(json!({"op": "resize", "columns": 120, "lines": 40}), b""));
    assert!(matches!(actions.as_slice(), [Action::Resize(120, 40)]), "{actions:?}");
    let actions = s.receive(frame(json!({"op": "resize", "columns": 0, "lines": 40}), b""));
    assert_eq!(replies(&actions)[0].2, Some(ErrorCode::BadRequest));
    assert!(s.is_live(), "a bad size is refused, the command runs on");
    // Defaults for what the start leaves out.
    let mut s = ServerSession::new(&config, false, Channel::Plain);
    let actions = s.receive(frame(json!({"op": "start", "cmd": "tty", "pty": true}), b""));
    let [Action::Start { spec, terminal, .. }] = actions.as_slice() else { panic!("{actions:?}") };
    assert_eq!(*terminal, Some(crate::protocol::live::DEFAULT_SIZE));
    assert_eq!(spec.env, [("TERM".to_owned(), crate::protocol::live::DEFAULT_TERM.to_owned())]);
}

/// The bytes a terminal's command gets for these `stdin` frames (the last with `eof`).
#[cfg(unix)]
fn typed_on_a_terminal(inputs: &[&[u8]]) -> Vec<u8> {
    let config = ServerConfig::default();
    let mut s = ServerSession::new(&config, false, Channel::Plain);
    s.receive(frame(json!({"op": "start", "cmd": "cat", "pty": true}), b""));
    s.started(Ok(()));
    let mut typed = vec![];
    for (i, input) in inputs.iter().enumerate() {
        let eof = i + 1 == inputs.len();
        for action in s.receive(frame(json!({"op": "stdin", "eof": eof}), input)) {
            match action {
                Action::WriteStdin(data) => typed.extend_from_slice(&data),
                other => panic!("a terminal's stdin is typed, not {other:?}"),
            }
        }
    }
    typed
}

#[test]
#[cfg(unix)]
fn a_terminals_end_of_input_is_ctrl_d_twice_after_a_partial_line() {
    // One Ctrl-D at the start of a line is the end of input; after a partial
    // line it only hands the line over.
    assert_eq!(typed_on_a_terminal(&[b""]), b"\x04");
    assert_eq!(typed_on_a_terminal(&[b"abc\n", b""]), b"abc\n\x04");
    assert_eq!(typed_on_a_terminal(&[b"abc\r"]), b"abc\r\x04");
    assert_eq!(typed_on_a_terminal(&[b"abc"]), b"abc\x04\x04");
    assert_eq!(typed_on_a_terminal(&[b"one\n", b"abc", b""]), b"one\nabc\x04\x04", "the last byte typed counts");
    assert_eq!(typed_on_a_terminal(&[b"abc", b"\n", b""]), b"abc\n\x04");
}

#[test]
fn a_resize_without_a_terminal_is_ignored() {
    let config = ServerConfig::default();
    let mut s = running(&config);
    assert!(s.receive(frame(json!({"op": "resize", "columns": 120, "lines": 40}), b"")).is_empty());
    assert!(s.is_live());
}

#[test]
#[cfg(unix)]
fn a_terminal_is_refused_by_no_pty_and_by_an_allow_list_without_allow_pty() {
    let no_pty = ServerConfig { pty: false, ..ServerConfig::default() };
    let allow = ServerConfig { allow: Some(vec!["tty".into()]), ..ServerConfig::default() };
    for (config, says) in [(&no_pty, "--no-pty"), (&allow, "--allow-pty")] {
        let mut s = ServerSession::new(config, false, Channel::Plain);
        let actions = s.receive(frame(json!({"op": "start", "cmd": ["tty"], "pty": true}), b""));
        let got = replies(&actions);
        assert_eq!(got[0].2, Some(ErrorCode::NotAllowed));
        assert!(got[0].0["message"].as_str().unwrap().contains(says), "{:?}", got[0].0);
        assert!(!s.is_closed() && !s.is_live(), "the connection goes on");
    }
    let allow_pty = ServerConfig { allow_pty: true, ..allow };
    let mut s = ServerSession::new(&allow_pty, false, Channel::Plain);
    let actions = s.receive(frame(json!({"op": "start", "cmd": ["tty"], "pty": true}), b""));
    assert!(matches!(actions.as_slice(), [Action::Start { terminal: Some(_), .. }]), "{actions:?}");
}

#[test]
#[cfg(unix)]
fn a_bad_terminal_is_a_bad_request() {
    let config = ServerConfig::default();
    for bad in [json!({"term": "x y"}), json!({"columns": 70000, "lines": 24}), json!({"columns": 80})] {
        let mut s = ServerSession::new(&config, false, Channel::Plain);
        let mut start = json!({"op": "start", "cmd": "tty", "pty": true});
        start.as_object_mut().unwrap().extend(bad.as_object().unwrap().clone());
        let actions = s.receive(frame(start, b""));
        assert_eq!(replies(&actions)[0].2, Some(ErrorCode::BadRequest), "{bad}");
    }
}

/// Windows has no terminals for commands (nor commands, yet): refused, and the connection goes on.
#[test]
#[cfg(windows)]
fn a_terminal_is_refused_on_windows() {
    let config = ServerConfig::default();
    let mut s = ServerSession::new(&config, false, Channel::Plain);
    let actions = s.receive(frame(json!({"op": "start", "cmd": "tty", "pty": true}), b""));
    let got = replies(&actions);
    assert_eq!(got[0].2, Some(ErrorCode::NotAllowed));
    assert!(got[0].0["message"].as_str().unwrap().contains("Windows"), "{:?}", got[0].0);
    assert!(!s.is_closed());
}

#[test]
fn a_start_with_a_body_is_refused() {
    let config = ServerConfig::default();
    let mut s = ServerSession::new(&config, false, Channel::Plain);
    let actions = s.receive(frame(json!({"op": "start", "cmd": "cat"}), b"input"));
    assert_eq!(replies(&actions)[0].2, Some(ErrorCode::BadRequest));
}

#[test]
fn a_command_that_cannot_start_is_a_spawn_error() {
    let config = ServerConfig::default();
    let mut s = ServerSession::new(&config, false, Channel::Plain);
    s.receive(frame(json!({"op": "start", "cmd": ["/no/such"]}), b""));
    let actions = s.started(Err(std::io::ErrorKind::NotFound.into()));
    assert_eq!(replies(&actions)[0].2, Some(ErrorCode::Spawn));
    assert!(!s.is_live());
}

#[test]
fn output_becomes_output_frames_with_their_fd() {
    let config = ServerConfig::default();
    let mut s = running(&config);
    let got = replies(&s.output(2, Bytes::from_static(b"\x00oops")));
    assert_eq!(got[0].0, json!({"op": "output", "fd": 2, "total_size": 5}));
    assert_eq!(&got[0].1[..], b"\x00oops");
}

#[test]
fn output_frames_stay_within_the_codecs_max_body() {
    // The peer, with the same codec, refuses a frame past max_body and drops the connection.
    let config = ServerConfig { codec: Codec { max_body: 65536, ..Codec::default() }, ..ServerConfig::default() };
    let mut s = running(&config);
    assert_eq!(s.output_chunk(), 65536);
    let got = replies(&s.output(1, Bytes::from(vec![7u8; 3 * 65536 + 5])));
    let sizes: Vec<usize> = got.iter().map(|(_, body, _)| body.len()).collect();
    assert_eq!(sizes, [65536, 65536, 65536, 5]);
    assert!(got.iter().all(|(h, b, _)| h["total_size"] == b.len() && h["fd"] == 1));
    // A large max_body leaves the frame size at OUTPUT_CHUNK.
    let config = ServerConfig { codec: Codec { max_body: 1 << 30, ..Codec::default() }, ..ServerConfig::default() };
    assert_eq!(running(&config).output_chunk(), crate::protocol::live::OUTPUT_CHUNK);
}

#[test]
fn stdin_frames_are_written_and_eof_closes_stdin_once() {
    let config = ServerConfig::default();
    let mut s = running(&config);
    let actions = s.receive(frame(json!({"op": "stdin"}), b"line\n"));
    assert!(matches!(actions.as_slice(), [Action::WriteStdin(b)] if &b[..] == b"line\n"), "{actions:?}");
    let actions = s.receive(frame(json!({"op": "stdin", "eof": true}), b"last"));
    assert!(matches!(actions.as_slice(), [Action::WriteStdin(_), Action::CloseStdin]), "{actions:?}");
    // After the end of input, input has nowhere to go.
    assert!(s.receive(frame(json!({"op": "stdin", "eof": true}), b"more")).is_empty());
    assert!(s.is_live());
}

#[test]
fn allowed_signals_go_to_the_command_by_name() {
    let config = ServerConfig::default();
    let mut s = running(&config);
    let actions = s.receive(frame(json!({"op": "signal", "signal": "SIGINT"}), b""));
    assert!(matches!(actions.as_slice(), [Action::Signal("INT")]), "{actions:?}");
}

#[test]
fn a_refused_signal_gets_a_clear_error_and_the_command_runs_on() {
    let config = ServerConfig::default();
    let mut s = running(&config);
    let actions = s.receive(frame(json!({"op": "signal", "signal": "STOP"}), b""));
    let got = replies(&actions);
    assert_eq!(got[0].2, Some(ErrorCode::BadRequest));
    let message = got[0].0["message"].as_str().unwrap();
    assert!(message.contains("\"STOP\"") && message.contains("INT, TERM"), "{message}");
    assert!(!actions.iter().any(|a| matches!(a, Action::Signal(_))));
    assert!(s.is_live());
}

#[test]
fn another_request_while_a_command_runs_closes_the_connection() {
    let config = ServerConfig::default();
    let mut s = running(&config);
    let actions = s.receive(frame(json!({"op": "run", "cmd": "true"}), b""));
    assert!(matches!(actions.last(), Some(Action::Close(Some(_)))), "{actions:?}");
    assert!(s.is_closed());
}

#[test]
fn exit_ends_the_command_and_late_control_frames_are_dropped() {
    let config = ServerConfig::default();
    let mut s = running(&config);
    let exit = Exit { returncode: -2, duration: Duration::from_millis(1500), timed_out: false };
    let got = replies(&s.exited(exit));
    assert_eq!(got[0].0["op"], "exit");
    assert_eq!(got[0].0["returncode"], -2);
    assert_eq!(got[0].0["duration"], 1.5);
    assert_eq!(got[0].0["timed_out"], false);
    assert!(!s.is_live());
    // stdin and a signal sent before the client saw the exit: no reply.
    assert!(s.receive(frame(json!({"op": "stdin"}), b"late")).is_empty());
    assert!(s.receive(frame(json!({"op": "signal", "signal": "INT"}), b"")).is_empty());
    // And the connection serves requests again.
    assert!(matches!(s.receive(frame(json!({"op": "run", "cmd": "true"}), b""))[..], [Action::Run { .. }]));
}

#[test]
fn the_peer_leaving_closes_quietly() {
    let config = ServerConfig::default();
    let mut s = running(&config);
    assert!(matches!(s.connection_lost().as_slice(), [Action::Close(None)]));
}
