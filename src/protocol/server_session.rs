//! The server's half of the command protocol, with no I/O: frames in,
//! actions out (in the manner of h11's `Connection`).
//!
//! A [`ServerSession`] is one connection's protocol state: the login (nonce,
//! challenge, proof, channel binding), what a raw command line is and whether
//! it is taken, the dispatch of requests, and the states of `put`, `get` and
//! `list`. It reads no socket, runs no command, touches no disk and keeps no
//! clock. Its driver (`server::connection`) reads bytes and decodes frames,
//! feeds them in ([`ServerSession::receive`], [`ServerSession::receive_raw`],
//! ...), and carries out the [`Action`]s it gets back, in order: send this
//! reply, run this command, create this upload, write this chunk, close.
//! Where an action has an outcome the protocol needs (a command's output, an
//! upload created or refused, a chunk read), the driver reports it with the
//! matching method (`command_done`, `upload_created`, `chunk_read`, ...),
//! which gives the next actions. The driver owns the clock: deadlines, pauses
//! and the shared guess throttle; when one of its deadlines passes it says so
//! ([`ServerSession::timed_out`]) and the session decides what the peer is told.
//!
//! Feeding a frame while the session awaits an outcome is a driver bug and
//! panics; a frame after the session closed is ignored.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;

use super::config::{Level, Reply, ServerConfig};
use crate::codec::{Checksum, Codec, Frame, FrameError, Hasher, PREFIX_LEN};
use crate::exec::{self, CommandOutput, CommandSpec, Program};
use crate::files::{Entry, FileError, Identity};
use crate::protocol::{self, auth, Cmd, ErrorCode, FileRequest, RequestHeader, ResultHeader};

/// Limits before a client has authenticated: auth frames are small and bodiless.
pub const PRE_AUTH_CODEC: Codec = Codec {
    json_header: true,
    byteorder: crate::codec::ByteOrder::Little,
    max_header: 4096,
    max_body: 0,
    checksum: None,
};

/// A raw command line this long or longer is refused whole (its rest would
/// run as a command of its own): the driver reads no more than this of one.
pub const MAX_RAW_COMMAND: usize = 64 * 1024;
/// A wrong proof is answered only after this pause. If it held the login
/// turn, no proof from a source that failed lately is checked meanwhile:
/// about two guesses a second among all such sources (see `server::guesses`).
pub const AUTH_FAILURE_DELAY: Duration = Duration::from_millis(500);
/// The largest `data` frame body sent, and taken.
pub use super::TRANSFER_CHUNK as CHUNK;
/// At most this many bytes of listing in one reply.
const MAX_LISTING: usize = 4 << 20;

/// The codec a connection starts with: small limits until the token is proven.
pub fn opening_codec(config: &ServerConfig) -> Codec {
    match config.token {
        Some(_) => Codec { byteorder: config.codec.byteorder, ..PRE_AUTH_CODEC },
        None => config.codec,
    }
}

/// How a connection reached the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Plaintext to a server without TLS.
    Plain,
    /// TLS, done: proofs are bound to this certificate's SHA-256.
    Tls([u8; 32]),
    /// Plaintext to a TLS server; `local`: from this machine (a loopback
    /// address, the Unix socket), the only place such a server takes it from.
    PlainOnTls { local: bool },
}

/// Which of the driver's deadlines passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// Between requests: nothing arrived (the idle timeout, or the login deadline).
    Idle,
    /// Within a request: its header by the header deadline, a stalled body by
    /// the idle timeout (or either by the login deadline).
    Request,
    /// A raw command line was still arriving at the header deadline.
    RawLine,
}

/// What the driver does next, in order.
pub enum Action {
    /// Send this frame.
    Reply(Reply),
    /// Log this line (the driver adds the peer).
    Log(Level, String),
    /// Run this command (the driver adds the output budget) while watching
    /// the peer; report with [`ServerSession::command_done`]. `shown`: the
    /// command as logs quote it.
    Run { spec: CommandSpec, shown: String },
    /// Pass the frame to the handler; report with [`ServerSession::handler_done`].
    CallHandler(Frame),
    /// Check this proof, within the server's guess throttle (a source that
    /// guessed wrong lately waits for its turn); report with
    /// [`ServerSession::proof_checked`].
    CheckProof(ProofCheck),
    /// Wait this long before the next action (a wrong proof holds its login
    /// turn meanwhile).
    Pause(Duration),
    /// The token is proven: decode with this codec from here on, and the
    /// connection no longer counts as unauthenticated.
    LoggedIn { codec: Codec },
    /// Create the temporary file of an upload (and the directories above
    /// it), to be given the permission bits `mode`; report with
    /// [`ServerSession::upload_created`].
    CreateUpload { name: String, overwrite: bool, mode: Option<u32> },
    /// [`Action::CreateUpload`] for a resumable upload: open (or make) the
    /// part an earlier cut upload of `name` kept, read the identity recorded
    /// beside it, and hash its bytes with `checksum`; report with
    /// [`ServerSession::kept_opened`]. Dropped unfinished, it is kept.
    CreateKept { name: String, overwrite: bool, mode: Option<u32>, checksum: Checksum },
    /// Hash `chunk` with `hasher` and append it to the open upload; report
    /// with [`ServerSession::chunk_written`] before the next frame is fed
    /// (the driver may read that frame meanwhile). With `restart`, a
    /// resumable upload first drops its kept bytes and records this source.
    WriteChunk { chunk: Bytes, hasher: Hasher, restart: Option<Identity> },
    /// Sync the upload (unless not `durable`: a later [`Action::Sync`] does)
    /// and rename it to its name; report with
    /// [`ServerSession::upload_committed`]. `restart` as for `WriteChunk`.
    CommitUpload { durable: bool, restart: Option<Identity> },
    /// Store a whole file at once, verified already: create, write and
    /// commit it as the three actions above do; report with
    /// [`ServerSession::upload_committed`].
    StoreFile { name: String, overwrite: bool, mode: Option<u32>, data: Bytes, durable: bool },
    /// Make a directory and those above it; report with [`ServerSession::dir_made`].
    MakeDir { name: String, mode: Option<u32> },
    /// Make a symlink (its target checked already); report with
    /// [`ServerSession::link_made`].
    MakeLink { name: String, target: String, overwrite: bool },
    /// Make what was stored without syncing durable; report with
    /// [`ServerSession::synced`].
    Sync,
    /// Drop the open upload (its temporary file is removed, a resumable
    /// upload's kept part and identity too).
    DiscardUpload,
    /// Drop the open upload, keeping a resumable upload's part.
    KeepUpload,
    /// Hash the first `len` bytes of the file just opened with `hasher`
    /// (leaving it positioned after them); report with
    /// [`ServerSession::prefix_hashed`].
    HashPrefix { len: u64, hasher: Hasher },
    /// Seek the open file back to its start.
    Rewind,
    /// Open a file to send; report its size with [`ServerSession::file_opened`].
    OpenFile { name: String },
    /// Read up to `want` bytes more of the open file, hashing them with
    /// `hasher`; report with [`ServerSession::chunk_read`] before the peer is
    /// read again (the actions after this one may go out meanwhile).
    ReadChunk { want: usize, hasher: Hasher },
    /// List a directory (`recursive`: a page of its whole tree, after the
    /// name `after`, with each file's digest under `checksum` if given);
    /// report with [`ServerSession::listed`].
    ListDir { name: String, recursive: bool, checksum: Option<Checksum>, after: Option<String> },
    /// Close the connection, after sending this error frame if there is one.
    Close(Option<Reply>),
    /// Start this live command (stdin, stdout and stderr piped, in a process
    /// group of its own); report with [`ServerSession::started`], then its
    /// output as it comes ([`ServerSession::output`]) and its end
    /// ([`ServerSession::exited`]). Frames from the peer meanwhile go to
    /// [`ServerSession::receive`] as ever.
    /// With a terminal, the command runs on it instead (stdout and stderr
    /// merged): its `TERM` is in `spec.env`, its window size here.
    Start { spec: CommandSpec, shown: String, terminal: Option<(u16, u16)> },
    /// Write these bytes to the live command's stdin (with backpressure:
    /// the peer is not read while they wait).
    WriteStdin(Bytes),
    /// Close the live command's stdin once what was written went in. (Not
    /// on a terminal: its end of input is typed, a [`Action::WriteStdin`].)
    CloseStdin,
    /// Send this signal (one of `live::SIGNALS`) to the live command's group.
    Signal(&'static str),
    /// Set the live command's terminal's window size (columns, lines).
    Resize(u16, u16),
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Reply(reply) => f.debug_tuple("Reply").field(&header_text(reply)).finish(),
            Action::Log(level, line) => f.debug_tuple("Log").field(level).field(line).finish(),
            Action::Run { shown, .. } => f.debug_struct("Run").field("shown", shown).finish(),
            Action::CallHandler(frame) => f.debug_tuple("CallHandler").field(frame).finish(),
            Action::CheckProof(_) => f.write_str("CheckProof"),
            Action::Pause(d) => f.debug_tuple("Pause").field(d).finish(),
            Action::LoggedIn { codec } => f.debug_struct("LoggedIn").field("codec", codec).finish(),
            Action::CreateUpload { name, overwrite, mode } => f
                .debug_struct("CreateUpload")
                .field("name", name)
                .field("overwrite", overwrite)
                .field("mode", mode)
                .finish(),
            Action::StoreFile { name, overwrite, mode, data, durable } => f
                .debug_struct("StoreFile")
                .field("name", name)
                .field("overwrite", overwrite)
                .field("mode", mode)
                .field("len", &data.len())
                .field("durable", durable)
                .finish(),
            Action::MakeDir { name, mode } => {
                f.debug_struct("MakeDir").field("name", name).field("mode", mode).finish()
            }
            Action::MakeLink { name, target, overwrite } => f
                .debug_struct("MakeLink")
                .field("name", name)
                .field("target", target)
                .field("overwrite", overwrite)
                .finish(),
            Action::Sync => f.write_str("Sync"),
            Action::WriteChunk { chunk, restart, .. } => {
                f.debug_struct("WriteChunk").field("len", &chunk.len()).field("restart", restart).finish()
            }
            Action::CreateKept { name, overwrite, .. } => {
                f.debug_struct("CreateKept").field("name", name).field("overwrite", overwrite).finish()
            }
            Action::CommitUpload { durable, restart } => {
                f.debug_struct("CommitUpload").field("durable", durable).field("restart", restart).finish()
            }
            Action::DiscardUpload => f.write_str("DiscardUpload"),
            Action::KeepUpload => f.write_str("KeepUpload"),
            Action::HashPrefix { len, .. } => f.debug_struct("HashPrefix").field("len", len).finish(),
            Action::Rewind => f.write_str("Rewind"),
            Action::OpenFile { name } => f.debug_struct("OpenFile").field("name", name).finish(),
            Action::ReadChunk { want, .. } => f.debug_struct("ReadChunk").field("want", want).finish(),
            Action::ListDir { name, recursive, checksum, after } => f
                .debug_struct("ListDir")
                .field("name", name)
                .field("recursive", recursive)
                .field("checksum", checksum)
                .field("after", after)
                .finish(),
            Action::Close(reply) => f.debug_tuple("Close").field(&reply.as_ref().map(header_text)).finish(),
            Action::Start { shown, .. } => f.debug_struct("Start").field("shown", shown).finish(),
            Action::WriteStdin(data) => f.debug_struct("WriteStdin").field("len", &data.len()).finish(),
            Action::CloseStdin => f.write_str("CloseStdin"),
            Action::Signal(name) => f.debug_tuple("Signal").field(name).finish(),
            Action::Resize(columns, lines) => f.debug_tuple("Resize").field(columns).field(lines).finish(),
        }
    }
}

fn header_text(reply: &Reply) -> String {
    String::from_utf8_lossy(reply.header.as_deref().unwrap_or_default()).into_owned()
}

/// A proof to check: [`ProofCheck::verify`] is pure and cheap, so the driver
/// may call it under the lock of its guess table.
pub struct ProofCheck {
    token: Vec<u8>,
    server_nonce: String,
    client_nonce: String,
    /// The nonce the proof says it answers.
    answered: Option<String>,
    proof: String,
    binding: Option<[u8; 32]>,
    /// The binding the client says it used, and this connection's.
    claimed: String,
    channel: &'static str,
}

impl ProofCheck {
    /// Right only if the proof is bound to this connection's channel, answers
    /// this connection's challenge, and holds the token (compared in constant time).
    pub fn verify(&self) -> bool {
        !self.mismatch()
            && self.answered.as_deref() == Some(self.server_nonce.as_str())
            && auth::verify(
                &self.token,
                auth::Role::Client,
                &self.server_nonce,
                &self.client_nonce,
                self.binding.as_ref().map(|b| &b[..]),
                &self.proof,
            )
    }

    /// The binding the client says it used is not this connection's: a
    /// client on TLS whose proof reaches us in plaintext (or the other way
    /// round) went through something in the middle.
    fn mismatch(&self) -> bool {
        self.claimed != self.channel
    }
}

/// What the session waits for the driver to report.
#[derive(Debug)]
enum Awaiting {
    Proof,
    Command,
    Handler,
    /// `resume`: the source's identity, for a resumable upload.
    Upload {
        name: String,
        size: u64,
        checksum: Checksum,
        durable: bool,
        resume: Option<Identity>,
    },
    Commit {
        name: String,
        size: u64,
        checksum: Checksum,
        digest: String,
        durable: bool,
    },
    MakeDir {
        name: String,
    },
    Link {
        name: String,
    },
    Sync,
    File {
        name: String,
        checksum: Checksum,
        chunk: usize,
        resume: Option<GetResume>,
    },
    Prefix {
        get: Get,
        digest: String,
    },
    Listing {
        name: String,
        recursive: bool,
    },
    Start {
        shown: String,
        pty: bool,
    },
}

/// An upload between `ready` and its `end` frame.
struct Put {
    name: String,
    size: u64,
    checksum: Checksum,
    chunk: usize,
    received: u64,
    /// Synced as it is stored (else by a later `sync`).
    durable: bool,
    /// `None` while a chunk is being written (the driver has it).
    hasher: Option<Hasher>,
    /// A chunk could not be written: told at the next frame.
    failed: Option<FileError>,
    /// A resumable upload: its source, and the offset offered in `ready`,
    /// until the first frame after it says where the data starts.
    resume: Option<(Identity, Option<u64>)>,
    /// The kept bytes are to be dropped before the next write (or commit).
    restart: Option<Identity>,
}

/// What a resumable `get` says the client kept.
#[derive(Debug)]
struct GetResume {
    offset: u64,
    prefix_digest: String,
    recorded: Identity,
}

/// How much longer than its idle timeout the server waits for the frame
/// after a resumable upload's `ready` offers `kept` bytes: the client hashes
/// its own first that many bytes first (allowed at 100 MB/s, a slow disk's pace).
pub fn hashing_allowance(kept: u64) -> Duration {
    Duration::from_secs(kept.div_ceil(100_000_000))
}

/// What [`Action::CreateKept`] found: how many bytes were kept, the
/// identity recorded for their source (if any), and their hash.
pub struct Kept {
    pub len: u64,
    pub recorded: Option<Identity>,
    pub hasher: Hasher,
}

/// A download between its `file` frame and its `end` frame; always a chunk
/// being read.
#[derive(Debug)]
struct Get {
    name: String,
    size: u64,
    checksum: Checksum,
    chunk: usize,
    sent: u64,
    /// The file's mtime (ns), if the driver gave it.
    mtime_ns: Option<i64>,
    /// The client asked to resume: the `file` frame says from where.
    resumed: bool,
}

enum State {
    /// Between requests.
    Idle,
    Awaiting(Awaiting),
    Put(Put),
    Get(Get),
    /// A live command runs (see `live.rs`).
    Live(live::Live),
    Closed,
}

/// One connection's protocol state (see the module comment).
pub struct ServerSession<'c> {
    config: &'c ServerConfig,
    handler: bool,
    channel: Channel,
    /// The codec frames are decoded with now (see [`Action::LoggedIn`]).
    codec: Codec,
    authenticated: bool,
    server_nonce: Option<String>,
    nonces: fn() -> String,
    state: State,
    /// A file was stored without syncing since the last `sync`.
    unsynced: bool,
}

impl<'c> ServerSession<'c> {
    /// A session for a connection to a server with `config`; `handler`: the
    /// server passes frames to a handler rather than serving its own ops.
    pub fn new(config: &'c ServerConfig, handler: bool, channel: Channel) -> ServerSession<'c> {
        ServerSession {
            config,
            handler,
            channel,
            codec: opening_codec(config),
            authenticated: config.token.is_none(),
            server_nonce: None,
            nonces: auth::nonce,
            state: State::Idle,
            unsynced: false,
        }
    }

    /// Challenges use nonces from `nonces` rather than the OS's random
    /// source (for tests and the fuzz target, which need known nonces).
    pub fn with_nonces(mut self, nonces: fn() -> String) -> ServerSession<'c> {
        self.nonces = nonces;
        self
    }

    /// The codec to decode the peer's frames with, now.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// The token is proven (or the server has none).
    pub fn authenticated(&self) -> bool {
        self.authenticated
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// What to do before the first byte is read: nothing, or refuse
    /// plaintext from another machine on a TLS server.
    pub fn start(&mut self) -> Vec<Action> {
        match self.channel {
            Channel::PlainOnTls { local: false } => self.close(
                ErrorCode::TlsRequired,
                "this server takes TLS from other machines: connect with TLS (rframe.Client(tls=True), python -m \
                 rframe.client --tls)"
                    .into(),
            ),
            _ => vec![],
        }
    }

    /// Whether the bytes at the start of a request (nothing of it decoded
    /// yet) may be a raw command line: text, with a prefix the codec would
    /// refuse, or too few bytes to tell (a pause then decides). The driver
    /// then takes the rest of the burst and checks again.
    pub fn raw_line_start(&self, buf: &[u8]) -> bool {
        !self.handler && looks_raw(&self.codec, buf)
    }

    /// A frame from the peer.
    pub fn receive(&mut self, frame: Frame) -> Vec<Action> {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Idle => self.dispatch(frame),
            State::Put(put) => self.put_frame(put, frame),
            State::Live(live) => self.live_frame(live, frame),
            State::Closed => self.closed(),
            state => self.misdriven(state, "a frame"),
        }
    }

    /// A raw command line (the bytes of one burst, see [`Self::raw_line_start`]).
    pub fn receive_raw(&mut self, line: Vec<u8>) -> Vec<Action> {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Closed => return self.closed(),
            State::Idle => {}
            State::Put(put) => {
                self.state = State::Put(put);
            }
            state => self.misdriven(state, "a raw line"),
        }
        let mut actions = self.put_cut_off();
        if line.len() >= MAX_RAW_COMMAND {
            // Cut at the cap, its rest would run as a command of its own.
            let message = format!("a raw command line must be shorter than {} KiB", MAX_RAW_COMMAND / 1024);
            actions.extend(self.close(ErrorCode::TooLarge, message));
            return actions;
        }
        if matches!(self.state, State::Put(_)) {
            actions.extend(self.close(ErrorCode::BadRequest, UNEXPECTED_IN_PUT.into()));
            return actions;
        }
        if !self.authenticated {
            return self.close(ErrorCode::Auth, "this server needs a token: raw command lines are refused".into());
        }
        match raw_request(line) {
            Ok(request) => self.run(request, Bytes::new()),
            Err(reply) => self.respond(reply),
        }
    }

    /// The peer's bytes are no frame of this codec: the stream has lost its place.
    pub fn receive_error(&mut self, error: &FrameError) -> Vec<Action> {
        if self.is_closed() {
            return self.closed();
        }
        let mut actions = self.put_cut_off();
        let (code, message) = match error {
            _ if !self.authenticated => (ErrorCode::Auth, format!("authentication required ({error})")),
            FrameError::TooLarge { .. } => (ErrorCode::TooLarge, error.to_string()),
            _ => (ErrorCode::BadRequest, error.to_string()),
        };
        actions.extend(self.close(code, message));
        actions
    }

    /// One of the driver's deadlines passed.
    pub fn timed_out(&mut self, timeout: Timeout) -> Vec<Action> {
        if self.is_closed() {
            return self.closed();
        }
        let mut actions = self.put_cut_off();
        actions.extend(match timeout {
            // Still coming at the header deadline: cut there, its rest would
            // run as a command of its own.
            Timeout::RawLine => self.close(ErrorCode::Timeout, "the raw command line did not end in time".into()),
            _ if !self.authenticated => self.close(ErrorCode::Auth, "not authenticated in time".into()),
            Timeout::Idle => {
                let mut idle = vec![Action::Log(Level::Debug, "idle timeout".into())];
                idle.extend(self.close_quietly());
                idle
            }
            Timeout::Request => self.close(ErrorCode::Timeout, "request not received in time".into()),
        });
        actions
    }

    /// The connection ends without a word: the peer left (between requests or
    /// within one), a read failed, or the server stops.
    pub fn connection_lost(&mut self) -> Vec<Action> {
        if self.is_closed() {
            return self.closed();
        }
        let mut actions = self.put_cut_off();
        actions.extend(self.close_quietly());
        actions
    }

    /// A reply could not be sent: the connection is over.
    pub fn send_failed(&mut self, error: &std::io::Error) -> Vec<Action> {
        let log = match &self.state {
            State::Get(get) => Action::Log(Level::Info, format!("get {:?} cut off: {error}", get.name)),
            _ => Action::Log(Level::Debug, format!("send failed: {error}")),
        };
        let mut actions = vec![log];
        actions.extend(self.close_quietly());
        actions
    }

    fn dispatch(&mut self, frame: Frame) -> Vec<Action> {
        let request = match &frame.header {
            Some(h) if !self.handler || !self.authenticated => match protocol::parse_request(h) {
                Ok(r) => Some(r),
                Err(e) if self.authenticated => return self.respond(Reply::error(ErrorCode::BadRequest, &e)),
                Err(e) => return self.close(ErrorCode::Auth, format!("authentication required ({e})")),
            },
            _ => None,
        };
        if let Some(request) = request.as_ref().filter(|r| r.op.as_deref() == Some("auth")) {
            return self.authenticate(request.clone());
        }
        if !self.authenticated {
            return self.close(ErrorCode::Auth, "authentication required: send an auth request first".into());
        }
        if self.handler {
            self.state = State::Awaiting(Awaiting::Handler);
            return vec![Action::CallHandler(frame)];
        }
        let request = request.unwrap_or_default();
        match request.op.as_deref() {
            Some("run") => self.run(request, frame.body),
            Some("put") => self.put(&frame),
            Some("get") => self.get(&frame),
            Some("list") => self.list(&frame),
            Some("mkdir") => self.mkdir(&frame),
            Some("symlink") => self.symlink(&frame),
            Some("sync") => self.sync(&frame),
            Some(protocol::FEATURES_OP) => self.features(),
            Some("start") => self.start_live(request, &frame),
            // What a client sent a live command that ended meanwhile: its
            // `exit` frame crossed them on the way.
            Some("stdin" | "signal" | "resize") => vec![],
            Some(op @ ("data" | "end")) => {
                let message = format!("a {op:?} frame outside a put");
                self.respond(Reply::error(ErrorCode::BadRequest, &message))
            }
            Some(op) => {
                let message = format!("unknown op {op:?}: this server knows {KNOWN_OPS}");
                self.respond(Reply::error(ErrorCode::BadRequest, &message))
            }
            None => self.respond(Reply::error(
                ErrorCode::BadRequest,
                "request header has no \"op\": this server runs commands (op \"run\")",
            )),
        }
    }

    // --- login --------------------------------------------------------------

    fn authenticate(&mut self, request: RequestHeader) -> Vec<Action> {
        let Some(token) = &self.config.token else {
            return self.respond(Reply::new(Some(protocol::op_header("welcome", &[], 0)), Bytes::new()));
        };
        let binding = match self.channel {
            Channel::Tls(hash) => Some(hash),
            _ => None,
        };
        let channel = if binding.is_some() { auth::TLS_SERVER_END_POINT } else { auth::NO_BINDING };
        let Some(proof) = request.proof else {
            let nonce = (self.nonces)();
            let mut fields = serde_json::Map::new();
            fields.insert("op".into(), "challenge".into());
            fields.insert("nonce".into(), nonce.as_str().into());
            fields.insert("version".into(), auth::VERSION.into());
            fields.insert("channel_binding".into(), channel.into());
            self.server_nonce = Some(nonce);
            return self.respond(Reply::new(Some(protocol::json_header(fields, 0)), Bytes::new()));
        };
        // A proof with no challenge before it guesses nothing: refused without
        // a turn, so a stream of them cannot keep real logins waiting.
        let (Some(server_nonce), Some(client_nonce)) = (self.server_nonce.take(), request.client_nonce) else {
            return self.login_failed("proof without a challenge".into());
        };
        self.state = State::Awaiting(Awaiting::Proof);
        vec![Action::CheckProof(ProofCheck {
            token: token.clone(),
            server_nonce,
            client_nonce,
            answered: request.nonce,
            proof,
            binding,
            // Such a proof counts as a wrong one, turn and all, so it teaches
            // a guesser nothing faster.
            claimed: request.channel_binding.unwrap_or_else(|| auth::NO_BINDING.into()),
            channel,
        })]
    }

    /// What a [`Action::CheckProof`] found: `right` is what
    /// [`ProofCheck::verify`] said.
    pub fn proof_checked(&mut self, check: ProofCheck, right: bool) -> Vec<Action> {
        self.expect(|a| matches!(a, Awaiting::Proof), "proof_checked");
        if !right {
            if check.mismatch() {
                let why = format!(
                    "channel binding mismatch (the client's proof is bound to {:?}, this connection is {:?}): a \
                     relay in the middle?",
                    check.claimed, check.channel
                );
                return self.login_failed(why);
            }
            return self.login_failed("wrong token".into());
        }
        self.authenticated = true;
        self.codec = self.config.codec;
        let binding = check.binding.as_ref().map(|b| &b[..]);
        let server_proof =
            auth::proof(&check.token, auth::Role::Server, &check.server_nonce, &check.client_nonce, binding);
        let mut actions =
            vec![Action::LoggedIn { codec: self.codec }, Action::Log(Level::Info, "authenticated".into())];
        actions.extend(
            self.respond(Reply::new(
                Some(protocol::op_header("welcome", &[("proof", &server_proof)], 0)),
                Bytes::new(),
            )),
        );
        actions
    }

    /// A failed login is logged and answered after a pause.
    fn login_failed(&mut self, why: String) -> Vec<Action> {
        let mut actions = vec![
            Action::Log(Level::Warning, format!("authentication failed: {why}")),
            Action::Pause(AUTH_FAILURE_DELAY),
        ];
        actions.extend(self.close(ErrorCode::Auth, "authentication failed".into()));
        actions
    }

    // --- commands and the handler -------------------------------------------

    fn run(&mut self, request: RequestHeader, body: Bytes) -> Vec<Action> {
        let shown = shown(&request);
        match command_spec(self.config, request, body, Some(self.config.timeout)) {
            Ok(spec) => {
                self.state = State::Awaiting(Awaiting::Command);
                vec![Action::Run { spec, shown }]
            }
            Err(reply) => {
                let mut actions = vec![Action::Log(Level::Warning, format!("refused {shown}"))];
                actions.extend(self.respond(reply));
                actions
            }
        }
    }

    /// What an [`Action::Run`] gave: the command's output, or why it could
    /// not start. `shown` as the action had it.
    pub fn command_done(&mut self, shown: &str, output: std::io::Result<CommandOutput>) -> Vec<Action> {
        self.expect(|a| matches!(a, Awaiting::Command), "command_done");
        let out = match output {
            Ok(out) => out,
            Err(e) => {
                let mut actions = vec![Action::Log(Level::Warning, format!("could not start {shown}: {e}"))];
                actions.extend(self.respond(Reply::error(ErrorCode::Spawn, &format!("could not start {shown}: {e}"))));
                return actions;
            }
        };
        let mut actions = vec![Action::Log(
            Level::Info,
            format!(
                "ran {shown}: returncode {}{}, {:.3}s, {} bytes",
                out.returncode,
                if out.timed_out { " (timed out)" } else { "" },
                out.duration.as_secs_f64(),
                out.stdout.len() + out.stderr.len()
            ),
        )];
        if out.budget_ran_out {
            // Once per command, so a flood of output makes no flood of lines.
            let budget = self.config.output_budget;
            actions.push(Action::Log(
                Level::Warning,
                format!("output of {shown} truncated: the output budget ({budget} bytes, server-wide) is in use"),
            ));
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
            encoding: self.config.encoding.clone(),
            total_size: (out.stdout.len() + out.stderr.len()) as u64,
        };
        let mut body = out.stdout;
        body.extend_from_slice(&out.stderr);
        // The body keeps its bytes drawn from the budget until it is dropped:
        // once sent, or with a connection that ends first.
        let body = Bytes::from_owner(HeldOutput { bytes: body, _held: out.held });
        actions.extend(self.respond(Reply::new(Some(serde_json::to_vec(&header).expect("serializable")), body)));
        actions
    }

    /// What an [`Action::CallHandler`] gave: its reply, or the error it raised.
    pub fn handler_done(&mut self, result: Result<Reply, String>) -> Vec<Action> {
        self.expect(|a| matches!(a, Awaiting::Handler), "handler_done");
        match result {
            Ok(reply) => self.respond(reply),
            Err(message) => {
                let mut actions = vec![Action::Log(Level::Warning, format!("handler failed: {message}"))];
                actions.extend(self.respond(Reply::error(ErrorCode::Handler, &message)));
                actions
            }
        }
    }

    // --- files ---------------------------------------------------------------

    /// What a file request asked for, checked.
    fn file_call(&self, frame: &Frame, what: &str) -> Result<(FileRequest, Checksum), Reply> {
        if self.config.root.is_none() {
            return Err(Reply::error(
                ErrorCode::NotAllowed,
                "this server does not serve files (start it with --root DIR)",
            ));
        }
        let header = frame.header.as_deref().unwrap_or(b"{}");
        let request = protocol::parse_file_request(header).map_err(|e| bad(&e))?;
        let checksum = match request.checksum.as_deref() {
            None => protocol::FALLBACK_CHECKSUM,
            Some(name) => Checksum::from_name(name).ok_or_else(|| {
                let names: Vec<String> =
                    protocol::CHECKSUMS_OFFERED.iter().map(|c| format!("{:?}", c.name())).collect();
                bad(&format!("checksum must be one of {}, got {name:?}", names.join(", ")))
            })?,
        };
        let inline = what == "put" && request.inline;
        if !frame.body.is_empty() && !inline {
            return Err(bad(&format!("a {what} request has no body")));
        }
        if what != "list" && request.name.as_deref().is_some_and(|n| n.ends_with('/')) {
            return Err(bad(&format!("a {what} names a file, not a directory ending in \"/\"")));
        }
        Ok((request, checksum))
    }

    /// The largest `data` body: 1 MiB, or less under a small `max_body`.
    fn chunk_limit(&self) -> usize {
        CHUNK.min(self.config.codec.max_body.min(CHUNK as u64) as usize).max(1)
    }

    /// `put`: creates the upload, answers `ready`, takes `data` frames and the
    /// `end` frame, then stores the file if size and digest match.
    fn put(&mut self, frame: &Frame) -> Vec<Action> {
        let (request, checksum) = match self.file_call(frame, "put") {
            Ok(call) => call,
            Err(reply) => return self.respond(reply),
        };
        let (Some(name), Some(size)) = (request.name, request.size) else {
            return self.respond(bad("a put request needs \"name\" and \"size\""));
        };
        let durable = request.sync.unwrap_or(true);
        let (overwrite, mode) = (request.overwrite, request.mode);
        if !request.inline {
            let resume = request.resume.then(|| Identity { size, mtime_ns: request.mtime_ns.unwrap_or(0) });
            self.state = State::Awaiting(Awaiting::Upload { name: name.clone(), size, checksum, durable, resume });
            if resume.is_some() {
                return vec![Action::CreateKept { name, overwrite, mode, checksum }];
            }
            return vec![Action::CreateUpload { name, overwrite, mode }];
        }
        // The whole file in this frame: checked here, then stored in one action.
        let data = frame.body.clone();
        let chunk = self.chunk_limit();
        if data.len() > chunk {
            let message = format!("an inline put of {} bytes, over the chunk_size of {chunk}", data.len());
            return self.respond(Reply::error(ErrorCode::TooLarge, &message));
        }
        if data.len() as u64 != size {
            let message = format!("{name:?}: the put announced {size} bytes and sent {}: not stored", data.len());
            return self.respond(bad(&message));
        }
        let Some(claimed) = request.digest else {
            return self.respond(bad("an inline put needs its \"digest\": not stored"));
        };
        let digest = checksum.hex_digest(&data);
        if let Some(reply) = self.mismatch(&name, checksum, &claimed, &digest) {
            return reply;
        }
        self.state = State::Awaiting(Awaiting::Commit { name: name.clone(), size, checksum, digest, durable });
        vec![Action::StoreFile { name, overwrite, mode, data, durable }]
    }

    /// The refusal of an upload whose digest is not the one claimed.
    fn mismatch(&mut self, name: &str, checksum: Checksum, claimed: &str, digest: &str) -> Option<Vec<Action>> {
        if claimed.eq_ignore_ascii_case(digest) {
            return None;
        }
        let algorithm = checksum.name();
        let mut actions = vec![Action::Log(Level::Warning, format!("put {name:?}: {algorithm} mismatch: not stored"))];
        let message = format!(
            "{name:?}: {algorithm} mismatch: the client sent {claimed}, the server received {digest}: not stored"
        );
        actions.extend(self.respond(Reply::error(ErrorCode::Checksum, &message)));
        Some(actions)
    }

    /// What an [`Action::CreateUpload`] gave.
    pub fn upload_created(&mut self, created: Result<(), FileError>) -> Vec<Action> {
        let Awaiting::Upload { name, size, checksum, durable, resume: None } =
            self.expect(|a| matches!(a, Awaiting::Upload { resume: None, .. }), "upload_created")
        else {
            unreachable!()
        };
        if let Err(e) = created {
            return self.respond(file_error(&e));
        }
        let chunk = self.chunk_limit();
        let hasher = Some(Hasher::new(checksum));
        self.state = State::Put(Put {
            name,
            size,
            checksum,
            chunk,
            received: 0,
            durable,
            hasher,
            failed: None,
            resume: None,
            restart: None,
        });
        vec![Action::Reply(reply(json!({"op": "ready", "chunk_size": chunk}), Bytes::new()))]
    }

    /// What an [`Action::CreateKept`] gave. A kept part whose recorded
    /// source is not the one announced is refused (`changed`, the part
    /// kept); one that matches is offered (`offset` and `prefix_digest` in
    /// `ready`); anything else (nothing kept, no identity recorded, more
    /// kept than announced) starts over at 0.
    pub fn kept_opened(&mut self, opened: Result<Kept, FileError>) -> Vec<Action> {
        let Awaiting::Upload { name, size, checksum, durable, resume: Some(source) } =
            self.expect(|a| matches!(a, Awaiting::Upload { resume: Some(_), .. }), "kept_opened")
        else {
            unreachable!()
        };
        let kept = match opened {
            Ok(kept) => kept,
            Err(e) => return self.respond(file_error(&e)),
        };
        if kept.len > 0 && kept.recorded.is_some_and(|r| r != source) {
            let r = kept.recorded.expect("checked above");
            let message = format!(
                "{name:?}: the source changed since the kept part was written (it was {} bytes with mtime_ns {}, \
                 now {} bytes with mtime_ns {}): not resumed; send it with resume off to start over",
                r.size, r.mtime_ns, source.size, source.mtime_ns
            );
            let mut actions = vec![Action::KeepUpload, Action::Log(Level::Info, format!("put {name:?}: {message}"))];
            actions.extend(self.respond(Reply::error(ErrorCode::Changed, &message)));
            return actions;
        }
        let offer = if kept.recorded == Some(source) && kept.len <= size { kept.len } else { 0 };
        let chunk = self.chunk_limit();
        let mut head = json!({"op": "ready", "chunk_size": chunk, "offset": offer});
        let hasher = if offer > 0 {
            head["prefix_digest"] = kept.hasher.clone().hex_digest().into();
            kept.hasher
        } else {
            Hasher::new(checksum)
        };
        self.state = State::Put(Put {
            name,
            size,
            checksum,
            chunk,
            received: offer,
            durable,
            hasher: Some(hasher),
            failed: None,
            resume: Some((source, Some(offer))),
            restart: None,
        });
        vec![Action::Reply(reply(head, Bytes::new()))]
    }

    /// A resumable upload's first frame after `ready` says where its data
    /// starts (`offset`, default 0): the offset offered, or 0 to start over.
    fn resume_at(&self, put: &mut Put, offset: Option<u64>) -> Result<(), String> {
        let Some((source, Some(offered))) = put.resume else { return Ok(()) };
        let at = offset.unwrap_or(0);
        if at == offered && at > 0 {
            // The kept bytes stand: the data goes on after them.
        } else if at == 0 {
            put.received = 0;
            put.hasher = Some(Hasher::new(put.checksum));
            put.restart = Some(source);
        } else {
            return Err(format!("the data starts at offset {at}, but the server offered {offered} or 0"));
        }
        put.resume = Some((source, None));
        Ok(())
    }

    /// What an [`Action::WriteChunk`] gave: the hasher back, or why the chunk
    /// could not be written (the upload is then gone).
    pub fn chunk_written(&mut self, written: Result<Hasher, FileError>) {
        let State::Put(put) = &mut self.state else { panic!("chunk_written outside a put") };
        assert!(put.hasher.is_none() && put.failed.is_none(), "chunk_written with no chunk being written");
        match written {
            Ok(hasher) => put.hasher = Some(hasher),
            Err(e) => put.failed = Some(e),
        }
    }

    fn put_frame(&mut self, mut put: Put, frame: Frame) -> Vec<Action> {
        assert!(put.hasher.is_some() || put.failed.is_some(), "a frame fed before the chunk before it was written");
        let next = transfer_frame(&frame, put.chunk);
        if let Some(e) = put.failed.take() {
            return match next {
                // The end is in: the connection is in step, so a reply can say it.
                Ok(TransferFrame::End(_)) => self.respond(file_error(&e)),
                // More data is on its way: no answer can be in step.
                Ok(TransferFrame::Data(..)) => self.close(ErrorCode::Io, format!("{e}: not stored")),
                Err((code, message)) => self.close(code, message),
            };
        }
        let offset = match &next {
            Ok(TransferFrame::Data(_, offset)) => *offset,
            Ok(TransferFrame::End(end)) => end.offset,
            Err(_) => None,
        };
        if let Err(message) = self.resume_at(&mut put, offset) {
            self.state = State::Put(put);
            let mut actions = self.put_cut_off();
            actions.extend(self.close(ErrorCode::BadRequest, message));
            return actions;
        }
        match next {
            Err((code, message)) => {
                self.state = State::Put(put);
                let mut actions = self.put_cut_off();
                actions.extend(self.close(code, message));
                actions
            }
            Ok(TransferFrame::Data(body, _)) => {
                put.received += body.len() as u64;
                if put.received > put.size {
                    let message = format!("more data than the {} bytes the put announced: not stored", put.size);
                    return self.close(ErrorCode::BadRequest, message);
                }
                let hasher = put.hasher.take().expect("checked above");
                let restart = put.restart.take();
                self.state = State::Put(put);
                vec![Action::WriteChunk { chunk: body, hasher, restart }]
            }
            Ok(TransferFrame::End(end)) => self.put_end(put, end),
        }
    }

    fn put_end(&mut self, put: Put, end: FileRequest) -> Vec<Action> {
        let Put { name, size, checksum, received, hasher, durable, restart, .. } = put;
        let digest = hasher.expect("no chunk being written").hex_digest();
        let mut actions = vec![Action::DiscardUpload];
        if received != size {
            let message = format!("{name:?}: the put announced {size} bytes and sent {received}: not stored");
            actions.extend(self.respond(bad(&message)));
            return actions;
        }
        if end.checksum.as_deref().is_some_and(|c| c != checksum.name()) {
            let message = format!("the end frame names another checksum than the put ({:?})", checksum.name());
            actions.extend(self.respond(bad(&message)));
            return actions;
        }
        let Some(claimed) = end.digest else {
            actions.extend(self.respond(bad("the end frame has no \"digest\": not stored")));
            return actions;
        };
        if let Some(refused) = self.mismatch(&name, checksum, &claimed, &digest) {
            actions.extend(refused);
            return actions;
        }
        self.state = State::Awaiting(Awaiting::Commit { name, size, checksum, digest, durable });
        vec![Action::CommitUpload { durable, restart }]
    }

    /// What an [`Action::CommitUpload`] or [`Action::StoreFile`] gave:
    /// stored (perhaps with a failure to sync the directory, which is
    /// logged), or not.
    pub fn upload_committed(&mut self, committed: Result<Option<std::io::Error>, FileError>) -> Vec<Action> {
        let Awaiting::Commit { name, size, checksum, digest, durable } =
            self.expect(|a| matches!(a, Awaiting::Commit { .. }), "upload_committed")
        else {
            unreachable!()
        };
        let mut actions = vec![];
        match committed {
            Err(e) => return self.respond(file_error(&e)),
            Ok(Some(e)) => actions
                .push(Action::Log(Level::Warning, format!("stored {name:?}, but syncing its directory failed: {e}"))),
            Ok(None) => {}
        }
        self.unsynced |= !durable;
        actions.push(Action::Log(Level::Info, format!("stored {name:?}: {size} bytes")));
        let stored = json!({"op": "stored", "name": name, "size": size, "checksum": checksum.name(), "digest": digest});
        actions.extend(self.respond(reply(stored, Bytes::new())));
        actions
    }

    /// `mkdir`: a directory and those above it, beneath the root.
    fn mkdir(&mut self, frame: &Frame) -> Vec<Action> {
        let (request, _) = match self.file_call(frame, "mkdir") {
            Ok(call) => call,
            Err(reply) => return self.respond(reply),
        };
        let Some(name) = request.name else {
            return self.respond(bad("a mkdir request needs \"name\""));
        };
        self.state = State::Awaiting(Awaiting::MakeDir { name: name.clone() });
        vec![Action::MakeDir { name, mode: request.mode }]
    }

    /// What an [`Action::MakeDir`] gave.
    pub fn dir_made(&mut self, made: Result<(), FileError>) -> Vec<Action> {
        let Awaiting::MakeDir { name } = self.expect(|a| matches!(a, Awaiting::MakeDir { .. }), "dir_made") else {
            unreachable!()
        };
        match made {
            Err(e) => self.respond(file_error(&e)),
            Ok(()) => self.respond(reply(json!({"op": "made", "name": name}), Bytes::new())),
        }
    }

    /// `symlink`: a link whose target stays beneath the root.
    fn symlink(&mut self, frame: &Frame) -> Vec<Action> {
        let (request, _) = match self.file_call(frame, "symlink") {
            Ok(call) => call,
            Err(reply) => return self.respond(reply),
        };
        let (Some(name), Some(target)) = (request.name, request.target) else {
            return self.respond(bad("a symlink request needs \"name\" and \"target\""));
        };
        if let Err(e) = crate::files::check_link_target(&name, &target) {
            return self.respond(file_error(&e));
        }
        self.state = State::Awaiting(Awaiting::Link { name: name.clone() });
        vec![Action::MakeLink { name, target, overwrite: request.overwrite }]
    }

    /// What an [`Action::MakeLink`] gave.
    pub fn link_made(&mut self, made: Result<(), FileError>) -> Vec<Action> {
        let Awaiting::Link { name } = self.expect(|a| matches!(a, Awaiting::Link { .. }), "link_made") else {
            unreachable!()
        };
        match made {
            Err(e) => self.respond(file_error(&e)),
            Ok(()) => self.respond(reply(json!({"op": "linked", "name": name}), Bytes::new())),
        }
    }

    /// `sync`: what this connection stored without syncing is made durable.
    fn sync(&mut self, frame: &Frame) -> Vec<Action> {
        if let Err(reply) = self.file_call(frame, "sync") {
            return self.respond(reply);
        }
        if !self.unsynced {
            return self.respond(reply(json!({"op": "synced"}), Bytes::new()));
        }
        self.state = State::Awaiting(Awaiting::Sync);
        vec![Action::Sync]
    }

    /// What this server offers (PROTOCOL.md, "features"): the checksums it
    /// verifies files with, the one a client should pick first.
    fn features(&mut self) -> Vec<Action> {
        let checksums: Vec<&str> = protocol::CHECKSUMS_OFFERED.iter().map(|c| c.name()).collect();
        self.respond(reply(json!({"op": protocol::FEATURES_OP, "checksums": checksums}), Bytes::new()))
    }

    /// What an [`Action::Sync`] gave.
    pub fn synced(&mut self, synced: Result<(), FileError>) -> Vec<Action> {
        self.expect(|a| matches!(a, Awaiting::Sync), "synced");
        match synced {
            Err(e) => self.respond(file_error(&e)),
            Ok(()) => {
                self.unsynced = false;
                self.respond(reply(json!({"op": "synced"}), Bytes::new()))
            }
        }
    }

    /// `get`: a `file` frame with the size, `data` frames, and an `end` frame
    /// with the digest of what was sent (or an `io` error instead).
    fn get(&mut self, frame: &Frame) -> Vec<Action> {
        let (request, checksum) = match self.file_call(frame, "get") {
            Ok(call) => call,
            Err(reply) => return self.respond(reply),
        };
        let Some(name) = request.name else {
            return self.respond(bad("a get request needs \"name\""));
        };
        let asked = request.chunk_size.unwrap_or(CHUNK as u64).max(1);
        let chunk = self.chunk_limit().min(asked.min(CHUNK as u64) as usize);
        let resume = match (request.offset, request.prefix_digest, request.size, request.mtime_ns) {
            (None, ..) => None,
            (Some(offset), Some(prefix_digest), Some(size), Some(mtime_ns)) => {
                Some(GetResume { offset, prefix_digest, recorded: Identity { size, mtime_ns } })
            }
            _ => {
                return self
                    .respond(bad("a resumed get needs \"offset\", \"prefix_digest\", \"size\" and \"mtime_ns\""))
            }
        };
        self.state = State::Awaiting(Awaiting::File { name: name.clone(), checksum, chunk, resume });
        vec![Action::OpenFile { name }]
    }

    /// What an [`Action::OpenFile`] gave: the file's size, or why not.
    pub fn file_opened(&mut self, opened: Result<u64, FileError>) -> Vec<Action> {
        self.file_opened_at(opened.map(|size| (size, None)))
    }

    /// [`ServerSession::file_opened`] with the file's mtime (ns), which the
    /// `file` frame carries (a client records it to resume), and which a
    /// resumed `get` must find unchanged (`changed` otherwise). A resumed
    /// get whose kept bytes fit the file has them hashed
    /// ([`Action::HashPrefix`]) before anything is sent.
    pub fn file_opened_at(&mut self, opened: Result<(u64, Option<i64>), FileError>) -> Vec<Action> {
        let Awaiting::File { name, checksum, chunk, resume } =
            self.expect(|a| matches!(a, Awaiting::File { .. }), "file_opened")
        else {
            unreachable!()
        };
        let (size, mtime_ns) = match opened {
            Ok(opened) => opened,
            Err(e) => return self.respond(file_error(&e)),
        };
        let get = Get { name, size, checksum, chunk, sent: 0, mtime_ns, resumed: resume.is_some() };
        let Some(resume) = resume else { return self.send_file(get, Hasher::new(checksum), false) };
        let now = Identity { size, mtime_ns: mtime_ns.unwrap_or(0) };
        if resume.recorded != now {
            let r = resume.recorded;
            let message = format!(
                "{:?}: the source changed since the kept part was written (it was {} bytes with mtime_ns {}, now {} \
                 bytes with mtime_ns {}): not resumed; fetch it with resume off to start over",
                get.name, r.size, r.mtime_ns, now.size, now.mtime_ns
            );
            return self.respond(Reply::error(ErrorCode::Changed, &message));
        }
        if resume.offset == 0 || resume.offset > size {
            return self.send_file(get, Hasher::new(checksum), false);
        }
        let len = resume.offset;
        self.state = State::Awaiting(Awaiting::Prefix { get, digest: resume.prefix_digest });
        vec![Action::HashPrefix { len, hasher: Hasher::new(checksum) }]
    }

    /// What an [`Action::HashPrefix`] gave: the hash of the file's first
    /// bytes. If it is the client's, only the rest is sent; if not, all of it.
    pub fn prefix_hashed(&mut self, hashed: Result<(u64, Hasher), FileError>) -> Vec<Action> {
        let Awaiting::Prefix { mut get, digest } =
            self.expect(|a| matches!(a, Awaiting::Prefix { .. }), "prefix_hashed")
        else {
            unreachable!()
        };
        let (len, hasher) = match hashed {
            Ok(hashed) => hashed,
            Err(e) => return self.respond(file_error(&e)),
        };
        if hasher.clone().hex_digest().eq_ignore_ascii_case(&digest) {
            get.sent = len;
            return self.send_file(get, hasher, false);
        }
        let checksum = get.checksum;
        self.send_file(get, Hasher::new(checksum), true)
    }

    /// The `file` frame, then the data from `get.sent` on (`rewind`: the
    /// file is read from its start again).
    fn send_file(&mut self, get: Get, hasher: Hasher, rewind: bool) -> Vec<Action> {
        let mut head = json!({"op": "file", "name": get.name, "size": get.size, "checksum": get.checksum.name()});
        if let Some(mtime_ns) = get.mtime_ns {
            head["mtime_ns"] = mtime_ns.into();
        }
        if get.resumed {
            head["offset"] = get.sent.into();
        }
        let mut actions = if rewind { vec![Action::Rewind] } else { vec![] };
        // One chunk is read while the frame before it goes out.
        actions.push(Action::ReadChunk { want: chunk_of(get.chunk, get.size - get.sent), hasher });
        actions.push(Action::Reply(reply(head, Bytes::new())));
        self.state = State::Get(get);
        actions
    }

    /// What an [`Action::ReadChunk`] gave: the hasher back and the bytes
    /// (none: the file ended early), or a read error.
    pub fn chunk_read(&mut self, read: Result<(Hasher, Vec<u8>), FileError>) -> Vec<Action> {
        let State::Get(mut get) = std::mem::replace(&mut self.state, State::Idle) else {
            panic!("chunk_read outside a get")
        };
        let (hasher, buf) = match read {
            Ok(read) => read,
            Err(e) => return self.respond(file_error(&e)),
        };
        if buf.is_empty() {
            return self.get_end(get, hasher);
        }
        get.sent += buf.len() as u64;
        let data = Action::Reply(Reply::new(Some(protocol::data_header(buf.len())), buf.into()));
        if get.sent < get.size {
            let read = Action::ReadChunk { want: chunk_of(get.chunk, get.size - get.sent), hasher };
            self.state = State::Get(get);
            return vec![read, data];
        }
        let mut actions = vec![data];
        actions.extend(self.get_end(get, hasher));
        actions
    }

    fn get_end(&mut self, get: Get, hasher: Hasher) -> Vec<Action> {
        let Get { name, size, checksum, sent, .. } = get;
        if sent != size {
            return self.respond(Reply::error(
                ErrorCode::Io,
                &format!("{name:?} shrank from {size} to {sent} bytes while it was sent"),
            ));
        }
        let digest = hasher.hex_digest();
        let end = json!({"op": "end", "name": name, "size": size, "checksum": checksum.name(), "digest": digest});
        let mut actions = vec![Action::Log(Level::Info, format!("sent {name:?}: {size} bytes"))];
        actions.extend(self.respond(reply(end, Bytes::new())));
        actions
    }

    /// `list`: a `listing` frame whose body is a JSON array of entries.
    fn list(&mut self, frame: &Frame) -> Vec<Action> {
        let (request, checksum) = match self.file_call(frame, "list") {
            Ok(call) => call,
            Err(reply) => return self.respond(reply),
        };
        let name = request.name.unwrap_or_default();
        let checksum = match request.checksum {
            Some(_) if request.recursive => Some(checksum),
            _ => None,
        };
        self.state = State::Awaiting(Awaiting::Listing { name: name.clone(), recursive: request.recursive });
        let after = request.after.filter(|_| request.recursive);
        vec![Action::ListDir { name, recursive: request.recursive, checksum, after }]
    }

    /// What an [`Action::ListDir`] gave: the entries and whether there were
    /// more, or why not.
    pub fn listed(&mut self, listed: Result<(Vec<Entry>, bool), FileError>) -> Vec<Action> {
        let Awaiting::Listing { name, recursive } = self.expect(|a| matches!(a, Awaiting::Listing { .. }), "listed")
        else {
            unreachable!()
        };
        let (entries, mut truncated) = match listed {
            Ok(listed) => listed,
            Err(e) => return self.respond(file_error(&e)),
        };
        // Within what a client with the same codec takes.
        let limit = MAX_LISTING.min(self.config.codec.max_body.min(MAX_LISTING as u64) as usize);
        let items = entries.iter().map(|e| {
            let mut item =
                json!({"name": e.name, "type": e.kind.name(), "size": e.size, "mtime": e.mtime, "mode": e.mode});
            if let Some(target) = &e.target {
                item["target"] = target.as_str().into();
            }
            if let Some(digest) = &e.digest {
                item["digest"] = digest.as_str().into();
            }
            serde_json::to_vec(&item).expect("serializable")
        });
        let (body, count, cut) = json_array_within(items, limit);
        truncated |= cut;
        let mut head = json!({"op": "listing", "name": name, "count": count, "truncated": truncated});
        if recursive {
            // Says the tree was listed: a server that predates trees lists `name` alone.
            head["recursive"] = true.into();
        }
        self.respond(reply(head, body.into()))
    }

    // --- helpers -------------------------------------------------------------

    /// The reply that ends a request (the caller has set the state). An
    /// error with a length-only codec has no header to say it in: closing
    /// is the only honest answer.
    fn respond(&mut self, reply: Reply) -> Vec<Action> {
        if reply.error.is_some() && !self.config.codec.json_header {
            return self.close_quietly();
        }
        vec![Action::Reply(reply)]
    }

    /// Tell the peer why, then close (a length-only codec cannot tell).
    fn close(&mut self, code: ErrorCode, message: String) -> Vec<Action> {
        self.state = State::Closed;
        let log = Action::Log(Level::Warning, format!("closing: {message}"));
        vec![log, Action::Close(self.config.codec.json_header.then(|| Reply::error(code, &message)))]
    }

    fn close_quietly(&mut self) -> Vec<Action> {
        self.state = State::Closed;
        vec![Action::Close(None)]
    }

    fn closed(&mut self) -> Vec<Action> {
        self.state = State::Closed;
        vec![]
    }

    /// An upload ends before its `end` frame: logged (the caller closes).
    fn put_cut_off(&self) -> Vec<Action> {
        match &self.state {
            State::Put(put) => vec![Action::Log(Level::Info, format!("put {:?} cut off: not stored", put.name))],
            _ => vec![],
        }
    }

    /// Takes what the session awaits, which must be what `is` says.
    fn expect(&mut self, is: impl Fn(&Awaiting) -> bool, what: &str) -> Awaiting {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Awaiting(awaiting) if is(&awaiting) => awaiting,
            state => self.misdriven(state, what),
        }
    }

    fn misdriven(&mut self, state: State, what: &str) -> ! {
        let now = match state {
            State::Idle => "between requests".to_owned(),
            State::Awaiting(a) => format!("awaiting {a:?}"),
            State::Put(put) => format!("in the put of {:?}", put.name),
            State::Get(get) => format!("in the get of {:?}", get.name),
            State::Live(live) => format!("running {}", live.shown),
            State::Closed => "closed".to_owned(),
        };
        panic!("the driver fed {what} to a server session {now}")
    }
}

/// A request's command as logs quote it.
fn shown(request: &RequestHeader) -> String {
    match &request.cmd {
        Some(Cmd::Line(l)) => format!("{l:?}"),
        Some(Cmd::Argv(a)) => format!("{a:?}"),
        None => "nothing".into(),
    }
}

/// The requests a server without a handler serves, for the error that names them.
const KNOWN_OPS: &str =
    "\"run\", \"start\", \"put\", \"get\", \"list\", \"mkdir\", \"symlink\", \"sync\" and \"features\"";

/// Expected in a put, and not: ends the connection.
const UNEXPECTED_IN_PUT: &str = "expected a data or end frame of the put in progress";

fn chunk_of(chunk: usize, left: u64) -> usize {
    chunk.min(usize::try_from(left).unwrap_or(usize::MAX))
}

enum TransferFrame {
    // (a data frame's body and its `offset`, if any)
    Data(Bytes, Option<u64>),
    End(FileRequest),
}

/// The next frame of a put in progress: a `data` body of at most `chunk`
/// bytes, or the `end` frame. Anything else ends the connection.
fn transfer_frame(frame: &Frame, chunk: usize) -> Result<TransferFrame, (ErrorCode, String)> {
    let header = frame.header.as_deref().unwrap_or(b"{}");
    let header = protocol::parse_file_request(header).map_err(|e| (ErrorCode::BadRequest, e))?;
    match header.op.as_deref() {
        Some("data") if frame.body.len() > chunk => Err((
            ErrorCode::TooLarge,
            format!("a data frame of {} bytes, over the chunk_size of {chunk}", frame.body.len()),
        )),
        Some("data") => Ok(TransferFrame::Data(frame.body.clone(), header.offset)),
        Some("end") => Ok(TransferFrame::End(header)),
        _ => Err((ErrorCode::BadRequest, UNEXPECTED_IN_PUT.into())),
    }
}

fn bad(message: &str) -> Reply {
    Reply::error(ErrorCode::BadRequest, message)
}

fn file_error(e: &FileError) -> Reply {
    let code = match e {
        FileError::BadName(..) | FileError::IsDirectory(_) | FileError::NotDirectory(_) | FileError::NotRegular(_) => {
            ErrorCode::BadRequest
        }
        FileError::Outside(_) | FileError::BadLink(..) => ErrorCode::NotAllowed,
        FileError::NotFound(_) => ErrorCode::NotFound,
        FileError::Exists(_) => ErrorCode::Exists,
        FileError::Io { .. } => ErrorCode::Io,
    };
    Reply::error(code, &e.to_string())
}

fn reply(fields: serde_json::Value, body: Bytes) -> Reply {
    let serde_json::Value::Object(fields) = fields else { unreachable!("reply headers are objects") };
    let len = body.len() as u64;
    Reply::new(Some(protocol::json_header(fields, len)), body)
}

/// A JSON array of the `items` (each a JSON value's text) that fit in `limit`
/// bytes, brackets and separators included: the array, how many it holds,
/// and whether any were left out.
fn json_array_within(items: impl Iterator<Item = Vec<u8>>, limit: usize) -> (Vec<u8>, usize, bool) {
    let mut body = b"[".to_vec();
    let mut count = 0;
    for item in items {
        let separator = if count > 0 { 2 } else { 0 };
        if body.len() + separator + item.len() + 1 > limit {
            return (close_array(body), count, true);
        }
        if count > 0 {
            body.extend_from_slice(b", ");
        }
        body.extend_from_slice(&item);
        count += 1;
    }
    (close_array(body), count, false)
}

fn close_array(mut body: Vec<u8>) -> Vec<u8> {
    body.push(b']');
    body
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
/// `limit`: the server's time limit for such a command, `None` for none.
pub fn command_spec(
    config: &ServerConfig,
    request: RequestHeader,
    body: Bytes,
    limit: Option<Duration>,
) -> Result<CommandSpec, Reply> {
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
    // No limit is the longest one a deadline can hold.
    let limit = limit.unwrap_or(Duration::from_secs_f64(super::MAX_SECONDS));
    let timeout = match request.timeout {
        Some(t) if t.is_finite() && t > 0.0 => limit.min(Duration::from_secs_f64(t.min(super::MAX_SECONDS))),
        Some(t) => {
            return Err(bad(ErrorCode::BadRequest, format!("timeout must be a positive number of seconds, got {t}")))
        }
        None => limit,
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

mod live;
#[cfg(test)]
mod tests;
