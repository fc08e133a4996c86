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

/// The most bytes of output one `output` frame carries.
pub const OUTPUT_CHUNK: usize = 64 * 1024;

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
}
