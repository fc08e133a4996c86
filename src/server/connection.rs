//! One connection: read a request, answer it, repeat; within deadlines, and
//! until the peer leaves or the server stops.

mod transfer;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{watch, SemaphorePermit};
use tokio::time::timeout_at;

use super::listener::Stream;
use super::startups::{Source, StartupGuard};
use super::{tls_accept, Level, Reply, ServerConfig, Shared};
use crate::codec::{Codec, Decoder, Frame, FrameError, MAX_PREFIX_VALUE, PREFIX_LEN};
use crate::exec::{self, CommandSpec, Program};
use crate::protocol::{self, auth, Cmd, ErrorCode, RequestHeader, ResultHeader};

/// Limits before a client has authenticated: auth frames are small and bodiless.
pub const PRE_AUTH_CODEC: Codec = Codec {
    json_header: true,
    byteorder: crate::codec::ByteOrder::Little,
    max_header: 4096,
    max_body: 0,
    checksum: None,
};

/// A raw command line arrives in one burst: once no more bytes come for this
/// long, the bytes in hand are the whole line. One or two printable bytes may
/// also be the start of a frame, so those wait longer for what follows.
const RAW_QUIET: Duration = Duration::from_millis(20);
const RAW_QUIET_SHORT: Duration = Duration::from_millis(100);
const MAX_RAW_COMMAND: usize = 64 * 1024;
/// Bytes of pipelined requests read ahead while a command runs (to notice a
/// client that leaves); past this, reading waits.
const READ_AHEAD: usize = 1 << 20;
/// How long, and how many bytes at most, a refused peer's input is read and
/// dropped before the connection closes (see [`linger`]).
const LINGER_TIME: Duration = Duration::from_secs(1);
const LINGER_MAX: usize = 4 << 20;
/// The most buffer space reserved ahead for a body being received.
const BODY_RESERVE: usize = (1 << 20) + 4096;
/// A wrong proof is answered only after this pause. If it held the login
/// turn, no proof from a source that failed lately is checked meanwhile:
/// about two guesses a second among all such sources (see `super::guesses`).
const AUTH_FAILURE_DELAY: Duration = Duration::from_millis(500);

enum Request {
    Frame(Frame),
    Raw(Vec<u8>),
}

/// Why a connection ends.
enum End {
    /// Peer closed, server stopping, or a deadline passed: nothing more to say.
    Quiet,
    /// Tell the peer why, then close.
    Error(ErrorCode, String),
}

struct Conn {
    stream: Box<dyn Stream>,
    peer: String,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    buf: BytesMut,
    decoder: Decoder,
    authenticated: bool,
    /// Until authenticated, every read ends by this time.
    auth_deadline: Option<Instant>,
    server_nonce: Option<String>,
    /// The peer shut down its sending side before its raw command line ran
    /// (`printf 'ls' | nc -N host port`): that end of stream marked the end of
    /// the line, so it does not count as leaving while the command runs.
    sent_all: bool,
    /// On TLS: the certificate hash the login's proofs are bound to.
    binding: Option<[u8; 32]>,
    /// Counts this connection as unauthenticated (`super::startups`) until
    /// it proves the token.
    startup: Option<StartupGuard>,
    source: Source,
}

/// The codec a connection starts with: small limits until the token is proven.
pub fn opening_codec(config: &ServerConfig) -> Codec {
    match config.token {
        Some(_) => Codec { byteorder: config.codec.byteorder, ..PRE_AUTH_CODEC },
        None => config.codec,
    }
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
    let (mut stream, mut binding, mut refusal) = (stream, None, None);
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
                binding = Some(tls.cert_hash);
            }
            tls_accept::Opening::Plain(s) => {
                stream = s;
                if !peer_local {
                    refusal = Some(End::Error(
                        ErrorCode::TlsRequired,
                        "this server takes TLS from other machines: connect with TLS (rframe.Client(tls=True), \
                         python -m rframe.client --tls)"
                            .into(),
                    ));
                }
            }
            tls_accept::Opening::Closed(why) => {
                shared.observer.log(Level::Debug, format!("{peer}: {why}"));
                return;
            }
        }
    }
    let mut conn = Conn {
        stream,
        peer,
        shared,
        shutdown,
        buf,
        decoder: Decoder::new(codec),
        authenticated: !needs_auth,
        auth_deadline,
        server_nonce: None,
        sent_all: false,
        binding,
        startup,
        source,
    };
    conn.log(Level::Debug, if binding.is_some() { "connected (TLS)".into() } else { "connected".into() });
    let end = match refusal {
        Some(end) => end,
        None => conn.run().await,
    };
    let mut told = false;
    if let End::Error(code, message) = end {
        conn.log(Level::Warning, format!("closing: {message}"));
        if conn.shared.config.codec.json_header {
            let _ = conn.send(Reply::error(code, &message)).await;
            told = true;
        }
    }
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

impl Conn {
    fn log(&self, level: Level, message: String) {
        self.shared.observer.log(level, format!("{}: {message}", self.peer));
    }

    async fn run(&mut self) -> End {
        loop {
            let request = match self.next_request().await {
                Ok(Some(r)) => r,
                Ok(None) => return End::Quiet,
                Err(end) => return end,
            };
            let reply = match request {
                Request::Raw(line) => {
                    if !self.authenticated {
                        return End::Error(
                            ErrorCode::Auth,
                            "this server needs a token: raw command lines are refused".into(),
                        );
                    }
                    match raw_request(line) {
                        Ok(request) => self.run_command(request, Bytes::new()).await,
                        Err(reply) => Ok(reply),
                    }
                }
                Request::Frame(frame) => self.dispatch(frame).await,
            };
            match reply {
                // No header to say it in: closing is the only honest answer.
                Ok(reply) if reply.error.is_some() && !self.shared.config.codec.json_header => return End::Quiet,
                Ok(reply) => {
                    if let Err(e) = self.send(reply).await {
                        self.log(Level::Debug, format!("send failed: {e}"));
                        return End::Quiet;
                    }
                }
                Err(end) => return end,
            }
        }
    }

    /// Reads the next request; `Ok(None)` when the peer closed between requests.
    async fn next_request(&mut self) -> Result<Option<Request>, End> {
        let idle = self.shared.config.idle_timeout;
        // Between requests: wait for a first byte, up to the idle timeout.
        if self.buf.is_empty() && !self.read_some(Instant::now() + idle).await? {
            return Ok(None);
        }
        let header_deadline = Instant::now() + self.shared.config.header_timeout;
        let raw_possible = self.shared.handler.is_none();
        loop {
            if raw_possible && self.decoder.consumed() == 0 {
                if let Some(line) = self.raw_command(header_deadline).await? {
                    return Ok(Some(Request::Raw(line)));
                }
            }
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(frame)) => return Ok(Some(Request::Frame(frame))),
                Ok(None) => {}
                Err(e) if !self.authenticated => {
                    return Err(End::Error(ErrorCode::Auth, format!("authentication required ({e})")))
                }
                Err(e) => return Err(frame_end(&e)),
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
            if !self.read_some(deadline).await? {
                let err = self.decoder.decode_eof(&mut self.buf).err();
                self.log(
                    Level::Debug,
                    format!("closed mid-request: {}", err.map(|e| e.to_string()).unwrap_or_default()),
                );
                return Err(End::Quiet);
            }
        }
    }

    /// Reads more bytes into the buffer. `Ok(false)` at end of stream.
    async fn read_some(&mut self, deadline: Instant) -> Result<bool, End> {
        let deadline = match self.auth_deadline {
            Some(login) if !self.authenticated => deadline.min(login),
            _ => deadline,
        };
        let read = tokio::select! {
            _ = self.shutdown.wait_for(|stop| *stop) => return Err(End::Quiet),
            r = timeout_at(deadline.into(), self.stream.read_buf(&mut self.buf)) => r,
        };
        match read {
            Ok(Ok(0)) => Ok(false),
            Ok(Ok(_)) => Ok(true),
            Ok(Err(e)) => {
                self.log(Level::Debug, format!("read failed: {e}"));
                Err(End::Quiet)
            }
            Err(_) if !self.authenticated && self.auth_deadline.is_some() => {
                Err(End::Error(ErrorCode::Auth, "not authenticated in time".into()))
            }
            Err(_) if self.buf.is_empty() && self.decoder.consumed() == 0 => {
                self.log(Level::Debug, "idle timeout".into());
                Err(End::Quiet)
            }
            Err(_) => Err(End::Error(ErrorCode::Timeout, "request not received in time".into())),
        }
    }

    /// The course client sends its command line bare. A prefix the codec would
    /// refuse, made of text, is such a line; so are a few text bytes followed by
    /// a pause.
    async fn raw_command(&mut self, deadline: Instant) -> Result<Option<Vec<u8>>, End> {
        let codec = *self.decoder.codec();
        if !looks_raw(&codec, &self.buf) {
            return Ok(None);
        }
        // Take what follows in the same burst. A frame's first byte or two can
        // be printable too: what follows decides.
        while self.buf.len() < MAX_RAW_COMMAND {
            let quiet = if self.buf.len() < PREFIX_LEN { RAW_QUIET_SHORT } else { RAW_QUIET };
            let pause = Instant::now() + quiet;
            let read = tokio::select! {
                _ = self.shutdown.wait_for(|stop| *stop) => return Err(End::Quiet),
                r = timeout_at(deadline.min(pause).into(), self.stream.read_buf(&mut self.buf)) => r,
            };
            match read {
                Ok(Ok(0)) => {
                    self.sent_all = true;
                    break;
                }
                // Still coming at the header deadline: cut there, its rest
                // would run as a command of its own.
                Err(_) if deadline < pause => {
                    return Err(End::Error(ErrorCode::Timeout, "the raw command line did not end in time".into()))
                }
                Err(_) => break,
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return Err(End::Quiet),
            }
        }
        if !looks_raw(&codec, &self.buf) {
            return Ok(None);
        }
        if self.buf.len() >= MAX_RAW_COMMAND {
            // Cut at the cap, its rest would run as a command of its own.
            return Err(End::Error(
                ErrorCode::TooLarge,
                format!("a raw command line must be shorter than {} KiB", MAX_RAW_COMMAND / 1024),
            ));
        }
        Ok(Some(self.buf.split().to_vec()))
    }

    async fn dispatch(&mut self, frame: Frame) -> Result<Reply, End> {
        let request = match &frame.header {
            Some(h) if self.shared.handler.is_none() || !self.authenticated => match protocol::parse_request(h) {
                Ok(r) => Some(r),
                Err(e) if self.authenticated => return Ok(Reply::error(ErrorCode::BadRequest, &e)),
                Err(e) => return Err(End::Error(ErrorCode::Auth, format!("authentication required ({e})"))),
            },
            _ => None,
        };
        if request.as_ref().and_then(|r| r.op.as_deref()) == Some("auth") {
            return self.authenticate(request.expect("checked above")).await;
        }
        if !self.authenticated {
            return Err(End::Error(ErrorCode::Auth, "authentication required: send an auth request first".into()));
        }
        if let Some(handler) = self.shared.handler.clone() {
            return Ok(self.call_handler(handler, frame).await);
        }
        let request = request.unwrap_or_default();
        match request.op.as_deref() {
            Some("run") => self.run_command(request, frame.body).await,
            Some("put") => self.put(frame).await,
            Some("get") => self.get(frame).await,
            Some("list") => self.list(frame).await,
            Some(op @ ("data" | "end")) => {
                Ok(Reply::error(ErrorCode::BadRequest, &format!("a {op:?} frame outside a put")))
            }
            Some(op) => Ok(Reply::error(
                ErrorCode::BadRequest,
                &format!("unknown op {op:?}: this server knows \"run\", \"put\", \"get\" and \"list\""),
            )),
            None => Ok(Reply::error(
                ErrorCode::BadRequest,
                "request header has no \"op\": this server runs commands (op \"run\")",
            )),
        }
    }

    async fn call_handler(&mut self, handler: Arc<dyn super::Handler>, frame: Frame) -> Reply {
        let call = handler.call(frame);
        match call.await {
            Ok(reply) => reply,
            Err(message) => {
                self.log(Level::Warning, format!("handler failed: {message}"));
                Reply::error(ErrorCode::Handler, &message)
            }
        }
    }

    async fn authenticate(&mut self, request: RequestHeader) -> Result<Reply, End> {
        let Some(token) = self.shared.config.token.clone() else {
            return Ok(Reply::new(Some(protocol::op_header("welcome", &[], 0)), Bytes::new()));
        };
        let hash = self.binding;
        let binding = hash.as_ref().map(|hash| &hash[..]);
        let channel = if binding.is_some() { auth::TLS_SERVER_END_POINT } else { auth::NO_BINDING };
        let Some(proof) = request.proof else {
            let nonce = auth::nonce();
            let mut fields = serde_json::Map::new();
            fields.insert("op".into(), "challenge".into());
            fields.insert("nonce".into(), nonce.as_str().into());
            fields.insert("version".into(), auth::VERSION.into());
            fields.insert("channel_binding".into(), channel.into());
            self.server_nonce = Some(nonce);
            return Ok(Reply::new(Some(protocol::json_header(fields, 0)), Bytes::new()));
        };
        // A proof with no challenge before it guesses nothing: refused without
        // a turn, so a stream of them cannot keep real logins waiting.
        let (Some(sn), Some(cn)) = (self.server_nonce.take(), request.client_nonce) else {
            return Err(self.auth_failed("proof without a challenge").await);
        };
        // The binding the client says it used must be this connection's: a
        // client on TLS whose proof reaches us in plaintext (or the other way
        // round) went through something in the middle. Such a proof counts as
        // a wrong one, turn and all, so it teaches a guesser nothing faster.
        let claimed = request.channel_binding.as_deref().unwrap_or(auth::NO_BINDING);
        let mismatch = claimed != channel;
        let right = || {
            !mismatch
                && request.nonce.as_deref() == Some(sn.as_str())
                && auth::verify(&token, auth::Role::Client, &sn, &cn, binding, &proof)
        };
        let shared = self.shared.clone();
        let source = self.source;
        // Checked and recorded under one lock: a source's parallel proofs see
        // its first failure, so it gets one check without a turn, not one per
        // connection.
        let at_once = {
            let mut guesses = shared.guesses.lock().expect("lock");
            let at_once = (!guesses.must_wait(source, Instant::now())).then(&right);
            if at_once == Some(false) {
                guesses.failed(source, Instant::now());
            }
            at_once
        };
        // A source that guessed wrong lately is answered only in its turn (see
        // Shared::login_turns), so guessers learn about two answers a second
        // among them, however many connections they open.
        let (_turn, right) = match at_once {
            Some(right) => (None, right),
            None => {
                let turn = self.login_turn(&shared.login_turns).await?;
                let right = right();
                let mut guesses = shared.guesses.lock().expect("lock");
                if right {
                    guesses.succeeded(source);
                } else {
                    guesses.failed(source, Instant::now());
                }
                (Some(turn), right)
            }
        };
        if !right {
            if mismatch {
                let why = format!(
                    "channel binding mismatch (the client's proof is bound to {claimed:?}, this connection is \
                     {channel:?}): a relay in the middle?"
                );
                return Err(self.auth_failed(&why).await);
            }
            return Err(self.auth_failed("wrong token").await);
        }
        self.authenticated = true;
        self.startup = None;
        self.decoder = Decoder::new(self.shared.config.codec);
        self.log(Level::Info, "authenticated".into());
        let server_proof = auth::proof(&token, auth::Role::Server, &sn, &cn, binding);
        Ok(Reply::new(Some(protocol::op_header("welcome", &[("proof", &server_proof)], 0)), Bytes::new()))
    }

    /// Waits for this connection's turn to have a proof checked: until its
    /// login deadline, and only while the peer is still there.
    async fn login_turn<'a>(&mut self, turns: &'a tokio::sync::Semaphore) -> Result<SemaphorePermit<'a>, End> {
        let deadline = self.auth_deadline.unwrap_or_else(|| Instant::now() + self.shared.config.header_timeout);
        let turn = timeout_at(deadline.into(), turns.acquire());
        tokio::pin!(turn);
        let mut stop = self.shutdown.clone();
        loop {
            tokio::select! {
                _ = stop.wait_for(|stop| *stop) => return Err(End::Quiet),
                turn = &mut turn => {
                    return match turn {
                        Ok(Ok(permit)) => Ok(permit),
                        _ => {
                            self.log(Level::Warning, "authentication failed: no turn before the login deadline".into());
                            Err(End::Quiet)
                        }
                    };
                }
                read = self.stream.read_buf(&mut self.buf), if (self.buf.len() as u64) < PRE_AUTH_CODEC.max_header => {
                    if matches!(read, Ok(0) | Err(_)) {
                        self.log(Level::Warning, "authentication abandoned: the peer left before its turn".into());
                        return Err(End::Quiet);
                    }
                }
            }
        }
    }

    /// Logs a failed login and answers it after a pause (the caller holds
    /// the login turn meanwhile, if it took one).
    async fn auth_failed(&mut self, why: &str) -> End {
        self.log(Level::Warning, format!("authentication failed: {why}"));
        tokio::time::sleep(AUTH_FAILURE_DELAY).await;
        End::Error(ErrorCode::Auth, "authentication failed".into())
    }

    /// Runs a command while watching the peer: if it leaves, or the server
    /// stops, the command's process group is killed (by dropping the future).
    async fn run_command(&mut self, request: RequestHeader, body: Bytes) -> Result<Reply, End> {
        let shown = match &request.cmd {
            Some(Cmd::Line(l)) => format!("{l:?}"),
            Some(Cmd::Argv(a)) => format!("{a:?}"),
            None => "nothing".into(),
        };
        let mut spec = match command_spec(&self.shared.config, request, body) {
            Ok(spec) => spec,
            Err(reply) => {
                self.log(Level::Warning, format!("refused {shown}"));
                return Ok(reply);
            }
        };
        spec.budget = Some(self.shared.output_budget.clone());
        let run = exec::run(spec);
        tokio::pin!(run);
        let output = loop {
            let peer_left = tokio::select! {
                out = &mut run => break out,
                _ = self.shutdown.wait_for(|stop| *stop) => return Err(End::Quiet),
                read = self.stream.read_buf(&mut self.buf), if self.buf.len() < READ_AHEAD && !self.sent_all => matches!(read, Ok(0) | Err(_)),
            };
            if peer_left {
                self.log(Level::Info, format!("left while running {shown}: killed"));
                return Err(End::Quiet);
            }
        };
        let out = match output {
            Ok(out) => out,
            Err(e) => {
                self.log(Level::Warning, format!("could not start {shown}: {e}"));
                return Ok(Reply::error(ErrorCode::Spawn, &format!("could not start {shown}: {e}")));
            }
        };
        self.log(
            Level::Info,
            format!(
                "ran {shown}: returncode {}{}, {:.3}s, {} bytes",
                out.returncode,
                if out.timed_out { " (timed out)" } else { "" },
                out.duration.as_secs_f64(),
                out.stdout.len() + out.stderr.len()
            ),
        );
        if out.budget_ran_out {
            // Once per command, so a flood of output makes no flood of lines.
            let budget = self.shared.config.output_budget;
            self.log(
                Level::Warning,
                format!("output of {shown} truncated: the output budget ({budget} bytes, server-wide) is in use"),
            );
        }
        let header = ResultHeader {
            op: "result".into(),
            returncode: out.returncode,
            stdout_size: out.stdout.len() as u64,
            stderr_size: out.stderr.len() as u64,
            stdout_truncated: out.stdout_truncated,
            stderr_truncated: out.stderr_truncated,
            timed_out: out.timed_out,
            duration: out.duration.as_secs_f64(),
            encoding: self.shared.config.encoding.clone(),
            total_size: (out.stdout.len() + out.stderr.len()) as u64,
        };
        let mut body = out.stdout;
        body.extend_from_slice(&out.stderr);
        // The body keeps its bytes drawn from the budget until it is dropped:
        // once sent, or with a connection that ends first.
        let body = Bytes::from_owner(HeldOutput { bytes: body, _held: out.held });
        Ok(Reply::new(Some(serde_json::to_vec(&header).expect("serializable")), body))
    }

    /// Writes one response, within the idle timeout (a peer that never reads
    /// must not hold the connection forever).
    async fn send(&mut self, reply: Reply) -> std::io::Result<()> {
        // The codec's max_body caps requests; a reply is as large as the
        // output it carries (max_output bounds a command's).
        let codec = self.shared.config.codec;
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
        let head = codec
            .encode_head(header, reply.body.len())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
        // A peer that does not read stalls a write for the idle timeout at
        // most; before it has logged in, no longer than its login deadline
        // (it holds one of the few unauthenticated places meanwhile).
        let idle = match self.auth_deadline {
            Some(login) if !self.authenticated => {
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

/// A command's output, and its bytes of the output budget.
struct HeldOutput {
    bytes: Vec<u8>,
    _held: exec::Held,
}

impl AsRef<[u8]> for HeldOutput {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
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

/// How a raw command line (the course client's request) is told from a frame
/// at the start of a request: text bytes, and a length prefix the codec would
/// refuse (or fewer than four bytes, which a pause then decides).
pub fn looks_raw(codec: &Codec, buf: &[u8]) -> bool {
    protocol::looks_like_raw_command(&buf[..buf.len().min(PREFIX_LEN)])
        && (buf.len() < PREFIX_LEN || codec.parse_length(buf[..PREFIX_LEN].try_into().expect("four bytes")).is_err())
}

/// The request a raw command line stands for, or the reply that refuses it.
pub fn raw_request(line: Vec<u8>) -> Result<RequestHeader, Reply> {
    match String::from_utf8(line) {
        Ok(line) => Ok(RequestHeader { cmd: Some(Cmd::Line(line.trim().to_owned())), ..Default::default() }),
        // Guessing at bytes that are not text is how commands go wrong.
        Err(_) => Err(Reply::error(ErrorCode::BadRequest, "a raw command line must be UTF-8 text")),
    }
}

/// Checks a run request against the server's configuration and turns it into
/// what to run, or the error reply that refuses it. Pure: nothing runs here
/// (the fuzz target `request` calls it).
pub fn command_spec(config: &ServerConfig, request: RequestHeader, body: Bytes) -> Result<CommandSpec, Reply> {
    let bad = |code, msg: String| Reply::error(code, &msg);
    let use_shell = config.shell && config.allow.is_none();
    let program = match request.cmd {
        None => return Err(bad(ErrorCode::BadRequest, "run request has no \"cmd\"".into())),
        Some(Cmd::Line(line)) if use_shell => Program::Shell(line),
        Some(Cmd::Line(line)) => Program::Argv(
            shlex::split(&line)
                .ok_or_else(|| bad(ErrorCode::BadRequest, format!("cannot split {line:?}: unbalanced quotes")))?,
        ),
        Some(Cmd::Argv(argv)) => Program::Argv(argv),
    };
    if let Program::Argv(argv) = &program {
        let Some(first) = argv.first() else {
            return Err(bad(ErrorCode::BadRequest, "empty command".into()));
        };
        if let Some(allow) = &config.allow {
            if !allow.iter().any(|a| a == first) {
                return Err(bad(
                    ErrorCode::NotAllowed,
                    format!("{first:?} is not an allowed program (allowed: {})", allow.join(", ")),
                ));
            }
            // PATH, LD_PRELOAD or a cwd with PATH=. would pick which file
            // an allowed name runs: with an allow list, neither is the client's.
            if request.env.as_ref().is_some_and(|e| !e.is_empty()) || request.cwd.is_some() {
                return Err(bad(ErrorCode::NotAllowed, "with an allow list, requests may not set env or cwd".into()));
            }
        }
    } else if matches!(&program, Program::Shell(line) if line.trim().is_empty()) {
        return Err(bad(ErrorCode::BadRequest, "empty command".into()));
    }
    let timeout = match request.timeout {
        Some(t) if t.is_finite() && t > 0.0 => {
            config.timeout.min(Duration::from_secs_f64(t.min(protocol::MAX_SECONDS)))
        }
        Some(t) => {
            return Err(bad(ErrorCode::BadRequest, format!("timeout must be a positive number of seconds, got {t}")))
        }
        None => config.timeout,
    };
    if !request.input && !body.is_empty() {
        return Err(bad(ErrorCode::BadRequest, "the request has a body but not \"input\": true".into()));
    }
    Ok(CommandSpec {
        program,
        env: request.env.unwrap_or_default().into_iter().collect(),
        cwd: request.cwd.map(Into::into).or_else(|| config.cwd.clone()),
        input: request.input.then_some(body),
        timeout,
        max_output: config.max_output,
        // Set by the connection that runs it: this stays a pure check.
        budget: None,
    })
}

/// A framing error ends the connection: the stream has lost its place.
fn frame_end(err: &FrameError) -> End {
    let code = match err {
        FrameError::TooLarge { .. } => ErrorCode::TooLarge,
        _ => ErrorCode::BadRequest,
    };
    End::Error(code, err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(config: &ServerConfig, request: RequestHeader) -> Reply {
        command_spec(config, request, Bytes::new()).expect_err("refused")
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
