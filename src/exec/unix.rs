//! Running commands on Unix: starting one in a session of its own, waiting
//! for it without a thread, and killing its process group.
//!
//! `setsid` in a `pre_exec` hook makes the standard library start commands
//! with `fork`, which copies the server's page tables and makes every page its
//! threads touch copy-on-write until the command execs: on Linux, commands
//! start with `posix_spawn` and `POSIX_SPAWN_SETSID` (glibc >= 2.26, and
//! `posix_spawn_file_actions_addchdir_np` for a cwd, glibc >= 2.29; musl has
//! both) instead, which is vfork-like. `argv[0]` is looked up on `PATH` here, as
//! `execvp` would in the child. A command is waited for through a pidfd,
//! polled by tokio; without one, `waitpid(WNOHANG)` on a timer.
//!
//! Every platform-specific bit of running commands lives in this file (its
//! Windows counterpart is `windows.rs`): the `sys` module at the end (Linux)
//! and its stand-in elsewhere (macOS and the BSDs: the standard library with a
//! `setsid` hook), and the pidfd.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use tokio::net::unix::pipe;

use super::{CommandSpec, Program, SCRUBBED_ENV};

/// Commands run here; `Some(why)` where they cannot (see `windows.rs`).
pub const UNSUPPORTED: Option<&str> = None;

/// Live commands on a pseudo-terminal (`pty.rs`).
mod pty;
pub use pty::{kill_session, spawn_pty, Master, NO_PTY};

/// A process id, which is also the process group of a command (it leads its
/// own session).
pub type Pid = libc::pid_t;

/// Kills every process in the group `pgid`; one already gone is fine.
pub fn kill_group(pgid: Pid) {
    // SAFETY: plain syscall; ESRCH (group already gone) is fine.
    unsafe { libc::killpg(pgid, libc::SIGKILL) };
}

/// The exit status, or minus the signal number that killed it.
pub fn returncode(status: ExitStatus) -> i32 {
    status.code().unwrap_or_else(|| -status.signal().unwrap_or(0))
}

/// A started command: its pipes (stdin only with input to send) and its exit.
/// Dropped before it was reaped, it is killed, and reaped all the same.
pub struct Child {
    process: Process,
    pub stdin: Option<pipe::Sender>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
}

/// What `sys::start` hands over: the pid, and the parent's ends of the pipes,
/// non-blocking and close-on-exec.
struct Started {
    pid: libc::pid_t,
    stdin: Option<OwnedFd>,
    stdout: OwnedFd,
    stderr: OwnedFd,
}

/// Starts the command `spec` describes: stdout and stderr piped, stdin piped
/// if there is input to send and `/dev/null` otherwise, in a session (and so a
/// process group) of its own, with the signal mask empty and every signal at
/// its default action (see [`reset_signals`]). A program that is not found is an error of kind
/// `NotFound` (ENOENT, as `execvp` gives).
pub fn spawn(spec: &CommandSpec) -> io::Result<Child> {
    spawn_with(spec, sys::start, sys::watch)
}

fn spawn_with(
    spec: &CommandSpec,
    start: fn(&CommandSpec) -> io::Result<Started>,
    watch: fn(libc::pid_t) -> Exit,
) -> io::Result<Child> {
    let Started { pid, stdin, stdout, stderr } = start(spec)?;
    // From here on the process is the Child's to reap, whatever fails next.
    let mut child =
        Child { process: Process { pid, exit: Exit::Timer, status: None }, stdin: None, stdout: None, stderr: None };
    child.process.exit = watch(pid);
    // The ends are pipes and non-blocking already (see `sys::start`).
    child.stdin = stdin.map(pipe::Sender::from_owned_fd_unchecked).transpose()?;
    child.stdout = Some(pipe::Receiver::from_owned_fd_unchecked(stdout)?);
    child.stderr = Some(pipe::Receiver::from_owned_fd_unchecked(stderr)?);
    Ok(child)
}

impl Child {
    /// The command's pid, which is also its process group and its session.
    pub fn pid(&self) -> libc::pid_t {
        self.process.pid
    }

    /// Waits for the command to exit and reaps it. Cancel-safe: a wait that is
    /// dropped loses nothing, and the next one picks up where it was.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        self.process.wait().await
    }

    /// Sends the command SIGKILL (nothing, once it was reaped: its pid may no
    /// longer be its own).
    pub fn start_kill(&mut self) -> io::Result<()> {
        if self.process.status.is_none() {
            // SAFETY: plain syscall. The pid is still this child's: it has not
            // been reaped (only this Child reaps it).
            cvt(unsafe { libc::kill(self.process.pid, libc::SIGKILL) })?;
        }
        Ok(())
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.process.status.is_some() {
            return;
        }
        let _ = self.start_kill();
        if !matches!(self.process.try_wait(), Ok(None)) {
            return; // reaped now, or not ours to reap (ECHILD)
        }
        // Killed but not dead yet: reaped once it is, by a task of the runtime,
        // or right here without one (`Orphan`'s drop).
        let orphan = Orphan(Process {
            pid: self.process.pid,
            exit: std::mem::replace(&mut self.process.exit, Exit::Timer),
            status: None,
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let mut orphan = orphan;
                let _ = orphan.0.wait().await;
            });
        }
    }
}

/// A killed process still to be reaped. If the task that waits for it is
/// dropped first (the runtime is shutting down), the drop waits, blocking: the
/// process was sent SIGKILL, so not for long.
struct Orphan(Process);

impl Drop for Orphan {
    fn drop(&mut self) {
        if self.0.status.is_some() {
            return;
        }
        let mut raw = 0;
        // SAFETY: plain syscall on a child of ours not yet reaped; `raw` is a
        // valid place for the status.
        while unsafe { libc::waitpid(self.0.pid, &mut raw, 0) } == -1 && errno() == libc::EINTR {}
    }
}

/// How a process's exit is noticed.
enum Exit {
    /// Its pidfd turns readable.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Pidfd(tokio::io::unix::AsyncFd<OwnedFd>),
    /// `waitpid(WNOHANG)` now and then: where there are no pidfds.
    Timer,
}

struct Process {
    pid: libc::pid_t,
    exit: Exit,
    /// Set once reaped.
    status: Option<ExitStatus>,
}

impl Process {
    /// Reaps the process if it has exited.
    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        let mut raw = 0;
        loop {
            // SAFETY: plain syscall on a child of ours not yet reaped (`status`
            // is None); `raw` is a valid place for the status.
            match unsafe { libc::waitpid(self.pid, &mut raw, libc::WNOHANG) } {
                0 => return Ok(None),
                -1 if errno() == libc::EINTR => {}
                -1 => return Err(io::Error::last_os_error()),
                _ => {
                    let status = ExitStatus::from_raw(raw);
                    self.status = Some(status);
                    return Ok(Some(status));
                }
            }
        }
    }

    async fn wait(&mut self) -> io::Result<ExitStatus> {
        let mut pause = Duration::from_millis(1);
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            match &self.exit {
                Exit::Pidfd(fd) => fd.readable().await?.clear_ready(),
                Exit::Timer => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
            }
        }
    }
}

/// The command's environment: the server's, with the request's variables on
/// top, less the scrubbed ones (after the request's, so that a request cannot
/// put them back).
fn environment(spec: &CommandSpec) -> BTreeMap<OsString, OsString> {
    environment_over(std::env::vars_os(), spec)
}

fn environment_over(
    server: impl Iterator<Item = (OsString, OsString)>,
    spec: &CommandSpec,
) -> BTreeMap<OsString, OsString> {
    let mut env: BTreeMap<OsString, OsString> = server.collect();
    env.extend(spec.env.iter().map(|(k, v)| (k.into(), v.into())));
    for name in SCRUBBED_ENV {
        env.remove(OsStr::new(name));
    }
    env
}

/// The file to execute for `argv[0]`, as `execvp` would find it with the
/// command's environment: a name with a '/' as it is, and one without looked
/// up on the command's `PATH` (`/bin:/usr/bin` if it has none), an empty entry
/// being the current directory. A relative entry stays relative, so that the
/// command, once in its cwd, runs what was found there (looked for beneath
/// `cwd`).
fn find_program(name: &OsStr, path: Option<&OsStr>, cwd: Option<&Path>) -> io::Result<OsString> {
    if name.as_bytes().contains(&b'/') {
        return Ok(name.to_owned());
    }
    if name.is_empty() {
        return Err(io::Error::from_raw_os_error(libc::ENOENT));
    }
    let mut denied = false;
    for dir in path.unwrap_or(OsStr::new("/bin:/usr/bin")).as_bytes().split(|&b| b == b':') {
        let dir = if dir.is_empty() { Path::new(".") } else { Path::new(OsStr::from_bytes(dir)) };
        let candidate = dir.join(name);
        let probe = cwd.map_or_else(|| candidate.clone(), |cwd| cwd.join(&candidate));
        let Ok(probe) = CString::new(probe.into_os_string().into_vec()) else { continue };
        // SAFETY: `probe` is a valid NUL-terminated path.
        if unsafe { libc::access(probe.as_ptr(), libc::X_OK) } == 0 {
            // A directory passes X_OK too, and execve refuses it (EACCES).
            if std::fs::metadata(OsStr::from_bytes(probe.as_bytes())).is_ok_and(|m| m.is_file()) {
                return Ok(candidate.into_os_string());
            }
            denied = true;
        } else if errno() == libc::EACCES {
            denied = true; // and on to the next entry, as execvp goes
        }
    }
    // As execvp: EACCES if something was found but could not be run.
    Err(io::Error::from_raw_os_error(if denied { libc::EACCES } else { libc::ENOENT }))
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Past the highest signal number anywhere rframe runs: Linux has 64
/// (SIGRTMAX), macOS and the BSDs fewer (`signal` refuses a number past
/// theirs with EINVAL, harmlessly).
const SIGNALS_END: libc::c_int = 65;

/// Puts every signal that can be caught or ignored back to its default
/// action, for a command. An ignored signal stays ignored across exec (a
/// handler does not): a server started with `&` from a script ignores
/// SIGINT and SIGQUIT, and Python ignores SIGPIPE and SIGXFSZ, and its
/// commands would too (Ctrl-C would do nothing, `yes | head -1` would never
/// end). Only `signal` calls, which are async-signal-safe.
///
/// # Safety
///
/// Only in a child between `fork` and `exec` (a `pre_exec` hook): in the
/// server itself it would undo its own signal handling.
unsafe fn reset_signals() {
    for n in 1..SIGNALS_END {
        if n != libc::SIGKILL && n != libc::SIGSTOP {
            // SAFETY: the caller's promise; a number that is no signal here fails, changing nothing.
            unsafe { libc::signal(n, libc::SIG_DFL) };
        }
    }
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn cstring(bytes: impl Into<Vec<u8>>) -> io::Result<CString> {
    // The standard library's words for the same error.
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "nul byte found in provided data"))
}

/// `argv`: the shell's, or the request's.
fn program(spec: &CommandSpec) -> io::Result<Vec<String>> {
    match &spec.program {
        Program::Shell(line) => Ok(vec!["/bin/sh".into(), "-c".into(), line.clone()]),
        Program::Argv(argv) if argv.is_empty() => Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command")),
        Program::Argv(argv) => Ok(argv.clone()),
    }
}

#[cfg(target_os = "linux")]
mod sys {
    use std::ffi::{c_char, CString, OsStr};
    use std::io;
    use std::mem::MaybeUninit;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::{OsStrExt, OsStringExt};

    use super::{cstring, cvt, environment, find_program, program, CommandSpec, Exit, Started};

    /// For the posix_spawn family, which returns the error number.
    fn check(r: libc::c_int) -> io::Result<()> {
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(r))
        }
    }

    /// A pipe, both ends close-on-exec: (read end, write end).
    fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
        // SAFETY: pipe2 succeeded: both are open descriptors, owned by nobody else.
        Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
    }

    fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
        // SAFETY: plain syscall on an open descriptor. A new pipe's end has no
        // other status flag to keep.
        cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) }).map(drop)
    }

    /// The child's end of a pipe, moved above 0..=2 if it is there (a server
    /// started with a standard descriptor closed): dup2 onto itself would
    /// leave it close-on-exec, and onto another it would be overwritten by
    /// an earlier dup2 of the file actions.
    fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
        if fd.as_raw_fd() > 2 {
            return Ok(fd);
        }
        // SAFETY: plain syscall on an open descriptor.
        let new = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) })?;
        // SAFETY: fcntl succeeded: `new` is an open descriptor, owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(new) })
    }

    /// posix_spawn's file actions, destroyed when dropped. They stay where
    /// they were initialised (POSIX does not say they may move).
    struct FileActions<'a>(&'a mut MaybeUninit<libc::posix_spawn_file_actions_t>);

    impl<'a> FileActions<'a> {
        fn new(slot: &'a mut MaybeUninit<libc::posix_spawn_file_actions_t>) -> io::Result<Self> {
            // SAFETY: `slot` is valid for writes; it is initialised on success,
            // and only then wrapped (and so destroyed).
            check(unsafe { libc::posix_spawn_file_actions_init(slot.as_mut_ptr()) })?;
            Ok(FileActions(slot))
        }

        fn ptr(&mut self) -> *mut libc::posix_spawn_file_actions_t {
            self.0.as_mut_ptr()
        }

        fn dup2(&mut self, fd: &OwnedFd, target: libc::c_int) -> io::Result<()> {
            // SAFETY: initialised file actions; `fd` stays open until posix_spawn returned.
            check(unsafe { libc::posix_spawn_file_actions_adddup2(self.ptr(), fd.as_raw_fd(), target) })
        }

        fn open_null(&mut self, target: libc::c_int) -> io::Result<()> {
            // SAFETY: initialised file actions; the path is a NUL-terminated
            // static string (glibc copies it anyway).
            check(unsafe {
                libc::posix_spawn_file_actions_addopen(self.ptr(), target, c"/dev/null".as_ptr(), libc::O_RDONLY, 0)
            })
        }

        fn chdir(&mut self, dir: &CString) -> io::Result<()> {
            // SAFETY: initialised file actions; `dir` is NUL-terminated and
            // outlives them (glibc copies it anyway).
            check(unsafe { libc::posix_spawn_file_actions_addchdir_np(self.ptr(), dir.as_ptr()) })
        }
    }

    impl Drop for FileActions<'_> {
        fn drop(&mut self) {
            // SAFETY: initialised (see `new`), and destroyed once.
            unsafe { libc::posix_spawn_file_actions_destroy(self.ptr()) };
        }
    }

    /// posix_spawn's attributes, destroyed when dropped.
    struct Attributes<'a>(&'a mut MaybeUninit<libc::posix_spawnattr_t>);

    impl<'a> Attributes<'a> {
        /// Its own session; an empty signal mask; every signal at its default
        /// action, as [`reset_signals`] says why (a full set: the C library
        /// skips SIGKILL, SIGSTOP and the signals it keeps for itself).
        fn new(slot: &'a mut MaybeUninit<libc::posix_spawnattr_t>) -> io::Result<Self> {
            // SAFETY: `slot` is valid for writes; it is initialised on success,
            // and only then wrapped (and so destroyed).
            check(unsafe { libc::posix_spawnattr_init(slot.as_mut_ptr()) })?;
            let attr = Attributes(slot);
            let mut empty = MaybeUninit::<libc::sigset_t>::uninit();
            let mut defaults = MaybeUninit::<libc::sigset_t>::uninit();
            // SAFETY: the sets are initialised by sigemptyset before any other
            // use; the attributes are initialised and copy the sets.
            unsafe {
                libc::sigemptyset(empty.as_mut_ptr());
                libc::sigfillset(defaults.as_mut_ptr());
                check(libc::posix_spawnattr_setsigmask(attr.0.as_mut_ptr(), empty.as_ptr()))?;
                check(libc::posix_spawnattr_setsigdefault(attr.0.as_mut_ptr(), defaults.as_ptr()))?;
                let flags = libc::POSIX_SPAWN_SETSID
                    | libc::POSIX_SPAWN_SETSIGMASK as libc::c_short
                    | libc::POSIX_SPAWN_SETSIGDEF as libc::c_short;
                check(libc::posix_spawnattr_setflags(attr.0.as_mut_ptr(), flags))?;
            }
            Ok(attr)
        }
    }

    impl Drop for Attributes<'_> {
        fn drop(&mut self) {
            // SAFETY: initialised (see `new`), and destroyed once.
            unsafe { libc::posix_spawnattr_destroy(self.0.as_mut_ptr()) };
        }
    }

    /// A NULL-terminated array of pointers into `strings`, which must outlive it.
    fn pointers(strings: &[CString]) -> Vec<*mut c_char> {
        strings.iter().map(|s| s.as_ptr().cast_mut()).chain(std::iter::once(std::ptr::null_mut())).collect()
    }

    pub(super) fn start(spec: &CommandSpec) -> io::Result<Started> {
        let argv = program(spec)?;
        let env = environment(spec);
        let file = find_program(
            OsStr::new(&argv[0]),
            env.get(OsStr::new("PATH")).map(|p| p.as_os_str()),
            spec.cwd.as_deref(),
        )?;
        let file = cstring(file.into_vec())?;
        let argv = argv.into_iter().map(cstring).collect::<io::Result<Vec<_>>>()?;
        let envp = env
            .into_iter()
            .map(|(k, v)| {
                let mut entry = k.into_vec();
                entry.push(b'=');
                entry.extend(v.into_vec());
                cstring(entry)
            })
            .collect::<io::Result<Vec<_>>>()?;
        let cwd = spec.cwd.as_ref().map(|c| cstring(c.as_os_str().as_bytes())).transpose()?;

        let stdin = spec.input.is_some().then(pipe).transpose()?;
        let (stdout, stdout_child) = pipe()?;
        let (stderr, stderr_child) = pipe()?;
        let (stdin_child, stdin) = match stdin {
            Some((r, w)) => (Some(above_stdio(r)?), Some(w)),
            None => (None, None),
        };
        let (stdout_child, stderr_child) = (above_stdio(stdout_child)?, above_stdio(stderr_child)?);
        // The parent's ends, which the command never gets (close-on-exec).
        for fd in stdin.iter().chain([&stdout, &stderr]) {
            set_nonblocking(fd)?;
        }

        let mut actions_slot = MaybeUninit::uninit();
        let mut actions = FileActions::new(&mut actions_slot)?;
        match &stdin_child {
            Some(r) => actions.dup2(r, 0)?,
            None => actions.open_null(0)?,
        }
        actions.dup2(&stdout_child, 1)?;
        actions.dup2(&stderr_child, 2)?;
        if let Some(cwd) = &cwd {
            actions.chdir(cwd)?;
        }
        let mut attr_slot = MaybeUninit::uninit();
        let attr = Attributes::new(&mut attr_slot)?;

        let envp_ptrs = pointers(&envp);
        let mut spawn = |file: &CString, argv: &[CString]| {
            let argv_ptrs = pointers(argv);
            let mut pid = 0;
            // SAFETY: initialised file actions and attributes; `file` and the
            // arrays are NUL-terminated and NULL-terminated, and the strings
            // they point into outlive the call.
            let r = unsafe {
                libc::posix_spawn(
                    &mut pid,
                    file.as_ptr(),
                    actions.ptr(),
                    attr.0.as_ptr(),
                    argv_ptrs.as_ptr(),
                    envp_ptrs.as_ptr(),
                )
            };
            check(r).map(|()| pid)
        };
        let pid = match spawn(&file, &argv) {
            // Not a binary nor a `#!` script: run by the shell, as execvp does.
            Err(e) if e.raw_os_error() == Some(libc::ENOEXEC) => {
                let mut sh_argv = vec![cstring("/bin/sh")?, file.clone()];
                sh_argv.extend_from_slice(&argv[1..]);
                spawn(&cstring("/bin/sh")?, &sh_argv)?
            }
            other => other?,
        };
        // The child's ends close here, in the parent, so that the pipes end
        // when the command's side is done.
        drop((stdin_child, stdout_child, stderr_child));
        Ok(Started { pid, stdin, stdout, stderr })
    }

    /// A pidfd for the process, registered with the runtime (Linux 5.3+);
    /// else a timer.
    pub(super) fn watch(pid: libc::pid_t) -> Exit {
        // SAFETY: plain syscall; the pid is our child's, not yet reaped.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Exit::Timer; // ENOSYS, or a sandbox that filters it
        }
        // SAFETY: pidfd_open succeeded: an open descriptor (close-on-exec),
        // owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
        // SAFETY: an OwnedFd is an open descriptor, and stays the same one
        // until it is dropped, with the AsyncFd.
        match unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) } {
            Ok(fd) => Exit::Pidfd(fd),
            Err(_) => Exit::Timer,
        }
    }
}

/// Elsewhere, until a port: the standard library, with `setsid` in a
/// `pre_exec` hook (and so `fork`), and the exit noticed on a timer. (Built
/// and tested on Linux too.)
#[cfg(not(target_os = "linux"))]
use std_hook as sys;

#[cfg(any(not(target_os = "linux"), test))]
mod std_hook {
    use std::io;
    use std::os::fd::OwnedFd;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    use super::{cvt, environment, program, reset_signals, CommandSpec, Exit, Started};

    fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: plain syscalls on an open descriptor.
        unsafe {
            let flags = cvt(libc::fcntl(fd.as_raw_fd(), libc::F_GETFL))?;
            cvt(libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK)).map(drop)
        }
    }

    pub(super) fn start(spec: &CommandSpec) -> io::Result<Started> {
        let argv = program(spec)?;
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).env_clear().envs(environment(spec));
        cmd.stdin(if spec.input.is_some() { Stdio::piped() } else { Stdio::null() });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        if let Some(cwd) = &spec.cwd {
            cmd.current_dir(cwd);
        }
        // SAFETY: setsid and signal are async-signal-safe, and the closure
        // touches no memory of the parent's; it runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                cvt(libc::setsid())?;
                reset_signals();
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        let pid = child.id() as libc::pid_t;
        let stdin = child.stdin.take().map(OwnedFd::from);
        let stdout = OwnedFd::from(child.stdout.take().expect("piped"));
        let stderr = OwnedFd::from(child.stderr.take().expect("piped"));
        // Dropping std's Child neither waits nor kills: the pid is ours to reap.
        drop(child);
        for fd in stdin.iter().chain([&stdout, &stderr]) {
            if let Err(e) = set_nonblocking(fd) {
                // SAFETY: plain syscalls on our child, not yet reaped.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
                return Err(e);
            }
        }
        Ok(Started { pid, stdin, stdout, stderr })
    }

    pub(super) fn watch(_pid: libc::pid_t) -> Exit {
        Exit::Timer
    }
}

/// Linux's: they read /proc (sessions, signal masks, whether a process was
/// reaped) and expect a pidfd.
#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;
    use std::time::Instant;

    use bytes::Bytes;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn spec(program: Program) -> CommandSpec {
        CommandSpec::for_tests(program)
    }

    fn argv(words: &[&str]) -> CommandSpec {
        spec(Program::Argv(words.iter().map(|w| w.to_string()).collect()))
    }

    fn sh(line: &str) -> CommandSpec {
        spec(Program::Shell(line.into()))
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
    }

    /// Runs a started command to its end: (wait status, stdout, stderr).
    async fn output(mut child: Child, input: Option<Bytes>) -> (i32, String, String) {
        let (mut out, mut err) = (String::new(), String::new());
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        assert_eq!(child.stdin.is_some(), input.is_some());
        let stdin = child.stdin.take();
        let feed = async move {
            if let (Some(mut stdin), Some(input)) = (stdin, input) {
                stdin.write_all(&input).await.unwrap();
            }
        };
        let (_, o, e) = tokio::join!(feed, stdout.read_to_string(&mut out), stderr.read_to_string(&mut err));
        o.unwrap();
        e.unwrap();
        let status = child.wait().await.unwrap();
        (status.into_raw(), out, err)
    }

    fn run(spec: CommandSpec) -> io::Result<(i32, String, String)> {
        block_on(async { Ok(output(spawn(&spec)?, spec.input.clone()).await) })
    }

    /// stdout of a command that exits 0.
    fn stdout(spec: CommandSpec) -> String {
        let (status, out, err) = run(spec).unwrap();
        assert_eq!(status, 0, "stderr: {err}");
        out
    }

    /// A directory of its own under the temporary directory, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!("rframe-spawn-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        /// Writes a file with the given mode.
        fn file(&self, name: &str, text: &str, mode: u32) -> PathBuf {
            let path = self.0.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path
        }

        fn path(&self) -> String {
            self.0.to_str().unwrap().into()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Whether the process is gone, reaped (a zombie keeps its /proc entry).
    fn reaped(pid: libc::pid_t) -> bool {
        !Path::new(&format!("/proc/{pid}")).exists()
    }

    /// Waits (5 s at most) for a dropped child to be reaped.
    async fn assert_reaped(pid: libc::pid_t) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !reaped(pid) {
            assert!(Instant::now() < deadline, "{pid} left behind");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[test]
    fn a_name_is_looked_up_on_path() {
        let found = find_program(OsStr::new("sh"), Some(OsStr::new("/no/such/dir::/bin")), None).unwrap();
        assert_eq!(found, "/bin/sh");
        assert_eq!(stdout(argv(&["echo", "found"])), "found\n");
        let names_kept = argv(&["sh", "-c", "echo $0"]);
        assert_eq!(stdout(names_kept), "sh\n", "argv[0] is the name, not the file found");
    }

    #[test]
    fn a_name_not_on_path_is_not_found() {
        let e = find_program(OsStr::new("rframe-no-such-program"), Some(OsStr::new("/bin:/usr/bin")), None);
        assert_eq!(e.unwrap_err().kind(), io::ErrorKind::NotFound);
        let e = run(argv(&["rframe-no-such-program"])).unwrap_err();
        assert_eq!(
            (e.kind(), e.to_string()),
            (io::ErrorKind::NotFound, "No such file or directory (os error 2)".into())
        );
        assert_eq!(run(argv(&[""])).unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(run(argv(&[])).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert_eq!(run(argv(&["/no/such/program"])).unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn the_requests_path_is_searched_and_relative_entries_from_the_cwd() {
        let dir = TempDir::new("path");
        dir.file("bin/hello", "#!/bin/sh\necho hello from $PWD\n", 0o755);
        // Found but not executable: skipped, as execvp does.
        dir.file("plain/hello", "#!/bin/sh\necho not me\n", 0o644);
        let mut s = argv(&["hello"]);
        s.env = vec![("PATH".into(), format!("{0}/plain:{0}/bin", dir.path()))];
        assert_eq!(stdout(s.clone()), format!("hello from {}\n", std::env::current_dir().unwrap().display()));
        // Relative entries, from the command's cwd.
        s.env = vec![("PATH".into(), "plain:bin".into())];
        s.cwd = Some(dir.0.clone());
        assert_eq!(stdout(s.clone()), format!("hello from {}\n", dir.path()));
        // Only a file that cannot be run: EACCES, as execvp gives.
        s.env = vec![("PATH".into(), "plain".into())];
        assert_eq!(run(s).unwrap_err().kind(), io::ErrorKind::PermissionDenied);
    }

    #[test]
    fn a_file_that_is_no_program_is_run_by_the_shell() {
        let dir = TempDir::new("noexec");
        let script = dir.file("script", "echo by the shell: $1\n", 0o755);
        assert_eq!(stdout(argv(&[script.to_str().unwrap(), "arg"])), "by the shell: arg\n");
    }

    #[test]
    fn cwd_and_a_relative_program_in_it() {
        let dir = TempDir::new("cwd");
        dir.file("run-me", "#!/bin/sh\npwd\n", 0o755);
        let mut s = argv(&["./run-me"]);
        s.cwd = Some(dir.0.clone());
        assert_eq!(stdout(s), format!("{}\n", dir.path()));
        let mut s = sh("pwd");
        s.cwd = Some("/no/such/dir".into());
        assert_eq!(run(s).unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn the_environment_is_the_servers_with_the_requests_on_top_less_the_scrubbed() {
        let server = [("HOME", "/server"), ("KEEP", "kept"), ("RFRAME_TOKEN", "secret")]
            .into_iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let mut s = sh("");
        s.env = vec![("HOME".into(), "/request".into()), ("RFRAME_TOKEN".into(), "again".into())];
        let env = environment_over(server, &s);
        let env: Vec<_> = env.iter().map(|(k, v)| (k.to_str().unwrap(), v.to_str().unwrap())).collect();
        assert_eq!(env, [("HOME", "/request"), ("KEEP", "kept")]);
        // And in a command: the server's PATH, the request's variables.
        let mut s = sh("echo \"$PATH|$GREETING|${RFRAME_TOKEN-unset}\"");
        s.env = vec![("GREETING".into(), "hi".into()), ("RFRAME_TOKEN".into(), "t".into())];
        let path = std::env::var("PATH").unwrap();
        assert_eq!(stdout(s), format!("{path}|hi|unset\n"));
        let mut s = sh("");
        s.env = vec![("A\0B".into(), "x".into())];
        assert_eq!(run(s).unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn stdin_gets_the_input_and_is_null_without() {
        let big = Bytes::from(vec![b'x'; 3 << 20]); // more than a pipe holds
        let mut s = argv(&["wc", "-c"]);
        s.input = Some(big);
        assert_eq!(stdout(s).trim(), (3 << 20).to_string());
        assert_eq!(stdout(sh("cat; readlink /proc/self/fd/0")), "/dev/null\n");
    }

    #[test]
    fn signals_are_as_a_fresh_process_has_them() {
        // This test binary ignores SIGPIPE (Rust's runtime does); ignore
        // SIGXFSZ and SIGUSR1 too (as a server started with `&` ignores
        // SIGINT: any signal, not only the two Python ignores) and block
        // SIGUSR2 in this thread: the command must have none of that.
        // SAFETY: plain libc calls on valid, initialised signal sets.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            libc::signal(libc::SIGUSR1, libc::SIG_IGN);
            let mut set = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR2);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
        let status = sh("grep -E '^Sig(Blk|Ign)' /proc/self/status");
        // posix_spawn's, and the standard library's with a hook (elsewhere).
        let hooked =
            block_on(async { output(spawn_with(&status, std_hook::start, std_hook::watch).unwrap(), None).await });
        for out in [stdout(status), hooked.1] {
            let mask = |name: &str| {
                let line = out.lines().find(|l| l.starts_with(name)).unwrap();
                u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
            };
            assert_eq!(mask("SigBlk:"), 0, "{out}");
            // But glibc's own two (32 and 33, below SIGRTMIN): its posix_spawn
            // leaves them ignored in the child, for its handlers not to run
            // there, and no program may use them anyway.
            let glibc = if cfg!(target_env = "gnu") { 3u64 << 31 } else { 0 };
            assert_eq!(mask("SigIgn:") & !glibc, 0, "{out}");
        }
        // So a pipeline ends at once, quietly.
        let started = Instant::now();
        assert_eq!(run(sh("yes | head -1")).unwrap(), (0, "y\n".into(), "".into()));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_command_leads_a_session_of_its_own() {
        block_on(async {
            let child = spawn(&argv(&["sleep", "100"])).unwrap();
            let pid = child.pid();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            // After the command's name: state, ppid, pgrp, session.
            let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
            assert_eq!((fields[2], fields[3]), (&*pid.to_string(), &*pid.to_string()));
            assert_eq!(fields[1], std::process::id().to_string());
        });
    }

    #[test]
    fn a_dropped_child_is_killed_and_reaped_by_the_runtime() {
        block_on(async {
            let child = spawn(&argv(&["sleep", "100"])).unwrap();
            let pid = child.pid();
            drop(child);
            assert_reaped(pid).await;
        });
    }

    #[test]
    fn a_child_dropped_without_a_runtime_is_reaped_at_once() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let child = runtime.block_on(async { spawn(&argv(&["sleep", "100"])).unwrap() });
        drop(runtime);
        let pid = child.pid();
        assert!(!reaped(pid));
        drop(child);
        assert!(reaped(pid));
        // And the wait it had (SAFETY: plain syscall): not a child any more.
        assert_eq!(unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) }, -1);
        assert_eq!(errno(), libc::ECHILD);
    }

    #[test]
    fn start_kill_and_wait_with_a_pidfd_or_a_timer() {
        for timer in [false, true] {
            block_on(async {
                let mut child = spawn(&argv(&["sleep", "100"])).unwrap();
                if timer {
                    child.process.exit = Exit::Timer;
                } else {
                    assert!(matches!(child.process.exit, Exit::Pidfd(_)), "no pidfd");
                }
                // A wait that is dropped loses nothing.
                let early = tokio::time::timeout(Duration::from_millis(50), child.wait()).await;
                assert!(early.is_err());
                child.start_kill().unwrap();
                let status = child.wait().await.unwrap();
                assert_eq!(status.signal(), Some(libc::SIGKILL));
                assert_eq!(child.wait().await.unwrap(), status);
                child.start_kill().unwrap(); // reaped: nothing to do
                let mut child = spawn(&sh("exit 7")).unwrap();
                if timer {
                    child.process.exit = Exit::Timer;
                }
                assert_eq!(child.wait().await.unwrap().code(), Some(7));
            });
        }
    }

    #[test]
    fn the_standard_library_stand_in_behaves_the_same() {
        block_on(async {
            let mut s = sh("cut -d' ' -f6 /proc/$$/stat; echo $$; echo \"$V\"; cat; pwd");
            s.env = vec![("V".into(), "v".into()), ("RFRAME_TOKEN".into(), "t".into())];
            s.input = Some(Bytes::from_static(b"fed\n"));
            s.cwd = Some("/tmp".into());
            let child = spawn_with(&s, std_hook::start, std_hook::watch).unwrap();
            assert!(matches!(child.process.exit, Exit::Timer));
            let (status, out, _) = output(child, s.input.clone()).await;
            let lines: Vec<&str> = out.lines().collect();
            assert_eq!((status, lines[0], &lines[2..]), (0, lines[1], &["v", "fed", "/tmp"][..]));
            let child = spawn_with(&argv(&["sleep", "100"]), std_hook::start, std_hook::watch).unwrap();
            let pid = child.pid();
            drop(child);
            assert_reaped(pid).await;
        });
    }
}
