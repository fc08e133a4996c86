//! File requests (`put`, `get`, `list`; see PROTOCOL.md). A file moves as a
//! stream of `data` frames closed by an `end` frame that carries its digest,
//! so neither side holds more than a few chunks of it. Disk work happens on
//! a blocking thread, a bounded queue away from the socket.

use std::fs::File;
use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;
use tokio::sync::mpsc;

use super::{Conn, End, Request};
use crate::codec::{Checksum, Frame, Hasher};
use crate::files::{FileError, Root, Upload};
use crate::protocol::{self, ErrorCode, FileRequest};
use crate::server::{Level, Reply};

/// The largest `data` frame body sent, and asked for.
pub const CHUNK: usize = 1 << 20;
/// Chunks in flight between the socket and the disk, each way.
const QUEUE: usize = 4;

fn bad(message: &str) -> Reply {
    Reply::error(ErrorCode::BadRequest, message)
}

fn file_error(e: &FileError) -> Reply {
    let code = match e {
        FileError::BadName(..) | FileError::IsDirectory(_) | FileError::NotDirectory(_) => ErrorCode::BadRequest,
        FileError::Outside(_) => ErrorCode::NotAllowed,
        FileError::NotFound(_) => ErrorCode::NotFound,
        FileError::Exists(_) => ErrorCode::Exists,
        FileError::Io { .. } => ErrorCode::Io,
    };
    Reply::error(code, &e.to_string())
}

fn reply(fields: serde_json::Value, body: Bytes) -> Reply {
    let fields = match fields {
        serde_json::Value::Object(map) => map,
        _ => unreachable!("reply headers are objects"),
    };
    let len = body.len() as u64;
    Reply::new(Some(protocol::json_header(fields, len)), body)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("a file task panicked")
}

/// The request's fields, the server's root, and the name asked for.
struct FileCall {
    request: FileRequest,
    checksum: Checksum,
    root: Arc<Root>,
}

impl Conn {
    fn file_call(&self, frame: &Frame, what: &str) -> Result<FileCall, Reply> {
        let Some(root) = self.shared.root.clone() else {
            return Err(Reply::error(
                ErrorCode::NotAllowed,
                "this server does not serve files (start it with --root DIR)",
            ));
        };
        let header = frame.header.as_deref().unwrap_or(b"{}");
        let request = protocol::parse_file_request(header).map_err(|e| bad(&e))?;
        let checksum = match request.checksum.as_deref() {
            None => Checksum::Sha256,
            Some(name) => Checksum::from_name(name)
                .ok_or_else(|| bad(&format!("checksum must be \"sha256\" or \"md5\", got {name:?}")))?,
        };
        if !frame.body.is_empty() {
            return Err(bad(&format!("a {what} request has no body")));
        }
        Ok(FileCall { request, checksum, root })
    }

    /// `put`: answers `ready`, receives `data` frames and the `end` frame,
    /// then stores the file under its name if size and digest match.
    pub(super) async fn put(&mut self, frame: Frame) -> Result<Reply, End> {
        let FileCall { request, checksum, root } = match self.file_call(&frame, "put") {
            Ok(call) => call,
            Err(reply) => return Ok(reply),
        };
        let (Some(name), Some(size)) = (request.name.clone(), request.size) else {
            return Ok(bad("a put request needs \"name\" and \"size\""));
        };
        let overwrite = request.overwrite;
        let created = {
            let name = name.clone();
            blocking(move || root.create(&name, overwrite)).await
        };
        let upload = match created {
            Ok(upload) => upload,
            Err(e) => return Ok(file_error(&e)),
        };
        let chunk = CHUNK.min(self.shared.config.codec.max_body.min(usize::MAX as u64) as usize).max(1);
        let ready = reply(json!({"op": "ready", "chunk_size": chunk}), Bytes::new());
        if let Err(e) = self.send(ready).await {
            self.log(Level::Debug, format!("send failed: {e}"));
            return Err(End::Quiet);
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = tokio::task::spawn_blocking(move || write_chunks(upload, rx, checksum));
        let received = self.receive_chunks(&tx, size).await;
        drop(tx);
        let written = writer.await.expect("the writer panicked");
        let end = match (received, written) {
            (Err(end), _) => {
                self.log(Level::Info, format!("put {name:?} cut off: not stored"));
                return Err(end);
            }
            (_, Err(e)) => return Err(End::Error(ErrorCode::Io, format!("{e}: not stored"))),
            (Ok(Some(end)), Ok(written)) => (end, written),
            // The writer stops early only with an error, handled above.
            (Ok(None), Ok(_)) => return Err(End::Error(ErrorCode::Io, "the file writer stopped: not stored".into())),
        };
        let (end, (upload, digest)) = end;
        if upload.written() != size {
            return Ok(bad(&format!(
                "{name:?}: the put announced {size} bytes and sent {}: not stored",
                upload.written()
            )));
        }
        match end.digest(checksum) {
            None => return Ok(bad(&format!("the end frame has no {:?} digest: not stored", checksum.name()))),
            Some(claimed) if !claimed.eq_ignore_ascii_case(&digest) => {
                self.log(Level::Warning, format!("put {name:?}: {} mismatch: not stored", checksum.name()));
                return Ok(Reply::error(
                    ErrorCode::Checksum,
                    &format!(
                        "{name:?}: {} mismatch: the client sent {claimed}, the server received {digest}: not stored",
                        checksum.name()
                    ),
                ));
            }
            Some(_) => {}
        }
        if let Err(e) = blocking(move || upload.commit()).await {
            return Ok(file_error(&e));
        }
        self.log(Level::Info, format!("stored {name:?}: {size} bytes"));
        Ok(reply(json!({"op": "stored", "name": name, "size": size, checksum.name(): digest}), Bytes::new()))
    }

    /// Hands `data` bodies to the writer until the `end` frame, which it
    /// returns. `Ok(None)`: the writer stopped (its error says why).
    async fn receive_chunks(&mut self, tx: &mpsc::Sender<Bytes>, size: u64) -> Result<Option<FileRequest>, End> {
        let mut received = 0u64;
        let unexpected =
            || End::Error(ErrorCode::BadRequest, "expected a data or end frame of the put in progress".into());
        loop {
            let frame = match self.next_request().await? {
                Some(Request::Frame(frame)) => frame,
                Some(Request::Raw(_)) => return Err(unexpected()),
                None => return Err(End::Quiet),
            };
            let header = frame.header.as_deref().unwrap_or(b"{}");
            let header = protocol::parse_file_request(header).map_err(|e| End::Error(ErrorCode::BadRequest, e))?;
            match header.op.as_deref() {
                Some("data") => {
                    received += frame.body.len() as u64;
                    if received > size {
                        return Err(End::Error(
                            ErrorCode::BadRequest,
                            format!("more data than the {size} bytes the put announced: not stored"),
                        ));
                    }
                    if tx.send(frame.body).await.is_err() {
                        return Ok(None);
                    }
                }
                Some("end") => return Ok(Some(header)),
                _ => return Err(unexpected()),
            }
        }
    }

    /// `get`: a `file` frame with the size, `data` frames, and an `end`
    /// frame with the digest of what was sent (or an `io` error instead).
    pub(super) async fn get(&mut self, frame: Frame) -> Result<Reply, End> {
        let FileCall { request, checksum, root } = match self.file_call(&frame, "get") {
            Ok(call) => call,
            Err(reply) => return Ok(reply),
        };
        let Some(name) = request.name else {
            return Ok(bad("a get request needs \"name\""));
        };
        let opened = {
            let name = name.clone();
            blocking(move || root.open_read(&name)).await
        };
        let (file, size) = match opened {
            Ok(opened) => opened,
            Err(e) => return Ok(file_error(&e)),
        };
        let head = reply(json!({"op": "file", "name": name, "size": size, "checksum": checksum.name()}), Bytes::new());
        let mut stop = self.shutdown.clone();
        let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
        let reader = tokio::task::spawn_blocking(move || read_chunks(file, size, tx, checksum));
        let mut next = Some(head);
        while let Some(out) = next.take() {
            let sent = tokio::select! {
                _ = stop.wait_for(|stop| *stop) => return Err(End::Quiet),
                sent = self.send(out) => sent,
            };
            if let Err(e) = sent {
                self.log(Level::Info, format!("get {name:?} cut off: {e}"));
                return Err(End::Quiet);
            }
            next = rx.recv().await.map(|chunk| Reply::new(Some(protocol::data_header(chunk.len())), chunk));
        }
        match reader.await.expect("the reader panicked") {
            Err(e) => Ok(file_error(&e)),
            Ok((sent, _)) if sent != size => Ok(Reply::error(
                ErrorCode::Io,
                &format!("{name:?} shrank from {size} to {sent} bytes while it was sent"),
            )),
            Ok((_, digest)) => {
                self.log(Level::Info, format!("sent {name:?}: {size} bytes"));
                Ok(reply(json!({"op": "end", "name": name, "size": size, checksum.name(): digest}), Bytes::new()))
            }
        }
    }

    /// `list`: a `listing` frame whose body is a JSON array of entries.
    pub(super) async fn list(&mut self, frame: Frame) -> Result<Reply, End> {
        let FileCall { request, root, .. } = match self.file_call(&frame, "list") {
            Ok(call) => call,
            Err(reply) => return Ok(reply),
        };
        let name = request.name.unwrap_or_default();
        let listed = {
            let name = name.clone();
            blocking(move || root.list(&name)).await
        };
        let (entries, truncated) = match listed {
            Ok(listed) => listed,
            Err(e) => return Ok(file_error(&e)),
        };
        let body: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| {
                let kind = if e.is_dir { "dir" } else { "file" };
                json!({"name": e.name, "type": kind, "size": e.size, "mtime": e.mtime})
            })
            .collect();
        let body = serde_json::to_vec(&body).expect("serializable");
        Ok(reply(json!({"op": "listing", "name": name, "count": entries.len(), "truncated": truncated}), body.into()))
    }
}

fn write_chunks(
    mut upload: Upload,
    mut rx: mpsc::Receiver<Bytes>,
    checksum: Checksum,
) -> Result<(Upload, String), FileError> {
    let mut hasher = Hasher::new(checksum);
    while let Some(chunk) = rx.blocking_recv() {
        hasher.update(&chunk);
        upload.write(&chunk)?;
    }
    Ok((upload, hasher.hex_digest()))
}

/// Reads up to `size` bytes in chunks; the digest covers what was read.
fn read_chunks(file: File, size: u64, tx: mpsc::Sender<Bytes>, checksum: Checksum) -> Result<(u64, String), FileError> {
    let mut hasher = Hasher::new(checksum);
    let mut file = file.take(size);
    let mut sent = 0u64;
    loop {
        let mut buf = Vec::with_capacity(CHUNK.min((size - sent) as usize));
        let n = (&mut file).take(CHUNK as u64).read_to_end(&mut buf);
        let n = n.map_err(|source| FileError::Io { name: "file".into(), source })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf);
        sent += n as u64;
        if tx.blocking_send(buf.into()).is_err() {
            break; // the connection is gone
        }
    }
    Ok((sent, hasher.hex_digest()))
}
