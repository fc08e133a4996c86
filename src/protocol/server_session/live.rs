//! The server session's live commands (PROTOCOL.md, "`start`"): `start`
//! is checked like `run` and becomes [`Action::Start`]; while the command
//! runs, `stdin`, `signal` and `resize` frames become actions on it, its
//! output (reported by the driver) becomes `output` frames, and its end an
//! `exit` frame. The driver owns the pipes, the backpressure and the clock.

use bytes::Bytes;
use serde_json::json;

use super::{command_spec, reply, Action, Awaiting, ServerSession, State};
use crate::codec::Frame;
use crate::protocol::live::{self, Exit};
use crate::protocol::{ErrorCode, RequestHeader};
use crate::server::{Level, Reply};

/// A live command between `started` and `exit`.
#[derive(Debug)]
pub(super) struct Live {
    pub(super) shown: String,
    stdin_open: bool,
    /// On a terminal: `resize` frames mean something, and the end of input
    /// is typed.
    pty: bool,
    /// What was typed on the terminal so far ends a line (or is nothing):
    /// its line buffer is empty, for all the terminal's defaults know.
    line_start: bool,
}

/// A terminal's end of input is its EOF character, Ctrl-D, as typed (closing
/// the master would hang the terminal up). Ctrl-D hands over the line typed
/// so far, and is the end of input only on an empty line: after a partial
/// one, a second is needed (`abc` then one Ctrl-D leaves `cat` waiting).
fn terminal_eof(line_start: bool) -> Bytes {
    Bytes::from_static(if line_start { b"\x04" } else { b"\x04\x04" })
}

impl ServerSession<'_> {
    /// True while a live command runs (from `started` to `exit`).
    pub fn is_live(&self) -> bool {
        matches!(self.state, State::Live(_))
    }

    pub(super) fn start_live(&mut self, request: RequestHeader, frame: &Frame) -> Vec<Action> {
        let shown = super::shown(&request);
        let fields = match live::parse_live(frame.header.as_deref().unwrap_or(b"{}")) {
            Ok(fields) => fields,
            Err(e) => return self.respond(Reply::error(ErrorCode::BadRequest, &format!("a start request: {e}"))),
        };
        let terminal = match fields.pty.then(|| self.terminal(&fields)).transpose() {
            Ok(terminal) => terminal,
            Err(reply) => {
                let mut actions = vec![Action::Log(Level::Warning, format!("refused a terminal for {shown}"))];
                actions.extend(self.respond(reply));
                return actions;
            }
        };
        if request.input || !frame.body.is_empty() {
            let message = "a start request has no body: send its input in stdin frames";
            return self.respond(Reply::error(ErrorCode::BadRequest, message));
        }
        match command_spec(self.config, request, Bytes::new(), self.config.live_timeout) {
            Ok(mut spec) => {
                // Piped, and fed by stdin frames (empty: nothing yet).
                spec.input = Some(Bytes::new());
                let terminal = terminal.map(|t| {
                    // The server's, not the client's: an allow list does not refuse it.
                    spec.env.retain(|(name, _)| name != "TERM");
                    spec.env.push(("TERM".into(), t.term));
                    (t.columns, t.lines)
                });
                self.state = State::Awaiting(Awaiting::Start { shown: shown.clone(), pty: terminal.is_some() });
                vec![Action::Start { spec, shown, terminal }]
            }
            Err(reply) => {
                let mut actions = vec![Action::Log(Level::Warning, format!("refused {shown}"))];
                actions.extend(self.respond(reply));
                actions
            }
        }
    }

    /// The terminal a `start` asks for, if this server allocates it.
    fn terminal(&self, fields: &live::LiveFields) -> Result<live::Terminal, Reply> {
        if !self.config.pty {
            return Err(Reply::error(
                ErrorCode::NotAllowed,
                "this server allocates no terminals (--no-pty): start without pty",
            ));
        }
        if self.config.allow.is_some() && !self.config.allow_pty {
            let message =
                "with an allow list, this server allocates terminals only with --allow-pty: start without pty";
            return Err(Reply::error(ErrorCode::NotAllowed, message));
        }
        if let Some(why) = crate::exec::NO_PTY {
            return Err(Reply::error(ErrorCode::NotAllowed, why));
        }
        fields.terminal().map_err(|e| Reply::error(ErrorCode::BadRequest, &format!("a start request: {e}")))
    }

    /// What an [`Action::Start`] gave: the command runs, or why it could not start.
    pub fn started(&mut self, result: std::io::Result<()>) -> Vec<Action> {
        let Awaiting::Start { shown, pty } = self.expect(|a| matches!(a, Awaiting::Start { .. }), "started") else {
            unreachable!()
        };
        if let Err(e) = result {
            let mut actions = vec![Action::Log(Level::Warning, format!("could not start {shown}: {e}"))];
            actions.extend(self.respond(Reply::error(ErrorCode::Spawn, &format!("could not start {shown}: {e}"))));
            return actions;
        }
        let log = Action::Log(Level::Info, format!("started {shown}"));
        self.state = State::Live(Live { shown, stdin_open: true, pty, line_start: true });
        vec![log, Action::Reply(reply(json!({"op": "started"}), Bytes::new()))]
    }

    /// The largest `output` body: [`live::OUTPUT_CHUNK`], or less under a
    /// small `max_body` (the peer, with the same codec, refuses a larger
    /// frame and drops the connection). The driver reads no more than this
    /// from a pipe at once.
    pub fn output_chunk(&self) -> usize {
        live::OUTPUT_CHUNK.min(self.config.codec.max_body.min(live::OUTPUT_CHUNK as u64) as usize).max(1)
    }

    /// Bytes the live command wrote to `fd` (1: stdout, 2: stderr): the
    /// frames that carry them, each within [`Self::output_chunk`].
    pub fn output(&mut self, fd: u8, mut data: Bytes) -> Vec<Action> {
        assert!(self.is_live(), "output without a live command");
        let chunk = self.output_chunk();
        let mut actions = Vec::with_capacity(data.len().div_ceil(chunk));
        while !data.is_empty() {
            let part = data.split_to(chunk.min(data.len()));
            let header = format!(r#"{{"op": "output", "fd": {fd}, "total_size": {}}}"#, part.len());
            actions.push(Action::Reply(Reply::new(Some(header.into_bytes()), part)));
        }
        actions
    }

    /// The live command ended (and its output was reported): the `exit` frame.
    pub fn exited(&mut self, exit: Exit) -> Vec<Action> {
        let State::Live(live) = std::mem::replace(&mut self.state, State::Idle) else {
            panic!("exited without a live command")
        };
        let Exit { returncode, duration, timed_out } = exit;
        let log = Action::Log(
            Level::Info,
            format!(
                "ran {}: returncode {returncode}{}, {:.3}s (live)",
                live.shown,
                if timed_out { " (timed out)" } else { "" },
                duration.as_secs_f64()
            ),
        );
        let header =
            json!({"op": "exit", "returncode": returncode, "duration": duration.as_secs_f64(), "timed_out": timed_out});
        vec![log, Action::Reply(reply(header, Bytes::new()))]
    }

    /// A frame from the peer while the command runs.
    pub(super) fn live_frame(&mut self, mut live: Live, frame: Frame) -> Vec<Action> {
        let fields = match live::parse_live(frame.header.as_deref().unwrap_or(b"{}")) {
            Ok(fields) => fields,
            Err(e) => return self.close(ErrorCode::BadRequest, format!("a frame to a live command: {e}")),
        };
        let mut actions = vec![];
        match fields.op.as_deref() {
            Some("stdin") => {
                // Input after the end of input (or to a command whose stdin
                // is gone) has nowhere to go.
                if live.stdin_open {
                    if let Some(&last) = frame.body.last() {
                        // Newline, carriage return (a newline under ICRNL, a
                        // terminal's default) and Ctrl-D itself empty the line buffer.
                        live.line_start = matches!(last, b'\n' | b'\r' | b'\x04');
                        actions.push(Action::WriteStdin(frame.body));
                    }
                    if fields.eof {
                        live.stdin_open = false;
                        actions.push(if live.pty {
                            Action::WriteStdin(terminal_eof(live.line_start))
                        } else {
                            Action::CloseStdin
                        });
                    }
                }
            }
            Some("signal") => match fields.signal.as_deref().and_then(live::signal_name) {
                Some(name) => actions.push(Action::Signal(name)),
                None => {
                    let message = format!(
                        "signal {} is not one a command may be sent (allowed: {})",
                        fields.signal.as_deref().map_or_else(|| "(none)".to_owned(), |s| format!("{s:?}")),
                        live::SIGNALS.join(", ")
                    );
                    actions.push(Action::Log(Level::Warning, format!("{}: {message}", live.shown)));
                    actions.extend(self.respond(Reply::error(ErrorCode::BadRequest, &message)));
                }
            },
            // A window size means nothing without a terminal.
            Some("resize") if !live.pty => {}
            Some("resize") => match fields.size(None) {
                Ok((columns, lines)) => actions.push(Action::Resize(columns, lines)),
                Err(e) => actions.extend(self.respond(Reply::error(ErrorCode::BadRequest, &format!("resize: {e}")))),
            },
            op => {
                let message = format!("a live command takes stdin, signal and resize frames, not op {op:?}");
                return self.close(ErrorCode::BadRequest, message);
            }
        }
        if !self.is_closed() {
            self.state = State::Live(live);
        }
        actions
    }
}

#[cfg(test)]
mod tests;
