//! Starting a command on a pseudo-terminal (a live command's `pty`): a new
//! pair from `/dev/ptmx`, the command in a session of its own with the
//! terminal's slave side as its controlling terminal and as its stdin,
//! stdout and stderr; the server keeps the master side, non-blocking and
//! close-on-exec. The standard library starts it (`fork`, with the session
//! and the terminal set up in a `pre_exec` hook: posix_spawn cannot make a
//! controlling terminal), which costs a fork per terminal: they are
//! interactive and few.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use tokio::net::unix::pipe;

use super::{cvt, environment, find_program, program, reset_signals, sys, Child, CommandSpec, Exit, Process};

/// Terminals are made here.
pub const NO_PTY: Option<&str> = None;

/// The master side of a command's terminal, for its window size.
pub struct Master(OwnedFd);

impl Master {
    /// Sets the window size; the kernel sends SIGWINCH to the terminal's
    /// foreground process group when it changes.
    pub fn resize(&self, columns: u16, lines: u16) -> io::Result<()> {
        set_size(&self.0, columns, lines)
    }

    /// The terminal's foreground process group (an interactive shell puts
    /// each job in a group of its own), if it has one.
    pub fn foreground(&self) -> Option<libc::pid_t> {
        // SAFETY: plain syscall on an open descriptor.
        let pgid = unsafe { libc::tcgetpgrp(self.0.as_raw_fd()) };
        (pgid > 0).then_some(pgid)
    }
}

fn set_size(master: &OwnedFd, columns: u16, lines: u16) -> io::Result<()> {
    let size = libc::winsize { ws_row: lines, ws_col: columns, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one winsize, which `size` is.
    cvt(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) }).map(drop)
}

/// A new terminal's master side, close-on-exec from the start: a command
/// another thread starts meanwhile would otherwise keep it open for as long
/// as it runs (a descriptor without close-on-exec survives exec), and the
/// terminal would never see its last master close.
#[cfg(target_os = "linux")]
fn open_master() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall. (glibc's and musl's posix_openpt open /dev/ptmx
    // with the flags given: O_CLOEXEC is taken.)
    let fd = cvt(unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) })?;
    // SAFETY: posix_openpt succeeded: an open descriptor, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Elsewhere posix_openpt takes O_RDWR and O_NOCTTY only (macOS refuses
/// other flags with EINVAL): close-on-exec is set right after, and a
/// command another thread starts in between may keep the master open.
#[cfg(not(target_os = "linux"))]
fn open_master() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall.
    let fd = cvt(unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY) })?;
    // SAFETY: posix_openpt succeeded: an open descriptor, owned by nobody else.
    let master = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: plain syscall on an open descriptor.
    cvt(unsafe { libc::fcntl(master.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) })?;
    Ok(master)
}

/// Opens a new terminal: its master side (close-on-exec, non-blocking) and
/// the path of its slave side.
fn open_pair() -> io::Result<(OwnedFd, CString)> {
    let master = open_master()?;
    let raw = master.as_raw_fd();
    // SAFETY: plain syscalls on an open descriptor.
    unsafe {
        let flags = cvt(libc::fcntl(raw, libc::F_GETFL))?;
        cvt(libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK))?;
        cvt(libc::grantpt(raw))?;
        cvt(libc::unlockpt(raw))?;
    }
    let name = slave_name(&master)?;
    Ok((master, name))
}

#[cfg(target_os = "linux")]
fn slave_name(master: &OwnedFd) -> io::Result<CString> {
    let mut buf = [0 as libc::c_char; 128];
    // SAFETY: `buf` is valid for `buf.len()` bytes; ptsname_r NUL-terminates.
    let r = unsafe { libc::ptsname_r(master.as_raw_fd(), buf.as_mut_ptr(), buf.len()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    // SAFETY: NUL-terminated by ptsname_r, within `buf`.
    Ok(unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_owned())
}

#[cfg(not(target_os = "linux"))]
fn slave_name(master: &OwnedFd) -> io::Result<CString> {
    // ptsname's buffer is static: one caller at a time.
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: plain call on an open descriptor; the result is copied before
    // the lock is released.
    let name = unsafe { libc::ptsname(master.as_raw_fd()) };
    if name.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: non-null: a NUL-terminated string.
    Ok(unsafe { std::ffi::CStr::from_ptr(name) }.to_owned())
}

/// Starts `spec`'s command on a new terminal of `columns` x `lines`: the
/// child has stdin (writes to the terminal) and stdout (what it shows:
/// stdout and stderr merged), no stderr; and the master side to resize it.
pub fn spawn_pty(spec: &CommandSpec, columns: u16, lines: u16) -> io::Result<(Child, Master)> {
    let argv = program(spec)?;
    let env = environment(spec);
    let file =
        find_program(OsStr::new(&argv[0]), env.get(OsStr::new("PATH")).map(|p| p.as_os_str()), spec.cwd.as_deref())?;
    let (master, slave) = open_pair()?;
    set_size(&master, columns, lines)?;
    // Every descriptor the child's driver needs, before there is a child:
    // one that failed after the spawn would start the command only for the
    // Child's drop to kill it, after it may have begun its work.
    let writer = master.try_clone()?;
    let control = master.try_clone()?;
    let mut cmd = Command::new(OsStr::from_bytes(file.as_bytes()));
    cmd.arg0(&argv[0]).args(&argv[1..]).env_clear().envs(env);
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    if let Some(cwd) = &spec.cwd {
        cmd.current_dir(cwd);
    }
    // SAFETY: between fork and exec the hook makes async-signal-safe calls
    // only (setsid, open, ioctl, dup2, close, signal) and touches no memory of
    // the parent's but `slave`, a string made before the fork.
    unsafe {
        cmd.pre_exec(move || {
            cvt(libc::setsid())?;
            // Without O_NOCTTY: a session leader's first terminal becomes its
            // controlling one on Linux; TIOCSCTTY says so everywhere.
            let fd = cvt(libc::open(slave.as_ptr(), libc::O_RDWR))?;
            cvt(libc::ioctl(fd, libc::TIOCSCTTY as _, 0))?;
            for target in 0..=2 {
                cvt(libc::dup2(fd, target))?;
            }
            if fd > 2 {
                libc::close(fd);
            }
            // As `sys::start` gives every command (the standard library
            // already empties the signal mask).
            reset_signals();
            Ok(())
        });
    }
    let std_child = cmd.spawn()?;
    let pid = std_child.id() as libc::pid_t;
    // Dropping std's Child neither waits nor kills: the pid is ours to reap.
    drop(std_child);
    let mut child =
        Child { process: Process { pid, exit: Exit::Timer, status: None }, stdin: None, stdout: None, stderr: None };
    child.process.exit = sys::watch(pid);
    child.stdin = Some(pipe::Sender::from_owned_fd_unchecked(writer)?);
    child.stdout = Some(pipe::Receiver::from_owned_fd_unchecked(master)?);
    Ok((child, Master(control)))
}

/// Kills every process of the session `sid` (a terminal's command leads
/// one): an interactive shell puts each job in a process group of its own,
/// so killing the command's group would leave them running. Linux reads
/// the sessions in /proc; elsewhere the terminal's foreground group is
/// killed besides the command's, and the hangup the kernel sends when the
/// terminal closes reaches the rest.
pub fn kill_session(sid: libc::pid_t, master: &Master) {
    super::kill_group(sid);
    if let Some(pgid) = master.foreground() {
        super::kill_group(pgid);
    }
    #[cfg(target_os = "linux")]
    for pid in session_members(sid) {
        // SAFETY: plain syscall; a process gone meanwhile is fine (ESRCH).
        // (A pid reused in between would not be in the session.)
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// The processes whose session is `sid`, from /proc/PID/stat (the fields
/// after the command's name: state, ppid, pgrp, session).
#[cfg(target_os = "linux")]
fn session_members(sid: libc::pid_t) -> Vec<libc::pid_t> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return vec![] };
    dir.filter_map(|entry| {
        let pid: libc::pid_t = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let session: libc::pid_t = stat.rsplit_once(')')?.1.split_whitespace().nth(3)?.parse().ok()?;
        (session == sid).then_some(pid)
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminals_master_is_close_on_exec_from_its_open() {
        // On Linux the open itself sets it (no fcntl after: see open_master).
        let master = open_master().unwrap();
        // SAFETY: plain syscall on an open descriptor.
        let flags = unsafe { libc::fcntl(master.as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
    }
}
