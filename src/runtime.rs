//! The one tokio runtime of the process; nothing else builds one.
//!
//! tokio does not survive `fork()`: a runtime made in a parent hangs in a child.
//! The runtime remembers the pid that made it, and a child gets a clear error.

use std::io;
use std::sync::OnceLock;

use tokio::runtime::Runtime;

static RUNTIME: OnceLock<(u32, Runtime)> = OnceLock::new();

/// The shared runtime, built on first use.
pub fn get() -> io::Result<&'static Runtime> {
    let (pid, rt) = match RUNTIME.get() {
        Some(entry) => entry,
        None => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("rframe-tokio").build()?;
            RUNTIME.get_or_init(|| (std::process::id(), rt))
        }
    };
    if *pid != std::process::id() {
        return Err(io::Error::other(
            "rframe's runtime was started before this process was forked, and tokio does not \
             survive fork(): create servers and clients in the child, or use the 'spawn' \
             multiprocessing start method",
        ));
    }
    Ok(rt)
}
