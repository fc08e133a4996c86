//! The file work of `put`, `get` and `list` (see PROTOCOL.md), as the
//! session asks for it: the protocol's steps are
//! `protocol::server_session`'s; what is here is the disk.
//!
//! Disk work (read or write, and hashing) runs one chunk at a time on tokio's
//! blocking pool, one chunk apart from the socket, and no blocking thread ever
//! waits on the network: a peer that stalls mid-transfer holds its connection,
//! not a thread that other connections need.

use std::io::{Read, Seek};
use std::sync::Arc;

use bytes::Bytes;

use super::{Conn, ReadChunk};
use crate::codec::{Checksum, Hasher};
use crate::files::{FileError, Identity, Root};
use crate::protocol::server_session::{hashing_allowance, Action, Kept};

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

    pub(super) async fn create_kept(
        &mut self,
        name: String,
        overwrite: bool,
        mode: Option<u32>,
        checksum: Checksum,
    ) -> Vec<Action> {
        let root = self.root();
        // The kept bytes are read and hashed before `ready`: the client waits that long.
        let opened = blocking(move || {
            let (upload, recorded) = root.create_resumable(&name, overwrite, mode)?;
            let hasher = upload.hash_kept(checksum).map_err(|source| FileError::Io { name, source })?;
            Ok((Kept { len: upload.written(), recorded, hasher }, upload))
        })
        .await
        .map(|(kept, upload)| {
            self.upload = Some(upload);
            self.hashing = hashing_allowance(kept.len);
            kept
        });
        self.session.kept_opened(opened)
    }

    /// The upload and its hasher go to the blocking pool with the chunk and
    /// come back with the result (see `next_actions`).
    pub(super) fn write_chunk(&mut self, chunk: Bytes, mut hasher: Hasher, restart: Option<Identity>) {
        let mut upload = self.upload.take().expect("a chunk is written to an open upload");
        self.writing = Some(tokio::task::spawn_blocking(move || {
            if let Some(source) = restart {
                upload.restart_for(source)?;
            }
            hasher.update(&chunk);
            upload.write(&chunk)?;
            Ok((upload, hasher))
        }));
    }

    pub(super) async fn commit_upload(&mut self, durable: bool, restart: Option<Identity>) -> Vec<Action> {
        let mut upload = self.upload.take().expect("the session commits an open upload");
        let committed = blocking(move || {
            if let Some(source) = restart {
                upload.restart_for(source)?;
            }
            upload.commit_with(durable)
        })
        .await;
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
        let opened = blocking(move || {
            let (file, size) = root.open_read(&name)?;
            let mtime = file.metadata().ok().map(|meta| crate::files::mtime_ns(&meta));
            Ok((file, size, mtime))
        })
        .await
        .map(|(file, size, mtime)| {
            self.download = Some(file);
            (size, mtime)
        });
        self.session.file_opened_at(opened)
    }

    /// Hashes the first `len` bytes of the file just opened, leaving it
    /// positioned after them.
    pub(super) async fn hash_prefix(&mut self, len: u64, mut hasher: Hasher) -> Vec<Action> {
        let file = self.download.take().expect("a prefix is hashed from an open file");
        let (file, hashed) = blocking(move || {
            let mut buf = vec![0u8; 1 << 20];
            let mut left = len;
            let hashed = loop {
                if left == 0 {
                    break Ok((len, hasher));
                }
                let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                match (&file).read(&mut buf[..want]) {
                    Ok(0) => break Ok((len - left, hasher)),
                    Ok(n) => {
                        hasher.update(&buf[..n]);
                        left -= n as u64;
                    }
                    Err(source) => break Err(FileError::Io { name: "file".into(), source }),
                }
            };
            (file, hashed)
        })
        .await;
        self.download = Some(file);
        self.session.prefix_hashed(hashed)
    }

    /// Seeks the open file back to its start.
    pub(super) fn rewind(&mut self) -> Result<(), super::End> {
        let file = self.download.as_mut().expect("an open file is rewound");
        if file.seek(std::io::SeekFrom::Start(0)).is_err() {
            return Err(super::End(None));
        }
        Ok(())
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
