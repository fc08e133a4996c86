//! Blocking I/O around the codec: reading one frame from any byte source, and
//! socket reads and writes on a raw socket that wait in bounded slices so the
//! caller can check for Ctrl-C and deadlines.
//!
//! The system calls behind [`socket`] live in `unix.rs` (a file descriptor:
//! `poll`, `recv`, `sendmsg`) and `windows.rs` (a `SOCKET`: `WSAPoll`, `recv`,
//! `WSASend`); everything above them is the same on every platform.

pub mod read;
pub mod socket;

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as sys;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as sys;
