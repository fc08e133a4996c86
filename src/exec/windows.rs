//! Running commands on Windows: not yet. A command server needs what POSIX
//! process groups give on Unix (a time limit or a disconnect ends the whole
//! tree a command started), which on Windows is a Job Object per command and
//! overlapped pipes; until that is written, [`spawn`] refuses, and a server
//! without a handler refuses to start ([`UNSUPPORTED`] says why). The types
//! below keep `exec::run` the same on every platform.

use std::io;
use std::process::ExitStatus;

use super::CommandSpec;

pub const UNSUPPORTED: Option<&str> = Some(
    "the command server does not run on Windows yet (commands need a Job Object each, so that a time limit or a \
     disconnect ends everything they started): serve a handler instead (rframe.Server(handler=...)), or run the \
     command server on Linux or macOS",
);

/// No terminals either (a ConPTY per command, when commands run here).
pub const NO_PTY: Option<&str> = Some("this server cannot make terminals on Windows: start without pty");

/// A process id (a command's would be its Job Object's key).
pub type Pid = u32;

/// A command that was started: never, here ([`spawn`] refuses). Its pipes
/// are the types tokio has for "nothing", so `exec::run` reads the same.
pub struct Child {
    pub stdin: Option<tokio::io::Sink>,
    pub stdout: Option<tokio::io::Empty>,
    pub stderr: Option<tokio::io::Empty>,
}

/// Always an error of kind `Unsupported`, saying why.
pub fn spawn(_spec: &CommandSpec) -> io::Result<Child> {
    Err(unsupported())
}

fn unsupported() -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, UNSUPPORTED.unwrap_or_default())
}

#[allow(dead_code, reason = "no Child is ever made: spawn refuses")]
impl Child {
    pub fn pid(&self) -> Pid {
        0
    }

    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        Err(unsupported())
    }

    pub fn start_kill(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub fn kill_group(_pgid: Pid) {}

pub fn returncode(status: ExitStatus) -> i32 {
    status.code().unwrap_or(-1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::Program;

    #[test]
    fn spawning_is_refused_with_the_reason() {
        let err = spawn(&CommandSpec::for_tests(Program::Shell("echo hi".into()))).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::Unsupported);
        assert!(err.to_string().contains("handler"), "{err}");
    }
}
