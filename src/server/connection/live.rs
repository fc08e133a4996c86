//! The driver of a live command (the session's `Action::Start`): output goes
//! out as the pipes give it, and the peer's `stdin`, `signal` and `resize`
//! frames go to the session, whose actions are carried out here.
//!
//! Backpressure both ways, and nothing held without bound: the pipes are
//! read only while no frame waits for the socket (a client that reads
//! slowly leaves the command blocked on its write), and the socket is read
//! only while less than a MiB of stdin waits for the command's pipe (so a
//! signal, or the peer leaving, is still seen while a command does not read
//! its stdin) and few replies wait to go out. Nothing polls: an idle command costs the server
//! a few parked futures. A peer that leaves, a stopping server, the time
//! limit, a write the peer takes none of for the idle timeout, or a MiB of
//! stdin the command takes none of for the idle timeout (the peer is not
//! read meanwhile, so its leaving could not be seen) end the command's whole
//! process group, as for `run`.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::Poll;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::time::timeout_at;

use super::{reply_head, Conn, End, Stream};
use crate::exec::live::{read_ready, returncode, widen, LiveProcess, OutputPipe, StdinPipe, DRAIN_GRACE, PIPE_FULL};
use crate::exec::CommandSpec;
use crate::protocol::live::Exit;
use crate::protocol::server_session::Action;
use crate::server::{Level, Reply};

/// Replies (refusals) waiting to go out past which the peer is not read.
const MAX_QUEUED: usize = 64 * 1024;
/// Stdin bytes the command has not taken yet past which the peer is not
/// read: below it, the peer's other frames (a signal, its leaving) are still
/// seen while a command that does not read its stdin holds some.
const MAX_STDIN_HELD: usize = 1 << 20;

/// What the live command's driver holds besides the process.
struct Pending {
    /// What goes to the peer, in order: each frame's head, then its body
    /// (not copied behind the head: both go in one vectored write); the
    /// first partly written perhaps. Never an empty piece.
    out: VecDeque<Bytes>,
    out_bytes: usize,
    /// Bytes for the command's stdin, in order, not all written yet.
    stdin: VecDeque<Bytes>,
    stdin_bytes: usize,
    /// Close stdin once `stdin` is written.
    close_stdin: bool,
}

impl<'s> Conn<'s> {
    /// Runs a live command to its end; the session's actions for its end
    /// (the `exit` frame) are returned, the connection's end is `Err`.
    pub(super) async fn run_live(
        &mut self,
        spec: CommandSpec,
        shown: String,
        terminal: Option<(u16, u16)>,
    ) -> Result<Vec<Action>, End> {
        let mut proc = match LiveProcess::start(&spec, terminal) {
            Ok(proc) => proc,
            Err(e) => return Ok(self.session.started(Err(e))),
        };
        let mut pending =
            Pending { out: VecDeque::new(), out_bytes: 0, stdin: VecDeque::new(), stdin_bytes: 0, close_stdin: false };
        let (mut stdin, mut stdout, mut stderr) = (proc.stdin.take(), proc.stdout.take(), proc.stderr.take());
        let actions = self.session.started(Ok(()));
        self.take(actions, &mut proc, &mut stdin, &mut pending)?;
        let idle = self.shared.config.idle_timeout;
        let deadline = proc.deadline;
        let mut status = None;
        let mut timed_out = false;
        let mut drain_deadline: Option<tokio::time::Instant> = None;
        // Since when a full stdin backlog has stopped the peer's reading with
        // the command taking none of it.
        let mut stdin_stalled: Option<tokio::time::Instant> = None;
        let (mut out_buf, mut err_buf) = (BytesMut::new(), BytesMut::new());
        let (mut out_widened, mut err_widened) = (false, false);
        let mut scratch = vec![0u8; 16 * 1024];
        // Output frames within the codec's max_body, which the peer holds them to.
        let chunk = self.session.output_chunk();
        let mut stop = self.shutdown.clone();
        loop {
            // Frames already in hand, while stdin has room for their bytes.
            while pending.reading() && !self.session.is_closed() {
                let actions = match self.decoder.decode(&mut self.buf) {
                    Ok(Some(frame)) => self.session.receive(frame),
                    Ok(None) => break,
                    Err(e) => self.session.receive_error(&e),
                };
                self.take(actions, &mut proc, &mut stdin, &mut pending)?;
            }
            let pipes_open = stdout.is_some() || stderr.is_some();
            if status.is_some() && pending.out.is_empty() && !pipes_open {
                break;
            }
            let reading_pipes = pending.out.is_empty();
            let reading_peer = pending.reading();
            // Once the command exited, what it left in its stdin is no wait of the peer's.
            let stdin_full = pending.stdin_bytes >= MAX_STDIN_HELD && stdin.is_some() && status.is_none();
            stdin_stalled = match (stdin_full, stdin_stalled) {
                (false, _) => None,
                (true, since) => Some(since.unwrap_or_else(tokio::time::Instant::now)),
            };
            let writing_stdin = !pending.stdin.is_empty() && stdin.is_some();
            let socket = socket_io(&mut self.stream, &pending.out, reading_peer.then_some(&mut scratch[..]));
            let happened = tokio::select! {
                _ = stop.wait_for(|stop| *stop) => return Err(End(None)),
                _ = tokio::time::sleep_until(deadline), if status.is_none() && !timed_out => Happened::Deadline,
                s = proc.wait(), if status.is_none() => Happened::Exited(s),
                _ = tokio::time::sleep_until(drain_deadline.unwrap_or(deadline)), if drain_deadline.is_some() && pipes_open => Happened::Drained,
                _ = tokio::time::sleep_until(stdin_stalled.unwrap_or(deadline) + idle), if stdin_stalled.is_some() => Happened::StdinStalled,
                io = timeout_at((Instant::now() + idle).into(), socket), if reading_peer || !pending.out.is_empty() => Happened::Socket(io),
                written = write_stdin(stdin.as_mut(), pending.stdin.front().map_or(&[][..], |b| &b[..])), if writing_stdin => Happened::Stdin(written),
                read = read_pipe(stdout.as_mut(), &mut out_buf, &mut out_widened, chunk), if reading_pipes && stdout.is_some() => Happened::Output(1, read),
                read = read_pipe(stderr.as_mut(), &mut err_buf, &mut err_widened, chunk), if reading_pipes && stderr.is_some() => Happened::Output(2, read),
            };
            match happened {
                Happened::Deadline => {
                    timed_out = true;
                    proc.kill();
                }
                Happened::Exited(s) => {
                    status = Some(s.map_err(|e| self.lost(&shown, &format!("waiting for it failed: {e}")))?);
                    drain_deadline = Some(tokio::time::Instant::now() + DRAIN_GRACE);
                }
                // A job left in the background holds the pipes: what it writes is not the command's.
                Happened::Drained => (stdout, stderr) = (None, None),
                Happened::StdinStalled => {
                    return Err(self.lost(&shown, "the command took none of its stdin for the idle timeout"));
                }
                Happened::Socket(Err(_)) if pending.out.is_empty() => {}
                Happened::Socket(Err(_)) => return Err(self.lost(&shown, "the peer read nothing for the idle timeout")),
                Happened::Socket(Ok(Err(e))) => return Err(self.lost(&shown, &format!("the connection failed: {e}"))),
                Happened::Socket(Ok(Ok(SocketIo::Read(0)))) => return Err(self.lost(&shown, "the peer left")),
                Happened::Socket(Ok(Ok(SocketIo::Read(n)))) => self.buf.extend_from_slice(&scratch[..n]),
                Happened::Socket(Ok(Ok(SocketIo::Wrote(0)))) => return Err(self.lost(&shown, "the peer takes no more")),
                Happened::Socket(Ok(Ok(SocketIo::Wrote(n)))) => {
                    pending.out_bytes -= n;
                    consume(&mut pending.out, n);
                    // TLS holds a frame's last bytes until a flush.
                    if pending.out.is_empty()
                        && !matches!(timeout_at((Instant::now() + idle).into(), self.stream.flush()).await, Ok(Ok(())))
                    {
                        return Err(self.lost(&shown, "a flush failed"));
                    }
                }
                Happened::Stdin(Ok(n)) if n > 0 => {
                    stdin_stalled = None;
                    pending.stdin_bytes -= n;
                    consume(&mut pending.stdin, n);
                    if pending.stdin.is_empty() && pending.close_stdin {
                        stdin = None;
                    }
                }
                // The command closed its stdin (EPIPE) or exited: input has nowhere to go.
                Happened::Stdin(_) => {
                    stdin = None;
                    (pending.stdin, pending.stdin_bytes) = (VecDeque::new(), 0);
                }
                Happened::Output(fd, Some(data)) => {
                    let actions = self.session.output(fd, data);
                    self.take(actions, &mut proc, &mut stdin, &mut pending)?;
                }
                Happened::Output(1, None) => stdout = None,
                Happened::Output(_, None) => stderr = None,
            }
        }
        let status = status.expect("the loop ends after the command exited");
        let exit = Exit { returncode: returncode(status), duration: proc.elapsed(), timed_out };
        drop(proc);
        Ok(self.session.exited(exit))
    }

    /// The peer is gone (or takes nothing): the command is killed (dropped).
    fn lost(&mut self, shown: &str, why: &str) -> End {
        self.log(Level::Info, format!("{why} while running {shown}: killed"));
        let actions = self.session.connection_lost();
        debug_assert!(actions.iter().all(|a| matches!(a, Action::Close(None) | Action::Log(..))));
        End(None)
    }

    /// Carries out the session's actions on the live command.
    fn take(
        &mut self,
        actions: Vec<Action>,
        proc: &mut LiveProcess,
        stdin: &mut Option<StdinPipe>,
        pending: &mut Pending,
    ) -> Result<(), End> {
        for action in actions {
            match action {
                Action::Reply(reply) => self.queue(reply, pending)?,
                Action::Log(level, line) => self.log(level, line),
                Action::WriteStdin(data) => {
                    if stdin.is_some() {
                        pending.stdin_bytes += data.len();
                        pending.stdin.push_back(data);
                    }
                }
                Action::CloseStdin => {
                    // Closing a terminal's master would hang it up.
                    debug_assert!(!proc.is_pty(), "a terminal's end of input is typed (the session's)");
                    if pending.stdin.is_empty() {
                        *stdin = None;
                    } else {
                        pending.close_stdin = true;
                    }
                }
                Action::Signal(name) => proc.signal(name),
                Action::Resize(columns, lines) => {
                    if let Err(e) = proc.resize(columns, lines) {
                        self.log(Level::Warning, format!("a resize to {columns}x{lines} failed: {e}"));
                    }
                }
                Action::Close(reply) => return Err(End(reply)),
                other => unreachable!("{other:?} while a live command runs"),
            }
        }
        Ok(())
    }

    fn queue(&mut self, reply: Reply, pending: &mut Pending) -> Result<(), End> {
        let head = reply_head(self.shared.config.codec, &reply).map_err(|e| {
            self.log(Level::Warning, format!("a frame could not be encoded: {e}"));
            End(None)
        })?;
        pending.out_bytes += head.len() + reply.body.len();
        pending.out.push_back(head.into());
        if !reply.body.is_empty() {
            pending.out.push_back(reply.body);
        }
        Ok(())
    }
}

impl Pending {
    /// Whether the peer's frames are read: little waits to go out, and
    /// little waits for the command's stdin.
    fn reading(&self) -> bool {
        self.out_bytes < MAX_QUEUED && self.stdin_bytes < MAX_STDIN_HELD
    }
}

/// What happened while a live command runs.
enum Happened {
    Deadline,
    Exited(std::io::Result<std::process::ExitStatus>),
    Drained,
    StdinStalled,
    Socket(Result<std::io::Result<SocketIo>, tokio::time::error::Elapsed>),
    Stdin(std::io::Result<usize>),
    Output(u8, Option<Bytes>),
}

enum SocketIo {
    Read(usize),
    Wrote(usize),
}

/// Drops the first `n` bytes of `queue`, which were written: the pieces
/// they finish, and the start of the next.
fn consume(queue: &mut VecDeque<Bytes>, mut n: usize) {
    while n > 0 {
        let front = queue.front_mut().expect("written from");
        let taken = n.min(front.len());
        front.advance(taken);
        n -= taken;
        if front.is_empty() {
            queue.pop_front();
        }
    }
}

/// Writes some of `out` (if any: its first two pieces, a frame's head and
/// body, in one vectored write) or reads some into `into` (if given),
/// whichever the socket is ready for first: one future for both sides of
/// the one stream.
fn socket_io<'a>(
    stream: &'a mut Box<dyn Stream>,
    out: &'a VecDeque<Bytes>,
    mut into: Option<&'a mut [u8]>,
) -> impl std::future::Future<Output = std::io::Result<SocketIo>> + 'a {
    std::future::poll_fn(move |cx| {
        if !out.is_empty() {
            let mut pieces = [IoSlice::new(&[]), IoSlice::new(&[])];
            let mut count = 0;
            for (slot, piece) in pieces.iter_mut().zip(out) {
                *slot = IoSlice::new(piece);
                count += 1;
            }
            if let Poll::Ready(r) = Pin::new(&mut **stream).poll_write_vectored(cx, &pieces[..count]) {
                return Poll::Ready(r.map(SocketIo::Wrote));
            }
        }
        if let Some(into) = into.as_deref_mut() {
            let mut buf = ReadBuf::new(into);
            if let Poll::Ready(r) = Pin::new(&mut **stream).poll_read(cx, &mut buf) {
                return Poll::Ready(r.map(|()| SocketIo::Read(buf.filled().len())));
            }
        }
        Poll::Pending
    })
}

/// Writes some of `data` to stdin. (A future is made for every branch of
/// a `select!`, disabled ones too: without stdin, it never finishes.)
async fn write_stdin(stdin: Option<&mut StdinPipe>, data: &[u8]) -> std::io::Result<usize> {
    match stdin {
        Some(stdin) => stdin.write(data).await,
        None => std::future::pending().await,
    }
}

/// The next bytes of a pipe (what it holds, up to a frame's worth of
/// `chunk` bytes, without waiting for more), or `None` at its end (or a
/// read error). A pipe found full is widened once.
async fn read_pipe(
    pipe: Option<&mut OutputPipe>,
    buf: &mut BytesMut,
    widened: &mut bool,
    chunk: usize,
) -> Option<Bytes> {
    let pipe = pipe?;
    buf.reserve(chunk);
    let mut limited = (&mut *pipe).take(chunk as u64);
    match limited.read_buf(buf).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            if n >= PIPE_FULL && !*widened {
                *widened = true;
                widen(pipe);
            }
            read_ready(pipe, buf, chunk);
            Some(buf.split().freeze())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consume_drops_written_bytes_across_pieces() {
        let mut queue: VecDeque<Bytes> = [&b"head"[..], b"body", b"next"].into_iter().map(Bytes::from_static).collect();
        consume(&mut queue, 6); // the head, and two bytes of the body
        assert_eq!(queue, [&b"dy"[..], b"next"]);
        consume(&mut queue, 2);
        assert_eq!(queue, [&b"next"[..]]);
        consume(&mut queue, 0);
        consume(&mut queue, 4);
        assert!(queue.is_empty());
    }
}
