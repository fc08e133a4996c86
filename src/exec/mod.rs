//! Running one command: its own session, both pipes drained at once,
//! output capped, a time limit, and nothing left running afterwards.
//! Starting it, waiting for it and killing its group: `unix.rs`; on Windows,
//! where the command server does not run yet, `windows.rs` says so.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as spawn;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as spawn;

/// A live command (`start`): its pipes handed to the server's driver.
#[cfg(unix)]
pub mod live;
#[cfg(windows)]
#[path = "live_windows.rs"]
pub mod live;

/// `None` where commands run; else why they cannot (a server without a
/// handler refuses to start with it).
pub const UNSUPPORTED: Option<&str> = spawn::UNSUPPORTED;

/// `None` where live commands may run on a pseudo-terminal; else why not.
pub const NO_PTY: Option<&str> = spawn::NO_PTY;

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// How long output may still trickle in after the command exited, before the
/// pipes are abandoned (a process that left the group can hold them forever).
const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// Variables a command never gets, whatever the server's environment or the
/// request says: the server may be embedded in a process that still holds its
/// token there, and a command is not trusted with the secret that admits it.
pub const SCRUBBED_ENV: &[&str] = &["RFRAME_TOKEN"];

/// Bytes of command output that may be held in memory at once, shared by all
/// the commands of a server: `max_output` bounds one command, this bounds them
/// all, however many run.
#[derive(Debug)]
pub struct OutputBudget {
    cap: usize,
    used: AtomicUsize,
}

impl OutputBudget {
    pub fn new(cap: usize) -> Arc<OutputBudget> {
        Arc::new(OutputBudget { cap, used: AtomicUsize::new(0) })
    }

    /// Bytes drawn and not yet given back.
    pub fn in_use(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Draws up to `want` bytes; returns how many it got.
    fn draw(&self, want: usize) -> usize {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let got = want.min(self.cap.saturating_sub(used));
            if got == 0 {
                return 0;
            }
            match self.used.compare_exchange_weak(used, used + got, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return got,
                Err(now) => used = now,
            }
        }
    }
}

/// Output bytes drawn from a budget (if any), given back when dropped: with
/// the output they stand for, which a reply's body owns until it is sent.
#[derive(Debug, Default)]
pub struct Held {
    budget: Option<Arc<OutputBudget>>,
    bytes: usize,
}

impl Held {
    fn new(budget: Option<Arc<OutputBudget>>) -> Held {
        Held { budget, bytes: 0 }
    }

    /// Draws up to `want` more bytes; returns how many it got (all of them
    /// without a budget).
    fn draw(&mut self, want: usize) -> usize {
        let got = self.budget.as_ref().map_or(want, |b| b.draw(want));
        self.bytes += got;
        got
    }

    /// One hold for the bytes of both.
    pub fn merge(mut self, mut other: Held) -> Held {
        if self.budget.is_none() {
            self.budget = other.budget.take();
        }
        self.bytes += std::mem::take(&mut other.bytes);
        self
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.used.fetch_sub(self.bytes, Ordering::Relaxed);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// Run by `/bin/sh -c`.
    Shell(String),
    /// Run directly, `argv[0]` looked up on `PATH`.
    Argv(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct CommandSpec {
    pub program: Program,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    /// stdin; `None` means `/dev/null`, so a command that reads stdin cannot hang.
    pub input: Option<Bytes>,
    pub timeout: Duration,
    /// Bytes kept of stdout and of stderr each; the rest is read and dropped.
    pub max_output: usize,
    /// What the kept bytes are drawn from; past it, the rest is read and
    /// dropped too. `None`: `max_output` alone bounds them.
    pub budget: Option<Arc<OutputBudget>>,
}

#[derive(Debug)]
pub struct CommandOutput {
    /// Exit status, or minus the signal number that killed it.
    pub returncode: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// The budget (not `max_output`) ran out: other commands hold it.
    pub budget_ran_out: bool,
    /// The budget stdout and stderr are drawn from, until this is dropped.
    pub held: Held,
    pub timed_out: bool,
    pub duration: Duration,
}

/// Kills the whole process group when dropped: on timeout, when the command
/// is done (leftover background jobs), and when the request is abandoned (the
/// client went away, the server is stopping).
struct GroupGuard(Option<spawn::Pid>);

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pgid) = self.0 {
            spawn::kill_group(pgid);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What one pipe's reader kept.
#[derive(Default)]
struct Kept {
    bytes: Vec<u8>,
    truncated: bool,
    budget_ran_out: bool,
    held: Held,
}

/// Reads `pipe` to its end, keeping at most `cap` bytes, drawn from `held`.
/// Once anything is dropped, all that follows is: what is kept is always a
/// beginning of the output, never one with a hole in it.
async fn read_capped(mut pipe: impl AsyncRead + Unpin, cap: usize, kept: &mut Kept) {
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(_) if kept.truncated => {}
            Ok(n) => {
                let want = n.min(cap.saturating_sub(kept.bytes.len()));
                let got = kept.held.draw(want);
                kept.bytes.extend_from_slice(&chunk[..got]);
                kept.budget_ran_out = got < want;
                kept.truncated = got < n;
            }
        }
    }
}

/// Runs a command to completion (or to its time limit). An error means it
/// could not be started.
pub async fn run(spec: CommandSpec) -> io::Result<CommandOutput> {
    let started = Instant::now();
    // In a session of its own, which is also a process group of its own (pgid =
    // pid), so one killpg reaches everything it started. Without a controlling
    // terminal, a command that opens /dev/tty (a password prompt) gets ENXIO at
    // once, instead of stopping on the server's terminal until its time limit;
    // and being a session leader, the command itself cannot move to another
    // group. Dropped (the request abandoned), the child is killed and reaped.
    let mut child = spawn::spawn(&spec)?;
    let mut group = GroupGuard(Some(child.pid()));

    let stdin = child.stdin.take();
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut out = Kept { held: Held::new(spec.budget.clone()), ..Kept::default() };
    let mut err = Kept { held: Held::new(spec.budget.clone()), ..Kept::default() };
    let input = spec.input.clone();
    let feed = async move {
        if let (Some(mut stdin), Some(input)) = (stdin, input) {
            // A command that exits without reading its input gives EPIPE: fine.
            let _ = stdin.write_all(&input).await;
        }
    };
    let deadline = tokio::time::Instant::from_std(started + spec.timeout);
    let mut timed_out = false;
    let mut status = None;
    {
        // Reading lives in this block: when it ends, the futures that borrow the
        // buffers are gone, whether or not the pipes reached their end.
        let reading = async {
            tokio::join!(
                feed,
                read_capped(stdout, spec.max_output, &mut out),
                read_capped(stderr, spec.max_output, &mut err),
            )
        };
        tokio::pin!(reading);
        let mut drained = false;
        let mut drain_deadline = None;
        while status.is_none() || !drained {
            tokio::select! {
                s = child.wait(), if status.is_none() => {
                    status = Some(s?);
                    // Whatever it left running in its group goes with it; and
                    // only now: once the group is empty its id may be reused.
                    group.kill();
                    group.0 = None;
                    drain_deadline = Some(tokio::time::Instant::now() + DRAIN_GRACE);
                }
                _ = &mut reading, if !drained => drained = true,
                _ = tokio::time::sleep_until(deadline), if status.is_none() && !timed_out => {
                    timed_out = true;
                    group.kill();
                    // And the command itself: leading its session, it cannot
                    // leave its group, but if it ever could, nothing else would
                    // end the wait for it. (Not reaped yet, so its pid is still
                    // its own.)
                    let _ = child.start_kill();
                }
                _ = tokio::time::sleep_until(drain_deadline.unwrap_or(deadline)), if drain_deadline.is_some() && !drained => {
                    break;
                }
            }
        }
    }
    let status = status.expect("the loop ends only after the child exited");
    let returncode = spawn::returncode(status);
    Ok(CommandOutput {
        returncode,
        stdout: std::mem::take(&mut out.bytes),
        stderr: std::mem::take(&mut err.bytes),
        stdout_truncated: out.truncated,
        stderr_truncated: err.truncated,
        budget_ran_out: out.budget_ran_out || err.budget_ran_out,
        held: std::mem::take(&mut out.held).merge(std::mem::take(&mut err.held)),
        timed_out,
        duration: started.elapsed(),
    })
}

#[cfg(test)]
impl CommandSpec {
    /// `program` with nothing else asked: a 10 s limit, 1 MiB of output.
    pub(crate) fn for_tests(program: Program) -> CommandSpec {
        CommandSpec {
            program,
            env: vec![],
            cwd: None,
            input: None,
            timeout: Duration::from_secs(10),
            max_output: 1 << 20,
            budget: None,
        }
    }
}

#[cfg(test)]
mod budget_tests {
    use super::*;

    #[test]
    fn a_budget_never_gives_more_than_it_has() {
        let budget = OutputBudget::new(100);
        let (mut a, mut b) = (Held::new(Some(budget.clone())), Held::new(Some(budget.clone())));
        assert_eq!((a.draw(60), b.draw(60), a.draw(1)), (60, 40, 0));
        let both = a.merge(b);
        assert_eq!(budget.in_use(), 100);
        drop(both);
        assert_eq!(budget.in_use(), 0);
        assert_eq!(Held::new(None).draw(usize::MAX), usize::MAX);
    }
}

/// Commands through `/bin/sh`: Unix only.
#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn spec(line: &str) -> CommandSpec {
        CommandSpec::for_tests(Program::Shell(line.into()))
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
    }

    #[test]
    fn captures_stdout_stderr_and_status_separately() {
        let out = block_on(run(spec("echo out; echo err >&2; exit 3"))).unwrap();
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
        assert_eq!(out.returncode, 3);
        assert!(!out.timed_out);
    }

    #[test]
    fn signal_death_is_a_negative_returncode() {
        let out = block_on(run(spec("kill -TERM $$"))).unwrap();
        assert_eq!(out.returncode, -libc::SIGTERM);
    }

    #[test]
    fn timeout_kills_the_whole_group() {
        let mut s = spec("sleep 300 & echo started; wait");
        s.timeout = Duration::from_millis(300);
        let out = block_on(run(s)).unwrap();
        assert!(out.timed_out);
        assert_eq!(out.returncode, -libc::SIGKILL);
        assert_eq!(out.stdout, b"started\n");
        assert!(out.duration < Duration::from_secs(5), "{:?}", out.duration);
    }

    #[test]
    #[cfg(target_os = "linux")] // reads /proc
    fn a_command_leads_a_session_of_its_own_without_a_terminal() {
        // Fields 5 and 6 of /proc/PID/stat: process group and session (the
        // shell's name, field 2, has no space).
        let out = block_on(run(spec("cut -d' ' -f5,6 /proc/$$/stat; echo $$; exec </dev/tty"))).unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let (ids, pid) = text.split_once('\n').unwrap();
        assert_eq!(ids, format!("{} {}", pid.trim(), pid.trim()));
        assert_ne!(out.returncode, 0, "/dev/tty opened");
    }

    #[test]
    fn background_job_holding_the_pipes_does_not_hang() {
        let out = block_on(run(spec("sleep 300 & echo done"))).unwrap();
        assert_eq!(out.stdout, b"done\n");
        assert_eq!(out.returncode, 0);
        assert!(out.duration < Duration::from_secs(5), "{:?}", out.duration);
    }

    #[test]
    fn output_past_the_cap_is_dropped_and_flagged() {
        let mut s = spec("head -c 100000 /dev/zero; head -c 10 /dev/zero >&2");
        s.max_output = 1000;
        let out = block_on(run(s)).unwrap();
        assert_eq!(out.stdout.len(), 1000);
        assert!(out.stdout_truncated);
        assert_eq!(out.stderr.len(), 10);
        assert!(!out.stderr_truncated);
    }

    #[test]
    fn kept_output_draws_from_the_budget_until_it_is_dropped() {
        let budget = OutputBudget::new(1500);
        let mut s = spec("head -c 1000 /dev/zero; head -c 1000 /dev/zero >&2");
        s.budget = Some(budget.clone());
        let first = block_on(run(s.clone())).unwrap();
        assert_eq!(first.stdout.len() + first.stderr.len(), 1500);
        assert!(first.stdout_truncated || first.stderr_truncated);
        assert!(first.budget_ran_out);
        assert_eq!(budget.in_use(), 1500);
        // Held: the next command keeps nothing, and says so.
        let second = block_on(run(s.clone())).unwrap();
        assert_eq!((second.stdout.len(), second.stderr.len()), (0, 0));
        assert!(second.stdout_truncated && second.stderr_truncated && second.budget_ran_out);
        drop((first, second));
        assert_eq!(budget.in_use(), 0);
        let mut s = spec("head -c 1000 /dev/zero");
        s.budget = Some(budget.clone());
        let third = block_on(run(s)).unwrap();
        assert_eq!((third.stdout.len(), third.stdout_truncated, third.budget_ran_out), (1000, false, false));
    }

    #[test]
    fn large_stdout_and_stderr_at_once_do_not_deadlock() {
        let mut s = spec("head -c 10485760 /dev/zero & head -c 10485760 /dev/zero >&2; wait");
        s.max_output = 32 << 20;
        let out = block_on(run(s)).unwrap();
        assert_eq!((out.stdout.len(), out.stderr.len()), (10 << 20, 10 << 20));
    }

    #[test]
    fn stdin_is_null_unless_input_is_given() {
        let out = block_on(run(spec("cat"))).unwrap();
        assert_eq!(out.stdout, b"");
        let mut s = spec("cat");
        s.input = Some(Bytes::from_static(b"fed"));
        assert_eq!(block_on(run(s)).unwrap().stdout, b"fed");
    }

    #[test]
    fn env_and_cwd_come_from_the_builder() {
        let mut s = spec("echo \"$GREETING\"; pwd");
        s.env = vec![("GREETING".into(), "hi; rm -rf /".into())];
        s.cwd = Some("/tmp".into());
        assert_eq!(block_on(run(s)).unwrap().stdout, b"hi; rm -rf /\n/tmp\n");
    }

    #[test]
    fn scrubbed_variables_never_reach_a_command() {
        let mut s = spec("printenv RFRAME_TOKEN");
        s.env = vec![("RFRAME_TOKEN".into(), "from-the-request".into())];
        let out = block_on(run(s)).unwrap();
        assert_eq!((out.stdout.as_slice(), out.returncode), (&b""[..], 1));
    }

    #[test]
    fn argv_runs_without_a_shell() {
        let mut s = spec("");
        s.program = Program::Argv(vec!["echo".into(), "$HOME;".into()]);
        assert_eq!(block_on(run(s)).unwrap().stdout, b"$HOME;\n");
    }

    #[test]
    fn a_missing_program_is_a_spawn_error() {
        let mut s = spec("");
        s.program = Program::Argv(vec!["/no/such/program".into()]);
        assert!(block_on(run(s)).is_err());
    }
}
