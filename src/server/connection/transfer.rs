//! The file work of `put`, `get` and `list` (see PROTOCOL.md), as the
//! session asks for it: the protocol's steps are
//! `protocol::server_session`'s; what is here is the disk.
//!
//! Disk work (read or write, and hashing) runs one chunk at a time on tokio's
//! blocking pool, one chunk apart from the socket, and no blocking thread ever
//! waits on the network: a peer that stalls mid-transfer holds its connection,
//! not a thread that other connections need.

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;

use super::{Conn, ReadChunk};
use crate::codec::{Checksum, Hasher};
use crate::files::{FileError, Root};
use crate::protocol::server_session::Action;

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("a file task panicked")
}

impl Conn<'_> {
    fn root(&self) -> Arc<Root> {
        self.shared.root.clone().expect("the session asks for files only from a server with a root")
    }

    pub(super) async fn create_upload(&mut self, name: String, overwrite: bool, mode: Option<u32>) -> Vec<Action> {
        let root = self.root();
        let created = blocking(move || root.create(&name, overwrite, mode)).await.map(|upload| {
            self.upload = Some(upload);
        });
        self.session.upload_created(created)
    }

    /// The upload and its hasher go to the blocking pool with the chunk and
    /// come back with the result (see `next_actions`).
    pub(super) fn write_chunk(&mut self, chunk: Bytes, mut hasher: Hasher) {
        let mut upload = self.upload.take().expect("a chunk is written to an open upload");
        self.writing = Some(tokio::task::spawn_blocking(move || {
            hasher.update(&chunk);
            upload.write(&chunk)?;
            Ok((upload, hasher))
        }));
    }

    pub(super) async fn commit_upload(&mut self, durable: bool) -> Vec<Action> {
        let upload = self.upload.take().expect("the session commits an open upload");
        let committed = blocking(move || upload.commit_with(durable)).await;
        self.session.upload_committed(committed)
    }

    /// A whole file at once (an inline `put`): created, written and committed
    /// in one trip to the blocking pool.
    pub(super) async fn store_file(
        &mut self,
        name: String,
        overwrite: bool,
        mode: Option<u32>,
        data: Bytes,
        durable: bool,
    ) -> Vec<Action> {
        let root = self.root();
        let stored = blocking(move || {
            let mut upload = root.create(&name, overwrite, mode)?;
            upload.write(&data)?;
            upload.commit_with(durable)
        })
        .await;
        self.session.upload_committed(stored)
    }

    pub(super) async fn make_dir(&mut self, name: String, mode: Option<u32>) -> Vec<Action> {
        let root = self.root();
        let made = blocking(move || root.make_dir(&name, mode)).await;
        self.session.dir_made(made)
    }

    pub(super) async fn make_link(&mut self, name: String, target: String, overwrite: bool) -> Vec<Action> {
        let root = self.root();
        let made = blocking(move || root.symlink(&name, &target, overwrite)).await;
        self.session.link_made(made)
    }

    pub(super) async fn sync_root(&mut self) -> Vec<Action> {
        let root = self.root();
        let synced = blocking(move || root.sync()).await;
        self.session.synced(synced)
    }

    pub(super) async fn open_file(&mut self, name: String) -> Vec<Action> {
        let root = self.root();
        let opened = blocking(move || root.open_read(&name)).await.map(|(file, size)| {
            self.download = Some(file);
            size
        });
        self.session.file_opened(opened)
    }

    /// Reads up to `want` bytes on the blocking pool, hashing them, while
    /// what comes before goes out (see `next_actions`).
    pub(super) fn read_chunk(&mut self, want: usize, mut hasher: Hasher) {
        let file = self.download.take().expect("a chunk is read from an open file");
        self.reading = Some(tokio::task::spawn_blocking(move || -> ReadChunk {
            let mut buf = Vec::with_capacity(want);
            (&file)
                .take(want as u64)
                .read_to_end(&mut buf)
                .map_err(|source| FileError::Io { name: "file".into(), source })?;
            hasher.update(&buf);
            Ok((file, hasher, buf))
        }));
    }

    pub(super) async fn list_dir(
        &mut self,
        name: String,
        recursive: bool,
        checksum: Option<Checksum>,
        after: Option<String>,
    ) -> Vec<Action> {
        let root = self.root();
        let listed =
            blocking(
                move || {
                    if recursive {
                        root.list_tree(&name, checksum, after.as_deref())
                    } else {
                        root.list(&name)
                    }
                },
            )
            .await;
        self.session.listed(listed)
    }
}
