//! Socket reads and writes on a raw file descriptor that never block for long:
//! every wait is a `poll` of at most [`SLICE`], after which the caller's `check`
//! runs (to notice Ctrl-C) and the deadline is looked at. Works the same whether
//! the descriptor is in blocking or non-blocking mode (Python puts sockets with a
//! timeout in non-blocking mode).

use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// How long one wait lasts before the caller gets to check for signals.
pub const SLICE: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub enum WaitError<E> {
    Io(io::Error),
    TimedOut,
    /// The caller's check failed (a pending KeyboardInterrupt, say).
    Interrupted(E),
}

/// Waits until `fd` is ready for `events` (`libc::POLLIN` or `POLLOUT`).
pub fn wait<E>(
    fd: RawFd,
    events: libc::c_short,
    deadline: Option<Instant>,
    check: &mut impl FnMut() -> Result<(), E>,
) -> Result<(), WaitError<E>> {
    loop {
        let slice = match deadline {
            None => SLICE,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(WaitError::TimedOut);
                }
                left.min(SLICE)
            }
        };
        let mut pfd = libc::pollfd { fd, events, revents: 0 };
        // Round up so a sub-millisecond remainder still waits instead of spinning.
        let ms = slice.as_micros().div_ceil(1000) as libc::c_int;
        // SAFETY: one valid pollfd, count 1.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc > 0 {
            // Readable, writable, or an error/hang-up that the next call reports.
            return Ok(());
        }
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(WaitError::Io(err));
            }
        }
        check().map_err(WaitError::Interrupted)?;
    }
}

fn would_block(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::WouldBlock
}

/// Reads what is available (at least one byte), waiting for it if needed;
/// returns 0 at end of stream.
pub fn recv_some<E>(
    fd: RawFd,
    buf: &mut [u8],
    deadline: Option<Instant>,
    check: &mut impl FnMut() -> Result<(), E>,
) -> Result<usize, WaitError<E>> {
    loop {
        // SAFETY: buf is valid for writes of buf.len() bytes.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if would_block(&err) {
            wait(fd, libc::POLLIN, deadline, check)?;
        } else if err.kind() == io::ErrorKind::Interrupted {
            check().map_err(WaitError::Interrupted)?;
        } else {
            return Err(WaitError::Io(err));
        }
    }
}

/// Sends every byte of `bufs`, in order, with vectored writes: a large body is
/// never copied into one buffer with its header, and a partial send is resumed
/// where it stopped.
pub fn send_all<E>(
    fd: RawFd,
    bufs: &[&[u8]],
    deadline: Option<Instant>,
    check: &mut impl FnMut() -> Result<(), E>,
) -> Result<(), WaitError<E>> {
    let mut parts: Vec<&[u8]> = bufs.iter().copied().filter(|b| !b.is_empty()).collect();
    let mut first = 0;
    while first < parts.len() {
        let iov: Vec<libc::iovec> = parts[first..]
            .iter()
            .map(|b| libc::iovec { iov_base: b.as_ptr() as *mut libc::c_void, iov_len: b.len() })
            .collect();
        // SAFETY: a zeroed msghdr with only the iovec array set is a plain send.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = iov.len() as _;
        // MSG_NOSIGNAL: a closed peer is an EPIPE error, not a SIGPIPE.
        let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if would_block(&err) {
                wait(fd, libc::POLLOUT, deadline, check)?;
                continue;
            }
            if err.kind() == io::ErrorKind::Interrupted {
                check().map_err(WaitError::Interrupted)?;
                continue;
            }
            return Err(WaitError::Io(err));
        }
        let mut sent = n as usize;
        while sent > 0 && first < parts.len() {
            let len = parts[first].len();
            if sent >= len {
                sent -= len;
                first += 1;
            } else {
                parts[first] = &parts[first][sent..];
                sent = 0;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    fn never() -> impl FnMut() -> Result<(), ()> {
        || Ok(())
    }

    #[test]
    fn recv_times_out_at_the_deadline() {
        let (a, _b) = UnixStream::pair().unwrap();
        let deadline = Some(Instant::now() + Duration::from_millis(50));
        let mut buf = [0u8; 4];
        assert!(matches!(recv_some(a.as_raw_fd(), &mut buf, deadline, &mut never()), Err(WaitError::TimedOut)));
    }

    #[test]
    fn check_runs_while_waiting_and_can_interrupt() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut calls = 0;
        let mut check = || {
            calls += 1;
            if calls == 2 {
                Err("interrupted")
            } else {
                Ok(())
            }
        };
        let mut buf = [0u8; 4];
        assert!(matches!(
            recv_some(a.as_raw_fd(), &mut buf, None, &mut check),
            Err(WaitError::Interrupted("interrupted"))
        ));
    }

    #[test]
    fn recv_returns_zero_at_end_of_stream() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        let mut buf = [0u8; 4];
        assert_eq!(recv_some(a.as_raw_fd(), &mut buf, None, &mut never()).unwrap(), 0);
    }

    #[test]
    fn send_all_finishes_partial_sends() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let big = vec![7u8; 4 * 1024 * 1024];
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            b.read_to_end(&mut got).unwrap();
            got
        });
        send_all(a.as_raw_fd(), &[b"head", &big, b"", b"tail"], None, &mut never()).unwrap();
        drop(a);
        let got = reader.join().unwrap();
        assert_eq!(got.len(), 4 + big.len() + 4);
        assert_eq!(&got[..4], b"head");
        assert_eq!(&got[got.len() - 4..], b"tail");
    }

    #[test]
    fn send_to_a_closed_peer_is_an_error_not_a_signal() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        let err = send_all(a.as_raw_fd(), &[b"x"], None, &mut never()).unwrap_err();
        assert!(matches!(err, WaitError::Io(e) if e.kind() == io::ErrorKind::BrokenPipe));
        let _ = (&a).write(b"");
    }
}
