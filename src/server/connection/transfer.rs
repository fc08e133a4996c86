//! File requests (`put`, `get`, `list`; see PROTOCOL.md). A file moves as a
//! stream of `data` frames closed by an `end` frame that carries its digest,
//! so neither side holds more than a few chunks of it.
//!
//! Disk work (read or write, and hashing) runs one chunk at a time on tokio's
//! blocking pool, one chunk apart from the socket, and no blocking thread ever
//! waits on the network: a peer that stalls mid-transfer holds its connection,
//! not a thread that other connections need.

use std::fs::File;
use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;
use tokio::task::JoinHandle;

use super::{Conn, End, Request};
use crate::codec::{Checksum, Frame, Hasher};
use crate::files::{FileError, Root, Upload};
use crate::protocol::{self, ErrorCode, FileRequest};
use crate::server::{Level, Reply};

/// The largest `data` frame body sent, and taken.
pub use crate::protocol::TRANSFER_CHUNK as CHUNK;
/// At most this many bytes of listing in one reply.
const MAX_LISTING: usize = 4 << 20;

fn bad(message: &str) -> Reply {
    Reply::error(ErrorCode::BadRequest, message)
}

fn file_error(e: &FileError) -> Reply {
    let code = match e {
        FileError::BadName(..) | FileError::IsDirectory(_) | FileError::NotDirectory(_) | FileError::NotRegular(_) => {
            ErrorCode::BadRequest
        }
        FileError::Outside(_) => ErrorCode::NotAllowed,
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

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("a file task panicked")
}

/// What a file request asked for, checked.
struct FileCall {
    request: FileRequest,
    checksum: Checksum,
    root: Arc<Root>,
}

type Written = Result<(Upload, Hasher), FileError>;
type ReadChunk = Result<(File, Hasher, Vec<u8>), FileError>;

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
        if what != "list" && request.name.as_deref().is_some_and(|n| n.ends_with('/')) {
            return Err(bad(&format!("a {what} names a file, not a directory ending in \"/\"")));
        }
        Ok(FileCall { request, checksum, root })
    }

    /// The largest `data` body: 1 MiB, or less under a small `max_body`.
    fn chunk_limit(&self) -> usize {
        CHUNK.min(self.shared.config.codec.max_body.min(CHUNK as u64) as usize).max(1)
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
        let chunk = self.chunk_limit();
        let ready = reply(json!({"op": "ready", "chunk_size": chunk}), Bytes::new());
        if let Err(e) = self.send(ready).await {
            self.log(Level::Debug, format!("send failed: {e}"));
            return Err(End::Quiet);
        }
        // The upload and its hasher go to the blocking pool with each chunk
        // and come back with the result; `writing` is the chunk under way.
        let mut state: Option<(Upload, Hasher)> = Some((upload, Hasher::new(checksum)));
        let mut writing: Option<JoinHandle<Written>> = None;
        let mut received = 0u64;
        let end = loop {
            let next = self.next_transfer_frame(chunk).await;
            // Whatever came, the chunk under way is finished first.
            if let Some(handle) = writing.take() {
                match handle.await.expect("a file task panicked") {
                    Ok(done) => state = Some(done),
                    Err(e) => {
                        return match next {
                            // The end is in: the connection is in step, so a reply can say it.
                            Ok(TransferFrame::End(_)) => Ok(file_error(&e)),
                            // More data is on its way: no answer can be in step.
                            Ok(TransferFrame::Data(_)) => Err(End::Error(ErrorCode::Io, format!("{e}: not stored"))),
                            Err(end) => Err(end),
                        };
                    }
                }
            }
            match next {
                Err(end) => {
                    self.log(Level::Info, format!("put {name:?} cut off: not stored"));
                    return Err(end);
                }
                Ok(TransferFrame::End(end)) => break end,
                Ok(TransferFrame::Data(body)) => {
                    received += body.len() as u64;
                    if received > size {
                        return Err(End::Error(
                            ErrorCode::BadRequest,
                            format!("more data than the {size} bytes the put announced: not stored"),
                        ));
                    }
                    let (mut upload, mut hasher) = state.take().expect("the upload is back");
                    writing = Some(tokio::task::spawn_blocking(move || {
                        hasher.update(&body);
                        upload.write(&body)?;
                        Ok((upload, hasher))
                    }));
                }
            }
        };
        let (upload, hasher) = state.take().expect("the upload is back");
        let digest = hasher.hex_digest();
        if upload.written() != size {
            return Ok(bad(&format!(
                "{name:?}: the put announced {size} bytes and sent {}: not stored",
                upload.written()
            )));
        }
        if end.checksum.as_deref().is_some_and(|c| c != checksum.name()) {
            return Ok(bad(&format!("the end frame names another checksum than the put ({:?})", checksum.name())));
        }
        match end.digest.as_deref() {
            None => return Ok(bad("the end frame has no \"digest\": not stored")),
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
        match blocking(move || upload.commit()).await {
            Err(e) => return Ok(file_error(&e)),
            Ok(Some(e)) => self.log(Level::Warning, format!("stored {name:?}, but syncing its directory failed: {e}")),
            Ok(None) => {}
        }
        self.log(Level::Info, format!("stored {name:?}: {size} bytes"));
        Ok(reply(
            json!({"op": "stored", "name": name, "size": size, "checksum": checksum.name(), "digest": digest}),
            Bytes::new(),
        ))
    }

    /// The next frame of a put in progress: a `data` body of at most `chunk`
    /// bytes, or the `end` frame. Anything else ends the connection.
    async fn next_transfer_frame(&mut self, chunk: usize) -> Result<TransferFrame, End> {
        let unexpected =
            || End::Error(ErrorCode::BadRequest, "expected a data or end frame of the put in progress".into());
        let frame = match self.next_request().await? {
            Some(Request::Frame(frame)) => frame,
            Some(Request::Raw(_)) => return Err(unexpected()),
            None => return Err(End::Quiet),
        };
        let header = frame.header.as_deref().unwrap_or(b"{}");
        let header = protocol::parse_file_request(header).map_err(|e| End::Error(ErrorCode::BadRequest, e))?;
        match header.op.as_deref() {
            Some("data") if frame.body.len() > chunk => Err(End::Error(
                ErrorCode::TooLarge,
                format!("a data frame of {} bytes, over the chunk_size of {chunk}", frame.body.len()),
            )),
            Some("data") => Ok(TransferFrame::Data(frame.body)),
            Some("end") => Ok(TransferFrame::End(header)),
            _ => Err(unexpected()),
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
        let asked = request.chunk_size.unwrap_or(CHUNK as u64).max(1);
        let chunk = self.chunk_limit().min(asked.min(CHUNK as u64) as usize);
        let head = json!({"op": "file", "name": name, "size": size, "checksum": checksum.name()});
        let mut stop = self.shutdown.clone();
        let mut next = Some(reply(head, Bytes::new()));
        // One chunk is read (on the blocking pool) while the one before goes out.
        let mut reading = Some(read_chunk(file, Hasher::new(checksum), chunk.min(size as usize)));
        let mut sent = 0u64;
        let mut hasher = None;
        while let Some(out) = next.take() {
            let written = tokio::select! {
                _ = stop.wait_for(|stop| *stop) => return Err(End::Quiet),
                written = self.send(out) => written,
            };
            if let Err(e) = written {
                self.log(Level::Info, format!("get {name:?} cut off: {e}"));
                return Err(End::Quiet);
            }
            let Some(handle) = reading.take() else { break };
            let (file, h, buf) = match handle.await.expect("a file task panicked") {
                Ok(read) => read,
                Err(e) => return Ok(file_error(&e)),
            };
            if buf.is_empty() {
                hasher = Some(h);
                break;
            }
            sent += buf.len() as u64;
            if sent < size {
                reading = Some(read_chunk(file, h, chunk.min((size - sent) as usize)));
            } else {
                hasher = Some(h);
            }
            next = Some(Reply::new(Some(protocol::data_header(buf.len())), buf.into()));
        }
        if sent != size {
            return Ok(Reply::error(
                ErrorCode::Io,
                &format!("{name:?} shrank from {size} to {sent} bytes while it was sent"),
            ));
        }
        let digest = hasher.expect("the last read hands its hasher back").hex_digest();
        self.log(Level::Info, format!("sent {name:?}: {size} bytes"));
        Ok(reply(
            json!({"op": "end", "name": name, "size": size, "checksum": checksum.name(), "digest": digest}),
            Bytes::new(),
        ))
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
        let (entries, mut truncated) = match listed {
            Ok(listed) => listed,
            Err(e) => return Ok(file_error(&e)),
        };
        // Within what a client with the same codec takes.
        let limit = MAX_LISTING.min(self.shared.config.codec.max_body.min(MAX_LISTING as u64) as usize);
        let items = entries.iter().map(|e| {
            let item = json!({"name": e.name, "type": e.kind.name(), "size": e.size, "mtime": e.mtime});
            serde_json::to_vec(&item).expect("serializable")
        });
        let (body, count, cut) = json_array_within(items, limit);
        truncated |= cut;
        Ok(reply(json!({"op": "listing", "name": name, "count": count, "truncated": truncated}), body.into()))
    }
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

enum TransferFrame {
    Data(Bytes),
    End(FileRequest),
}

/// Reads up to `want` bytes on the blocking pool, hashing them; an empty
/// chunk means the file ended early.
fn read_chunk(file: File, mut hasher: Hasher, want: usize) -> JoinHandle<ReadChunk> {
    tokio::task::spawn_blocking(move || {
        let mut buf = Vec::with_capacity(want);
        (&file)
            .take(want as u64)
            .read_to_end(&mut buf)
            .map_err(|source| FileError::Io { name: "file".into(), source })?;
        hasher.update(&buf);
        Ok((file, hasher, buf))
    })
}

#[cfg(test)]
mod tests {
    use super::json_array_within;

    #[test]
    fn a_listing_fits_its_limit_exactly() {
        let items = || ["1", "22", "333"].into_iter().map(|s| s.as_bytes().to_vec());
        let whole = b"[1, 22, 333]";
        assert_eq!(json_array_within(items(), whole.len()), (whole.to_vec(), 3, false));
        // One byte less: the last item goes, whole, and the array still closes.
        assert_eq!(json_array_within(items(), whole.len() - 1), (b"[1, 22]".to_vec(), 2, true));
        for limit in 0..=whole.len() + 2 {
            let (body, count, cut) = json_array_within(items(), limit);
            assert!(body.len() <= limit.max(2), "limit {limit}: {} bytes", body.len());
            assert_eq!(cut, count < 3);
            let parsed: Vec<u64> = serde_json::from_slice(&body).unwrap();
            assert_eq!(parsed.len(), count);
        }
    }
}
