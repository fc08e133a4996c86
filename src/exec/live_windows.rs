//! Live commands on Windows: refused, as every command is there (see
//! `windows.rs`); the types the server's driver names, so that it builds.

use std::io;
use std::process::ExitStatus;
use std::time::Duration;

use super::CommandSpec;

pub use super::spawn::returncode;

/// How long output may still come after the command exited (see `live.rs`).
pub const DRAIN_GRACE: Duration = super::DRAIN_GRACE;

pub type StdinPipe = tokio::io::Sink;
pub type OutputPipe = tokio::io::Empty;

/// Nothing to read here (see `live.rs`).
pub fn read_ready(_pipe: &OutputPipe, _buf: &mut bytes::BytesMut, _limit: usize) {}

pub const PIPE_FULL: usize = 64 * 1024;

/// Nothing to widen here (see `live.rs`).
pub fn widen(_pipe: &OutputPipe) {}

pub struct LiveProcess {
    pub stdin: Option<StdinPipe>,
    pub stdout: Option<OutputPipe>,
    pub stderr: Option<OutputPipe>,
    pub deadline: tokio::time::Instant,
}

impl LiveProcess {
    /// Always the error `windows.rs` gives for any command.
    pub fn start(spec: &CommandSpec, _terminal: Option<(u16, u16)>) -> io::Result<LiveProcess> {
        super::spawn::spawn(spec)?;
        Err(io::Error::new(io::ErrorKind::Unsupported, "commands do not run on Windows"))
    }

    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "commands do not run on Windows"))
    }

    pub fn signal(&self, _name: &str) {}

    pub fn is_pty(&self) -> bool {
        false
    }

    pub fn resize(&self, _columns: u16, _lines: u16) -> io::Result<()> {
        Ok(())
    }

    pub fn kill(&mut self) {}

    pub fn elapsed(&self) -> Duration {
        Duration::ZERO
    }
}

/// Dropping one ends it, as on Unix (where the group is killed): here there
/// is never one to end.
impl Drop for LiveProcess {
    fn drop(&mut self) {}
}
