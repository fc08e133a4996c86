//! File helpers for the Python clients' downloads.

use pyo3::prelude::*;

/// Starts writing ``length`` bytes of file descriptor ``fd`` from ``offset``
/// to disk and returns at once (Linux ``sync_file_range``; elsewhere nothing),
/// so the fsync that ends a download waits only for the last stretch.
#[pyfunction]
pub fn start_writeback(py: Python<'_>, fd: i32, offset: u64, length: u64) {
    py.detach(|| crate::files::start_writeback(fd, offset, length));
}
