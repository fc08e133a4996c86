//! Live commands (PROTOCOL.md, "`start`: a live command"): the facts and
//! frame fields both sessions share. A `start` request gets `started`, then
//! `output` frames as the command writes (`fd` 1 or 2, the bytes as body) and
//! one `exit` frame; meanwhile the client may send `stdin`, `signal` and
//! `resize` frames, which get no reply.

use serde::Deserialize;

/// The signals a client may send a live command, by name (without `SIG`).
/// Names, not numbers, travel: numbers differ between platforms.
pub const SIGNALS: [&str; 8] = ["INT", "TERM", "KILL", "HUP", "QUIT", "USR1", "USR2", "WINCH"];

/// The largest `stdin` body a client sends in one frame.
pub const STDIN_CHUNK: usize = 64 * 1024;

/// The most bytes of output one `output` frame carries: what the command's
/// pipe holds when it is read, up to this (a pipe the server widened holds
/// up to 256 KiB: a fast writer's output goes in fewer, larger frames), and
/// never more than the codec's `max_body` (`ServerSession::output_chunk`).
pub const OUTPUT_CHUNK: usize = 256 * 1024;

/// A terminal's `TERM` when a `start` with `pty` names none.
pub const DEFAULT_TERM: &str = "xterm-256color";

/// A terminal's window size (columns, lines) when a `start` with `pty` gives none.
pub const DEFAULT_SIZE: (u16, u16) = (80, 24);

/// A signal's name as the protocol says it (`"INT"` for `"SIGINT"`, `"int"`,
/// `"INT"`), if it is one a command may be sent.
pub fn signal_name(name: &str) -> Option<&'static str> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    SIGNALS.iter().copied().find(|s| *s == bare)
}

/// [`signal_name`], or why `name` is not a signal a command may be sent.
pub fn check_signal(name: &str) -> Result<&'static str, String> {
    signal_name(name).ok_or_else(|| {
        format!("a command may be sent {} (SIGINT, ...), not {}", SIGNALS.join(", "), super::client::str_repr(name))
    })
}

/// The fields of `start`, `stdin`, `signal` and `resize` frames beyond
/// those a `run` has (`cmd`, `env`, `cwd`, `timeout`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct LiveFields {
    pub op: Option<String>,
    /// `start`: run on a pseudo-terminal.
    #[serde(default)]
    pub pty: bool,
    /// `start` with `pty`: the command's `TERM`.
    pub term: Option<String>,
    /// `stdin`: the end of input (after this frame's bytes).
    #[serde(default)]
    pub eof: bool,
    /// `signal`: its name.
    pub signal: Option<String>,
    /// `resize` (and `start` with `pty`): the window size.
    pub columns: Option<u64>,
    pub lines: Option<u64>,
}

pub fn parse_live(header: &[u8]) -> Result<LiveFields, String> {
    serde_json::from_slice(header).map_err(|e| format!("bad header: {e}"))
}

/// What a `start` with `pty` asks for: the terminal's type and window size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminal {
    pub term: String,
    pub columns: u16,
    pub lines: u16,
}

impl LiveFields {
    /// A window size from `columns` and `lines` (both or neither; `default` without).
    pub fn size(&self, default: Option<(u16, u16)>) -> Result<(u16, u16), String> {
        let one = |name: &str, n: u64| {
            u16::try_from(n)
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{name} must be from 1 to {}, got {n}", u16::MAX))
        };
        match (self.columns, self.lines, default) {
            (Some(c), Some(l), _) => Ok((one("columns", c)?, one("lines", l)?)),
            (None, None, Some(size)) => Ok(size),
            _ => Err("a window size is columns and lines, both".into()),
        }
    }

    /// The terminal a `start` with `pty` asks for (defaults for what it omits).
    pub fn terminal(&self) -> Result<Terminal, String> {
        let (columns, lines) = self.size(Some(DEFAULT_SIZE))?;
        let term = self.term.clone().unwrap_or_else(|| DEFAULT_TERM.into());
        let fine = |c: char| c.is_ascii_alphanumeric() || "-_.+".contains(c);
        if term.is_empty() || term.len() > 64 || !term.chars().all(fine) {
            return Err(format!("term must be 1 to 64 of A-Z a-z 0-9 - _ . +, got {term:?}"));
        }
        Ok(Terminal { term, columns, lines })
    }
}

/// How a live command ended, for its `exit` frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exit {
    /// Exit status, or minus the signal number that killed it.
    pub returncode: i32,
    pub duration: std::time::Duration,
    /// Killed (with its process group) at the time limit.
    pub timed_out: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_are_taken_with_or_without_sig_and_in_any_case() {
        assert_eq!(signal_name("SIGINT"), Some("INT"));
        assert_eq!(signal_name("int"), Some("INT"));
        assert_eq!(signal_name("TERM"), Some("TERM"));
        assert_eq!(signal_name("STOP"), None);
        assert_eq!(signal_name("SIG"), None);
    }

    fn fields(header: &str) -> LiveFields {
        parse_live(header.as_bytes()).unwrap()
    }

    #[test]
    fn a_terminal_has_defaults_and_its_fields_are_checked() {
        let t = fields(r#"{"pty": true}"#).terminal().unwrap();
        assert_eq!(t, Terminal { term: DEFAULT_TERM.into(), columns: 80, lines: 24 });
        let t = fields(r#"{"pty": true, "term": "vt100", "columns": 132, "lines": 43}"#).terminal().unwrap();
        assert_eq!(t, Terminal { term: "vt100".into(), columns: 132, lines: 43 });
        for bad in [
            r#"{"columns": 0, "lines": 24}"#,
            r#"{"columns": 65536, "lines": 24}"#,
            r#"{"columns": 80}"#,
            r#"{"term": ""}"#,
            r#"{"term": "xterm; rm -rf /"}"#,
            r#"{"term": "a\u0000b"}"#,
        ] {
            assert!(fields(bad).terminal().is_err(), "{bad}");
        }
        assert!(fields(r#"{}"#).size(None).is_err(), "a resize has both");
        assert_eq!(fields(r#"{"columns": 1, "lines": 65535}"#).size(None), Ok((1, 65535)));
    }
}
