//! Socket reads and writes on a raw socket (a file descriptor, or a Windows
//! `SOCKET`) that never block for long: every wait is a poll of at most
//! [`SLICE`], after which the caller's `check` runs (to notice Ctrl-C) and the
//! deadline is looked at. Works the same whether the socket is in blocking or
//! non-blocking mode (Python puts sockets with a timeout in non-blocking mode).

use std::io;
use std::time::{Duration, Instant};

use super::sys;

/// A socket as the system names it: a file descriptor on Unix, a `SOCKET`
/// on Windows.
pub use super::sys::RawSocket;

/// How long one wait lasts before the caller gets to check for signals.
pub const SLICE: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub enum WaitError<E> {
    Io(io::Error),
    TimedOut,
    /// The caller's check failed (a pending KeyboardInterrupt, say).
    Interrupted(E),
}

/// What a wait is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    Read,
    Write,
}

/// The socket behind what Python's `fileno()` returned: an error for a
/// closed socket (-1), as the system reports a bad descriptor.
pub fn from_fileno(fileno: i64) -> io::Result<RawSocket> {
    sys::from_fileno(fileno)
}

/// Waits until `sock` is ready for `interest`.
pub fn wait<E>(
    sock: RawSocket,
    interest: Interest,
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
        // Round up so a sub-millisecond remainder still waits instead of spinning.
        let ms = slice.as_micros().div_ceil(1000) as i32;
        match sys::poll(sock, interest, ms) {
            // Ready, or an error/hang-up that the next call reports.
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(WaitError::Io(e)),
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
    sock: RawSocket,
    buf: &mut [u8],
    deadline: Option<Instant>,
    check: &mut impl FnMut() -> Result<(), E>,
) -> Result<usize, WaitError<E>> {
    loop {
        match sys::recv_nowait(sock, buf) {
            Ok(n) => return Ok(n),
            Err(e) if would_block(&e) => wait(sock, Interest::Read, deadline, check)?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => check().map_err(WaitError::Interrupted)?,
            Err(e) => return Err(WaitError::Io(e)),
        }
    }
}

/// Sends every byte of `bufs`, in order, with vectored writes: a large body is
/// never copied into one buffer with its header, and a partial send is resumed
/// where it stopped.
pub fn send_all<E>(
    sock: RawSocket,
    bufs: &[&[u8]],
    deadline: Option<Instant>,
    check: &mut impl FnMut() -> Result<(), E>,
) -> Result<(), WaitError<E>> {
    let mut parts: Vec<&[u8]> = bufs.iter().copied().filter(|b| !b.is_empty()).collect();
    let mut first = 0;
    while first < parts.len() {
        let mut sent = match sys::send_nowait(sock, &parts[first..]) {
            Ok(n) => n,
            Err(e) if would_block(&e) => {
                wait(sock, Interest::Write, deadline, check)?;
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                check().map_err(WaitError::Interrupted)?;
                continue;
            }
            Err(e) => return Err(WaitError::Io(e)),
        };
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
    use std::net::{Ipv4Addr, TcpListener, TcpStream};

    fn never() -> impl FnMut() -> Result<(), ()> {
        || Ok(())
    }

    /// A connected loopback TCP pair (what a Python client and server hold).
    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        (a, b)
    }

    fn raw(s: &TcpStream) -> RawSocket {
        sys::raw_socket(s)
    }

    #[test]
    fn recv_times_out_at_the_deadline() {
        let (a, _b) = pair();
        let started = Instant::now();
        let deadline = Some(started + Duration::from_millis(50));
        let mut buf = [0u8; 4];
        assert!(matches!(recv_some(raw(&a), &mut buf, deadline, &mut never()), Err(WaitError::TimedOut)));
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn recv_takes_what_is_there_in_blocking_and_non_blocking_mode() {
        for nonblocking in [false, true] {
            let (a, mut b) = pair();
            a.set_nonblocking(nonblocking).unwrap();
            b.write_all(b"abc").unwrap();
            let mut buf = [0u8; 16];
            let mut got = 0;
            while got < 3 {
                got += recv_some(raw(&a), &mut buf[got..], None, &mut never()).unwrap();
            }
            assert_eq!(&buf[..3], b"abc");
            // Nothing more: a blocking socket still waits in slices, and times out.
            let deadline = Some(Instant::now() + Duration::from_millis(30));
            assert!(matches!(recv_some(raw(&a), &mut buf, deadline, &mut never()), Err(WaitError::TimedOut)));
        }
    }

    #[test]
    fn check_runs_while_waiting_and_can_interrupt() {
        let (a, _b) = pair();
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
        assert!(matches!(recv_some(raw(&a), &mut buf, None, &mut check), Err(WaitError::Interrupted("interrupted"))));
    }

    #[test]
    fn recv_returns_zero_at_end_of_stream() {
        let (a, b) = pair();
        drop(b);
        let mut buf = [0u8; 4];
        assert_eq!(recv_some(raw(&a), &mut buf, None, &mut never()).unwrap(), 0);
    }

    #[test]
    fn send_all_finishes_partial_sends() {
        for nonblocking in [false, true] {
            let (a, mut b) = pair();
            a.set_nonblocking(nonblocking).unwrap();
            let big = vec![7u8; 4 * 1024 * 1024];
            let reader = std::thread::spawn(move || {
                let mut got = Vec::new();
                b.read_to_end(&mut got).unwrap();
                got
            });
            send_all(raw(&a), &[b"head", &big, b"", b"tail"], None, &mut never()).unwrap();
            drop(a);
            let got = reader.join().unwrap();
            assert_eq!(got.len(), 4 + big.len() + 4);
            assert_eq!(&got[..4], b"head");
            assert!(got[4..got.len() - 4].iter().all(|&b| b == 7));
            assert_eq!(&got[got.len() - 4..], b"tail");
        }
    }

    #[test]
    fn a_stalled_peer_times_out_a_send_and_the_check_runs_meanwhile() {
        // The peer never reads: the send buffers fill, and the send waits.
        let (a, _b) = pair();
        a.set_nonblocking(true).unwrap();
        let big = vec![0u8; 64 * 1024 * 1024];
        let mut checks = 0;
        let mut check = || {
            checks += 1;
            Ok::<(), ()>(())
        };
        let deadline = Some(Instant::now() + Duration::from_millis(300));
        assert!(matches!(send_all(raw(&a), &[&big], deadline, &mut check), Err(WaitError::TimedOut)));
        assert!(checks >= 1, "{checks}");
    }

    #[test]
    fn send_to_a_closed_peer_is_an_error_not_a_signal() {
        let (a, b) = pair();
        drop(b);
        // The first sends may still be taken; the peer's reset fails a later one.
        let started = Instant::now();
        let err = loop {
            match send_all(raw(&a), &[b"x"], None, &mut never()) {
                Ok(()) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => break e,
            }
            assert!(started.elapsed() < Duration::from_secs(10), "sends to a closed peer kept succeeding");
        };
        let WaitError::Io(e) = err else { panic!("{err:?}") };
        assert!(
            matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
            ),
            "{e:?}"
        );
    }

    #[test]
    fn a_closed_fileno_is_an_error() {
        assert!(from_fileno(-1).is_err());
    }
}
