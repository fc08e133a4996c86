//! One connection: the driver of its [`ServerSession`]. It reads bytes and
//! decodes frames, feeds them to the session, and carries out what the
//! session asks (sends replies, runs commands, does the file work on the
//! blocking pool); it owns the clock (the login deadline, the header and
//! idle deadlines, the raw line's pauses, lingering, the guess throttle's
//! turn) and the shutdown. What the peer is told, and when, is the session's.

mod live;
mod transfer;

use std::collections::VecDeque;
use std::fs::File;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{watch, SemaphorePermit};
use tokio::task::JoinHandle;
use tokio::time::timeout_at;

use super::listener::Stream;
use super::startups::{Source, StartupGuard};
use super::{tls_accept, Level, Reply, Shared};
use crate::codec::{Codec, Decoder, Frame, FrameError, MAX_PREFIX_VALUE, PREFIX_LEN};
use crate::exec::{self, CommandSpec};
use crate::files::Upload;
use crate::protocol::server_session::{Action, Channel, ProofCheck, ServerSession, Timeout, MAX_RAW_COMMAND};
use crate::protocol::{self, ErrorCode};

pub use crate::protocol::server_session::{command_spec, looks_raw, opening_codec, raw_request, PRE_AUTH_CODEC};
#[cfg(test)]
use {
    super::ServerConfig,
    crate::protocol::{Cmd, RequestHeader},
    bytes::Bytes,
};

/// A raw command line arrives in one burst: once no more bytes come for this
/// long, the bytes in hand are the whole line. One or two printable bytes may
/// also be the start of a frame, so those wait longer for what follows.
const RAW_QUIET: Duration = Duration::from_millis(20);
const RAW_QUIET_SHORT: Duration = Duration::from_millis(100);
/// Bytes of pipelined requests read ahead while a command runs (to notice a
/// client that leaves); past this, reading waits.
const READ_AHEAD: usize = 1 << 20;
/// How long, and how many bytes at most, a refused peer's input is read and
/// dropped before the connection closes (see [`linger`]).
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_MAX: usize = 4 << 20;
/// The most buffer space reserved ahead for a body being received.
const BODY_RESERVE: usize = (1 << 20) + 4096;

/// What the peer's side of the connection brought next.
enum Input {
    Frame(Frame),
    Raw(Vec<u8>),
    Broken(FrameError),
    TimedOut(Timeout),
    /// The peer left, a read failed, or the server stops.
    Lost,
}

/// The connection ends: quietly, or after this error frame.
struct End(Option<Reply>);

type Written = Result<(Upload, crate::codec::Hasher), crate::files::FileError>;
type ReadChunk = Result<(File, crate::codec::Hasher, Vec<u8>), crate::files::FileError>;

struct Conn<'s> {
    stream: Box<dyn Stream>,
    peer: String,
    shared: &'s Shared,
    shutdown: watch::Receiver<bool>,
    buf: BytesMut,
    decoder: Decoder,
    session: ServerSession<'s>,
    /// Until authenticated, every read ends by this time.
    auth_deadline: Option<Instant>,
    /// The peer shut down its sending side before its raw command line ran
    /// (`printf 'ls' | nc -N host port`): that end of stream marked the end of
    /// the line, so it does not count as leaving while the command runs.
    sent_all: bool,
    /// Counts this connection as unauthenticated (`super::startups`) until
    /// it proves the token.
    startup: Option<StartupGuard>,
    source: Source,
    /// The login turn a wrong proof keeps through its pause.
    turn: Option<SemaphorePermit<'s>>,
    /// The upload being written (away on the blocking pool while `writing`).
    upload: Option<Upload>,
    /// Added to the idle timeout for the next frame: a resumable upload's
    /// client hashes the bytes offered to it before it answers.
    hashing: Duration,
    writing: Option<JoinHandle<Written>>,
    /// The file being sent (away on the blocking pool while `reading`).
    download: Option<File>,
    reading: Option<JoinHandle<ReadChunk>>,
}

/// Serves one connection. `peer_local`: the peer is on this machine (a
/// loopback address, the Unix socket), the only place a TLS server takes
/// plaintext from.
pub async fn serve(
    stream: Box<dyn Stream>,
    peer: String,
    peer_local: bool,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    startup: Option<StartupGuard>,
    source: Source,
) {
    let needs_auth = shared.config.token.is_some();
    let codec = opening_codec(&shared.config);
    let accepted = Instant::now();
    // Like OpenSSH's LoginGraceTime: one deadline, from accept, to authenticate
    // (the TLS handshake included).
    let auth_deadline = needs_auth.then(|| accepted + shared.config.header_timeout);
    let mut buf = BytesMut::with_capacity(4096);
    let (mut stream, mut channel) = (stream, Channel::Plain);
    if let Some(tls) = &shared.tls {
        let config = &shared.config;
        // A local client may connect and wait before its first request, as on
        // a plaintext server; a remote one must start its handshake at once.
        let deadlines = tls_accept::Deadlines {
            first_byte: accepted + if peer_local { config.idle_timeout } else { config.header_timeout },
            handshake: config.header_timeout,
            login: auth_deadline,
        };
        match tls_accept::open(stream, &mut buf, &codec, deadlines, tls, &mut shutdown).await {
            tls_accept::Opening::Tls(s) => {
                stream = s;
                channel = Channel::Tls(tls.cert_hash);
            }
            tls_accept::Opening::Plain(s) => {
                stream = s;
                channel = Channel::PlainOnTls { local: peer_local };
            }
            tls_accept::Opening::Closed(why) => {
                shared.observer.log(Level::Debug, format!("{peer}: {why}"));
                return;
            }
        }
    }
    let shared = &*shared;
    let session = ServerSession::new(&shared.config, shared.handler.is_some(), channel);
    let mut conn = Conn {
        stream,
        peer,
        shared,
        shutdown,
        buf,
        decoder: Decoder::new(session.codec()),
        session,
        auth_deadline,
        sent_all: false,
        startup,
        source,
        turn: None,
        upload: None,
        hashing: Duration::ZERO,
        writing: None,
        download: None,
        reading: None,
    };
    let tls = matches!(channel, Channel::Tls(_));
    conn.log(Level::Debug, if tls { "connected (TLS)".into() } else { "connected".into() });
    let End(told) = conn.run().await;
    let told = match told {
        Some(reply) => {
            let _ = conn.send(reply).await;
            true
        }
        None => false,
    };
    // Bounded: on TLS this also flushes records and a close_notify, which a
    // peer that reads nothing would hold up forever.
    let _ = tokio::time::timeout(LINGER_TIME, conn.stream.shutdown()).await;
    if told {
        linger(&mut conn.stream).await;
    }
    conn.log(Level::Debug, "disconnected".into());
}

/// After an error frame and the shutdown of our side, reads and drops what
/// the peer still sends, for a moment (like nginx's lingering close): closing
/// with bytes unread resets the connection, and a reset can destroy the error
/// frame before the peer reads it.
pub async fn linger(stream: &mut Box<dyn Stream>) {
    let until = Instant::now() + LINGER_TIME;
    let mut dropped = 0;
    let mut scratch = vec![0u8; 16 * 1024];
    while dropped < LINGER_MAX {
        match timeout_at(until.into(), stream.read(&mut scratch)).await {
            Ok(Ok(n)) if n > 0 => dropped += n,
            _ => break,
        }
    }
}

/// Tells a connection over `max_connections` so, briefly, and shuts down our
/// side. True if an answer went out (to be drained for, see [`linger`]).
/// A length-only codec has no way to say it: the connection is just closed.
pub async fn refuse_busy(stream: &mut Box<dyn Stream>, codec: Codec) -> bool {
    let mut answered = false;
    if codec.json_header {
        let reply = Reply::error(ErrorCode::Busy, "server busy: max_connections reached, try again later");
        if let Ok(bytes) = codec.encode(reply.header.as_deref(), &reply.body) {
            answered =
                matches!(tokio::time::timeout(Duration::from_secs(1), stream.write_all(&bytes)).await, Ok(Ok(())));
        }
    }
    let _ = stream.shutdown().await;
    answered
}

impl<'s> Conn<'s> {
    fn log(&self, level: Level, message: String) {
        self.shared.observer.log(level, format!("{}: {message}", self.peer));
    }

    async fn run(&mut self) -> End {
        let mut actions = self.session.start();
        loop {
            if let Err(end) = self.perform(actions).await {
                return end;
            }
            actions = self.next_actions().await;
        }
    }

    /// What the session says to the next thing that happens: a chunk of a
    /// download read, or the peer's next request (or frame of an upload).
    async fn next_actions(&mut self) -> Vec<Action> {
        if let Some(reading) = self.reading.take() {
            // Nothing is read from the peer during a download; a stopping
            // server cuts it between chunks.
            let read = tokio::select! {
                _ = self.shutdown.wait_for(|stop| *stop) => return self.session.connection_lost(),
                read = reading => read.expect("a file task panicked"),
            };
            let read = read.map(|(file, hasher, buf)| {
                self.download = Some(file);
                (hasher, buf)
            });
            return self.session.chunk_read(read);
        }
        let input = self.next_request().await;
        // Whatever came, the chunk under way is finished first.
        if let Some(writing) = self.writing.take() {
            let written = writing.await.expect("a file task panicked").map(|(upload, hasher)| {
                self.upload = Some(upload);
                hasher
            });
            self.session.chunk_written(written);
        }
        match input {
            Input::Frame(frame) => self.session.receive(frame),
            Input::Raw(line) => self.session.receive_raw(line),
            Input::Broken(e) => self.session.receive_error(&e),
            Input::TimedOut(timeout) => self.session.timed_out(timeout),
            Input::Lost => self.session.connection_lost(),
        }
    }

    /// Carries out the session's actions in order, with those that each
    /// brings about ahead of the rest; `Err` once the connection is to close.
    async fn perform(&mut self, actions: Vec<Action>) -> Result<(), End> {
        let mut queue = VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            let next = self.execute(action).await?;
            for action in next.into_iter().rev() {
                queue.push_front(action);
            }
        }
        Ok(())
    }

    async fn execute(&mut self, action: Action) -> Result<Vec<Action>, End> {
        Ok(match action {
            Action::Reply(reply) => match self.send(reply).await {
                Ok(()) => vec![],
                Err(e) => self.session.send_failed(&e),
            },
            Action::Log(level, line) => {
                self.log(level, line);
                vec![]
            }
            Action::Run { spec, shown } => {
                let output = self.run_command(spec, &shown).await?;
                self.session.command_done(&shown, output)
            }
            Action::CallHandler(frame) => {
                let handler = self.shared.handler.clone().expect("the session calls a handler only if there is one");
                let result = handler.call(frame).await;
                self.session.handler_done(result)
            }
            Action::CheckProof(check) => {
                let right = self.check_proof(&check).await?;
                self.session.proof_checked(check, right)
            }
            Action::Pause(pause) => {
                tokio::time::sleep(pause).await;
                self.turn = None;
                vec![]
            }
            Action::LoggedIn { codec } => {
                self.decoder = Decoder::new(codec);
                self.startup = None;
                vec![]
            }
            Action::CreateUpload { name, overwrite, mode } => self.create_upload(name, overwrite, mode).await,
            Action::StoreFile { name, overwrite, mode, data, durable } => {
                self.store_file(name, overwrite, mode, data, durable).await
            }
            Action::MakeDir { name, mode } => self.make_dir(name, mode).await,
            Action::MakeLink { name, target, overwrite } => self.make_link(name, target, overwrite).await,
            Action::Sync => self.sync_root().await,
            Action::CreateKept { name, overwrite, mode, checksum } => {
                self.create_kept(name, overwrite, mode, checksum).await
            }
            Action::WriteChunk { chunk, hasher, restart } => {
                self.write_chunk(chunk, hasher, restart);
                vec![]
            }
            Action::CommitUpload { durable, restart } => self.commit_upload(durable, restart).await,
            Action::DiscardUpload => {
                if let Some(upload) = self.upload.take() {
                    upload.discard();
                }
                vec![]
            }
            Action::KeepUpload => {
                self.upload = None;
                vec![]
            }
            Action::OpenFile { name } => self.open_file(name).await,
            Action::HashPrefix { len, hasher } => self.hash_prefix(len, hasher).await,
            Action::Rewind => {
                self.rewind()?;
                vec![]
            }
            Action::ReadChunk { want, hasher } => {
                self.read_chunk(want, hasher);
                vec![]
            }
            Action::ListDir { name, recursive, checksum, after } => {
                self.list_dir(name, recursive, checksum, after).await
            }
            // Boxed: every connection's future would otherwise carry the live loop's state.
            Action::Start { spec, shown, terminal } => Box::pin(self.run_live(spec, shown, terminal)).await?,
            Action::WriteStdin(_) | Action::CloseStdin | Action::Signal(_) | Action::Resize(..) => {
                unreachable!("actions on a live command come while it runs (see live.rs)")
            }
            Action::Close(reply) => {
                // An upload not stored is removed before the peer is told.
                (self.upload, self.download, self.reading, self.turn) = (None, None, None, None);
                return Err(End(reply));
            }
        })
    }

    /// Reads the next request, or the next frame of an upload.
    async fn next_request(&mut self) -> Input {
        let idle = self.shared.config.idle_timeout + std::mem::take(&mut self.hashing);
        // Between requests: wait for a first byte, up to the idle timeout.
        if self.buf.is_empty() {
            match self.read_some(Instant::now() + idle).await {
                Ok(true) => {}
                Ok(false) => return Input::Lost,
                Err(input) => return input,
            }
        }
        let header_deadline = Instant::now() + self.shared.config.header_timeout;
        loop {
            if self.decoder.consumed() == 0 && self.session.raw_line_start(&self.buf) {
                match self.raw_command(header_deadline).await {
                    Ok(Some(line)) => return Input::Raw(line),
                    Ok(None) => {}
                    Err(input) => return input,
                }
            }
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(frame)) => return Input::Frame(frame),
                Ok(None) => {}
                Err(e) => return Input::Broken(e),
            }
            // A stalled body gets the idle timeout; a header, one absolute deadline.
            let deadline = if self.decoder.in_body() { Instant::now() + idle } else { header_deadline };
            if self.decoder.in_body() {
                // Room for the rest of the body, up to a cap: large bodies (a
                // file's chunks) are read in few system calls without copies as
                // the buffer grows, and an announced body never sent costs at
                // most the cap, in untouched pages.
                self.buf.reserve(self.decoder.needed(&self.buf).min(BODY_RESERVE));
            }
            match self.read_some(deadline).await {
                Ok(true) => {}
                Ok(false) => {
                    let err = self.decoder.decode_eof(&mut self.buf).err();
                    self.log(
                        Level::Debug,
                        format!("closed mid-request: {}", err.map(|e| e.to_string()).unwrap_or_default()),
                    );
                    return Input::Lost;
                }
                Err(input) => return input,
            }
        }
    }

    /// Reads more bytes into the buffer. `Ok(false)` at end of stream.
    async fn read_some(&mut self, deadline: Instant) -> Result<bool, Input> {
        let deadline = match self.auth_deadline {
            Some(login) if !self.session.authenticated() => deadline.min(login),
            _ => deadline,
        };
        let read = tokio::select! {
            _ = self.shutdown.wait_for(|stop| *stop) => return Err(Input::Lost),
            r = timeout_at(deadline.into(), self.stream.read_buf(&mut self.buf)) => r,
        };
        match read {
            Ok(Ok(0)) => Ok(false),
            Ok(Ok(_)) => Ok(true),
            Ok(Err(e)) => {
                self.log(Level::Debug, format!("read failed: {e}"));
                Err(Input::Lost)
            }
            Err(_) if self.buf.is_empty() && self.decoder.consumed() == 0 => Err(Input::TimedOut(Timeout::Idle)),
            Err(_) => Err(Input::TimedOut(Timeout::Request)),
        }
    }

    /// The course client sends its command line bare: the session tells
    /// whether the bytes may be one; the rest of the burst is read here.
    async fn raw_command(&mut self, deadline: Instant) -> Result<Option<Vec<u8>>, Input> {
        // Take what follows in the same burst. A frame's first byte or two can
        // be printable too: what follows decides.
        while self.buf.len() < MAX_RAW_COMMAND {
            let quiet = if self.buf.len() < PREFIX_LEN { RAW_QUIET_SHORT } else { RAW_QUIET };
            let pause = Instant::now() + quiet;
            let read = tokio::select! {
                _ = self.shutdown.wait_for(|stop| *stop) => return Err(Input::Lost),
                r = timeout_at(deadline.min(pause).into(), self.stream.read_buf(&mut self.buf)) => r,
            };
            match read {
                Ok(Ok(0)) => {
                    self.sent_all = true;
                    break;
                }
                Err(_) if deadline < pause => return Err(Input::TimedOut(Timeout::RawLine)),
                Err(_) => break,
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return Err(Input::Lost),
            }
        }
        if !self.session.raw_line_start(&self.buf) {
            return Ok(None);
        }
        Ok(Some(self.buf.split().to_vec()))
    }

    /// Checks a proof within the guess throttle: at once, or in the
    /// server-wide login turn for a source that guessed wrong lately (kept,
    /// if wrong, through the pause the session asks for).
    async fn check_proof(&mut self, check: &ProofCheck) -> Result<bool, End> {
        let shared = self.shared;
        let source = self.source;
        // Checked and recorded under one lock: a source's parallel proofs see
        // its first failure, so it gets one check without a turn, not one per
        // connection.
        let at_once = {
            let mut guesses = shared.guesses.lock().expect("lock");
            let at_once = (!guesses.must_wait(source, Instant::now())).then(|| check.verify());
            if at_once == Some(false) {
                guesses.failed(source, Instant::now());
            }
            at_once
        };
        // A source that guessed wrong lately is answered only in its turn (see
        // Shared::login_turns), so guessers learn about two answers a second
        // among them, however many connections they open.
        if let Some(right) = at_once {
            return Ok(right);
        }
        let turn = self.login_turn(&shared.login_turns).await?;
        let right = check.verify();
        let mut guesses = shared.guesses.lock().expect("lock");
        if right {
            guesses.succeeded(source);
        } else {
            guesses.failed(source, Instant::now());
            self.turn = Some(turn);
        }
        Ok(right)
    }

    /// Waits for this connection's turn to have a proof checked: until its
    /// login deadline, and only while the peer is still there.
    async fn login_turn(&mut self, turns: &'s tokio::sync::Semaphore) -> Result<SemaphorePermit<'s>, End> {
        let deadline = self.auth_deadline.unwrap_or_else(|| Instant::now() + self.shared.config.header_timeout);
        let turn = timeout_at(deadline.into(), turns.acquire());
        tokio::pin!(turn);
        let mut stop = self.shutdown.clone();
        loop {
            tokio::select! {
                _ = stop.wait_for(|stop| *stop) => return Err(End(None)),
                turn = &mut turn => {
                    return match turn {
                        Ok(Ok(permit)) => Ok(permit),
                        _ => {
                            self.log(Level::Warning, "authentication failed: no turn before the login deadline".into());
                            Err(End(None))
                        }
                    };
                }
                read = self.stream.read_buf(&mut self.buf), if (self.buf.len() as u64) < PRE_AUTH_CODEC.max_header => {
                    if matches!(read, Ok(0) | Err(_)) {
                        self.log(Level::Warning, "authentication abandoned: the peer left before its turn".into());
                        return Err(End(None));
                    }
                }
            }
        }
    }

    /// Runs a command while watching the peer: if it leaves, or the server
    /// stops, the command's process group is killed (by dropping the future).
    async fn run_command(
        &mut self,
        mut spec: CommandSpec,
        shown: &str,
    ) -> Result<std::io::Result<exec::CommandOutput>, End> {
        spec.budget = Some(self.shared.output_budget.clone());
        let run = exec::run(spec);
        tokio::pin!(run);
        loop {
            let peer_left = tokio::select! {
                out = &mut run => return Ok(out),
                _ = self.shutdown.wait_for(|stop| *stop) => return Err(End(None)),
                read = self.stream.read_buf(&mut self.buf), if self.buf.len() < READ_AHEAD && !self.sent_all => matches!(read, Ok(0) | Err(_)),
            };
            if peer_left {
                self.log(Level::Info, format!("left while running {shown}: killed"));
                return Err(End(None));
            }
        }
    }

    /// Writes one response, within the idle timeout (a peer that never reads
    /// must not hold the connection forever).
    async fn send(&mut self, reply: Reply) -> std::io::Result<()> {
        let head = reply_head(self.shared.config.codec, &reply)?;
        // A peer that does not read stalls a write for the idle timeout at
        // most; before it has logged in, no longer than its login deadline
        // (it holds one of the few unauthenticated places meanwhile).
        let idle = match self.auth_deadline {
            Some(login) if !self.session.authenticated() => {
                self.shared.config.idle_timeout.min(login.saturating_duration_since(Instant::now()))
            }
            _ => self.shared.config.idle_timeout,
        };
        let stream = &mut self.stream;
        let write = async move {
            if reply.body.len() <= 64 * 1024 {
                let mut all = head;
                all.extend_from_slice(&reply.body);
                write_all_within(stream, &mut &all[..], idle).await
            } else {
                // Head and body in one vectored write: no copy of the body, and
                // no small write (and packet, under TCP_NODELAY) for the head alone.
                let mut both = Buf::chain(&head[..], &reply.body[..]);
                write_all_within(stream, &mut both, idle).await
            }
        };
        let mut stop = self.shutdown.clone();
        // A stopping server does not wait for a peer that reads slowly; but a
        // reply that can go out does (biased: the write is polled first).
        tokio::select! {
            biased;
            r = write => r,
            _ = stop.wait_for(|stop| *stop) => Err(std::io::Error::new(std::io::ErrorKind::Interrupted, "server stopping")),
        }
    }
}

/// The bytes before a reply's body: prefix and header (with the codec's
/// digest of the body, if it adds one).
fn reply_head(codec: Codec, reply: &Reply) -> std::io::Result<Vec<u8>> {
    // The codec's max_body caps requests; a reply is as large as the
    // output it carries (max_output bounds a command's).
    let codec = Codec { max_body: if codec.json_header { u64::MAX } else { MAX_PREFIX_VALUE }, ..codec };
    let with_digest;
    let header = match (codec.json_header, codec.checksum, reply.header.as_deref()) {
        (false, ..) => None,
        (true, Some(checksum), Some(h)) => {
            with_digest = protocol::add_field(h, checksum.name(), &checksum.hex_digest(&reply.body));
            Some(with_digest.as_slice())
        }
        (true, None, h) => h,
        (true, Some(_), None) => None,
    };
    codec
        .encode_head(header, reply.body.len())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
}

/// Writes all of `buf`; fails if the peer takes none of it for `idle` (a
/// stall), however long a large reply to a slow but steady reader takes.
async fn write_all_within(stream: &mut Box<dyn Stream>, buf: &mut impl Buf, idle: Duration) -> std::io::Result<()> {
    while buf.has_remaining() {
        match tokio::time::timeout(idle, stream.write_buf(buf)).await {
            Ok(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "peer did not read the response")),
        }
    }
    // TLS takes a reply's last bytes into its records before the socket has
    // room for them, and sends them only on a later write or a flush: without
    // one, the end of a reply could wait for the next request, which the peer
    // sends only once it has the reply. (A no-op on a plain socket.)
    match tokio::time::timeout(idle, stream.flush()).await {
        Ok(flushed) => flushed,
        Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "peer did not read the response")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(config: &ServerConfig, request: RequestHeader) -> Reply {
        command_spec(config, request, Bytes::new(), Some(config.timeout)).expect_err("refused")
    }

    #[test]
    fn refusing_a_long_command_line_gives_a_reply_the_server_can_send() {
        // Found by the fuzz target `request`: an unbalanced raw line of 20001
        // quotes was refused with a 80 KiB header, over max_header, and the
        // client saw the connection close without a reply.
        let config = ServerConfig { shell: false, ..ServerConfig::default() };
        let request = raw_request(vec![b'"'; 20_001]).unwrap();
        let reply = refusal(&config, request);
        assert_eq!(reply.error, Some(ErrorCode::BadRequest));
        let header = reply.header.unwrap();
        assert!(config.codec.encode_head(Some(&header), 0).is_ok(), "{} bytes", header.len());

        let allow = ServerConfig { allow: Some(vec!["ls".into()]), ..ServerConfig::default() };
        let request = RequestHeader { cmd: Some(Cmd::Argv(vec!["\"".repeat(30_000)])), ..Default::default() };
        let header = refusal(&allow, request).header.unwrap();
        assert!(allow.codec.encode_head(Some(&header), 0).is_ok(), "{} bytes", header.len());
    }

    #[test]
    fn raw_lines_are_told_from_frames() {
        let codec = Codec::default();
        assert!(looks_raw(&codec, b"ls -l\n"));
        assert!(looks_raw(&codec, b"ls"));
        assert!(!looks_raw(&codec, &codec.encode(Some(br#"{"total_size": 0}"#), b"").unwrap()));
        assert!(raw_request(b"\xff".to_vec()).is_err());
        assert_eq!(raw_request(b" ls -l\n".to_vec()).unwrap().cmd, Some(Cmd::Line("ls -l".into())));
    }
}
