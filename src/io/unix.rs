//! The socket system calls on Unix: `poll`, `recv` and `sendmsg`, each
//! non-blocking whatever the descriptor's mode (`MSG_DONTWAIT`).

use std::io;
use std::os::fd::RawFd;

use super::socket::Interest;

pub type RawSocket = RawFd;

pub fn from_fileno(fileno: i64) -> io::Result<RawSocket> {
    RawFd::try_from(fileno).ok().filter(|fd| *fd >= 0).ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))
}

/// True if ready within `ms` milliseconds.
pub fn poll(fd: RawSocket, interest: Interest, ms: i32) -> io::Result<bool> {
    let events = match interest {
        Interest::Read => libc::POLLIN,
        Interest::Write => libc::POLLOUT,
    };
    let mut pfd = libc::pollfd { fd, events, revents: 0 };
    // SAFETY: one valid pollfd, count 1.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc > 0)
}

pub fn recv_nowait(fd: RawSocket, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for writes of buf.len() bytes.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Sends what the socket takes now of `parts`, in order, in one `sendmsg`.
pub fn send_nowait(fd: RawSocket, parts: &[&[u8]]) -> io::Result<usize> {
    let iov: Vec<libc::iovec> =
        parts.iter().map(|b| libc::iovec { iov_base: b.as_ptr() as *mut libc::c_void, iov_len: b.len() }).collect();
    // SAFETY: a zeroed msghdr is valid (no name, no control data); only the
    // iovec array is set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iov.len() as _;
    // MSG_NOSIGNAL: a closed peer is an EPIPE error, not a SIGPIPE. (macOS has
    // no such flag; Python ignores SIGPIPE there as everywhere.)
    #[cfg(not(target_vendor = "apple"))]
    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    #[cfg(target_vendor = "apple")]
    let flags = libc::MSG_DONTWAIT;
    // SAFETY: `msg` points at `iov`, whose buffers borrow `parts`: all outlive
    // the call, which only reads them.
    let n = unsafe { libc::sendmsg(fd, &msg, flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

#[cfg(test)]
pub fn raw_socket(s: &std::net::TcpStream) -> RawSocket {
    use std::os::fd::AsRawFd;
    s.as_raw_fd()
}
