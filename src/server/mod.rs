//! The tokio server: accept loop, limits, shutdown. What a connection does
//! lives in `connection`; how a command runs lives in `crate::exec`.

mod config;
mod connection;
pub mod exposure;
mod guesses;
mod listener;
mod log;
mod startups;
mod tls_accept;

pub use crate::protocol::config::{Level, Reply, ServerConfig};
pub use config::MAX_CONNECTIONS;
pub use connection::{command_spec, looks_raw, raw_request, PRE_AUTH_CODEC};
pub use exposure::TlsMode;
pub use listener::{Bind, BoundAddr};
pub use startups::MaxStartups;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use crate::codec::Frame;
use crate::files::Root;
use crate::tls::{Identity, ServerTls};

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Serves a custom protocol: one reply per frame. An `Err` becomes a
/// `handler` error frame; the connection goes on.
pub trait Handler: Send + Sync + 'static {
    fn call(&self, frame: Frame) -> BoxFuture<Result<Reply, String>>;
}

/// Where the server's log lines go. Called from tokio tasks: must not block.
pub trait Observer: Send + Sync + 'static {
    fn log(&self, level: Level, message: String);
}

/// Logs nowhere.
pub struct Silent;

impl Observer for Silent {
    fn log(&self, _: Level, _: String) {}
}

/// What every connection task shares.
struct Shared {
    config: ServerConfig,
    root: Option<Arc<Root>>,
    /// Proofs are checked one at a time, server-wide, and a wrong one keeps
    /// its turn for a pause: guessing gets about two answers a second, however
    /// many connections it opens.
    login_turns: Semaphore,
    handler: Option<Arc<dyn Handler>>,
    observer: Arc<dyn Observer>,
    /// Set on a TLS server: a ClientHello gets TLS, plaintext is served to
    /// peers on this machine only.
    tls: Option<ServerTls>,
    output_budget: Arc<crate::exec::OutputBudget>,
    /// Unauthenticated connections, counted and capped; `None` without a
    /// token, where every connection is authenticated at once.
    startups: Option<Arc<startups::Startups>>,
    /// Sources whose proofs wait for `login_turns` (see `guesses`).
    guesses: Mutex<guesses::Guesses>,
}

/// At most this many connections are being told "busy" at once; past that,
/// over-limit connections are closed without a word, so a flood costs nothing.
const MAX_REFUSING: usize = 64;
/// At most this many refused connections are drained after their answer
/// (`connection::linger`, up to a second each); past that, closed at once.
const MAX_LINGERING: usize = 256;

pub struct Server {
    shared: Arc<Shared>,
    address: BoundAddr,
    socket: Mutex<Option<listener::BoundSocket>>,
    slots: Arc<Semaphore>,
    shutdown: watch::Sender<bool>,
    accept_task: Mutex<Option<JoinHandle<()>>>,
    warnings: Vec<String>,
}

impl Server {
    /// Binds the listening socket; serving starts with [`Server::start`] or
    /// [`Server::serve_here`]. Refuses (`Unsupported`) a command server
    /// (no handler) where commands cannot run (see `exec::UNSUPPORTED`), and
    /// (`InvalidInput`) what
    /// [`ServerConfig::check`] refuses, and what [`exposure::check`] refuses:
    /// a network address without a long token or without TLS, unless
    /// `insecure`; what `insecure` allows is logged as a warning and kept in
    /// [`Server::warnings`].
    pub fn bind(
        bind: Bind,
        config: ServerConfig,
        handler: Option<Arc<dyn Handler>>,
        observer: Arc<dyn Observer>,
    ) -> std::io::Result<Server> {
        config.check(handler.is_some()).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        // Commands cannot run on every system (Windows, for now): a command
        // server there refuses to start, saying why; a handler server serves.
        if let (None, Some(why)) = (&handler, crate::exec::UNSUPPORTED) {
            return Err(std::io::Error::new(std::io::ErrorKind::Unsupported, why));
        }
        let root = match &config.root {
            Some(path) => Some(Arc::new(
                Root::open(path).map_err(|e| std::io::Error::new(e.kind(), format!("root {}: {e}", path.display())))?,
            )),
            None => None,
        };
        // Judged by the address actually bound, not by a name looked up twice.
        let socket = listener::BoundSocket::bind(&bind)?;
        let address = socket.address()?;
        let local = match &address {
            BoundAddr::Tcp(a) => listener::is_loopback(a.ip()),
            BoundAddr::Unix(_) => true,
        };
        let exposure =
            exposure::check(&address.to_string(), local, config.token.as_deref(), config.tls, config.insecure)
                .map_err(|message| std::io::Error::new(std::io::ErrorKind::InvalidInput, message))?;
        let tls = match exposure.tls {
            true => {
                if !tls_accept::tells_hellos_apart(&connection::opening_codec(&config)) {
                    let message = "TLS needs a codec that refuses the bytes a TLS hello starts with as a frame's \
                                   length (16 03 01 ..): lower max_header (JSON) or max_body (length-only) below \
                                   66,326, or use big-endian byte order";
                    return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, message));
                }
                let identity = Identity::load(&config.tls_identity).and_then(Identity::server_tls);
                Some(identity.map_err(|e| std::io::Error::new(e.kind(), format!("TLS certificate: {e}")))?)
            }
            false => None,
        };
        for warning in &exposure.warnings {
            observer.log(Level::Warning, warning.clone());
        }
        let slots = Arc::new(Semaphore::new(config.max_connections));
        // Every log line passes here: messages quote what peers send.
        let observer = Arc::new(log::Escaping(observer));
        let output_budget = crate::exec::OutputBudget::new(config.output_budget);
        let startups = config
            .token
            .is_some()
            .then(|| Arc::new(startups::Startups::new(config.max_startups, config.max_startups_per_source)));
        let guesses = Mutex::default();
        Ok(Server {
            shared: Arc::new(Shared {
                config,
                root,
                login_turns: Semaphore::new(1),
                handler,
                observer,
                tls,
                output_budget,
                startups,
                guesses,
            }),
            address,
            socket: Mutex::new(Some(socket)),
            slots,
            shutdown: watch::channel(false).0,
            accept_task: Mutex::new(None),
            warnings: exposure.warnings,
        })
    }

    /// The lowercase hex SHA-256 of the TLS certificate's DER bytes, which
    /// clients pin; `None` without TLS.
    pub fn tls_fingerprint(&self) -> Option<String> {
        self.shared.tls.as_ref().map(ServerTls::fingerprint)
    }

    /// What an insecure configuration was warned of at bind.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    pub fn address(&self) -> &BoundAddr {
        &self.address
    }

    /// Starts accepting on `rt`, in the background. A second call does nothing.
    pub fn start(&self, rt: &tokio::runtime::Runtime) {
        let Some(socket) = self.socket.lock().expect("lock").take() else { return };
        let shared = self.shared.clone();
        let slots = self.slots.clone();
        let shutdown = self.shutdown.subscribe();
        let task = rt.spawn(accept_loop(socket, shared, slots, shutdown));
        *self.accept_task.lock().expect("lock") = Some(task);
    }

    /// Serves on the calling thread, on a single-threaded runtime of its own,
    /// until stopped; then gives connections up to `grace` to finish. For a
    /// handler that must run on one thread: a request then crosses no thread.
    pub fn serve_here(&self, grace: Duration) -> std::io::Result<()> {
        let Some(socket) = self.socket.lock().expect("lock").take() else { return Ok(()) };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (shared, slots) = (self.shared.clone(), self.slots.clone());
        let all = self.shared.config.max_connections as u32;
        let shutdown = self.shutdown.subscribe();
        rt.block_on(async move {
            accept_loop(socket, shared, slots.clone(), shutdown).await;
            let _ = tokio::time::timeout(grace, slots.acquire_many(all)).await;
        });
        Ok(())
    }

    /// Tells the accept loop and every connection to stop; running commands
    /// are killed. Returns at once; see [`Server::wait`].
    pub fn stop(&self) {
        self.shutdown.send_replace(true);
    }

    pub fn log(&self, level: Level, message: String) {
        self.shared.observer.log(level, message);
    }

    pub fn is_stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Waits (blocking) up to `grace` for every connection to finish after a
    /// stop. Returns false if some were still running.
    ///
    /// The wait runs as a task on `rt` and this thread blocks on a channel,
    /// not in `block_on`: a Python handler (its thread inside a runtime of its
    /// own) may stop another server.
    pub fn wait(&self, rt: &tokio::runtime::Runtime, grace: Duration) -> bool {
        let slots = self.slots.clone();
        let all = self.shared.config.max_connections as u32;
        let task = self.accept_task.lock().expect("lock").take();
        let (done, finished) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let all_ended = async {
                if let Some(task) = task {
                    let _ = task.await;
                }
                let _ = slots.acquire_many(all).await;
            };
            let _ = done.send(tokio::time::timeout(grace, all_ended).await.is_ok());
        });
        // The task answers by `grace`; the margin covers its scheduling.
        finished.recv_timeout(grace + Duration::from_secs(1)).unwrap_or(false)
    }
}

/// A server nobody holds any more stops, rather than serving on unseen.
impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

/// Sleeps until `due`, or forever.
async fn sleep_until_due(due: Option<std::time::Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due.into()).await,
        None => std::future::pending().await,
    }
}

/// Names a start-up sweep of the root reads at most.
const SWEEP_BUDGET: usize = 100_000;

/// Removes, in the background, the temporary files of uploads cut short by a
/// server that was killed (see [`Root::sweep_uploads`]): files no transfer
/// holds locked, and untouched for twice the idle timeout and an hour at least
/// (what protects a live file where locks do not reach this process). Ends
/// early when the server stops.
fn sweep_uploads(shared: &Shared, root: Arc<Root>, stop: watch::Receiver<bool>) {
    let age = shared.config.idle_timeout.saturating_mul(2).max(Duration::from_secs(3600));
    let observer = shared.observer.clone();
    tokio::task::spawn_blocking(move || match root.sweep_uploads(age, SWEEP_BUDGET, &|| *stop.borrow()) {
        Ok((removed, ran_out)) => {
            if removed > 0 {
                let message = format!("removed {removed} temporary files of unfinished uploads under the root");
                observer.log(Level::Info, message);
            }
            if ran_out {
                let message = format!("the sweep for unfinished uploads stopped after {SWEEP_BUDGET} names");
                observer.log(Level::Info, message);
            }
        }
        Err(e) => observer.log(Level::Warning, format!("could not sweep the root for unfinished uploads: {e}")),
    });
}

async fn accept_loop(
    socket: listener::BoundSocket,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) {
    let listener = match socket.into_listener() {
        Ok(l) => l,
        Err(e) => {
            shared.observer.log(Level::Error, format!("cannot listen: {e}"));
            return;
        }
    };
    if let Some(root) = shared.root.clone() {
        sweep_uploads(&shared, root, shutdown.clone());
    }
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let lingering = Arc::new(Semaphore::new(MAX_LINGERING));
    let mut refusals = startups::Refusals::default();
    let mut rng = startups::seed();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break,
            accepted = listener.accept() => accepted,
            _ = sleep_until_due(refusals.due()) => {
                if let Some(line) = refusals.flush(std::time::Instant::now()) {
                    shared.observer.log(Level::Warning, line);
                }
                continue;
            }
        };
        let (stream, peer, ip) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                shared.observer.log(Level::Warning, format!("accept failed: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let source = startups::Source::of(ip);
        let peer_local = ip.is_none_or(listener::is_loopback);
        let startup = match &shared.startups {
            None => None,
            Some(startups) => match startups.admit(source, startups::roll(&mut rng)) {
                Ok(guard) => Some(guard),
                Err(refusal) => {
                    // Closed unread: the cheapest answer a flood can get.
                    drop(stream);
                    let now = std::time::Instant::now();
                    if let Some(line) = refusals.note(refusal, &peer, startups.limits(), now) {
                        shared.observer.log(Level::Warning, line);
                    }
                    continue;
                }
            },
        };
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let shared = shared.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    connection::serve(stream, peer, peer_local, shared, shutdown, startup, source).await;
                    drop(permit);
                });
            }
            Err(_) => {
                let Ok(refusal) = refusing.clone().try_acquire_owned() else { continue };
                shared.observer.log(Level::Warning, format!("{peer}: refused, max_connections reached"));
                let codec = shared.config.codec;
                let lingering = lingering.clone();
                tokio::spawn(async move {
                    let mut stream = stream;
                    let answered = connection::refuse_busy(&mut stream, codec).await;
                    drop(refusal);
                    // Drained for a moment, so that a client that sent its
                    // request at once reads the answer rather than a reset;
                    // closed at once when too many linger already.
                    if answered {
                        if let Ok(_lingering) = lingering.try_acquire_owned() {
                            connection::linger(&mut stream).await;
                        }
                    }
                });
            }
        }
    }
    listener.close();
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use bytes::Bytes;

    use super::*;
    use crate::codec::Codec;

    /// Upper-cases the body, keeps the header.
    struct Upper;

    impl Handler for Upper {
        fn call(&self, frame: Frame) -> BoxFuture<Result<Reply, String>> {
            let body = Bytes::from(frame.body.to_ascii_uppercase());
            Box::pin(std::future::ready(Ok(Reply::new(frame.header.map(|h| h.to_vec()), body))))
        }
    }

    fn loopback() -> Bind {
        Bind::Tcp { host: "127.0.0.1".into(), port: 0 }
    }

    #[test]
    fn a_handler_server_answers_over_loopback_tcp() {
        let server =
            Server::bind(loopback(), ServerConfig::default(), Some(Arc::new(Upper)), Arc::new(Silent)).unwrap();
        let BoundAddr::Tcp(addr) = server.address().clone() else { panic!("not TCP") };
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        server.start(&rt);
        let codec = Codec::default();
        let mut sock = std::net::TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        sock.write_all(&codec.encode(Some(br#"{"op": "echo", "total_size": 5}"#), b"hello").unwrap()).unwrap();
        let mut got = bytes::BytesMut::new();
        let mut decoder = crate::codec::Decoder::new(codec);
        let mut buf = [0u8; 4096];
        let frame = loop {
            if let Some(frame) = decoder.decode(&mut got).unwrap() {
                break frame;
            }
            let n = sock.read(&mut buf).unwrap();
            assert!(n > 0, "closed after {got:?}");
            got.extend_from_slice(&buf[..n]);
        };
        assert_eq!(&frame.body[..], b"HELLO");
        server.stop();
    }

    #[test]
    fn a_command_server_starts_where_commands_run_and_says_why_not_elsewhere() {
        let result = Server::bind(loopback(), ServerConfig::default(), None, Arc::new(Silent));
        match crate::exec::UNSUPPORTED {
            None => assert!(result.is_ok()),
            Some(why) => {
                let err = result.err().expect("refused");
                assert_eq!((err.kind(), err.to_string()), (std::io::ErrorKind::Unsupported, why.to_string()));
            }
        }
    }
}
