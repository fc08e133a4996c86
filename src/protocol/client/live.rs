//! Live commands on the client side (PROTOCOL.md, "`start`"): `start`
//! makes the request and dedicates the connection to the command until its
//! `exit`; `stdin`, `signal` and `resize` make the frames that go to it
//! meanwhile (no replies); its `started`, `output` and `exit` frames become
//! [`Event::Started`], [`Event::Output`] and [`Event::Exit`].

use jiter::JsonValue;

use super::repr::{get, members_repr, Members};
use super::{ClientSession, Event, RequestId, SessionError, Step, Val, ViolationKind};
use crate::codec::Frame;
use crate::protocol::live::{self, STDIN_CHUNK};

/// Why the session closed when a live command's frames broke the protocol.
pub const LIVE_BROKEN: &str = "the server broke the live command protocol";

#[derive(Debug)]
pub(super) struct Live {
    id: RequestId,
    pty: bool,
    stdin_open: bool,
}

impl ClientSession {
    /// `start`: a live command. `header` is the whole request header (JSON
    /// text, `op` `"start"`). Then [`Event::Started`] (or a remote error),
    /// [`Event::Output`]s and one [`Event::Exit`]; meanwhile the command
    /// takes [`ClientSession::stdin`], [`ClientSession::signal`] and
    /// [`ClientSession::resize`], and other requests are refused.
    pub fn start(&mut self, header: &[u8]) -> Result<(RequestId, Vec<u8>), SessionError> {
        self.check_free()?;
        self.need_json("start")?;
        let pty =
            super::repr::parse_object(header).is_some_and(|m| matches!(get(&m, "pty"), Some(JsonValue::Bool(true))));
        let data = self.codec.encode(Some(header), b"")?;
        let id = self.push(Step::Live { started: false });
        self.live = Some(Live { id, pty, stdin_open: true });
        Ok((id, data))
    }

    /// The id of the live command that holds the connection, if any.
    pub fn live(&self) -> Option<RequestId> {
        self.live.as_ref().map(|l| l.id)
    }

    /// Frames of bytes for the live command's stdin (at most
    /// [`STDIN_CHUNK`] each); `eof`: then the end of input, after which
    /// stdin takes nothing more.
    pub fn stdin(&mut self, data: &[u8], eof: bool) -> Result<Vec<u8>, SessionError> {
        self.check_open()?;
        let live = self.live.as_mut().ok_or_else(|| SessionError::Usage("no live command runs".into()))?;
        if !live.stdin_open {
            return Err(SessionError::Usage("the live command's stdin is closed".into()));
        }
        live.stdin_open = !eof;
        let mut out = vec![];
        let mut chunks: Vec<&[u8]> = data.chunks(STDIN_CHUNK).collect();
        if chunks.is_empty() {
            chunks.push(b"");
        }
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.into_iter().enumerate() {
            let mut fields = vec![("op", Val::Str("stdin"))];
            if eof && i == last {
                fields.push(("eof", Val::Bool(true)));
            }
            if chunk.is_empty() && !(eof && i == last) {
                continue;
            }
            out.extend(self.frame(&fields, chunk)?);
        }
        Ok(out)
    }

    /// A `signal` frame for the live command: `name` is one of
    /// [`live::SIGNALS`], with or without `SIG`, in any case.
    pub fn signal(&mut self, name: &str) -> Result<Vec<u8>, SessionError> {
        self.check_open()?;
        if self.live.is_none() {
            return Err(SessionError::Usage("no live command runs".into()));
        }
        let signal = live::check_signal(name).map_err(SessionError::Usage)?;
        self.frame(&[("op", Val::Str("signal")), ("signal", Val::Str(signal))], b"")
    }

    /// A `resize` frame: the live command's terminal is now `columns` x `lines`.
    pub fn resize(&mut self, columns: u16, lines: u16) -> Result<Vec<u8>, SessionError> {
        self.check_open()?;
        let live = self.live.as_ref().ok_or_else(|| SessionError::Usage("no live command runs".into()))?;
        if !live.pty {
            return Err(SessionError::Usage("resize() needs a terminal: start(..., pty=True)".into()));
        }
        if columns == 0 || lines == 0 {
            return Err(SessionError::Usage("a window is at least 1x1".into()));
        }
        let fields =
            [("op", Val::Str("resize")), ("columns", Val::U64(columns.into())), ("lines", Val::U64(lines.into()))];
        self.frame(&fields, b"")
    }

    /// A frame for the live command `id` (not an error frame).
    pub(super) fn on_live(
        &mut self,
        id: RequestId,
        started: bool,
        op: Option<&str>,
        members: Option<&Members<'_>>,
        frame: &Frame,
    ) {
        let shown = || members.map_or_else(|| "a frame without a header".to_owned(), members_repr);
        let header = || frame.header.clone().unwrap_or_default();
        if !started {
            if op == Some("started") {
                if let Some(entry) = self.in_flight.front_mut() {
                    entry.step = Step::Live { started: true };
                }
                return self.events.push_back(Event::Started { id });
            }
            self.in_flight.pop_front();
            self.live = None;
            let message = format!("expected a 'started' frame, got {}", shown());
            return self.violation(id, ViolationKind::UnexpectedReply, message, None, header());
        }
        let m = members.expect("a frame with an op has a header");
        match op {
            Some("output") => match get(m, "fd") {
                Some(JsonValue::Int(fd @ (1 | 2))) => {
                    let fd = *fd as u8;
                    self.events.push_back(Event::Output { id, fd, data: frame.body.clone() })
                }
                _ => {
                    let message = format!("an output frame names no fd 1 or 2: {}", shown());
                    self.violation(id, ViolationKind::UnexpectedReply, message, Some(LIVE_BROKEN), header())
                }
            },
            Some("exit") => {
                self.in_flight.pop_front();
                self.live = None;
                let returncode = match get(m, "returncode") {
                    Some(JsonValue::Int(n)) => *n,
                    _ => {
                        let message = format!("an exit frame without a returncode: {}", shown());
                        return self.violation(id, ViolationKind::UnexpectedReply, message, None, header());
                    }
                };
                let seconds = match get(m, "duration") {
                    Some(JsonValue::Float(f)) => *f,
                    Some(JsonValue::Int(n)) => *n as f64,
                    _ => 0.0,
                };
                let duration = std::time::Duration::try_from_secs_f64(seconds).unwrap_or_default();
                let timed_out = matches!(get(m, "timed_out"), Some(JsonValue::Bool(true)));
                self.events.push_back(Event::Exit { id, returncode, duration, timed_out, header: header() });
            }
            _ => {
                let message = format!("expected an output or exit frame, got {}", shown());
                self.violation(id, ViolationKind::UnexpectedReply, message, Some(LIVE_BROKEN), header())
            }
        }
    }
}

#[cfg(test)]
mod tests;
