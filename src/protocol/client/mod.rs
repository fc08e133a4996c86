//! The command protocol's client side, without I/O (in the manner of h11):
//! a [`ClientSession`] makes the bytes of requests, takes whatever bytes
//! arrived, and hands back typed [`Event`]s. It owns every rule of the
//! client's side of PROTOCOL.md: the FIFO of requests in flight, the token
//! handshake (its proofs and channel-binding checks), the steps of `put`,
//! `get` and `list`, what an `error` frame means and whether the server closes
//! after it, and what a cancelled request leaves behind. It owns no socket, no
//! clock and no file: a driver (a blocking loop, an asyncio protocol) moves the
//! bytes, keeps the deadlines, and does the disk work and hashing of
//! transfers.
//!
//! The driver's loop:
//! 1. a call makes a request: `let (id, bytes) = session.run(header, body)?`;
//!    the driver writes `bytes` and waits for an event about `id`;
//! 2. bytes that arrive go to [`ClientSession::receive_data`] (the end of the
//!    stream to [`ClientSession::receive_eof`]), then
//!    [`ClientSession::next_event`] until `None`; every event names the
//!    request it answers, in the order they were made;
//! 3. [`Event::Send`] asks for bytes the session wrote itself (the login's
//!    answer); [`Event::Closed`] says the connection is over (the server
//!    closed it or will, or it broke the protocol): the driver closes its
//!    socket and fails whatever still waits. Nothing follows it.
//!
//! A caller that gives up on a request (cancelled, timed out) calls
//! [`ClientSession::cancel`]: a plain request's reply is then dropped when it
//! comes; a command, a login step or a file transfer cannot be left halfway,
//! and the connection must close.

mod live;
mod repr;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use jiter::JsonValue;

pub use repr::{bytes_repr, frame_repr, header_repr, str_repr};
use repr::{get, members_repr, parse_object, value_repr, value_str, Members};

use super::auth::{self, Role};
use crate::codec::{Codec, Decoder, Frame, FrameError};

/// A request's number on its connection: 0, 1, 2, ... in the order made.
pub type RequestId = u64;

/// The largest chunk a client sends or asks for (the server may ask for less).
pub use super::TRANSFER_CHUNK as CHUNK;

/// The checksums a transfer may name: those a server offers, in its order.
pub const CHECKSUMS: [&str; 3] = {
    let offered = super::CHECKSUMS_OFFERED;
    [offered[0].name(), offered[1].name(), offered[2].name()]
};

/// Whether the server closes the connection after an error with this code
/// (`ErrorCode::closes`; `_protocol.CLOSING_CODES` is derived from it too).
pub use super::error_closes as closes_connection;

/// Why the session closed after the server failed to prove the token.
pub const AUTH_SERVER_FAILED: &str = "the server failed to prove it holds the token";
/// Why the session closed after a download broke its protocol.
pub const DOWNLOAD_BROKEN: &str = "the server broke the download protocol";
/// Why the session closed after an upload broke its protocol.
pub const UPLOAD_BROKEN: &str = "the server broke the upload protocol";
/// Why the session closed when a transfer was cancelled halfway.
pub const TRANSFER_CUT: &str = "a file transfer was cancelled or timed out halfway; the connection was closed";
/// Why the session closed when a `run` was cancelled while its command ran.
pub const RUN_CANCELLED: &str =
    "a run() was cancelled or timed out while its command ran; the connection was closed so that the server kills the command";
/// Why the session closed when a live command's caller gave up on it.
pub const LIVE_CANCELLED: &str =
    "a live command was abandoned while it ran; the connection was closed so that the server kills the command";
/// Why the session closed when the login was cancelled halfway.
pub const LOGIN_CUT: &str = "the login was cancelled or timed out halfway; the connection was closed";
/// Why the session closed at the end of the server's stream.
pub const SERVER_CLOSED: &str = "the server closed the connection";

/// The login failures, in the words of `rframe.AuthenticationError`.
pub const LOGIN_NO_TOKEN: &str = "the server has no token, so it cannot prove that it holds yours: wrong server? \
     (connect without a token to use a server that has none)";
pub const LOGIN_TLS_UNBOUND: &str = "this connection is TLS, but the server's handshake is not bound to it: \
     something in the middle ended TLS (or the server predates TLS); no proof was sent";
pub const LOGIN_SERVER_UNPROVEN: &str =
    "the server could not prove that it holds the token: wrong server, or a different token";
pub const LOGIN_REFUSED: &str = "authentication failed";

/// An `error` frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteError {
    /// `str(header.get("error", "unknown"))`.
    pub code: String,
    /// `str(header.get("message", ""))`.
    pub message: String,
    /// The server closes the connection after it (see [`closes_connection`]).
    pub closes: bool,
    /// The frame's header, JSON text.
    pub header: Bytes,
}

impl RemoteError {
    /// The reason a connection closed by this error gives.
    pub fn close_reason(&self) -> String {
        format!("the server refused: {}", if self.message.is_empty() { &self.code } else { &self.message })
    }
}

/// What was wrong with a reply that broke the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViolationKind {
    /// A reply of another `op` than its request takes.
    UnexpectedReply,
    /// A `file` frame without a size: the download cannot go on.
    NoSize,
    /// More data than announced, or a frame that is neither `data` nor `end`.
    DownloadData,
    /// A download's `end` after fewer bytes than announced.
    ShortDownload,
    /// A `stored` frame for something other than what was sent.
    StoredElse,
    /// A frame from the server while an upload's data goes out.
    UploadData,
    /// A download's `file` frame resumes at an offset not asked for.
    BadOffset,
}

/// How a finished transfer ended, as the server says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferEnd {
    /// The `name` the server gives, if a string.
    pub name: Option<String>,
    pub size: u64,
    /// The `checksum` and hex `digest` the server sent, if strings. An
    /// upload's are checked already (they equal what was sent); a
    /// download's are for the driver to check against its own hashing.
    pub checksum: Option<String>,
    pub digest: Option<String>,
    /// The `stored` or `end` frame's header, JSON text.
    pub header: Bytes,
}

/// What the bytes from the server meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The reply to request `id` (`request`, `run`, `list`, `expect_reply`).
    Reply { id: RequestId, frame: Frame },
    /// A frame that no request waits for (see [`ClientSession::expect_reply`]).
    Unsolicited { frame: Frame },
    /// An `error` frame: in reply to `id`, or to nothing (a server that
    /// refused the connection at once: `busy`). With `closes`, a
    /// [`Event::Closed`] follows.
    RemoteError { id: Option<RequestId>, error: RemoteError },
    /// Bytes the session wrote itself, to send now: the login's answer.
    Send(Vec<u8>),
    /// The login `id` is done: the server proved it holds the token too.
    LoggedIn { id: RequestId },
    /// The login `id` failed, with the message of `AuthenticationError`. A
    /// [`Event::Closed`] follows.
    LoginFailed { id: RequestId, message: String },
    /// The upload `id` may send its data, in frames of at most `chunk_size`.
    /// A resumable upload's server may offer to keep the first `offset`
    /// bytes it kept, whose digest is `prefix_digest`: the driver hashes its
    /// own first `offset` bytes and says so with
    /// [`ClientSession::put_resume`] before the data.
    UploadReady { id: RequestId, chunk_size: usize, offset: u64, prefix_digest: Option<String> },
    /// The download `id` brings `size` bytes, from `offset` on (0 unless a
    /// resumed get's prefix was taken); `mtime_ns`, the server's file's
    /// mtime, if the server says (a driver records it to resume).
    DownloadStarted { id: RequestId, size: u64, offset: u64, mtime_ns: Option<i64> },
    /// The next bytes of download `id`.
    FileChunk { id: RequestId, data: Bytes },
    /// The transfer `id` ended: a `stored` upload or a download's `end`.
    TransferEnd { id: RequestId, end: TransferEnd },
    /// The server broke the protocol (rframe's `bad-response`); with
    /// `closes`, a [`Event::Closed`] follows.
    Violation { id: Option<RequestId>, kind: ViolationKind, message: String, closes: bool, header: Bytes },
    /// The live command `id` runs (`start`).
    Started { id: RequestId },
    /// What the server offers, in answer to `features` `id`: the checksums
    /// it verifies files with (none named by a server too old to answer).
    /// [`ClientSession::default_checksum`] picks from them from now on.
    Features { id: RequestId, checksums: Vec<String> },
    /// Bytes the live command `id` wrote to `fd` (1: stdout, 2: stderr).
    Output { id: RequestId, fd: u8, data: Bytes },
    /// The live command `id` ended: its returncode (negative: the signal
    /// that killed it), how long it ran, whether the time limit killed it.
    Exit { id: RequestId, returncode: i64, duration: std::time::Duration, timed_out: bool, header: Bytes },
    /// The connection is over: the driver closes its socket. `error`: the
    /// framing error that ended it (garbage bytes, a frame cut short).
    Closed { reason: String, error: Option<FrameError> },
}

/// A call the session refuses; nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The connection is closed, for this reason.
    #[error("the connection is closed ({0})")]
    Closed(String),
    /// Another exchange owns the connection (an upload under way, the login).
    #[error("{0}")]
    Busy(&'static str),
    /// A call out of turn, or with a bad argument.
    #[error("{0}")]
    Usage(String),
    /// The frame cannot be encoded with this codec.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// What cancelling a request left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancelled {
    /// Nothing waited for a reply under that id (it came already, or never was).
    NotPending,
    /// The reply will be dropped when it comes; the connection goes on.
    ReplyDropped,
    /// The connection must close, for this reason (the session is closed).
    MustClose(&'static str),
    /// A claim on the next frame ([`ClientSession::expect_reply`]) with none
    /// behind it: it is gone, as if never made (nothing was sent for it).
    Withdrawn,
}

#[derive(Debug)]
enum Step {
    Reply,
    /// A claim on the next frame, for which nothing was sent (`expect_reply`).
    Claim,
    Run,
    /// A reply that must have this `op` (`listing`, `made`, `linked`, `synced`).
    Expect(&'static str),
    Hello,
    Answer {
        server_nonce: String,
        client_nonce: String,
    },
    Put {
        size: u64,
        checksum: String,
        phase: PutPhase,
    },
    Get {
        name: String,
        /// A resumed get: the bytes the client kept.
        kept: Option<u64>,
        phase: GetPhase,
    },
    /// A live command: `started` once the server said so.
    Live {
        started: bool,
    },
    /// `features`: a `features` frame, or a server too old to answer one.
    Features,
}

#[derive(Debug)]
enum PutPhase {
    AwaitReady,
    Sending,
    AwaitStored { digest: String },
}

#[derive(Debug)]
enum GetPhase {
    AwaitFile,
    Data { size: u64, received: u64 },
}

#[derive(Debug)]
struct InFlight {
    id: RequestId,
    step: Step,
    /// Its caller left: the reply is dropped.
    cancelled: bool,
}

/// The sending side of an upload, from `put` to `put_end`.
#[derive(Debug)]
struct Upload {
    id: RequestId,
    size: u64,
    sent: u64,
    /// Set by the server's `ready`.
    chunk: Option<usize>,
    /// A resumable upload: the offset and prefix digest the server
    /// offered, until [`ClientSession::put_resume`] takes or refuses them.
    offered: Option<(u64, String)>,
    /// A resumable upload: where its data starts, for the first data (or
    /// end) frame's `offset`.
    first_offset: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Login {
    None,
    Underway,
    Done,
}

/// How a `put` stores its file.
#[derive(Debug, Clone, Copy)]
pub struct PutOptions<'a> {
    /// Replace an existing file of that name.
    pub overwrite: bool,
    /// One of [`CHECKSUMS`].
    pub checksum: &'a str,
    /// The file's permission bits.
    pub mode: Option<u32>,
    /// `false`: stored without waiting for the disk, until a
    /// [`ClientSession::sync`].
    pub sync: bool,
    /// A resumable upload (PROTOCOL.md, "Resume"): the source's mtime in
    /// ns (with the size, its identity).
    pub resume: Option<i64>,
}

/// What a resumed `get` kept (PROTOCOL.md, "Resume").
#[derive(Debug, Clone, Copy)]
pub struct GetResume<'a> {
    /// How many bytes were kept.
    pub offset: u64,
    /// Their hex digest, with the get's checksum.
    pub prefix_digest: &'a str,
    /// The server's file's size and mtime (ns) when they were written.
    pub size: u64,
    pub mtime_ns: i64,
}

impl PutOptions<'_> {
    fn fields<'a>(&'a self, name: &'a str, size: u64, inline_digest: Option<&'a str>) -> Vec<(&'a str, Val<'a>)> {
        let mut fields = vec![
            ("op", Val::Str("put")),
            ("name", Val::Str(name)),
            ("size", Val::U64(size)),
            ("overwrite", Val::Bool(self.overwrite)),
            ("checksum", Val::Str(self.checksum)),
        ];
        if let Some(mode) = self.mode {
            fields.push(("mode", Val::U64(mode.into())));
        }
        if !self.sync {
            fields.push(("sync", Val::Bool(false)));
        }
        if let Some(digest) = inline_digest {
            fields.push(("inline", Val::Bool(true)));
            fields.push(("digest", Val::Str(digest)));
        } else if let Some(mtime_ns) = self.resume {
            fields.push(("resume", Val::Bool(true)));
            fields.push(("mtime_ns", Val::I64(mtime_ns)));
        }
        fields
    }
}

/// A header field's value, for the headers the session writes.
enum Val<'a> {
    Str(&'a str),
    U64(u64),
    I64(i64),
    Bool(bool),
}

/// One connection's client side of the command protocol (see the module).
#[derive(Debug)]
pub struct ClientSession {
    codec: Codec,
    decoder: Decoder,
    buf: BytesMut,
    eof: bool,
    next_id: RequestId,
    in_flight: VecDeque<InFlight>,
    events: VecDeque<Event>,
    token: Option<Vec<u8>>,
    binding: Option<Vec<u8>>,
    login: Login,
    upload: Option<Upload>,
    /// The live command that holds the connection, from `start` to its exit.
    live: Option<live::Live>,
    /// The checksums the server offers, once its `features` came.
    offered: Option<Vec<String>>,
    closed: Option<String>,
}

impl ClientSession {
    /// A session for a connection with this codec. `token`: the server's
    /// token, for [`ClientSession::login`]; `binding`: on TLS, the SHA-256 of
    /// the server's certificate (the login's proofs are bound to it, and a
    /// challenge not bound to TLS is refused), `None` in plaintext.
    pub fn new(codec: Codec, token: Option<Vec<u8>>, binding: Option<Vec<u8>>) -> Result<ClientSession, SessionError> {
        codec.validate().map_err(SessionError::Usage)?;
        if token.as_ref().is_some_and(|t| t.is_empty()) {
            return Err(SessionError::Usage("token must not be empty".into()));
        }
        if token.is_some() && !codec.json_header {
            return Err(SessionError::Usage(
                "token needs a JSON-header codec: the handshake travels in headers".into(),
            ));
        }
        Ok(ClientSession {
            codec,
            decoder: Decoder::new(codec),
            buf: BytesMut::new(),
            eof: false,
            next_id: 0,
            in_flight: VecDeque::new(),
            events: VecDeque::new(),
            token,
            binding,
            login: Login::None,
            upload: None,
            live: None,
            offered: None,
            closed: None,
        })
    }

    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    /// Why the connection is closed, or `None` while it is open.
    pub fn closed(&self) -> Option<&str> {
        self.closed.as_deref()
    }

    /// True once the login succeeded.
    pub fn logged_in(&self) -> bool {
        self.login == Login::Done
    }

    /// How many requests wait for their replies (a transfer counts once).
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// True while an upload owns the sending side (from `put` to `put_end`).
    pub fn uploading(&self) -> bool {
        self.upload.is_some()
    }

    // ------------------------------------------------------------ requests

    /// Any request: `header` is a whole JSON header (with `total_size`, as
    /// `Codec.pack` writes one), `None` for a length-only codec. Its reply
    /// comes as [`Event::Reply`] (or [`Event::RemoteError`]).
    pub fn request(&mut self, header: Option<&[u8]>, body: &[u8]) -> Result<(RequestId, Vec<u8>), SessionError> {
        let (id, prefix) = self.request_prefix(header, body.len())?;
        let mut data = Vec::with_capacity(prefix.len() + header.map_or(0, <[u8]>::len) + body.len());
        for part in [&prefix[..], header.unwrap_or_default(), body] {
            data.extend_from_slice(part);
        }
        Ok((id, data))
    }

    /// [`ClientSession::request`] for a driver that writes the frame
    /// itself: the 4-byte prefix for this header and a body of `body_len`
    /// bytes. The frame is the prefix, the header, the body.
    pub fn request_prefix(
        &mut self,
        header: Option<&[u8]>,
        body_len: usize,
    ) -> Result<(RequestId, [u8; crate::codec::PREFIX_LEN]), SessionError> {
        self.check_free()?;
        let prefix = self.codec.encode_prefix(header, body_len)?;
        Ok((self.push(Step::Reply), prefix))
    }

    /// A `run` request (PROTOCOL.md): as [`ClientSession::request`], but its
    /// reply must be a `result` frame, and cancelling it closes the
    /// connection (so the server kills the command).
    pub fn run(&mut self, header: &[u8], body: &[u8]) -> Result<(RequestId, Vec<u8>), SessionError> {
        self.check_free()?;
        self.need_json("run")?;
        let data = self.codec.encode(Some(header), body)?;
        Ok((self.push(Step::Run), data))
    }

    /// A frame that waits for no reply (`Client.send`).
    pub fn send(&mut self, header: Option<&[u8]>, body: &[u8]) -> Result<Vec<u8>, SessionError> {
        self.check_free()?;
        Ok(self.codec.encode(header, body)?)
    }

    /// Waits for the next frame no request claims (`Client.recv`): it comes
    /// as an [`Event::Reply`] for the id returned. Nothing is sent.
    pub fn expect_reply(&mut self) -> Result<RequestId, SessionError> {
        self.check_open()?;
        Ok(self.push(Step::Claim))
    }

    /// The channel's binding, once a TLS handshake is done (a driver whose
    /// session exists before the handshake ends; see [`ClientSession::new`]).
    /// Only before the login.
    pub fn bind_channel(&mut self, binding: Vec<u8>) -> Result<(), SessionError> {
        self.check_open()?;
        if self.login != Login::None {
            return Err(SessionError::Usage("the channel binding must be set before the login".into()));
        }
        self.binding = Some(binding);
        Ok(())
    }

    /// Starts the token handshake: the hello's bytes. The session sends the
    /// answer itself ([`Event::Send`]); the login ends with
    /// [`Event::LoggedIn`] or [`Event::LoginFailed`] for the id returned.
    /// Other requests wait until it is done.
    pub fn login(&mut self) -> Result<(RequestId, Vec<u8>), SessionError> {
        self.check_free()?;
        if self.token.is_none() {
            return Err(SessionError::Usage("a login needs a token".into()));
        }
        if self.login != Login::None {
            return Err(SessionError::Usage("the login was done already".into()));
        }
        let data = self.frame(&[("op", Val::Str("auth"))], b"")?;
        self.login = Login::Underway;
        Ok((self.push(Step::Hello), data))
    }

    /// Asks the server what it offers (PROTOCOL.md, "features"): the answer
    /// is an [`Event::Features`], also from a server too old to know the
    /// request (it answers `bad-request`, which the session takes as "nothing
    /// named").
    pub fn features(&mut self) -> Result<(RequestId, Vec<u8>), SessionError> {
        self.check_free()?;
        self.need_json("a file transfer (which asks the server's features)")?;
        let data = self.frame(&[("op", Val::Str(super::FEATURES_OP))], b"")?;
        Ok((self.push(Step::Features), data))
    }

    /// The checksum for a transfer asked for none: the fastest the server
    /// offers (`blake3`), else `sha256`; `None` until the server's features
    /// came ([`ClientSession::features`]).
    pub fn default_checksum(&self) -> Option<&'static str> {
        self.offered.as_deref().map(|offered| super::pick_checksum(offered).name())
    }

    /// `list` of the directory `name` beneath the server's root (`""`: the
    /// root). Its reply is an [`Event::Reply`] with a `listing` frame, whose
    /// body is the JSON array of entries.
    pub fn list(&mut self, name: &str) -> Result<(RequestId, Vec<u8>), SessionError> {
        self.check_free()?;
        self.need_json("list")?;
        let data = self.frame(&[("op", Val::Str("list")), ("name", Val::Str(name))], b"")?;
        Ok((self.push(Step::Expect("listing")), data))
    }

    /// `list` of the whole tree beneath the directory `name`, one page (the
    /// names after `after`): names relative to it, each entry with its
    /// `mode`, a symlink's `target` and, with `checksum`, each file's
    /// `digest`. Its reply is as [`ClientSession::list`]'s; `truncated`
    /// says another page follows, after its last name.
    pub fn list_tree(
        &mut self,
        name: &str,
        checksum: Option<&str>,
        after: Option<&str>,
    ) -> Result<(RequestId, Vec<u8>), SessionError> {
        self.check_free()?;
        self.need_json("list")?;
        let mut fields = vec![("op", Val::Str("list")), ("name", Val::Str(name)), ("recursive", Val::Bool(true))];
        if let Some(after) = after {
            fields.push(("after", Val::Str(after)));
        }
        if let Some(checksum) = checksum {
            check_checksum(checksum)?;
            fields.push(("checksum", Val::Str(checksum)));
        }
        let data = self.frame(&fields, b"")?;
        Ok((self.push(Step::Expect("listing")), data))
    }

    /// `mkdir`: the directory `name` and those above it, beneath the root;
    /// `mode`, its permission bits. Its reply is an [`Event::Reply`] with a
    /// `made` frame.
    pub fn mkdir(&mut self, name: &str, mode: Option<u32>) -> Result<(RequestId, Vec<u8>), SessionError> {
        self.check_free()?;
        self.need_json("mkdir")?;
        let mut fields = vec![("op", Val::Str("mkdir")), ("name", Val::Str(name))];
        if let Some(mode) = mode {
            fields.push(("mode", Val::U64(mode.into())));
        }
        let data = self.frame(&fields, b"")?;
        Ok((self.push(Step::Expect("made")), data))
    }

    /// `symlink`: a link `name` to `target` (which the server keeps beneath
    /// its root). Its reply is an [`Event::Reply`] with a `linked` frame.
    pub fn symlink(&mut self, name: &str, target: &str, overwrite: bool) -> Result<(RequestId, Vec<u8>), SessionError> {
        self.check_free()?;
        self.need_json("symlink")?;
        let fields = [
            ("op", Val::Str("symlink")),
            ("name", Val::Str(name)),
            ("target", Val::Str(target)),
            ("overwrite", Val::Bool(overwrite)),
        ];
        let data = self.frame(&fields, b"")?;
        Ok((self.push(Step::Expect("linked")), data))
    }

    /// `sync`: what this connection's puts stored with `sync: false` is made
    /// durable. Its reply is an [`Event::Reply`] with a `synced` frame.
    pub fn sync(&mut self) -> Result<(RequestId, Vec<u8>), SessionError> {
        self.check_free()?;
        self.need_json("sync")?;
        let data = self.frame(&[("op", Val::Str("sync"))], b"")?;
        Ok((self.push(Step::Expect("synced")), data))
    }

    /// `put`: an upload of `size` bytes to `name`. Then
    /// [`Event::UploadReady`] (or a remote error), [`ClientSession::put_data`]
    /// until `size` bytes are out, [`ClientSession::put_end`] with the
    /// digest, and [`Event::TransferEnd`] once the server stored the file.
    /// Other requests wait until the end is sent.
    pub fn put(
        &mut self,
        name: &str,
        size: u64,
        overwrite: bool,
        checksum: &str,
    ) -> Result<(RequestId, Vec<u8>), SessionError> {
        self.put_with(name, size, &PutOptions { overwrite, checksum, mode: None, sync: true, resume: None })
    }

    /// [`ClientSession::put`], with a mode and `sync: false` (see [`PutOptions`]).
    pub fn put_with(
        &mut self,
        name: &str,
        size: u64,
        options: &PutOptions<'_>,
    ) -> Result<(RequestId, Vec<u8>), SessionError> {
        self.check_free()?;
        self.need_json("put")?;
        check_checksum(options.checksum)?;
        let data = self.frame(&options.fields(name, size, None), b"")?;
        let id = self.push(Step::Put { size, checksum: options.checksum.into(), phase: PutPhase::AwaitReady });
        let first_offset = options.resume.map(|_| 0);
        self.upload = Some(Upload { id, size, sent: 0, chunk: None, offered: None, first_offset });
        Ok((id, data))
    }

    /// A whole small file in one `put` frame (`"inline": true`), with the
    /// hex `digest` of `data`: no `ready`, no `data` frames; the server
    /// answers `stored` ([`Event::TransferEnd`]) or an error. The connection
    /// stays free, so many go out back to back.
    pub fn put_inline(
        &mut self,
        name: &str,
        data: &[u8],
        digest: &str,
        options: &PutOptions<'_>,
    ) -> Result<(RequestId, Vec<u8>), SessionError> {
        self.check_free()?;
        self.need_json("put")?;
        check_checksum(options.checksum)?;
        if data.len() > CHUNK {
            return Err(SessionError::Usage(format!("an inline put takes at most {CHUNK} bytes, not {}", data.len())));
        }
        let size = data.len() as u64;
        let frame = self.frame(&options.fields(name, size, Some(digest)), data)?;
        let phase = PutPhase::AwaitStored { digest: digest.into() };
        Ok((self.push(Step::Put { size, checksum: options.checksum.into(), phase }), frame))
    }

    /// A resumable upload whose server offered its kept prefix
    /// ([`Event::UploadReady`] with an `offset`): `own_digest` is the hex
    /// digest of the first `offset` bytes of the source. If it is the
    /// server's, the data goes on from `offset`; if not, from 0 (the server
    /// drops what it kept). Returns where the data starts.
    pub fn put_resume(&mut self, own_digest: &str) -> Result<u64, SessionError> {
        self.check_open()?;
        let upload = self.upload.as_mut().ok_or_else(|| SessionError::Usage("no upload is under way".into()))?;
        let Some((offset, theirs)) = upload.offered.take() else {
            return Err(SessionError::Usage("the server offered no kept prefix to resume from".into()));
        };
        let start = if theirs.eq_ignore_ascii_case(own_digest) { offset } else { 0 };
        upload.sent = start;
        upload.first_offset = Some(start);
        Ok(start)
    }

    /// The next `data` frame of the upload, whole.
    pub fn put_data(&mut self, chunk: &[u8]) -> Result<Vec<u8>, SessionError> {
        let mut head = self.put_data_head(chunk)?;
        head.extend_from_slice(chunk);
        Ok(head)
    }

    /// The next `data` frame of the upload without its body: the driver
    /// writes `chunk` after these bytes from its own buffer.
    pub fn put_data_head(&mut self, chunk: &[u8]) -> Result<Vec<u8>, SessionError> {
        self.check_open()?;
        let upload = self.upload.as_ref().ok_or_else(|| SessionError::Usage("no upload is under way".into()))?;
        let Some(limit) = upload.chunk else {
            return Err(SessionError::Usage("the server is not ready for the upload's data yet".into()));
        };
        if chunk.len() > limit {
            return Err(SessionError::Usage(format!(
                "a chunk of {} bytes is over the server's chunk size of {limit}",
                chunk.len()
            )));
        }
        if upload.offered.is_some() {
            return Err(SessionError::Usage("the server offered a kept prefix: put_resume() first".into()));
        }
        let sent = upload.sent + chunk.len() as u64;
        if sent > upload.size {
            return Err(SessionError::Usage(format!("{sent} bytes is more than the {} announced", upload.size)));
        }
        let mut fields = vec![("op", Val::Str("data"))];
        if let Some(offset) = upload.first_offset {
            fields.push(("offset", Val::U64(offset)));
        }
        let header = self.header(&fields, chunk);
        let head = self.codec.encode_head(Some(&header), chunk.len())?;
        let upload = self.upload.as_mut().expect("checked above");
        upload.sent = sent;
        upload.first_offset = None;
        Ok(head)
    }

    /// The upload's `end` frame, with the hex `digest` of what was sent.
    pub fn put_end(&mut self, digest: &str) -> Result<Vec<u8>, SessionError> {
        self.check_open()?;
        let upload = self.upload.as_ref().ok_or_else(|| SessionError::Usage("no upload is under way".into()))?;
        if upload.chunk.is_none() {
            return Err(SessionError::Usage("the server is not ready for the upload's data yet".into()));
        }
        if upload.offered.is_some() {
            return Err(SessionError::Usage("the server offered a kept prefix: put_resume() first".into()));
        }
        if upload.sent != upload.size {
            return Err(SessionError::Usage(format!(
                "{} of the {} bytes announced were sent",
                upload.sent, upload.size
            )));
        }
        let (id, first_offset) = (upload.id, upload.first_offset);
        let checksum = match self.in_flight.iter().find(|e| e.id == id).map(|e| &e.step) {
            Some(Step::Put { checksum, .. }) => checksum.clone(),
            _ => unreachable!("an upload under way has its put in flight"),
        };
        let mut fields = vec![("op", Val::Str("end")), ("checksum", Val::Str(&checksum)), ("digest", Val::Str(digest))];
        if let Some(offset) = first_offset {
            fields.push(("offset", Val::U64(offset)));
        }
        let data = self.frame(&fields, b"")?;
        if let Some(InFlight { step: Step::Put { phase, .. }, .. }) = self.in_flight.iter_mut().find(|e| e.id == id) {
            *phase = PutPhase::AwaitStored { digest: digest.into() };
        }
        self.upload = None;
        Ok(data)
    }

    /// `get`: a download of `name`. Then [`Event::DownloadStarted`] (or a
    /// remote error), [`Event::FileChunk`]s and [`Event::TransferEnd`] with
    /// the digest the server sent (or a remote error in its place).
    pub fn get(&mut self, name: &str, checksum: &str) -> Result<(RequestId, Vec<u8>), SessionError> {
        self.get_with(name, checksum, None)
    }

    /// [`ClientSession::get`], resumed from what an earlier cut download
    /// kept: the server sends from `offset` on if the first `offset` bytes
    /// of its file have `prefix_digest`, from 0 if not, and refuses
    /// (`changed`) if its file's size or mtime are not those given.
    pub fn get_with(
        &mut self,
        name: &str,
        checksum: &str,
        resume: Option<&GetResume<'_>>,
    ) -> Result<(RequestId, Vec<u8>), SessionError> {
        self.check_free()?;
        self.need_json("get")?;
        check_checksum(checksum)?;
        let chunk = (CHUNK as u64).min(self.codec.max_body);
        let mut fields = vec![
            ("op", Val::Str("get")),
            ("name", Val::Str(name)),
            ("checksum", Val::Str(checksum)),
            ("chunk_size", Val::U64(chunk)),
        ];
        if let Some(r) = resume {
            fields.extend([
                ("offset", Val::U64(r.offset)),
                ("prefix_digest", Val::Str(r.prefix_digest)),
                ("size", Val::U64(r.size)),
                ("mtime_ns", Val::I64(r.mtime_ns)),
            ]);
        }
        let data = self.frame(&fields, b"")?;
        let kept = resume.map(|r| r.offset);
        Ok((self.push(Step::Get { name: name.into(), kept, phase: GetPhase::AwaitFile }), data))
    }

    /// The caller of request `id` gives up on it (see [`Cancelled`]).
    pub fn cancel(&mut self, id: RequestId) -> Cancelled {
        if matches!(self.in_flight.back(), Some(InFlight { id: last, step: Step::Claim, .. }) if *last == id) {
            self.in_flight.pop_back();
            return Cancelled::Withdrawn;
        }
        let Some(entry) = self.in_flight.iter_mut().find(|e| e.id == id) else { return Cancelled::NotPending };
        let reason = match entry.step {
            Step::Reply | Step::Claim | Step::Expect(_) | Step::Features => {
                entry.cancelled = true;
                return Cancelled::ReplyDropped;
            }
            Step::Run => RUN_CANCELLED,
            Step::Hello | Step::Answer { .. } => LOGIN_CUT,
            Step::Put { .. } | Step::Get { .. } => TRANSFER_CUT,
            Step::Live { .. } => LIVE_CANCELLED,
        };
        self.abort(reason);
        Cancelled::MustClose(reason)
    }

    /// The driver closes the connection (its own failure, a user's close):
    /// nothing more is sent or reported.
    pub fn abort(&mut self, reason: &str) {
        if self.closed.is_none() {
            self.closed = Some(reason.into());
            self.events.clear();
            self.reset();
        }
    }

    // ------------------------------------------------------------ incoming

    /// Bytes from the server, as they came (any split).
    pub fn receive_data(&mut self, data: &[u8]) {
        if self.closed.is_none() && !self.eof {
            self.buf.extend_from_slice(data);
        }
    }

    /// One whole frame the driver read itself (a blocking driver reads a
    /// frame straight into its body's final buffer); the same events follow
    /// as from its bytes given to [`ClientSession::receive_data`]. Ignored
    /// once closed, and while bytes given to `receive_data` wait: frames are
    /// taken in the order they came, so a driver uses one way or the other.
    pub fn receive_frame(&mut self, frame: Frame) {
        if self.closed.is_none() && !self.eof && self.buf.is_empty() {
            self.on_frame(frame);
        }
    }

    /// A driver that reads whole frames itself ([`ClientSession::receive_frame`])
    /// could not read the next one: the session closes as it would on its own
    /// decoder's error (a frame cut short by the end of the stream is the
    /// server closing the connection).
    pub fn receive_frame_error(&mut self, err: FrameError) {
        if matches!(err, FrameError::Incomplete { .. }) {
            self.close(SERVER_CLOSED.into(), Some(err));
        } else {
            self.close(format!("reading a frame failed: {}", error_class(&err)), Some(err));
        }
    }

    /// The server's stream ended.
    pub fn receive_eof(&mut self) {
        self.eof = true;
    }

    /// The next event, or `None` until more bytes come.
    pub fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Some(event);
            }
            if self.closed.is_some() {
                return None;
            }
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(frame)) => self.on_frame(frame),
                Ok(None) if self.eof => match self.decoder.decode_eof(&mut self.buf) {
                    Ok(Some(frame)) => self.on_frame(frame),
                    Ok(None) => self.close(SERVER_CLOSED.into(), None),
                    Err(err) => self.close(SERVER_CLOSED.into(), Some(err)),
                },
                Ok(None) => return None,
                Err(err) => self.close(format!("reading a frame failed: {}", error_class(&err)), Some(err)),
            }
        }
    }

    /// Every event the bytes so far make.
    pub fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.next_event()).collect()
    }

    // ------------------------------------------------------------ the rules

    fn on_frame(&mut self, frame: Frame) {
        // The hot path, a reply to a plain request: only an `op` of "error"
        // would make it more than its request's reply, and a header that
        // cannot hold an `op` key needs no parse to say so.
        if let Some(InFlight { id, step: Step::Reply | Step::Claim, cancelled: false }) = self.in_flight.front() {
            if !may_name_op(frame.header.as_deref()) {
                let id = *id;
                self.in_flight.pop_front();
                return self.events.push_back(Event::Reply { id, frame });
            }
        }
        let members = frame.header.as_deref().and_then(parse_object);
        let op = members.as_ref().and_then(|m| match get(m, "op") {
            Some(JsonValue::Str(op)) => Some(op.to_string()),
            _ => None,
        });
        if super::is_error_reply(op.as_deref()) {
            let members = members.as_ref().expect("an error frame has a header");
            return self.on_error(remote_error(members, frame.header.clone().unwrap_or_default()));
        }
        let Some(entry) = self.in_flight.front_mut() else {
            self.events.push_back(Event::Unsolicited { frame });
            return;
        };
        let id = entry.id;
        if entry.cancelled {
            self.in_flight.pop_front();
            return;
        }
        let op = op.as_deref();
        let shown = || members.as_ref().map_or_else(|| header_repr(frame.header.as_deref()), members_repr);
        let hdr = || frame.header.clone().unwrap_or_default();
        match &mut entry.step {
            Step::Reply | Step::Claim => {
                self.in_flight.pop_front();
                self.events.push_back(Event::Reply { id, frame });
            }
            Step::Run | Step::Expect(_) => {
                let expected = if let Step::Expect(op) = entry.step { op } else { "result" };
                self.in_flight.pop_front();
                if op == Some(expected) {
                    self.events.push_back(Event::Reply { id, frame });
                } else {
                    let message = match expected {
                        "result" => format!("expected a result frame, got {}", shown()),
                        _ => format!("expected a {} frame, got {}", str_repr(expected), shown()),
                    };
                    self.violation(id, ViolationKind::UnexpectedReply, message, None, hdr());
                }
            }
            Step::Hello => {
                self.in_flight.pop_front();
                let members = members.unwrap_or_default();
                self.on_challenge(id, op, &members);
            }
            Step::Answer { server_nonce, client_nonce } => {
                let (sn, cn) = (std::mem::take(server_nonce), std::mem::take(client_nonce));
                self.in_flight.pop_front();
                let proof = members.as_ref().and_then(|m| match get(m, "proof") {
                    Some(JsonValue::Str(p)) => Some(p.to_string()),
                    _ => None,
                });
                let token = self.token.as_deref().expect("a login has a token");
                let proven = op == Some("welcome")
                    && proof.is_some_and(|p| auth::verify(token, Role::Server, &sn, &cn, self.binding.as_deref(), &p));
                if proven {
                    self.login = Login::Done;
                    self.events.push_back(Event::LoggedIn { id });
                } else {
                    self.events.push_back(Event::LoginFailed { id, message: LOGIN_SERVER_UNPROVEN.into() });
                    self.close(AUTH_SERVER_FAILED.into(), None);
                }
            }
            Step::Put { size, checksum, phase } => match phase {
                PutPhase::AwaitReady => {
                    if op != Some("ready") {
                        let message = format!("expected a 'ready' frame, got {}", shown());
                        self.in_flight.pop_front();
                        self.upload = None;
                        return self.violation(id, ViolationKind::UnexpectedReply, message, None, hdr());
                    }
                    let m = members.as_ref().expect("a ready frame has a header");
                    let chunk = chunk_size(get(m, "chunk_size"));
                    // An offer only from a resumable upload, of at most its size, with a digest.
                    let resumable = self.upload.as_ref().is_some_and(|u| u.first_offset.is_some());
                    let offered = py_int(get(m, "offset"))
                        .filter(|o| *o > 0 && (*o as u64) <= *size && resumable)
                        .zip(str_field(m, "prefix_digest"))
                        .map(|(o, d)| (o as u64, d));
                    *phase = PutPhase::Sending;
                    let (offset, prefix_digest) =
                        offered.clone().map_or((0, None), |(offset, digest)| (offset, Some(digest)));
                    if let Some(upload) = self.upload.as_mut() {
                        upload.chunk = Some(chunk);
                        upload.offered = offered;
                    }
                    self.events.push_back(Event::UploadReady { id, chunk_size: chunk, offset, prefix_digest });
                }
                PutPhase::Sending => {
                    let message = format!("expected no frame before the upload's end, got {}", shown());
                    self.violation(id, ViolationKind::UploadData, message, Some(UPLOAD_BROKEN), hdr());
                }
                PutPhase::AwaitStored { digest } => {
                    let (size, checksum, digest) = (*size, std::mem::take(checksum), std::mem::take(digest));
                    self.in_flight.pop_front();
                    if op != Some("stored") {
                        let message = format!("expected a 'stored' frame, got {}", shown());
                        return self.violation(id, ViolationKind::UnexpectedReply, message, None, hdr());
                    }
                    let m = members.as_ref().expect("a stored frame has a header");
                    let same = py_eq_int(get(m, "size"), size)
                        && is_str(get(m, "checksum"), &checksum)
                        && is_str(get(m, "digest"), &digest);
                    if !same {
                        let message = format!("the server stored something else: {}", members_repr(m));
                        return self.violation(id, ViolationKind::StoredElse, message, None, hdr());
                    }
                    let end = TransferEnd {
                        name: str_field(m, "name"),
                        size,
                        checksum: Some(checksum),
                        digest: Some(digest),
                        header: frame.header.clone().unwrap_or_default(),
                    };
                    self.events.push_back(Event::TransferEnd { id, end });
                }
            },
            Step::Live { started } => {
                let started = *started;
                self.on_live(id, started, op, members.as_ref(), &frame);
            }
            Step::Features => {
                self.in_flight.pop_front();
                let checksums = members.as_ref().and_then(|m| get(m, "checksums"));
                let checksums = match checksums {
                    Some(JsonValue::Array(items)) if op == Some(super::FEATURES_OP) => items
                        .iter()
                        .filter_map(|v| if let JsonValue::Str(s) = v { Some(s.to_string()) } else { None })
                        .collect::<Vec<_>>(),
                    _ => {
                        let message = format!("expected a 'features' frame with its checksums, got {}", shown());
                        return self.violation(id, ViolationKind::UnexpectedReply, message, None, hdr());
                    }
                };
                self.offered = Some(checksums.clone());
                self.events.push_back(Event::Features { id, checksums });
            }
            Step::Get { name, kept, phase } => match phase {
                GetPhase::AwaitFile => {
                    if op != Some("file") {
                        let message = format!("expected a 'file' frame, got {}", shown());
                        self.in_flight.pop_front();
                        return self.violation(id, ViolationKind::UnexpectedReply, message, None, hdr());
                    }
                    let size = members.as_ref().and_then(|m| py_int(get(m, "size"))).filter(|s| *s >= 0);
                    let Some(size) = size else {
                        let message = format!("the server announced no size for {}", str_repr(name));
                        return self.violation(id, ViolationKind::NoSize, message, Some(DOWNLOAD_BROKEN), hdr());
                    };
                    let size = size as u64;
                    let m = members.as_ref().expect("a file frame has a header");
                    // A server older than resume sends no offset: it sends everything.
                    let offset = match get(m, "offset") {
                        None => Some(0),
                        v => py_int(v).filter(|o| *o == 0 || Some(*o as u64) == *kept).map(|o| o as u64),
                    };
                    let Some(offset) = offset.filter(|o| *o <= size) else {
                        let message = format!(
                            "the server resumed {} at an offset not asked for: {}",
                            str_repr(name),
                            members_repr(m)
                        );
                        return self.violation(id, ViolationKind::BadOffset, message, Some(DOWNLOAD_BROKEN), hdr());
                    };
                    let mtime_ns = py_int(get(m, "mtime_ns"));
                    *phase = GetPhase::Data { size, received: offset };
                    self.events.push_back(Event::DownloadStarted { id, size, offset, mtime_ns });
                }
                GetPhase::Data { size, received } => {
                    let (size, got) = (*size, *received);
                    if op == Some("end") {
                        self.in_flight.pop_front();
                        let m = members.as_ref().expect("an end frame has a header");
                        if got != size || !py_eq_int(get(m, "size"), size) {
                            let message =
                                format!("the server announced {size} bytes and sent {got}: {}", members_repr(m));
                            return self.violation(id, ViolationKind::ShortDownload, message, None, hdr());
                        }
                        let end = TransferEnd {
                            name: str_field(m, "name"),
                            size,
                            checksum: str_field(m, "checksum"),
                            digest: str_field(m, "digest"),
                            header: frame.header.clone().unwrap_or_default(),
                        };
                        return self.events.push_back(Event::TransferEnd { id, end });
                    }
                    let len = frame.body.len() as u64;
                    if op != Some("data") || got + len > size {
                        let message = format!(
                            "expected {size} bytes of data, got {}",
                            frame_repr(frame.header.as_deref(), &frame.body)
                        );
                        return self.violation(
                            id,
                            ViolationKind::DownloadData,
                            message,
                            Some(DOWNLOAD_BROKEN),
                            Bytes::new(),
                        );
                    }
                    *received = got + len;
                    self.events.push_back(Event::FileChunk { id, data: frame.body });
                }
            },
        }
    }

    /// The reply to the login's hello: a challenge to answer, or a failure.
    fn on_challenge(&mut self, id: RequestId, op: Option<&str>, members: &Members<'_>) {
        let fail = |session: &mut ClientSession, message: String| {
            session.events.push_back(Event::LoginFailed { id, message: message.clone() });
            session.close(message, None);
        };
        if op == Some("welcome") {
            return fail(self, LOGIN_NO_TOKEN.into());
        }
        let nonce = match get(members, "nonce") {
            Some(JsonValue::Str(n)) if op == Some("challenge") => n.to_string(),
            _ => return fail(self, format!("the server did not answer the handshake (got {})", members_repr(members))),
        };
        let ours = if self.binding.is_some() { auth::TLS_SERVER_END_POINT } else { auth::NO_BINDING };
        let theirs = get(members, "channel_binding");
        let same = match theirs {
            None => ours == auth::NO_BINDING,
            Some(JsonValue::Str(b)) => b == ours,
            Some(_) => false,
        };
        if !same {
            return fail(
                self,
                match (&self.binding, theirs) {
                    (Some(_), _) => LOGIN_TLS_UNBOUND.into(),
                    (None, theirs) => format!(
                        "the server binds its handshake to {}, and this connection is plaintext: something in the \
                         middle stripped TLS? Connect with TLS (tls=True); no proof was sent",
                        theirs.map_or_else(|| str_repr(auth::NO_BINDING), value_repr)
                    ),
                },
            );
        }
        let client_nonce = auth::nonce();
        let token = self.token.as_deref().expect("a login has a token");
        let proof = auth::proof(token, Role::Client, &nonce, &client_nonce, self.binding.as_deref());
        let mut fields = vec![
            ("op", Val::Str("auth")),
            ("nonce", Val::Str(&nonce)),
            ("client_nonce", Val::Str(&client_nonce)),
            ("proof", Val::Str(&proof)),
        ];
        if self.binding.is_some() {
            fields.push(("channel_binding", Val::Str(auth::TLS_SERVER_END_POINT)));
        }
        match self.frame(&fields, b"") {
            Ok(data) => {
                self.in_flight.push_back(InFlight {
                    id,
                    step: Step::Answer { server_nonce: nonce, client_nonce },
                    cancelled: false,
                });
                self.events.push_back(Event::Send(data));
            }
            Err(err) => fail(self, format!("the login's answer cannot be sent: {err}")),
        }
    }

    /// An `error` frame: the reply of the oldest request, or of none.
    fn on_error(&mut self, error: RemoteError) {
        if let Some(InFlight { id, step: Step::Live { started: true }, cancelled: false }) = self.in_flight.front() {
            if !error.closes {
                // A refused signal: the command runs on.
                let id = *id;
                return self.events.push_back(Event::RemoteError { id: Some(id), error });
            }
        }
        let entry = self.in_flight.pop_front();
        let closes = error.closes;
        let reason = closes.then(|| error.close_reason());
        match entry {
            None => self.events.push_back(Event::RemoteError { id: None, error }),
            Some(InFlight { cancelled: true, .. }) => {}
            Some(InFlight { id, step: Step::Features, .. }) if error.code == super::ErrorCode::BadRequest.name() => {
                // A server older than `features`: it offers what every server verifies.
                self.offered = Some(Vec::new());
                self.events.push_back(Event::Features { id, checksums: Vec::new() });
            }
            Some(InFlight { id, step, .. }) => {
                if matches!(step, Step::Put { .. }) {
                    self.upload = None;
                }
                if matches!(step, Step::Live { .. }) {
                    self.live = None;
                }
                if matches!(step, Step::Hello | Step::Answer { .. }) && error.code == "auth" {
                    let message = if error.message.is_empty() { LOGIN_REFUSED.into() } else { error.message };
                    self.events.push_back(Event::LoginFailed { id, message });
                } else {
                    if matches!(step, Step::Hello | Step::Answer { .. }) {
                        // The login is over; what the driver does next is its call.
                        self.login = Login::None;
                    }
                    self.events.push_back(Event::RemoteError { id: Some(id), error });
                }
            }
        }
        if let Some(reason) = reason {
            self.close(reason, None);
        }
    }

    /// `header`: the offending frame's header, for the error the driver
    /// raises (empty when the error names none).
    fn violation(
        &mut self,
        id: RequestId,
        kind: ViolationKind,
        message: String,
        closes: Option<&'static str>,
        header: Bytes,
    ) {
        self.events.push_back(Event::Violation { id: Some(id), kind, message, closes: closes.is_some(), header });
        if let Some(reason) = closes {
            self.close(reason.into(), None);
        }
    }

    /// The session closes on its own: [`Event::Closed`] is the last event.
    fn close(&mut self, reason: String, error: Option<FrameError>) {
        if self.closed.is_none() {
            self.closed = Some(reason.clone());
            self.events.push_back(Event::Closed { reason, error });
            self.reset();
        }
    }

    fn reset(&mut self) {
        self.buf = BytesMut::new();
        self.in_flight.clear();
        self.upload = None;
        self.live = None;
    }

    // ------------------------------------------------------------ helpers

    fn check_open(&self) -> Result<(), SessionError> {
        match &self.closed {
            Some(reason) => Err(SessionError::Closed(reason.clone())),
            None => Ok(()),
        }
    }

    /// Open, and no upload or login owns the sending side.
    fn check_free(&self) -> Result<(), SessionError> {
        self.check_open()?;
        if self.upload.is_some() {
            return Err(SessionError::Busy("a file upload holds the connection"));
        }
        if self.login == Login::Underway {
            return Err(SessionError::Busy("the login is under way"));
        }
        if self.live.is_some() {
            return Err(SessionError::Busy(
                "a live command holds the connection until it exits (start() dedicates it): wait for it, or use \
                 another client",
            ));
        }
        Ok(())
    }

    fn need_json(&self, what: &str) -> Result<(), SessionError> {
        if self.codec.json_header {
            Ok(())
        } else {
            Err(SessionError::Usage(format!("{what} needs a JSON-header codec: its fields travel in headers")))
        }
    }

    fn push(&mut self, step: Step) -> RequestId {
        let id = self.next_id;
        self.next_id += 1;
        self.in_flight.push_back(InFlight { id, step, cancelled: false });
        id
    }

    /// A header's JSON text, as `json.dumps` writes it (the codec's own
    /// fields added).
    fn header(&self, fields: &[(&str, Val<'_>)], body: &[u8]) -> Vec<u8> {
        let mut out = self.codec.header_writer(body);
        for (key, value) in fields {
            if out.key(key) == crate::codec::json::Entry::WriteValue {
                let w = out.writer();
                match value {
                    Val::Str(s) => w.string(s),
                    Val::U64(n) => w.u64(*n),
                    Val::I64(n) => w.i64(*n),
                    Val::Bool(b) => w.bool(*b),
                }
            }
        }
        out.finish()
    }

    fn frame(&self, fields: &[(&str, Val<'_>)], body: &[u8]) -> Result<Vec<u8>, SessionError> {
        let header = self.header(fields, body);
        Ok(self.codec.encode(Some(&header), body)?)
    }
}

fn check_checksum(checksum: &str) -> Result<(), SessionError> {
    if CHECKSUMS.contains(&checksum) {
        Ok(())
    } else {
        let names = CHECKSUMS.map(str_repr).join(", ");
        Err(SessionError::Usage(format!("checksum must be one of {names}, got {}", str_repr(checksum))))
    }
}

/// Whether a JSON header may have an `op` key: it names one as `"op"`, or
/// has an escape, with which `"\u006fp"` is that key too.
fn may_name_op(header: Option<&[u8]>) -> bool {
    header.is_some_and(|h| h.contains(&b'\\') || h.windows(4).any(|w| w == b"\"op\""))
}

/// The error an `error` frame's header stands for.
fn remote_error(members: &Members<'_>, header: Bytes) -> RemoteError {
    let code = get(members, "error").map_or_else(|| "unknown".into(), value_str);
    let message = get(members, "message").map_or_else(String::new, value_str);
    RemoteError { closes: closes_connection(&code), code, message, header }
}

/// Python's `int` value of a JSON value (`bool` is an `int` there too).
fn py_int(v: Option<&JsonValue<'_>>) -> Option<i64> {
    match v? {
        JsonValue::Int(i) => Some(*i),
        JsonValue::Bool(b) => Some(i64::from(*b)),
        _ => None,
    }
}

/// Python's `v == n` for a header value and a size.
fn py_eq_int(v: Option<&JsonValue<'_>>, n: u64) -> bool {
    match v {
        Some(JsonValue::Float(f)) => *f == n as f64,
        v => py_int(v).is_some_and(|i| i >= 0 && i as u64 == n),
    }
}

fn is_str(v: Option<&JsonValue<'_>>, s: &str) -> bool {
    matches!(v, Some(JsonValue::Str(t)) if t == s)
}

fn str_field(members: &Members<'_>, key: &str) -> Option<String> {
    match get(members, key) {
        Some(JsonValue::Str(s)) => Some(s.to_string()),
        _ => None,
    }
}

/// An upload's chunk size: ours, or less if the server's `ready` asks.
fn chunk_size(asked: Option<&JsonValue<'_>>) -> usize {
    match py_int(asked) {
        Some(n) => n.clamp(1, CHUNK as i64) as usize,
        None => CHUNK,
    }
}

/// The Python class of a framing error (`rframe._errors`), for messages.
pub fn error_class(err: &FrameError) -> &'static str {
    match err {
        FrameError::TooLarge { .. } => "FrameTooLarge",
        FrameError::NegativeLength { .. } => "FrameError",
        FrameError::Header(_) => "HeaderError",
        FrameError::Incomplete { .. } => "IncompleteFrame",
        FrameError::Checksum { .. } => "ChecksumError",
    }
}
