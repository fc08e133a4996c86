//! What a server is configured with, as plain data: the limits and choices
//! the server session applies ([`ServerConfig`]), its replies and log levels.
//! They live here, below the I/O layer, so that the sans-IO server session
//! needs nothing from it; the checks of a configuration are
//! `server/config.rs`'s, the meaning of a TLS mode `server/exposure.rs`'s.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;

use super::{error_header, ErrorCode};
use crate::codec::Codec;

/// What a server does, and the limits it keeps.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub codec: Codec,
    pub token: Option<Vec<u8>>,
    /// The longest a `run` may run (a request may ask for less).
    pub timeout: Duration,
    /// The longest a live command (`start`) may run; `None`: as long as its
    /// client stays (a disconnect kills it), as ssh's. A request may ask for less.
    pub live_timeout: Option<Duration>,
    /// Bytes kept of a command's stdout and of its stderr.
    pub max_output: usize,
    pub max_connections: usize,
    /// Programs that may run; `Some` also turns the shell off.
    pub allow: Option<Vec<String>>,
    pub shell: bool,
    /// Live commands may ask for a pseudo-terminal (`--no-pty`: never).
    pub pty: bool,
    /// With an allow list too (`--allow-pty`): a terminal lets an allowed
    /// program be driven as a person would, so an allow list refuses one
    /// unless this says otherwise.
    pub allow_pty: bool,
    pub cwd: Option<PathBuf>,
    /// Files are served beneath this directory (`put`, `get`, `list`); `None`: no files.
    pub root: Option<PathBuf>,
    /// From a request's first byte to its complete header: an absolute
    /// deadline, so a client trickling bytes cannot hold a connection (slowloris).
    pub header_timeout: Duration,
    /// How long a connection may sit between requests, or stall inside a body.
    pub idle_timeout: Duration,
    /// What the output encoding is said to be in result headers.
    pub encoding: String,
    /// TLS on, off, or decided by the address (see `server::exposure::check`).
    pub tls: TlsMode,
    /// The certificate TLS uses.
    pub tls_identity: IdentitySource,
    /// Serve the network without a token, or without TLS (loudly).
    pub insecure: bool,
    /// Bytes of command output held in memory at once, by all commands
    /// together (each keeps at most `max_output` of stdout and of stderr).
    pub output_budget: usize,
    /// With a token: connections not yet authenticated, in all (see [`MaxStartups`]).
    pub max_startups: MaxStartups,
    /// With a token: connections not yet authenticated from one address (an
    /// IPv6 /64); Unix-socket peers are not counted here.
    pub max_startups_per_source: usize,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            codec: Codec { max_body: 16 << 20, ..Codec::default() },
            token: None,
            timeout: Duration::from_secs(30),
            live_timeout: None,
            max_output: 16 << 20,
            max_connections: 1024,
            allow: None,
            shell: true,
            pty: true,
            allow_pty: false,
            cwd: None,
            root: None,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            encoding: "utf-8".into(),
            tls: TlsMode::Auto,
            tls_identity: IdentitySource::Generated(None),
            insecure: false,
            output_budget: 256 << 20,
            max_startups: MaxStartups::default(),
            // Fewer than `start`: one address alone never brings on the draw.
            // A client opening many connections at once from one host gets
            // this many logins in flight; each takes a round trip or two.
            max_startups_per_source: 16,
        }
    }
}

/// A response: its JSON header text (with `total_size`; `None` for a
/// length-only codec) and body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub header: Option<Vec<u8>>,
    pub body: Bytes,
    /// Set on error replies: a length-only codec cannot carry them.
    pub error: Option<ErrorCode>,
}

impl Reply {
    pub fn new(header: Option<Vec<u8>>, body: Bytes) -> Reply {
        Reply { header, body, error: None }
    }

    pub fn error(code: ErrorCode, message: &str) -> Reply {
        Reply { header: Some(error_header(code, message)), body: Bytes::new(), error: Some(code) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warning,
    Error,
}

/// Whether the server speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// On when the address is reachable from other machines, off on loopback
    /// and Unix sockets.
    #[default]
    Auto,
    On,
    Off,
}

/// OpenSSH's `MaxStartups start:rate:full`: below `start` unauthenticated
/// connections every new one is let in; from `start` on, a new one is refused
/// with a chance of `rate` percent, rising linearly to 100% at `full`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxStartups {
    pub start: usize,
    pub rate: u32,
    pub full: usize,
}

impl Default for MaxStartups {
    /// sshd's 10:30:100 guards a fork per connection; ours costs a task and
    /// about 8 KiB, so the numbers are larger. A login takes a round trip or
    /// two, so even a thousand logins a second leave a few dozen in progress
    /// at any moment: 64 of them are let in without a draw. 256 is a quarter
    /// of the default `max_connections` (1024): connections that have not
    /// proven the token can never hold more than that share of the slots.
    fn default() -> MaxStartups {
        MaxStartups { start: 64, rate: 30, full: 256 }
    }
}

/// Where a server's own certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentitySource {
    /// Made on first use in this directory and reused (`None`: the per-user
    /// state directory, see `tls::default_dir`).
    Generated(Option<PathBuf>),
    /// A certificate (chain) and its private key, PEM.
    Files { cert: PathBuf, key: PathBuf },
}
