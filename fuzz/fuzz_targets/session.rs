//! The server session (`protocol::server_session`), driven as
//! `server::connection` drives it, with arbitrary peer bytes: through the
//! login, requests, and `put` / `get` / `list` transfers, with a disk and a
//! command runner made up here (nothing runs, nothing touches a file).
//!
//! Each piece of the stream is a burst followed by a pause: at the start of a
//! request, a burst the session takes as a raw line is one; otherwise the
//! session's codec (switched at `LoggedIn`) decodes frames, and each frame,
//! framing error, and finally the end of the stream (or, flag 7, a deadline)
//! goes to the session. Every action is carried out in order, its outcome
//! reported as the driver reports it.
//!
//! Flags (byte 0): bit 0 token (`fuzz-token`, fixed challenge nonce, as in
//! `request`), bit 1 TLS (the certificate hash is 32 bytes of 7), bit 2 a
//! handler, bit 3 a root (file requests), bit 4 length-only codec, bit 5 the
//! disk refuses (create: exists, open: not found, the second chunk written
//! fails, commit fails), bit 6 files shrink while sent, bit 7 the stream ends
//! by a deadline rather than the peer leaving.
//! Limits (byte 1): bits 0-1 max_header 64 KiB / 4 KiB / 512 / 64; bits 2-3
//! max_body 16 MiB / 1 KiB / 16 / 0.
//!
//! Checks: nothing panics (a panic is also how the session reports being
//! driven wrong); with a token, nothing runs and no file is touched before
//! `LoggedIn`, which switches to the server's codec; a handler is called only
//! on a handler's server, file actions only on a server with a root; every
//! reply header is a JSON object whose `total_size` is its body's length, an
//! error header at most 4 KiB; a `stored` file is exactly the bytes written
//! (size and digest); a download's `data` bodies are within its chunk size,
//! add up to the size its `file` frame announced, and its `end` carries their
//! digest; after `Close` the session is closed and says nothing more; the
//! end of the stream (or the deadline) closes it.
#![no_main]

use std::path::PathBuf;
use std::time::Duration;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

use _rframe::codec::{ByteOrder, Checksum, Codec, Decoder, Hasher};
use _rframe::exec::{CommandOutput, Held};
use _rframe::files::{Entry, FileError, Kind};
use _rframe::protocol::server_session::{Action, Channel, Kept, ServerSession, Timeout};
use _rframe::server::{Reply, ServerConfig};
use rframe_fuzz::Input;

const TOKEN: &[u8] = b"fuzz-token";
const SERVER_NONCE: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const CERT_HASH: [u8; 32] = [7; 32];
const MAX_ERROR_HEADER: usize = 4096;

fn fixed_nonce() -> String {
    SERVER_NONCE.into()
}

fn config_from(flags: u8, limits: u8) -> ServerConfig {
    let json_header = flags & 16 == 0;
    let codec = Codec {
        json_header,
        byteorder: ByteOrder::Little,
        max_header: [64 << 10, 4096, 512, 64][limits as usize & 3],
        max_body: [16 << 20, 1024, 16, 0][(limits as usize >> 2) & 3],
        checksum: None,
    };
    codec.validate().expect("the fuzz configurations are valid codecs");
    ServerConfig {
        codec,
        token: (flags & 1 != 0).then(|| TOKEN.to_vec()),
        root: (flags & 8 != 0).then(|| PathBuf::from("/srv/fuzz")),
        ..ServerConfig::default()
    }
}

/// The made-up file a name stands for: its bytes, derived from the name.
fn file_for(name: &str) -> Vec<u8> {
    let len = name.bytes().fold(0usize, |a, b| a.wrapping_mul(31).wrapping_add(b as usize)) % 3000;
    (0..len).map(|i| (i as u8).wrapping_mul(13) ^ name.len() as u8).collect()
}

/// A download in progress, as the peer would see it.
struct Download {
    size: u64,
    received: Vec<u8>,
    checksum: Checksum,
}

struct Driver<'c> {
    config: &'c ServerConfig,
    session: ServerSession<'c>,
    handler: bool,
    disk_refuses: bool,
    shrinks: bool,
    buf: BytesMut,
    decoder: Decoder,
    logged_in: bool,
    closed: bool,
    /// The upload's bytes written so far (the made-up temporary file).
    upload: Option<Vec<u8>>,
    chunks_written: usize,
    /// The file being sent: its bytes, and how far it was read.
    file: Option<(Vec<u8>, usize)>,
    reading: Option<(usize, Hasher)>,
    download: Option<Download>,
    chunk_limit: usize,
}

impl<'c> Driver<'c> {
    fn new(config: &'c ServerConfig, flags: u8) -> Driver<'c> {
        let handler = flags & 4 != 0;
        let channel = if flags & 2 != 0 { Channel::Tls(CERT_HASH) } else { Channel::Plain };
        let session = ServerSession::new(config, handler, channel).with_nonces(fixed_nonce);
        let decoder = Decoder::new(session.codec());
        let chunk_limit = (1usize << 20).min(config.codec.max_body.min(1 << 20) as usize).max(1);
        Driver {
            config,
            logged_in: session.authenticated(),
            session,
            handler,
            disk_refuses: flags & 32 != 0,
            shrinks: flags & 64 != 0,
            buf: BytesMut::new(),
            decoder,
            closed: false,
            upload: None,
            chunks_written: 0,
            file: None,
            reading: None,
            download: None,
            chunk_limit,
        }
    }

    /// One burst of bytes, followed by a pause.
    fn burst(&mut self, piece: &[u8]) {
        self.buf.extend_from_slice(piece);
        while !self.closed {
            if self.decoder.consumed() == 0 && !self.buf.is_empty() && self.session.raw_line_start(&self.buf) {
                let line = self.buf.split().to_vec();
                let actions = self.session.receive_raw(line);
                self.perform(actions);
                continue;
            }
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(frame)) => {
                    let actions = self.session.receive(frame);
                    self.perform(actions);
                }
                Ok(None) => return,
                Err(e) => {
                    let actions = self.session.receive_error(&e);
                    self.perform(actions);
                    assert!(self.closed, "a framing error closes the connection");
                }
            }
        }
    }

    fn end(&mut self, by_deadline: bool) {
        if self.closed {
            assert!(self.session.connection_lost().is_empty(), "a closed session says nothing more");
            return;
        }
        let actions = if by_deadline {
            let mid = !self.buf.is_empty() || self.decoder.consumed() > 0;
            self.session.timed_out(if mid { Timeout::Request } else { Timeout::Idle })
        } else {
            self.session.connection_lost()
        };
        self.perform(actions);
        assert!(self.closed && self.session.is_closed(), "the end of the stream ends the session");
    }

    /// Carries out actions in order, then reports a chunk read (after the
    /// frames that went out meanwhile), until the session waits for the peer.
    fn perform(&mut self, actions: Vec<Action>) {
        let mut queue: std::collections::VecDeque<Action> = actions.into();
        loop {
            while let Some(action) = queue.pop_front() {
                assert!(!self.closed, "an action after Close: {action:?}");
                let next = self.execute(action);
                for action in next.into_iter().rev() {
                    queue.push_front(action);
                }
            }
            let Some((want, mut hasher)) = self.reading.take() else { return };
            let (bytes, offset) = self.file.as_mut().expect("a file being read");
            let end = (*offset + want).min(bytes.len());
            let chunk = bytes[*offset..end].to_vec();
            *offset = end;
            hasher.update(&chunk);
            queue.extend(self.session.chunk_read(Ok((hasher, chunk))));
        }
    }

    fn execute(&mut self, action: Action) -> Vec<Action> {
        let touches = matches!(
            action,
            Action::Run { .. }
                | Action::CallHandler(_)
                | Action::CreateUpload { .. }
                | Action::OpenFile { .. }
                | Action::ListDir { .. }
                | Action::Start { .. }
        );
        assert!(!touches || self.logged_in, "{action:?} before the login");
        match action {
            Action::Reply(reply) => {
                self.check_reply(&reply);
                vec![]
            }
            Action::Log(_, line) => {
                assert!(!line.is_empty());
                vec![]
            }
            Action::Run { spec, shown } => {
                assert!(!self.handler, "a handler's server runs no commands");
                let out = CommandOutput {
                    returncode: shown.len() as i32 % 3,
                    stdout: shown.clone().into_bytes(),
                    stderr: spec.input.map(|b| b.to_vec()).unwrap_or_default(),
                    stdout_truncated: false,
                    stderr_truncated: false,
                    budget_ran_out: shown.len() % 5 == 0,
                    held: Held::default(),
                    timed_out: false,
                    duration: Duration::from_millis(1),
                };
                let out = if shown.len() % 7 == 0 { Err(std::io::ErrorKind::NotFound.into()) } else { Ok(out) };
                self.session.command_done(&shown, out)
            }
            Action::Start { shown, .. } => {
                assert!(!self.handler, "a handler's server runs no commands");
                if shown.len() % 7 == 0 {
                    return self.session.started(Err(std::io::ErrorKind::NotFound.into()));
                }
                let mut actions = self.session.started(Ok(()));
                actions.extend(self.session.output(1, shown.into_bytes().into()));
                actions
            }
            Action::WriteStdin(_) | Action::CloseStdin | Action::Resize(..) => {
                assert!(self.session.is_live(), "{action:?} without a live command");
                vec![]
            }
            // The command dies of the first signal it is sent.
            Action::Signal(_) => {
                assert!(self.session.is_live(), "a signal without a live command");
                let exit = _rframe::protocol::live::Exit {
                    returncode: -2,
                    duration: Duration::from_millis(1),
                    timed_out: false,
                };
                self.session.exited(exit)
            }
            Action::CallHandler(frame) => {
                assert!(self.handler);
                let result = match frame.body.len() % 3 {
                    0 => Err("the handler raised".into()),
                    _ => Ok(Reply::new(frame.header.map(|h| h.to_vec()), frame.body)),
                };
                self.session.handler_done(result)
            }
            Action::CheckProof(check) => {
                let right = check.verify();
                self.session.proof_checked(check, right)
            }
            Action::Pause(_) => vec![],
            Action::LoggedIn { codec } => {
                assert!(!self.logged_in && self.config.token.is_some());
                assert_eq!(codec, self.config.codec, "logged in: the server's codec");
                self.logged_in = true;
                self.decoder = Decoder::new(codec);
                vec![]
            }
            Action::CreateUpload { name, .. } => {
                assert!(self.config.root.is_some() && !self.handler);
                assert!(self.upload.is_none());
                if self.disk_refuses && name.len() % 2 == 0 {
                    return self.session.upload_created(Err(FileError::Exists(name)));
                }
                self.upload = Some(vec![]);
                self.chunks_written = 0;
                self.session.upload_created(Ok(()))
            }
            Action::CreateKept { name, checksum, .. } => {
                assert!(self.config.root.is_some() && !self.handler);
                assert!(self.upload.is_none());
                if self.disk_refuses && name.len() % 2 == 0 {
                    return self.session.kept_opened(Err(FileError::Exists(name)));
                }
                self.upload = Some(vec![]);
                self.chunks_written = 0;
                self.session.kept_opened(Ok(Kept { len: 0, recorded: None, hasher: Hasher::new(checksum) }))
            }
            Action::KeepUpload => {
                self.upload = None;
                vec![]
            }
            Action::HashPrefix { len, mut hasher } => {
                let (bytes, at) = self.file.as_mut().expect("an open file");
                let end = bytes.len().min(usize::try_from(len).unwrap_or(usize::MAX));
                hasher.update(&bytes[..end]);
                *at = end;
                self.session.prefix_hashed(Ok((end as u64, hasher)))
            }
            Action::Rewind => {
                self.file.as_mut().expect("an open file").1 = 0;
                vec![]
            }
            Action::WriteChunk { chunk, mut hasher, restart } => {
                assert!(chunk.len() <= self.chunk_limit, "a chunk over the chunk size was taken");
                if restart.is_some() {
                    self.upload.as_mut().expect("an open upload").clear();
                }
                self.chunks_written += 1;
                let upload = self.upload.as_mut().expect("an open upload");
                if self.disk_refuses && self.chunks_written == 2 {
                    self.upload = None;
                    let source = std::io::Error::other("disk full");
                    self.session.chunk_written(Err(FileError::Io { name: "x".into(), source }));
                } else {
                    hasher.update(&chunk);
                    upload.extend_from_slice(&chunk);
                    self.session.chunk_written(Ok(hasher));
                }
                vec![]
            }
            Action::StoreFile { data, .. } => {
                // An inline put: checked by the session, stored at once.
                assert!(self.config.root.is_some() && !self.handler);
                assert!(self.upload.is_none());
                assert!(data.len() <= self.chunk_limit, "an inline put over the chunk size was taken");
                self.upload = Some(data.to_vec());
                self.commit()
            }
            Action::MakeDir { name, .. } => {
                assert!(self.config.root.is_some() && !self.handler);
                let made = if self.disk_refuses { Err(FileError::NotDirectory(name)) } else { Ok(()) };
                self.session.dir_made(made)
            }
            Action::MakeLink { name, target, .. } => {
                assert!(self.config.root.is_some() && !self.handler);
                assert!(_rframe::files::check_link_target(&name, &target).is_ok(), "a link out of the root was made");
                let made = if self.disk_refuses { Err(FileError::Exists(name)) } else { Ok(()) };
                self.session.link_made(made)
            }
            Action::Sync => {
                assert!(self.config.root.is_some() && !self.handler);
                self.session.synced(Ok(()))
            }
            Action::CommitUpload { .. } => self.commit(),
            Action::DiscardUpload => {
                self.upload = None;
                vec![]
            }
            Action::OpenFile { name } => {
                assert!(self.config.root.is_some() && !self.handler);
                if self.disk_refuses {
                    return self.session.file_opened(Err(FileError::NotFound(name)));
                }
                let bytes = file_for(&name);
                let size = bytes.len() as u64;
                let kept = if self.shrinks { bytes.len() / 2 } else { bytes.len() };
                self.file = Some((bytes[..kept].to_vec(), 0));
                self.session.file_opened(Ok(size))
            }
            Action::ReadChunk { want, hasher } => {
                assert!(self.reading.is_none(), "one chunk read at a time");
                assert!(want <= self.chunk_limit);
                self.reading = Some((want, hasher));
                vec![]
            }
            Action::ListDir { name, .. } => {
                assert!(self.config.root.is_some() && !self.handler);
                if self.disk_refuses {
                    return self.session.listed(Err(FileError::NotDirectory(name)));
                }
                let entries = (0..name.len() % 40)
                    .map(|i| Entry {
                        name: format!("{name}-{i}"),
                        size: i as u64,
                        kind: Kind::File,
                        mtime: 1.5,
                        ..Entry::default()
                    })
                    .collect();
                self.session.listed(Ok((entries, name.len() % 2 == 0)))
            }
            Action::Close(reply) => {
                if let Some(reply) = &reply {
                    assert!(self.config.codec.json_header, "a length-only server closes without a word");
                    self.check_reply(reply);
                    assert_eq!(header(reply)["op"], "error");
                }
                assert!(self.session.is_closed());
                self.closed = true;
                self.upload = None;
                vec![]
            }
        }
    }

    /// Stores the open upload (a streamed one's end, or an inline put).
    fn commit(&mut self) -> Vec<Action> {
        let written = self.upload.take().expect("an open upload");
        if self.disk_refuses {
            let source = std::io::Error::other("rename failed");
            return self.session.upload_committed(Err(FileError::Io { name: "x".into(), source }));
        }
        let next = self.session.upload_committed(Ok(None));
        for action in &next {
            if let Action::Reply(reply) = action {
                let h = header(reply);
                assert_eq!(h["op"], "stored");
                assert_eq!(h["size"].as_u64(), Some(written.len() as u64), "stored what was written");
                let checksum = Checksum::from_name(h["checksum"].as_str().unwrap()).unwrap();
                assert_eq!(h["digest"], checksum.hex_digest(&written), "the digest of what was written");
            }
        }
        next
    }

    fn check_reply(&mut self, reply: &Reply) {
        let Some(raw) = reply.header.as_deref() else { return };
        if self.handler && reply.error.is_none() && self.logged_in {
            return; // the handler's echo of the peer's own frame
        }
        let h = header(reply);
        assert_eq!(h["total_size"].as_u64(), Some(reply.body.len() as u64), "total_size is the body's length");
        if reply.error.is_some() {
            assert_eq!(h["op"], "error");
            assert!(raw.len() <= MAX_ERROR_HEADER, "an error header of {} bytes", raw.len());
            assert!(self.config.codec.json_header, "a length-only server sends no error frame");
            self.download = None;
            return;
        }
        match h["op"].as_str() {
            Some("file") => {
                let checksum = Checksum::from_name(h["checksum"].as_str().unwrap()).unwrap();
                self.download = Some(Download { size: h["size"].as_u64().unwrap(), received: vec![], checksum });
            }
            Some("data") => {
                let download = self.download.as_mut().expect("data frames follow a file frame");
                assert!(!reply.body.is_empty() && reply.body.len() <= self.chunk_limit);
                download.received.extend_from_slice(&reply.body);
                assert!(download.received.len() as u64 <= download.size, "more data than announced");
            }
            Some("end") => {
                let download = self.download.take().expect("an end frame follows a file frame");
                assert_eq!(download.received.len() as u64, download.size, "the data add up to the size");
                assert_eq!(h["digest"], download.checksum.hex_digest(&download.received));
            }
            Some("ready") => assert_eq!(h["chunk_size"].as_u64(), Some(self.chunk_limit as u64)),
            Some("listing") => {
                let items: serde_json::Value = serde_json::from_slice(&reply.body).expect("a JSON array");
                assert_eq!(items.as_array().unwrap().len() as u64, h["count"].as_u64().unwrap());
            }
            _ => {}
        }
    }
}

fn header(reply: &Reply) -> serde_json::Value {
    let value: serde_json::Value =
        serde_json::from_slice(reply.header.as_deref().expect("a header")).expect("a reply header is JSON");
    assert!(value.is_object(), "a reply header is an object");
    value
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else { return };
    let config = config_from(input.flags, input.limits);
    let mut driver = Driver::new(&config, input.flags);
    let start = driver.session.start();
    driver.perform(start);
    for piece in input.pieces() {
        if driver.closed {
            break;
        }
        driver.burst(piece);
    }
    driver.end(input.flags & 128 != 0);
});
