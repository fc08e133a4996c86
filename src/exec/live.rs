//! A live command: started as `run` starts one (a session and process group
//! of its own, stdin, stdout and stderr piped), its pipes handed to the
//! caller, who streams them (`server::connection::live`). Dropped, the whole
//! group is killed and the command reaped, as with `run`.

use std::io;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use tokio::net::unix::pipe;

use super::{spawn, CommandSpec, GroupGuard};

/// How long output may still come after the command exited before its pipes
/// are abandoned (a job it left in the background may hold them forever).
pub const DRAIN_GRACE: Duration = super::DRAIN_GRACE;

/// The number of a signal the protocol names (`protocol::live::SIGNALS`).
pub fn signal_number(name: &str) -> Option<libc::c_int> {
    Some(match name {
        "INT" => libc::SIGINT,
        "TERM" => libc::SIGTERM,
        "KILL" => libc::SIGKILL,
        "HUP" => libc::SIGHUP,
        "QUIT" => libc::SIGQUIT,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "WINCH" => libc::SIGWINCH,
        _ => return None,
    })
}

pub use super::spawn::returncode;

/// The parent's ends of a live command's pipes.
pub type StdinPipe = pipe::Sender;
pub type OutputPipe = pipe::Receiver;

pub struct LiveProcess {
    child: spawn::Child,
    /// The group, until the command is reaped (then its id may be reused).
    group: GroupGuard,
    pub stdin: Option<StdinPipe>,
    pub stdout: Option<OutputPipe>,
    pub stderr: Option<OutputPipe>,
    started: Instant,
    /// When the time limit kills it.
    pub deadline: tokio::time::Instant,
}

impl LiveProcess {
    /// Starts `spec`'s command (`spec.input` is ignored: stdin is a pipe).
    pub fn start(spec: &CommandSpec) -> io::Result<LiveProcess> {
        let started = Instant::now();
        let piped = CommandSpec { input: Some(bytes::Bytes::new()), ..spec.clone() };
        let mut child = spawn::spawn(&piped)?;
        let group = GroupGuard(Some(child.pid()));
        let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let deadline = tokio::time::Instant::from_std(started + spec.timeout);
        Ok(LiveProcess { child, group, stdin, stdout, stderr, started, deadline })
    }

    /// Waits for the command to exit, reaps it, and kills what it left
    /// running in its group. Cancel-safe.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        let status = self.child.wait().await?;
        self.group.kill();
        self.group.0 = None;
        Ok(status)
    }

    /// Sends the signal `name` (one of `protocol::live::SIGNALS`) to the
    /// command's process group; nothing once the command was reaped.
    pub fn signal(&self, name: &str) {
        if let (Some(pgid), Some(number)) = (self.group.0, signal_number(name)) {
            // SAFETY: plain syscall. The group is the command's: its leader
            // has not been reaped, so the id is not reused.
            unsafe { libc::killpg(pgid, number) };
        }
    }

    /// Kills the group and the command itself (the time limit).
    pub fn kill(&mut self) {
        self.group.kill();
        let _ = self.child.start_kill();
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::exec::Program;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
    }

    #[test]
    fn stdin_is_a_pipe_and_stdout_streams() {
        block_on(async {
            let mut p = LiveProcess::start(&CommandSpec::for_tests(Program::Shell("head -n 1".into()))).unwrap();
            let mut stdin = p.stdin.take().unwrap();
            stdin.write_all(b"first\nsecond\n").await.unwrap();
            let mut out = String::new();
            p.stdout.take().unwrap().read_to_string(&mut out).await.unwrap();
            assert_eq!(out, "first\n");
            assert_eq!(returncode(p.wait().await.unwrap()), 0);
        });
    }

    #[test]
    fn a_signal_reaches_the_group() {
        block_on(async {
            let mut p = LiveProcess::start(&CommandSpec::for_tests(Program::Shell("sleep 100".into()))).unwrap();
            p.signal("INT");
            assert_eq!(returncode(p.wait().await.unwrap()), -libc::SIGINT);
            p.signal("KILL"); // reaped: nothing happens
        });
    }

    #[test]
    fn every_protocol_signal_has_a_number() {
        for name in crate::protocol::live::SIGNALS {
            assert!(signal_number(name).is_some(), "{name}");
        }
    }
}
