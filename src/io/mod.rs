//! Blocking I/O around the codec: reading one frame from any byte source, and
//! socket reads and writes on a raw file descriptor that wait in bounded slices
//! so the caller can check for Ctrl-C and deadlines.

pub mod fd;
pub mod read;
