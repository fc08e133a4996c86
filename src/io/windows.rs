//! The socket system calls on Windows: `WSAPoll`, `recv` and `WSASend`.
//!
//! Winsock has no `MSG_DONTWAIT`, and a socket's blocking mode cannot be read
//! back, so a call here never relies on it: it first asks `WSAPoll` whether the
//! socket is ready (waiting not at all), and only then reads or writes. A
//! readable socket's `recv` returns at once; a send takes at most
//! [`SEND_CHUNK`] bytes, so on a socket in blocking mode (a Python socket
//! without a timeout) one call waits no longer than the peer takes to accept
//! that much, and Ctrl-C is noticed between calls.

use std::io;

use windows_sys::Win32::Networking::WinSock::{
    recv, WSAGetLastError, WSAPoll, WSASend, POLLRDNORM, POLLWRNORM, SOCKET, SOCKET_ERROR, WSABUF, WSAENOTSOCK,
    WSAEWOULDBLOCK, WSAPOLLFD,
};

use super::socket::Interest;

pub type RawSocket = SOCKET;

/// The most one `WSASend` is given.
pub const SEND_CHUNK: usize = 256 * 1024;

pub fn from_fileno(fileno: i64) -> io::Result<RawSocket> {
    // Python's fileno() is the SOCKET as an int, -1 once closed.
    RawSocket::try_from(fileno).map_err(|_| io::Error::from_raw_os_error(WSAENOTSOCK))
}

fn last_error() -> io::Error {
    // SAFETY: reads this thread's last Winsock error; no arguments.
    io::Error::from_raw_os_error(unsafe { WSAGetLastError() })
}

/// True if ready within `ms` milliseconds (0: do not wait).
pub fn poll(sock: RawSocket, interest: Interest, ms: i32) -> io::Result<bool> {
    let events = match interest {
        Interest::Read => POLLRDNORM,
        Interest::Write => POLLWRNORM,
    };
    let mut pfd = WSAPOLLFD { fd: sock, events, revents: 0 };
    // SAFETY: one valid WSAPOLLFD, count 1.
    let rc = unsafe { WSAPoll(&mut pfd, 1, ms) };
    if rc == SOCKET_ERROR {
        return Err(last_error());
    }
    // Ready, or an error or hang-up (POLLERR, POLLHUP, POLLNVAL) that the
    // next call reports.
    Ok(rc > 0)
}

fn not_ready() -> io::Error {
    io::Error::from_raw_os_error(WSAEWOULDBLOCK)
}

pub fn recv_nowait(sock: RawSocket, buf: &mut [u8]) -> io::Result<usize> {
    if !poll(sock, Interest::Read, 0)? {
        return Err(not_ready());
    }
    let len = buf.len().min(i32::MAX as usize) as i32;
    // SAFETY: buf is valid for writes of `len` bytes.
    let n = unsafe { recv(sock, buf.as_mut_ptr(), len, 0) };
    if n == SOCKET_ERROR {
        return Err(last_error());
    }
    Ok(n as usize)
}

/// Sends what the socket takes now of `parts` (at most [`SEND_CHUNK`]
/// bytes), in order, in one `WSASend`.
pub fn send_nowait(sock: RawSocket, parts: &[&[u8]]) -> io::Result<usize> {
    if !poll(sock, Interest::Write, 0)? {
        return Err(not_ready());
    }
    let mut room = SEND_CHUNK;
    let mut bufs = Vec::with_capacity(parts.len());
    for part in parts {
        if room == 0 {
            break;
        }
        let len = part.len().min(room);
        room -= len;
        // WSASend only reads the buffers (the field is `*mut` for its receiving twin).
        bufs.push(WSABUF { len: len as u32, buf: part.as_ptr() as *mut u8 });
    }
    let mut sent = 0u32;
    // SAFETY: `bufs` holds `bufs.len()` WSABUFs over memory borrowed from
    // `parts`, which outlives this synchronous call (no OVERLAPPED, no
    // completion routine); `sent` is a valid place for the count.
    let rc = unsafe { WSASend(sock, bufs.as_ptr(), bufs.len() as u32, &mut sent, 0, std::ptr::null_mut(), None) };
    if rc == SOCKET_ERROR {
        return Err(last_error());
    }
    Ok(sent as usize)
}

#[cfg(test)]
pub fn raw_socket(s: &std::net::TcpStream) -> RawSocket {
    use std::os::windows::io::AsRawSocket;
    s.as_raw_socket() as RawSocket
}
