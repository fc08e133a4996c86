//! Files under a server's root directory (`--root`): names that cannot
//! escape it, reads, listings, and uploads that appear under their final
//! name only once complete and verified (a temporary name, fsync, rename).
//! The Python clients' downloads are received the same way, beside a local
//! path ([`Upload::local`]).
//!
//! Blocking std I/O: the server calls this from blocking threads. The
//! system calls are in `unix.rs` (`openat2` beneath the root, `renameat2`,
//! `flock`); `windows.rs` has the clients' downloads only (a server root
//! needs the command server, which does not run on Windows yet).

mod name;

pub use name::{check_link_target, check_name, MAX_NAME};

use std::io;

#[cfg(unix)]
mod unix;
#[cfg(unix)]
use unix as sys;
#[cfg(unix)]
pub use unix::{start_writeback, sync_path, Root, Upload};

#[cfg(windows)]
mod windows;
#[cfg(windows)]
use windows as sys;
#[cfg(windows)]
pub use windows::{sync_path, Root, Upload};

/// Uploads in progress carry this suffix; listings leave them out.
pub const PART_SUFFIX: &str = ".rframe-part";
/// At most this many entries in a listing (a page of a tree's).
pub const MAX_LIST: usize = 10_000;
/// A tree's listing reads each directory whole (to sort it): at most this many names.
pub const MAX_DIR_NAMES: usize = 100_000;
/// Written data is handed to the disk every this many bytes, so the fsync at
/// the end of an upload waits for the last stretch only, not the whole file.
pub const WRITEBACK_EVERY: u64 = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("bad file name {0:?}: {1}")]
    BadName(String, &'static str),
    #[error("{0:?} leads outside the server's root")]
    Outside(String),
    #[error("symlink {0:?} -> {1:?} refused: {2}")]
    BadLink(String, String, &'static str),
    #[error("no such file or directory: {0:?}")]
    NotFound(String),
    #[error("{0:?} already exists, and overwrite was not asked for")]
    Exists(String),
    #[error("{0:?} is a directory")]
    IsDirectory(String),
    #[error("{0:?} is not a directory")]
    NotDirectory(String),
    #[error("{0:?} is not a regular file")]
    NotRegular(String),
    #[error("{name:?}: {source}")]
    Io { name: String, source: io::Error },
}

impl FileError {
    fn from_io(name: &str, err: io::Error) -> FileError {
        let name = name.to_owned();
        match err.kind() {
            _ if sys::leads_outside(&err) => FileError::Outside(name),
            io::ErrorKind::NotFound => FileError::NotFound(name),
            io::ErrorKind::AlreadyExists => FileError::Exists(name),
            io::ErrorKind::IsADirectory => FileError::IsDirectory(name),
            io::ErrorKind::NotADirectory => FileError::NotDirectory(name),
            _ => FileError::Io { name, source: err },
        }
    }
}

/// What a listed entry is (a symlink is not followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kind {
    #[default]
    File,
    Dir,
    Link,
    Other,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Link => "link",
            Kind::Other => "other",
        }
    }
}

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Entry {
    pub name: String,
    pub size: u64,
    pub kind: Kind,
    /// Seconds since the epoch.
    pub mtime: f64,
    /// The permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// A symlink's target, as stored (never followed).
    pub target: Option<String>,
    /// A regular file's hex digest, in a listing that asks for them.
    pub digest: Option<String>,
}

/// The permission bits a client may give a file or directory it sends:
/// read, write and execute for user, group and others (no setuid, setgid or
/// sticky bit over the network).
pub const MODE_BITS: u32 = 0o777;

/// Directory levels beneath the root that [`Root::sweep_uploads`] goes down:
/// one descriptor is open per level.
pub const SWEEP_DEPTH: usize = 32;

/// A new temporary name for a file received as `target`:
/// `.NAME.<12 random lowercase hex digits>.rframe-part`, short enough for
/// NAME_MAX (255 bytes) whatever the target's length; what is not UTF-8 is
/// left out of NAME.
fn part_name(target: &[u8]) -> io::Result<String> {
    let stem: String = target[..target.len().min(64)].utf8_chunks().map(|c| c.valid()).collect();
    let mut random = [0u8; 6];
    getrandom::fill(&mut random).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(format!(".{stem}.{}{PART_SUFFIX}", hex::encode(random)))
}

/// What identifies a transfer's source, recorded beside the part a
/// resumable transfer keeps: its size and its mtime in nanoseconds since the
/// epoch. A source whose size or mtime differs from the recorded one has
/// "changed" (PROTOCOL.md, "Resume").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub size: u64,
    pub mtime_ns: i64,
}

impl Identity {
    /// The identity file's text: `{"size": S, "mtime_ns": M}`.
    pub fn to_json(self) -> String {
        format!("{{\"size\": {}, \"mtime_ns\": {}}}", self.size, self.mtime_ns)
    }

    /// An identity file's text, or `None` if it is not one.
    pub fn from_json(text: &[u8]) -> Option<Identity> {
        #[derive(serde::Deserialize)]
        struct Fields {
            size: u64,
            mtime_ns: i64,
        }
        let f: Fields = serde_json::from_slice(text).ok()?;
        Some(Identity { size: f.size, mtime_ns: f.mtime_ns })
    }
}

/// A file's mtime in nanoseconds since the epoch (Python's `st_mtime_ns`).
pub fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    match meta.modified().map(|t| t.duration_since(std::time::UNIX_EPOCH)) {
        Ok(Ok(after)) => after.as_nanos() as i64,
        Ok(Err(before)) => -(before.duration().as_nanos() as i64),
        Err(_) => 0,
    }
}

/// What a resumable transfer to `target` (a base name) keeps when it is
/// cut, beside the target: `(part, identity file)`. Both are temporary names
/// as [`part_name`] makes them, but with the 12 hex digits taken from the
/// SHA-256 of the target's name (so the next transfer finds them), and swept
/// by the same rule.
pub fn resume_names(target: &[u8]) -> (String, String) {
    let stem: String = target[..target.len().min(64)].utf8_chunks().map(|c| c.valid()).collect();
    let name = |what: &[u8]| {
        let digest = crate::codec::Checksum::Sha256.hex_digest(&[what, target].concat());
        format!(".{stem}.{}{PART_SUFFIX}", &digest[..12])
    };
    (name(b"rframe-resume-part\0"), name(b"rframe-resume-identity\0"))
}

#[cfg(test)]
mod shared_tests {
    use super::*;

    #[test]
    fn a_part_name_is_an_upload_temporary() {
        let name = part_name("report.pdf".as_bytes()).unwrap();
        assert!(name.starts_with(".report.pdf.") && name.ends_with(PART_SUFFIX), "{name}");
        assert_eq!(name.len(), ".report.pdf.".len() + 12 + PART_SUFFIX.len());
        assert_eq!(part_name(&[b'x'; 300]).unwrap().len(), 1 + 64 + 1 + 12 + PART_SUFFIX.len());
        assert_ne!(part_name(b"a").unwrap(), part_name(b"a").unwrap());
    }

    #[test]
    fn resume_names_are_fixed_temporaries_of_their_target() {
        let (part, identity) = resume_names(b"report.pdf");
        assert_eq!(resume_names(b"report.pdf"), (part.clone(), identity.clone()));
        assert_ne!(part, identity);
        assert_ne!(resume_names(b"other.pdf").0, part);
        for name in [&part, &identity] {
            assert!(name.starts_with(".report.pdf.") && name.ends_with(PART_SUFFIX), "{name}");
            assert_eq!(name.len(), ".report.pdf.".len() + 12 + PART_SUFFIX.len());
        }
    }

    #[test]
    fn an_identity_reads_back() {
        let id = Identity { size: 5, mtime_ns: -3 };
        assert_eq!(Identity::from_json(id.to_json().as_bytes()), Some(id));
        assert_eq!(Identity::from_json(b"{}"), None);
        assert_eq!(Identity::from_json(b"junk"), None);
    }
}
