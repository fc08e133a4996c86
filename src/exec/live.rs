//! A live command: started as `run` starts one (a session and process group
//! of its own, stdin, stdout and stderr piped), its pipes handed to the
//! caller, who streams them (`server::connection::live`). Dropped, the whole
//! group is killed and the command reaped, as with `run`.

use std::io;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use tokio::net::unix::pipe;

use super::{spawn, CommandSpec, GroupGuard};
use spawn::Master;

/// How long output may still come after the command exited before its pipes
/// are abandoned (a job it left in the background may hold them forever).
pub const DRAIN_GRACE: Duration = super::DRAIN_GRACE;

/// The number of a signal the protocol names (`protocol::live::SIGNALS`).
pub fn signal_number(name: &str) -> Option<libc::c_int> {
    Some(match name {
        "INT" => libc::SIGINT,
        "TERM" => libc::SIGTERM,
        "KILL" => libc::SIGKILL,
        "HUP" => libc::SIGHUP,
        "QUIT" => libc::SIGQUIT,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "WINCH" => libc::SIGWINCH,
        _ => return None,
    })
}

pub use super::spawn::returncode;

/// The parent's ends of a live command's pipes.
pub type StdinPipe = pipe::Sender;
pub type OutputPipe = pipe::Receiver;

/// Reads what `pipe` holds already, without waiting for more, into `buf`
/// until it holds `limit` bytes: after a read, the rest a fast writer wrote
/// meanwhile goes in the same frame. An error or the end is left for the
/// next read to see.
pub fn read_ready(pipe: &OutputPipe, buf: &mut bytes::BytesMut, limit: usize) {
    use bytes::BufMut;
    while buf.len() < limit {
        let room = limit - buf.len();
        buf.reserve(room);
        match pipe.try_read_buf(&mut (&mut *buf).limit(room)) {
            Ok(n) if n > 0 => {}
            _ => return,
        }
    }
}

/// A read of this many bytes found the pipe full (a pipe's capacity on Linux,
/// unless widened).
pub const PIPE_FULL: usize = 64 * 1024;

/// What a pipe that was found full grows to (Linux): a command that writes
/// faster than the peer reads then hands over more per wake-up, and its output
/// goes in fewer, larger frames (about half the client's CPU per byte). Only
/// such pipes grow: the kernel counts pipe pages per user
/// (`/proc/sys/fs/pipe-user-pages-soft`), and most commands write little.
pub const PIPE_WIDE: usize = 256 * 1024;

/// Grows `pipe` to [`PIPE_WIDE`]; best effort (refused past the user's
/// pipe pages, or not a pipe: a terminal's master side), nothing elsewhere.
pub fn widen(pipe: &OutputPipe) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: plain syscall on an open descriptor; an error changes nothing.
        unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_WIDE as libc::c_int) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = pipe;
}

pub struct LiveProcess {
    child: spawn::Child,
    /// The group, until the command is reaped (then its id may be reused).
    group: GroupGuard,
    pub stdin: Option<StdinPipe>,
    pub stdout: Option<OutputPipe>,
    pub stderr: Option<OutputPipe>,
    started: Instant,
    /// When the time limit kills it.
    pub deadline: tokio::time::Instant,
    /// Its terminal, when it runs on one (`stdout` then carries what the
    /// terminal shows, stdout and stderr merged, and there is no `stderr`).
    master: Option<Master>,
}

impl LiveProcess {
    /// Starts `spec`'s command (`spec.input` is ignored: stdin is a pipe),
    /// or with `terminal` (columns, lines) on a new pseudo-terminal of that
    /// size.
    pub fn start(spec: &CommandSpec, terminal: Option<(u16, u16)>) -> io::Result<LiveProcess> {
        let started = Instant::now();
        let (mut child, master) = match terminal {
            Some((columns, lines)) => {
                let (child, master) = spawn::spawn_pty(spec, columns, lines)?;
                (child, Some(master))
            }
            None => (spawn::spawn(&CommandSpec { input: Some(bytes::Bytes::new()), ..spec.clone() })?, None),
        };
        let group = GroupGuard(Some(child.pid()));
        let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let deadline = tokio::time::Instant::from_std(started + spec.timeout);
        Ok(LiveProcess { child, group, stdin, stdout, stderr, started, deadline, master })
    }

    /// Waits for the command to exit, reaps it, and kills what it left
    /// running in its group (on a terminal, its session). Cancel-safe.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        let status = self.child.wait().await?;
        self.kill_rest();
        self.group.0 = None;
        Ok(status)
    }

    /// Whether it runs on a terminal.
    pub fn is_pty(&self) -> bool {
        self.master.is_some()
    }

    /// Sets its terminal's window size (nothing without one).
    pub fn resize(&self, columns: u16, lines: u16) -> io::Result<()> {
        self.master.as_ref().map_or(Ok(()), |m| m.resize(columns, lines))
    }

    /// Kills its group, and on a terminal the rest of its session.
    fn kill_rest(&mut self) {
        match (&self.master, self.group.0) {
            (Some(master), Some(sid)) => spawn::kill_session(sid, master),
            _ => self.group.kill(),
        }
    }

    /// Sends the signal `name` (one of `protocol::live::SIGNALS`) to the
    /// command's process group; nothing once the command was reaped.
    pub fn signal(&self, name: &str) {
        if let (Some(pgid), Some(number)) = (self.group.0, signal_number(name)) {
            // SAFETY: plain syscall. The group is the command's: its leader
            // has not been reaped, so the id is not reused.
            unsafe { libc::killpg(pgid, number) };
        }
    }

    /// Kills the group and the command itself (the time limit).
    pub fn kill(&mut self) {
        self.kill_rest();
        let _ = self.child.start_kill();
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for LiveProcess {
    /// The whole session of a terminal's command (its group otherwise, which
    /// the group's guard kills).
    fn drop(&mut self) {
        if self.master.is_some() {
            self.kill_rest();
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::exec::Program;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
    }

    #[test]
    fn stdin_is_a_pipe_and_stdout_streams() {
        block_on(async {
            let mut p = LiveProcess::start(&CommandSpec::for_tests(Program::Shell("head -n 1".into())), None).unwrap();
            let mut stdin = p.stdin.take().unwrap();
            stdin.write_all(b"first\nsecond\n").await.unwrap();
            let mut out = String::new();
            p.stdout.take().unwrap().read_to_string(&mut out).await.unwrap();
            assert_eq!(out, "first\n");
            assert_eq!(returncode(p.wait().await.unwrap()), 0);
        });
    }

    #[test]
    fn a_signal_reaches_the_group() {
        block_on(async {
            // An argv, not a shell string: /bin/sh (dash) catches SIGINT until it
            // execs its last command, and one that comes in between is lost.
            let argv = Program::Argv(vec!["sleep".into(), "100".into()]);
            let mut p = LiveProcess::start(&CommandSpec::for_tests(argv), None).unwrap();
            p.signal("INT");
            assert_eq!(returncode(p.wait().await.unwrap()), -libc::SIGINT);
            p.signal("KILL"); // reaped: nothing happens
        });
    }

    /// What a terminal shows until the command's end (the master reads EIO then).
    async fn shown(p: &mut LiveProcess) -> String {
        let mut out = Vec::new();
        let _ = p.stdout.take().unwrap().read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn a_terminal_is_the_commands_controlling_one_with_its_size() {
        block_on(async {
            let line = "tty; test -t 0 && test -t 1 && test -t 2 && echo all three; stty size; echo to stderr >&2; \
                        ps -o sid= -p $$ | tr -d ' '; echo $$";
            let mut p =
                LiveProcess::start(&CommandSpec::for_tests(Program::Shell(line.into())), Some((100, 30))).unwrap();
            assert!(p.is_pty() && p.stderr.is_none());
            let out = shown(&mut p).await;
            let lines: Vec<&str> = out.lines().collect();
            assert!(lines[0].starts_with("/dev/pts/"), "{out:?}");
            assert_eq!(&lines[1..4], ["all three", "30 100", "to stderr"], "{out:?}");
            assert_eq!(lines[4], lines[5], "the command leads its session: {out:?}");
            assert_eq!(returncode(p.wait().await.unwrap()), 0);
        });
    }

    #[test]
    fn a_resize_and_a_ctrl_c_reach_the_command() {
        block_on(async {
            let line = "trap 'stty size; exit 7' WINCH; echo ready; while :; do sleep 0.05; done";
            let mut p =
                LiveProcess::start(&CommandSpec::for_tests(Program::Shell(line.into())), Some((80, 24))).unwrap();
            let mut stdout = p.stdout.take().unwrap();
            let mut buf = vec![0; 256];
            let n = stdout.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"ready\r\n");
            p.resize(120, 40).unwrap();
            let mut out = Vec::new();
            let _ = stdout.read_to_end(&mut out).await;
            assert_eq!(String::from_utf8_lossy(&out), "40 120\r\n");
            assert_eq!(returncode(p.wait().await.unwrap()), 7);
            // Ctrl-C typed at the terminal: SIGINT to its foreground group.
            let mut p = LiveProcess::start(
                &CommandSpec::for_tests(Program::Argv(vec!["sleep".into(), "100".into()])),
                Some((80, 24)),
            )
            .unwrap();
            p.stdin.as_mut().unwrap().write_all(b"\x03").await.unwrap();
            assert_eq!(returncode(p.wait().await.unwrap()), -libc::SIGINT);
        });
    }

    #[test]
    fn the_whole_session_of_a_terminal_is_killed() {
        block_on(async {
            // A job in a group of its own, as an interactive shell makes one.
            let line = "(set -m; sleep 100 & echo $!; wait)";
            let mut p =
                LiveProcess::start(&CommandSpec::for_tests(Program::Shell(line.into())), Some((80, 24))).unwrap();
            let mut stdout = p.stdout.take().unwrap();
            let mut buf = vec![0; 64];
            let n = stdout.read(&mut buf).await.unwrap();
            let pid: libc::pid_t = String::from_utf8_lossy(&buf[..n]).trim().parse().unwrap();
            p.kill();
            let _ = p.wait().await;
            let deadline = Instant::now() + Duration::from_secs(5);
            // SAFETY: plain syscall, signal 0: does the process exist?
            while unsafe { libc::kill(pid, 0) } == 0 {
                assert!(Instant::now() < deadline, "the job {pid} outlived its session");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    }

    #[test]
    fn read_ready_takes_what_the_pipe_holds_up_to_the_limit() {
        block_on(async {
            let mut p =
                LiveProcess::start(&CommandSpec::for_tests(Program::Shell("printf abcdef".into())), None).unwrap();
            assert_eq!(returncode(p.wait().await.unwrap()), 0);
            let mut stdout = p.stdout.take().unwrap();
            let mut buf = bytes::BytesMut::new();
            // A read first, as the driver makes: it learns the pipe is readable.
            (&mut stdout).take(1).read_buf(&mut buf).await.unwrap();
            read_ready(&stdout, &mut buf, 4);
            assert_eq!(&buf[..], b"abcd");
            read_ready(&stdout, &mut buf, 100);
            assert_eq!(&buf[..], b"abcdef", "to the end, without waiting");
        });
    }

    #[test]
    fn widen_grows_a_pipe() {
        block_on(async {
            let mut p = LiveProcess::start(&CommandSpec::for_tests(Program::Shell("true".into())), None).unwrap();
            let stdout = p.stdout.take().unwrap();
            #[cfg(target_os = "linux")]
            {
                use std::os::fd::AsRawFd;
                // SAFETY: plain syscall on an open descriptor.
                let size = || unsafe { libc::fcntl(stdout.as_raw_fd(), libc::F_GETPIPE_SZ) } as usize;
                assert_eq!(size(), PIPE_FULL);
                widen(&stdout);
                assert_eq!(size(), PIPE_WIDE);
            }
            widen(&stdout);
            assert_eq!(returncode(p.wait().await.unwrap()), 0);
        });
    }

    #[test]
    fn every_protocol_signal_has_a_number() {
        for name in crate::protocol::live::SIGNALS {
            assert!(signal_number(name).is_some(), "{name}");
        }
    }
}
