//! Log lines that stay one line: every message on its way to the observer has
//! its control characters escaped.
//!
//! Messages quote what peers send (commands, file names, header fields, the
//! text of errors), and a newline or a terminal escape in them could forge a
//! log line or rewrite the terminal that shows the log. Escaping here, in the
//! one place every message passes, covers messages that forget to quote.

use std::fmt::Write;
use std::sync::Arc;

use super::{Level, Observer};

/// True for what must not reach a log raw: C0 controls (newline, carriage
/// return, tab, ESC...), DEL, C1 controls (NEL among them), and the Unicode
/// line and paragraph separators, which `str.splitlines` and some viewers take
/// for line ends.
fn is_control(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// `message` with its control characters written as `\n`, `\r`, `\t`, `\x1b`,
/// `\u0085`, `\u2028`. Backslashes are left as they are: quoting already
/// doubles those in what peers send, and the aim is one line per message,
/// not a reversible encoding.
pub fn escape_controls(message: String) -> String {
    if !message.chars().any(is_control) {
        return message;
    }
    let mut out = String::with_capacity(message.len() + 16);
    for c in message.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_control(c) && (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if is_control(c) => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// An observer that gets only escaped messages.
pub struct Escaping(pub Arc<dyn Observer>);

impl Observer for Escaping {
    fn log(&self, level: Level, message: String) {
        self.0.log(level, escape_controls(message));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(s: &str) -> String {
        escape_controls(s.to_owned())
    }

    #[test]
    fn text_without_controls_is_unchanged() {
        for s in ["", "ran \"ls -l\": returncode 0", "中文 é \\n \\x1b", "\u{202e}bidi is not a control"] {
            assert_eq!(escaped(s), s);
        }
    }

    #[test]
    fn line_breaks_and_cursor_moves_are_escaped() {
        assert_eq!(escaped("a\nb\rc\td"), "a\\nb\\rc\\td");
        assert_eq!(escaped("\x1b[31mred\x1b[0m"), "\\x1b[31mred\\x1b[0m");
        assert_eq!(escaped("\0\x07\x08\x0b\x0c\x1c\x1f\x7f"), "\\x00\\x07\\x08\\x0b\\x0c\\x1c\\x1f\\x7f");
        assert_eq!(escaped("\u{85}\u{9b}"), "\\u0085\\u009b");
        assert_eq!(escaped("a\u{2028}b\u{2029}c"), "a\\u2028b\\u2029c");
    }

    #[test]
    fn an_escaped_message_is_one_line_of_printable_text() {
        let all: String = (0..0x10000u32).filter_map(char::from_u32).collect();
        let out = escaped(&all);
        assert_eq!(out.lines().count(), 1);
        assert!(!out.chars().any(is_control));
    }

    struct Collect(std::sync::Mutex<Vec<String>>);

    impl Observer for Collect {
        fn log(&self, _: Level, message: String) {
            self.0.lock().unwrap().push(message);
        }
    }

    #[test]
    fn the_escaping_observer_passes_escaped_messages_on() {
        let sink = Arc::new(Collect(Default::default()));
        Escaping(sink.clone()).log(Level::Info, "peer: ran \"a\nb\"".into());
        assert_eq!(*sink.0.lock().unwrap(), ["peer: ran \"a\\nb\""]);
    }
}
