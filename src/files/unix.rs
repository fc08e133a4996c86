//! Files beneath a root on Unix: every name resolved by the kernel beneath
//! the root's descriptor (`openat2` with `RESOLVE_BENEATH`, else one component
//! at a time without following symlinks), uploads locked with `flock`, renamed
//! with `renameat2(RENAME_NOREPLACE)` where there is one.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{
    check_name, part_name, Entry, FileError, Identity, Kind, MAX_DIR_NAMES, MAX_LIST, MODE_BITS, PART_SUFFIX,
    SWEEP_DEPTH, WRITEBACK_EVERY,
};
use crate::codec::{Checksum, Hasher};

/// True for the errors of a name that leads out of the root: `RESOLVE_BENEATH`
/// says EXDEV; a refused symlink, ELOOP.
pub(super) fn leads_outside(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EXDEV | libc::ELOOP))
}

/// What a listed entry is (a symlink is not followed).
fn kind_of(mode: libc::mode_t) -> Kind {
    match mode & libc::S_IFMT {
        libc::S_IFREG => Kind::File,
        libc::S_IFDIR => Kind::Dir,
        libc::S_IFLNK => Kind::Link,
        _ => Kind::Other,
    }
}

/// The directory files are served from. Every name is resolved beneath it by
/// the kernel (`openat2` with `RESOLVE_BENEATH`), so neither `..` nor a
/// symlink can lead out, even one swapped in while a request runs.
#[derive(Debug)]
pub struct Root {
    dir: OwnedFd,
    path: PathBuf,
}

impl Root {
    pub fn open(path: &Path) -> io::Result<Root> {
        let path = path.canonicalize()?;
        let c = cstring(path.as_os_str().as_bytes())?;
        // SAFETY: a plain syscall: open descriptors of ours and NUL-terminated names, which outlive it.
        let fd = cvt(unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) })?;
        // SAFETY: the call above succeeded: an open descriptor, owned by nobody else.
        Ok(Root { dir: unsafe { OwnedFd::from_raw_fd(fd) }, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `name` for reading: the file and its size.
    pub fn open_read(&self, name: &str) -> Result<(File, u64), FileError> {
        let parts = check_name(name)?;
        // O_NONBLOCK: opening a FIFO would otherwise wait for a writer forever.
        let fd = self
            .open_beneath(&parts.join("/"), libc::O_RDONLY | libc::O_NONBLOCK)
            .map_err(|e| FileError::from_io(name, e))?;
        let file = File::from(fd);
        let meta = file.metadata().map_err(|e| FileError::from_io(name, e))?;
        if meta.is_dir() {
            return Err(FileError::IsDirectory(name.to_owned()));
        }
        if !meta.is_file() {
            return Err(FileError::NotRegular(name.to_owned()));
        }
        // SAFETY: a plain syscall on an open descriptor of ours.
        let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
        // SAFETY: a plain syscall on an open descriptor of ours.
        cvt(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) })
            .map_err(|e| FileError::from_io(name, e))?;
        Ok((file, meta.len()))
    }

    /// Starts an upload to `name`: a temporary file beside it, which
    /// [`Upload::commit`] renames into place (with the permission bits
    /// `mode`, if given). The directories above `name` are made as needed,
    /// beneath the root. Refuses an existing `name` unless `overwrite`, and
    /// never replaces a directory.
    pub fn create(&self, name: &str, overwrite: bool, mode: Option<u32>) -> Result<Upload, FileError> {
        let (dir, target) = self.upload_place(name, overwrite)?;
        let mut upload =
            Upload::beside(name.to_owned(), dir, target, overwrite).map_err(|e| FileError::from_io(name, e))?;
        upload.mode = mode.map(|m| m & MODE_BITS);
        Ok(upload)
    }

    /// Where an upload to `name` goes: its directory (made as needed, beneath
    /// the root) and its last component. Refuses an existing `name` unless
    /// `overwrite`, and a directory always.
    fn upload_place(&self, name: &str, overwrite: bool) -> Result<(OwnedFd, CString), FileError> {
        let parts = check_name(name)?;
        let (last, dirs) = parts.split_last().expect("check_name gives at least one part");
        let dir = self.make_dirs(dirs).map_err(|e| FileError::from_io(name, e))?;
        let target = cstring(last.as_bytes()).map_err(|e| FileError::from_io(name, e))?;
        match lstat_at(dir.as_raw_fd(), &target) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => Err(FileError::IsDirectory(name.into())),
            Ok(_) if !overwrite => Err(FileError::Exists(name.into())),
            Ok(_) => Ok((dir, target)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok((dir, target)),
            Err(e) => Err(FileError::from_io(name, e)),
        }
    }

    /// [`Root::create`] for a resumable upload: the part kept by an earlier
    /// cut upload of `name` (see [`super::resume_names`]) is opened, or a new
    /// one made, and locked (another transfer of `name` holding it is an
    /// error); with it, the identity recorded for its source, if any. Its
    /// bytes are kept if the upload is dropped unfinished.
    pub fn create_resumable(
        &self,
        name: &str,
        overwrite: bool,
        mode: Option<u32>,
    ) -> Result<(Upload, Option<Identity>), FileError> {
        let (dir, target) = self.upload_place(name, overwrite)?;
        let (mut upload, identity) =
            Upload::kept_beside(name.to_owned(), dir, target, overwrite).map_err(|e| FileError::from_io(name, e))?;
        upload.mode = mode.map(|m| m & MODE_BITS);
        Ok((upload, identity))
    }

    /// Makes the directory `name` and those above it as needed, beneath the
    /// root; an existing directory is kept. `mode`: its permission bits (an
    /// existing directory's are changed too).
    pub fn make_dir(&self, name: &str, mode: Option<u32>) -> Result<(), FileError> {
        let parts = check_name(name)?;
        let dir = self.make_dirs(&parts).map_err(|e| FileError::from_io(name, e))?;
        if let Some(mode) = mode {
            // SAFETY: a plain syscall on an open descriptor of ours.
            cvt(unsafe { libc::fchmod(dir.as_raw_fd(), (mode & MODE_BITS) as libc::mode_t) })
                .map_err(|e| FileError::from_io(name, e))?;
        }
        Ok(())
    }

    /// Makes a symlink `name` to `target` (stored as given; the caller checks
    /// its text with `check_link_target`). An existing symlink is replaced
    /// only with `overwrite`; a directory or file never is (`Exists`). The
    /// link's directory must be reached through no link (a link there is
    /// refused as one out of the root): the target's leading `..` climb from
    /// where the link really is.
    pub fn symlink(&self, name: &str, target: &str, overwrite: bool) -> Result<(), FileError> {
        let parts = check_name(name)?;
        let (last, dirs) = parts.split_last().expect("check_name gives at least one part");
        drop(self.make_dirs(dirs).map_err(|e| FileError::from_io(name, e))?);
        let path = if dirs.is_empty() { ".".to_owned() } else { dirs.join("/") };
        // make_dirs reached it as a directory beneath the root; failing now, a
        // component is a link (ELOOP, or ENOTDIR for a link to a directory).
        let dir = self.open_no_symlinks(&path, libc::O_RDONLY | libc::O_DIRECTORY).map_err(|e| {
            if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) {
                FileError::Outside(name.to_owned())
            } else {
                FileError::from_io(name, e)
            }
        })?;
        let at = cstring(last.as_bytes()).map_err(|e| FileError::from_io(name, e))?;
        let to = cstring(target.as_bytes()).map_err(|e| FileError::from_io(name, e))?;
        match lstat_at(dir.as_raw_fd(), &at) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK && overwrite => {}
            Ok(_) => return Err(FileError::Exists(name.into())),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(FileError::from_io(name, e)),
        }
        // Made under a temporary name, then renamed over: never a moment without it.
        let temp = cstring(part_name(at.to_bytes()).map_err(|e| FileError::from_io(name, e))?.as_bytes())
            .map_err(|e| FileError::from_io(name, e))?;
        let fd = dir.as_raw_fd();
        // SAFETY: a plain syscall: open descriptors of ours and NUL-terminated names, which outlive it.
        cvt(unsafe { libc::symlinkat(to.as_ptr(), fd, temp.as_ptr()) }).map_err(|e| FileError::from_io(name, e))?;
        // SAFETY: as above.
        let renamed = cvt(unsafe { libc::renameat(fd, temp.as_ptr(), fd, at.as_ptr()) });
        if let Err(e) = renamed {
            // SAFETY: as above.
            unsafe { libc::unlinkat(fd, temp.as_ptr(), 0) };
            return Err(FileError::from_io(name, e));
        }
        Ok(())
    }

    /// Makes what was stored without syncing (`Upload::commit` with
    /// `durable: false`) durable: `syncfs` of the root's file system on
    /// Linux. Elsewhere every upload is synced as it is stored, and there is
    /// nothing left to do.
    pub fn sync(&self) -> Result<(), FileError> {
        #[cfg(target_os = "linux")]
        // SAFETY: a plain syscall on an open descriptor of ours.
        cvt(unsafe { libc::syncfs(self.dir.as_raw_fd()) }).map_err(|e| FileError::from_io(".", e))?;
        Ok(())
    }

    /// The directory of the components `dirs` (none: the root), made with
    /// those above it as needed. Every component is resolved beneath the
    /// root, so neither a symlink nor `..` leads out while it is made.
    fn make_dirs(&self, dirs: &[&str]) -> io::Result<OwnedFd> {
        let path = if dirs.is_empty() { ".".to_owned() } else { dirs.join("/") };
        let flags = libc::O_RDONLY | libc::O_DIRECTORY;
        match self.open_beneath(&path, flags) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            other => return other,
        }
        let mut parent = self.open_beneath(".", flags)?;
        for (i, part) in dirs.iter().enumerate() {
            let prefix = dirs[..=i].join("/");
            match self.open_beneath(&prefix, flags) {
                Ok(dir) => parent = dir,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    let c = cstring(part.as_bytes())?;
                    // SAFETY: a plain syscall: open descriptors of ours and NUL-terminated names, which outlive it.
                    match cvt(unsafe { libc::mkdirat(parent.as_raw_fd(), c.as_ptr(), 0o777) }) {
                        Ok(_) => {}
                        // Made meanwhile by another request: fine.
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                        Err(e) => return Err(e),
                    }
                    parent = self.open_beneath(&prefix, flags)?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(parent)
    }

    /// The entries of directory `name` (`""` or `"."`: the root), sorted by
    /// name, at most [`MAX_LIST`]; `true` if there were more (which ones are
    /// left out is then up to the order the directory yields them in).
    pub fn list(&self, name: &str) -> Result<(Vec<Entry>, bool), FileError> {
        let path = if name.is_empty() || name == "." { ".".to_owned() } else { check_name(name)?.join("/") };
        let dir =
            self.open_beneath(&path, libc::O_RDONLY | libc::O_DIRECTORY).map_err(|e| FileError::from_io(name, e))?;
        read_dir(dir, MAX_LIST).map_err(|e| FileError::from_io(name, e))
    }

    /// The tree beneath directory `name` (`""`: the root), down to
    /// [`SWEEP_DEPTH`] levels, one page of it: names relative to `name`,
    /// `/`-separated, in depth-first order with each directory's names sorted
    /// (a directory before what it holds), only those after `after` in that
    /// order, at most [`MAX_LIST`] (`true` if there are more: the next page
    /// starts after the last name of this one). Symlinks are listed with
    /// their target, never followed. With `checksum`, each regular file's
    /// digest. A directory of more than [`MAX_DIR_NAMES`] names, or a tree
    /// deeper than [`SWEEP_DEPTH`], is an error: it could not be listed whole.
    pub fn list_tree(
        &self,
        name: &str,
        checksum: Option<Checksum>,
        after: Option<&str>,
    ) -> Result<(Vec<Entry>, bool), FileError> {
        let path = if name.is_empty() || name == "." { ".".to_owned() } else { check_name(name)?.join("/") };
        let dir =
            self.open_beneath(&path, libc::O_RDONLY | libc::O_DIRECTORY).map_err(|e| FileError::from_io(name, e))?;
        let after = after.map_or_else(Vec::new, |a| a.split('/').filter(|p| !p.is_empty()).collect());
        let mut walk = TreeWalk { top: name, after, checksum, entries: Vec::new(), more: false };
        walk.dir(&dir, &mut Vec::new())?;
        Ok((walk.entries, walk.more))
    }

    /// Removes what uploads that never finished left behind (a server killed
    /// in the middle of one): regular files named as [`Root::create`] names
    /// them, beneath the root (down to [`SWEEP_DEPTH`] levels), that no
    /// process holds locked (every transfer locks its temporary file) and
    /// that went unmodified for `age`. Symbolic links are not followed. Takes
    /// `budget` names at most (a huge tree costs a bounded time; one more is
    /// read to tell whether any was left), and stops early once `stop()` is
    /// true. Returns how many files it removed, and whether a name was left
    /// unread when the budget was spent.
    pub fn sweep_uploads(&self, age: Duration, budget: usize, stop: &dyn Fn() -> bool) -> io::Result<(usize, bool)> {
        let cutoff = SystemTime::now().checked_sub(age).unwrap_or(UNIX_EPOCH);
        let cutoff = cutoff.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as libc::time_t);
        let mut sweep = Sweep { cutoff, budget, ran_out: false, stop, removed: 0 };
        sweep.dir(&self.dir, 0)?;
        Ok((sweep.removed, sweep.ran_out))
    }

    /// Opens a relative path beneath the root.
    fn open_beneath(&self, path: &str, flags: libc::c_int) -> io::Result<OwnedFd> {
        #[cfg(target_os = "linux")]
        {
            let c = cstring(path.as_bytes())?;
            // SAFETY: a plain C struct, for which all zeroes is valid.
            let mut how: libc::open_how = unsafe { std::mem::zeroed() };
            how.flags = (flags | libc::O_CLOEXEC) as u64;
            how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
            // SAFETY: SYS_openat2 with an open directory descriptor, a NUL-terminated path and an open_how of the size given, all of which outlive the call.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    self.dir.as_raw_fd(),
                    c.as_ptr(),
                    &how as *const libc::open_how,
                    std::mem::size_of::<libc::open_how>(),
                )
            };
            match cvt(fd as libc::c_int) {
                // SAFETY: the call above succeeded: an open descriptor, owned by nobody else.
                Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
                // A kernel before 5.6, or a sandbox that filters the call.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {}
                Err(e) => return Err(e),
            }
        }
        self.open_no_symlinks(path, flags)
    }

    /// Without `openat2`: one component at a time, refusing every symlink.
    fn open_no_symlinks(&self, path: &str, flags: libc::c_int) -> io::Result<OwnedFd> {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
        // SAFETY: a plain syscall on an open descriptor of ours.
        let dup = cvt(unsafe { libc::fcntl(self.dir.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) })?;
        // SAFETY: the call above succeeded: an open descriptor, owned by nobody else.
        let mut dir = unsafe { OwnedFd::from_raw_fd(dup) };
        let Some((last, dirs)) = parts.split_last() else {
            if flags & libc::O_DIRECTORY != 0 {
                return Ok(dir);
            }
            return Err(io::Error::from_raw_os_error(libc::EISDIR));
        };
        for part in dirs {
            dir = open_subdir(&dir, &cstring(part.as_bytes())?)?;
        }
        let c = cstring(last.as_bytes())?;
        // SAFETY: a plain syscall: open descriptors of ours and NUL-terminated names, which outlive it.
        let fd = cvt(unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags | libc::O_NOFOLLOW | libc::O_CLOEXEC) })?;
        // SAFETY: the call above succeeded: an open descriptor, owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// A file being received. Dropped without [`Upload::commit`], its temporary
/// file is removed and whatever had the final name is left as it was.
#[derive(Debug)]
pub struct Upload {
    name: String,
    dir: OwnedFd,
    temp: CString,
    target: CString,
    file: File,
    overwrite: bool,
    /// Permission bits given to the file before it takes its name.
    mode: Option<u32>,
    written: u64,
    handed_to_disk: u64,
    done: bool,
    /// A resumable transfer's identity file: its part is kept when dropped.
    identity: Option<CString>,
}

impl Upload {
    /// Starts receiving a file at a local `path`, outside any root (the
    /// Python clients' downloads): the same temporary file beside it, that
    /// [`Upload::commit_io`] renames into place. Whether `path` may be
    /// written (a directory, an existing file) is the caller's to check first.
    pub fn local(path: &Path, overwrite: bool) -> io::Result<Upload> {
        let (name, dir, base) = local_place(path)?;
        Upload::beside(name, dir, base, overwrite)
    }

    /// A new temporary file in `dir`, named after `target` (see
    /// [`is_upload_temp`]), created exclusively and locked while in use.
    fn beside(name: String, dir: OwnedFd, target: CString, overwrite: bool) -> io::Result<Upload> {
        let temp = cstring(part_name(target.to_bytes())?.as_bytes())?;
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: a plain syscall: open descriptors of ours and NUL-terminated names, which outlive it.
        let fd = cvt(unsafe { libc::openat(dir.as_raw_fd(), temp.as_ptr(), flags, 0o666 as libc::c_uint) })?;
        lock_in_use(fd);
        Ok(Upload {
            name,
            dir,
            temp,
            target,
            // SAFETY: the call above succeeded: an open descriptor, owned by nobody else.
            file: unsafe { File::from_raw_fd(fd) },
            overwrite,
            mode: None,
            written: 0,
            handed_to_disk: 0,
            done: false,
            identity: None,
        })
    }

    /// [`Upload::local`] for a resumable transfer: the kept part beside
    /// `path` (see [`Root::create_resumable`]).
    pub fn local_kept(path: &Path, overwrite: bool) -> io::Result<(Upload, Option<Identity>)> {
        let (name, dir, base) = local_place(path)?;
        Upload::kept_beside(name, dir, base, overwrite)
    }

    /// The part a resumable transfer to `target` keeps in `dir`, opened (or
    /// made) and locked, positioned at its end; and its source's identity.
    fn kept_beside(
        name: String,
        dir: OwnedFd,
        target: CString,
        overwrite: bool,
    ) -> io::Result<(Upload, Option<Identity>)> {
        let (part, identity) = super::resume_names(target.to_bytes());
        let (temp, identity_name) = (cstring(part.as_bytes())?, cstring(identity.as_bytes())?);
        let flags = libc::O_RDWR | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // A cut transfer's task may hold the part a little longer than its
        // peer waits to retry: a while is given for it to let go.
        let deadline = std::time::Instant::now() + KEPT_LOCK_WAIT;
        let mut file = loop {
            // SAFETY: a plain syscall: open descriptors of ours and NUL-terminated names, which outlive it.
            let fd = cvt(unsafe { libc::openat(dir.as_raw_fd(), temp.as_ptr(), flags, 0o666 as libc::c_uint) })?;
            // SAFETY: the call above succeeded: an open descriptor, owned by nobody else.
            let file = unsafe { File::from_raw_fd(fd) };
            // SAFETY: a plain syscall on an open descriptor of ours.
            if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                let errno = io::Error::last_os_error().raw_os_error();
                if errno != Some(libc::EWOULDBLOCK) {
                    // No locks here (or none to be had): a part could be
                    // shared unknowingly, so nothing is kept: a whole transfer.
                    drop(file);
                    return Upload::beside(name, dir, target, overwrite).map(|upload| (upload, None));
                }
                if std::time::Instant::now() >= deadline {
                    return Err(io::Error::other("another transfer of this name is under way (its part is locked)"));
                }
                drop(file);
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            // The part may have been removed or replaced between the open and
            // the lock (by a whole transfer, a sweep): what is locked must be
            // what the name holds now, or it is opened again.
            if same_file(&dir, &temp, &file)? {
                break file;
            }
        };
        if !file.metadata()?.is_file() {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let written = file.seek(io::SeekFrom::End(0))?;
        let recorded = read_small_at(&dir, &identity_name).and_then(|text| Identity::from_json(&text));
        let upload = Upload {
            name,
            dir,
            temp,
            target,
            file,
            overwrite,
            mode: None,
            written,
            handed_to_disk: written,
            done: false,
            identity: Some(identity_name),
        };
        Ok((upload, recorded))
    }

    /// A resumable transfer's kept bytes, hashed with `checksum` (read
    /// from the start; the file's position stays at its end).
    pub fn hash_kept(&self, checksum: Checksum) -> io::Result<Hasher> {
        let mut hasher = Hasher::new(checksum);
        let mut buf = vec![0u8; 1 << 20];
        let mut at = 0u64;
        while at < self.written {
            let want = buf.len().min((self.written - at) as usize);
            let n = self.file.read_at(&mut buf[..want], at)?;
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
            }
            hasher.update(&buf[..n]);
            at += n as u64;
        }
        Ok(hasher)
    }

    /// A resumable transfer starts over for a source of this identity: the
    /// kept bytes are dropped and the identity recorded.
    pub fn restart(&mut self, source: Identity) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.seek(io::SeekFrom::Start(0))?;
        (self.written, self.handed_to_disk) = (0, 0);
        // One that found no locks keeps nothing (see `Upload::kept_beside`).
        let Some(name) = self.identity.as_ref() else { return Ok(()) };
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: a plain syscall: open descriptors of ours and NUL-terminated names, which outlive it.
        let fd = cvt(unsafe { libc::openat(self.dir.as_raw_fd(), name.as_ptr(), flags, 0o666 as libc::c_uint) })?;
        // SAFETY: the call above succeeded: an open descriptor, owned by nobody else.
        let mut file = unsafe { File::from_raw_fd(fd) };
        file.write_all(source.to_json().as_bytes())
    }

    /// Drops the upload and removes its temporary file, a resumable
    /// transfer's kept part and identity file too.
    pub fn discard(mut self) {
        if let Some(identity) = self.identity.take() {
            // SAFETY: a plain syscall: open descriptors of ours and NUL-terminated names, which outlive it.
            unsafe { libc::unlinkat(self.dir.as_raw_fd(), identity.as_ptr(), 0) };
        }
    }

    /// [`Upload::restart`], with the error named after the file.
    pub fn restart_for(&mut self, source: Identity) -> Result<(), FileError> {
        self.restart(source).map_err(|e| FileError::from_io(&self.name, e))
    }

    /// The temporary file's name, in the target's directory.
    pub fn temp_name(&self) -> &CStr {
        &self.temp
    }

    pub fn write(&mut self, data: &[u8]) -> Result<(), FileError> {
        self.write_io(data).map_err(|e| FileError::from_io(&self.name, e))
    }

    /// [`Upload::write`], with the error as the system gave it.
    pub fn write_io(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)?;
        self.written += data.len() as u64;
        if self.written - self.handed_to_disk >= WRITEBACK_EVERY {
            start_writeback(self.file.as_raw_fd(), self.handed_to_disk, self.written - self.handed_to_disk);
            self.handed_to_disk = self.written;
        }
        Ok(())
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Makes the file durable and gives it its final name, atomically: a
    /// reader sees the old file or the whole new one, never a part.
    ///
    /// Once renamed the file is stored, whatever follows: `Ok(Some(error))`
    /// says that syncing its directory failed, so the new name may not
    /// survive a crash (an error here would tell the client "not stored"
    /// about a file that is there).
    pub fn commit(self) -> Result<Option<io::Error>, FileError> {
        self.commit_with(true)
    }

    /// [`Upload::commit`]; with `durable` false (on Linux), the file takes
    /// its name without waiting for the disk: [`Root::sync`] makes it
    /// durable later, with others. Until then a crash may leave it short or
    /// empty under its name.
    pub fn commit_with(self, durable: bool) -> Result<Option<io::Error>, FileError> {
        let name = self.name.clone();
        if let Some(mode) = self.mode {
            // SAFETY: a plain syscall on an open descriptor of ours.
            cvt(unsafe { libc::fchmod(self.file.as_raw_fd(), mode as libc::mode_t) })
                .map_err(|e| FileError::from_io(&name, e))?;
        }
        self.commit_io_with(durable).map_err(|e| FileError::from_io(&name, e))
    }

    /// [`Upload::commit_with`], with the error as the system gave it.
    pub fn commit_io_with(mut self, durable: bool) -> io::Result<Option<io::Error>> {
        if !durable && cfg!(target_os = "linux") {
            self.rename()?;
            self.done = true;
            return Ok(None);
        }
        self.commit_io()
    }

    /// [`Upload::commit`], with the error as the system gave it (`EEXIST`:
    /// the final name was taken meanwhile, and `overwrite` was not asked for).
    pub fn commit_io(mut self) -> io::Result<Option<io::Error>> {
        self.file.sync_all()?;
        self.rename()?;
        self.done = true;
        // The rename itself is durable once the directory is.
        // SAFETY: a plain syscall on an open descriptor of ours.
        Ok(cvt(unsafe { libc::fsync(self.dir.as_raw_fd()) }).err())
    }

    fn rename(&self) -> io::Result<()> {
        self.rename_part()?;
        if let Some(identity) = &self.identity {
            // SAFETY: a plain syscall: open descriptors of ours and NUL-terminated names, which outlive it.
            unsafe { libc::unlinkat(self.dir.as_raw_fd(), identity.as_ptr(), 0) };
        } else {
            self.drop_kept();
        }
        Ok(())
    }

    /// A whole transfer replaced the target: what a cut resumable transfer
    /// kept for it (of an older source, or it would have resumed) is of no
    /// use any more, and goes, unless a transfer holds it.
    fn drop_kept(&self) {
        let (part, identity) = super::resume_names(self.target.to_bytes());
        let (Ok(part), Ok(identity)) = (cstring(part.as_bytes()), cstring(identity.as_bytes())) else { return };
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
        // SAFETY: a plain syscall: open descriptors of ours and NUL-terminated names, which outlive it.
        let Ok(fd) = cvt(unsafe { libc::openat(self.dir.as_raw_fd(), part.as_ptr(), flags) }) else { return };
        // SAFETY: the call above succeeded: an open descriptor, owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: a plain syscall on an open descriptor of ours.
        if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return;
        }
        // Replaced meanwhile: the name is another transfer's now.
        if !matches!(same_file(&self.dir, &part, &fd), Ok(true)) {
            return;
        }
        for name in [&part, &identity] {
            // SAFETY: a plain syscall: open descriptors of ours and NUL-terminated names, which outlive it.
            unsafe { libc::unlinkat(self.dir.as_raw_fd(), name.as_ptr(), 0) };
        }
    }

    fn rename_part(&self) -> io::Result<()> {
        let fd = self.dir.as_raw_fd();
        #[cfg(target_os = "linux")]
        if !self.overwrite {
            // Atomic "only if it still does not exist", against a racing upload.
            let flags = libc::RENAME_NOREPLACE;
            // SAFETY: a plain syscall: open descriptors of ours and NUL-terminated names, which outlive it.
            let r = unsafe { libc::renameat2(fd, self.temp.as_ptr(), fd, self.target.as_ptr(), flags) };
            match cvt(r) {
                // A file system without it, an old kernel, or a sandbox that filters it.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS | libc::EPERM)) => {}
                other => return other.map(drop),
            }
        }
        if !self.overwrite && lstat_at(self.dir.as_raw_fd(), &self.target).is_ok() {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        // SAFETY: a plain syscall: open descriptors of ours and NUL-terminated names, which outlive it.
        cvt(unsafe { libc::renameat(fd, self.temp.as_ptr(), fd, self.target.as_ptr()) }).map(drop)
    }
}

/// How long a resumable transfer waits for another that holds its part
/// (a cut one whose task has not yet let go) before it gives up.
const KEPT_LOCK_WAIT: Duration = if cfg!(test) { Duration::from_millis(300) } else { Duration::from_secs(10) };

/// True if `name` in `dir` is still the file open as `fd`; false if
/// it is gone or another.
fn same_file(dir: &OwnedFd, name: &CStr, fd: &impl AsRawFd) -> io::Result<bool> {
    // SAFETY: a plain C struct, for which all zeroes is valid.
    let mut open: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a plain syscall on an open descriptor; `open` is a valid place for the result.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut open) })?;
    match lstat_at(dir.as_raw_fd(), name) {
        Ok(now) => Ok((now.st_dev, now.st_ino) == (open.st_dev, open.st_ino)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A small file's bytes (at most 4 KiB), or `None`.
fn read_small_at(dir: &OwnedFd, name: &CStr) -> Option<Vec<u8>> {
    let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
    // SAFETY: a plain syscall: open descriptors of ours and NUL-terminated names, which outlive it.
    let fd = cvt(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) }).ok()?;
    // SAFETY: the call above succeeded: an open descriptor, owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    let mut text = Vec::new();
    (&file).take(4096).read_to_end(&mut text).ok()?;
    Some(text)
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let (false, Some(identity)) = (self.done, &self.identity) {
            if self.written == 0 {
                // Nothing arrived (a refused transfer, one cut before its first
                // byte): nothing is kept. Removed while still locked by us.
                for name in [&self.temp, identity] {
                    // SAFETY: a plain syscall: open descriptors of ours and NUL-terminated names, which outlive it.
                    unsafe { libc::unlinkat(self.dir.as_raw_fd(), name.as_ptr(), 0) };
                }
                return;
            }
            // A kept part's identity file was written when its transfer began:
            // touched now, it is swept no sooner than the part.
            // SAFETY: a plain syscall: open descriptors of ours and NUL-terminated names, which outlive it.
            unsafe { libc::utimensat(self.dir.as_raw_fd(), identity.as_ptr(), std::ptr::null(), 0) };
        }
        if !self.done && self.identity.is_none() {
            // SAFETY: a plain syscall: open descriptors of ours and NUL-terminated names, which outlive it.
            unsafe { libc::unlinkat(self.dir.as_raw_fd(), self.temp.as_ptr(), 0) };
        }
    }
}

/// Makes durable what was stored beneath `path` without syncing
/// ([`Upload::commit_io_with`] with `durable: false`): `syncfs` of its file
/// system on Linux; elsewhere nothing was left unsynced.
pub fn sync_path(path: &Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let c = cstring(path.as_os_str().as_bytes())?;
        // SAFETY: a plain syscall with a NUL-terminated name, which outlives it.
        let fd = cvt(unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) })?;
        // SAFETY: the call above succeeded: an open descriptor, owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: a plain syscall on an open descriptor of ours.
        cvt(unsafe { libc::syncfs(fd.as_raw_fd()) })?;
    }
    #[cfg(not(target_os = "linux"))]
    let _ = path;
    Ok(())
}

/// Asks the kernel to start writing `len` bytes of `fd` from `offset` to disk,
/// and returns at once: an fsync at the end of a long write then waits for the
/// last stretch only. Errors surface at that fsync. Does nothing off Linux.
pub fn start_writeback(fd: std::os::fd::RawFd, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    // SAFETY: a plain syscall on an open descriptor of ours; advisory, errors surface at the fsync.
    unsafe {
        libc::sync_file_range(fd, offset as libc::off64_t, len as libc::off64_t, libc::SYNC_FILE_RANGE_WRITE);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (fd, offset, len);
}

/// One page of [`Root::list_tree`].
struct TreeWalk<'a> {
    /// The listed directory's name, for errors.
    top: &'a str,
    /// The components of the name the page starts after.
    after: Vec<&'a str>,
    checksum: Option<Checksum>,
    entries: Vec<Entry>,
    /// An entry was left for the next page.
    more: bool,
}

impl TreeWalk<'_> {
    fn dir(&mut self, dir: &OwnedFd, prefix: &mut Vec<String>) -> Result<(), FileError> {
        let error = |e: io::Error| FileError::from_io(self.top, e);
        let (listed, too_many) = read_dir(dir.try_clone().map_err(error)?, MAX_DIR_NAMES).map_err(error)?;
        if too_many {
            let why = format!("a directory of more than {MAX_DIR_NAMES} names: too many to list as a tree");
            return Err(error(io::Error::other(why)));
        }
        for mut entry in listed {
            prefix.push(std::mem::take(&mut entry.name));
            let order = prefix.iter().map(String::as_str).cmp(self.after.iter().copied());
            let on_the_way =
                self.after.len() >= prefix.len() && self.after.iter().zip(prefix.iter()).all(|(a, p)| a == p);
            let here = cstring(prefix.last().expect("pushed").as_bytes()).map_err(error)?;
            if prefix.last().expect("pushed").contains('\u{FFFD}') && lstat_at(dir.as_raw_fd(), &here).is_err() {
                // read_dir made it readable, and it names nothing: the name is
                // not UTF-8. Left out, its files would be missing unsaid.
                let why = format!("{:?} is not UTF-8: a tree with such a name cannot be listed", prefix.join("/"));
                return Err(error(io::Error::other(why)));
            }
            if order != std::cmp::Ordering::Greater {
                // Listed on an earlier page; only what leads to `after` is entered.
                if on_the_way && entry.kind == Kind::Dir {
                    self.enter(dir, &here, prefix)?;
                }
                prefix.pop();
                if self.more {
                    return Ok(());
                }
                continue;
            }
            if self.entries.len() >= MAX_LIST {
                self.more = true;
                prefix.pop();
                return Ok(());
            }
            match entry.kind {
                Kind::Link => entry.target = read_link_at(dir, &here),
                Kind::File => {
                    if let Some(checksum) = self.checksum {
                        entry.digest = Some(hash_at(dir, &here, checksum).map_err(error)?);
                    }
                }
                Kind::Dir | Kind::Other => {}
            }
            entry.name = prefix.join("/");
            let is_dir = entry.kind == Kind::Dir;
            self.entries.push(entry);
            if is_dir {
                self.enter(dir, &here, prefix)?;
            }
            prefix.pop();
            if self.more {
                return Ok(());
            }
        }
        Ok(())
    }

    fn enter(&mut self, dir: &OwnedFd, name: &CStr, prefix: &mut Vec<String>) -> Result<(), FileError> {
        if prefix.len() > SWEEP_DEPTH {
            let why = format!("deeper than {SWEEP_DEPTH} levels: too deep to list as a tree");
            return Err(FileError::from_io(self.top, io::Error::other(why)));
        }
        // A directory that cannot be read fails the listing: a tree copied
        // without its contents must not look like a whole one.
        let sub = open_subdir(dir, name).map_err(|e| FileError::from_io(&prefix.join("/"), e))?;
        self.dir(&sub, prefix)
    }
}

/// A symlink's target (`None` if it cannot be read, or is not UTF-8).
fn read_link_at(dir: &OwnedFd, name: &CStr) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: a plain syscall: an open descriptor, a NUL-terminated name and a buffer of the length given.
    let n = unsafe { libc::readlinkat(dir.as_raw_fd(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 || n as usize >= buf.len() {
        return None;
    }
    buf.truncate(n as usize);
    String::from_utf8(buf).ok()
}

/// The hex digest of the regular file `name` in `dir` (not followed if a symlink).
fn hash_at(dir: &OwnedFd, name: &CStr, checksum: Checksum) -> io::Result<String> {
    let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
    // SAFETY: a plain syscall: open descriptors of ours and NUL-terminated names, which outlive it.
    let fd = cvt(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) })?;
    // SAFETY: the call above succeeded: an open descriptor, owned by nobody else.
    let mut file = unsafe { File::from_raw_fd(fd) };
    let mut hasher = Hasher::new(checksum);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = io::Read::read(&mut file, &mut buf)?;
        if n == 0 {
            return Ok(hasher.hex_digest());
        }
        hasher.update(&buf[..n]);
    }
}

fn read_dir(dir: OwnedFd, max: usize) -> io::Result<(Vec<Entry>, bool)> {
    // A huge directory costs no more than `max + 1` names.
    let mut names = Vec::new();
    each_name(&dir, |name, _| {
        let bytes = name.to_bytes();
        if !(bytes.starts_with(b".") && bytes.ends_with(PART_SUFFIX.as_bytes())) {
            names.push(name.to_owned());
        }
        names.len() <= max
    })?;
    let mut entries = Vec::new();
    for name in &names {
        // Gone since readdir: skip it.
        let Ok(st) = lstat_at(dir.as_raw_fd(), name) else { continue };
        #[allow(clippy::unnecessary_cast)] // mode_t is u16 on macOS
        let mode = st.st_mode as u32 & 0o7777;
        entries.push(Entry {
            name: String::from_utf8_lossy(name.as_bytes()).into_owned(),
            size: st.st_size as u64,
            kind: kind_of(st.st_mode),
            mtime: st.st_mtime as f64 + st.st_mtime_nsec as f64 / 1e9,
            mode,
            ..Entry::default()
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let truncated = names.len() > max;
    entries.truncate(max);
    Ok((entries, truncated))
}

/// Calls `visit` with each name in a directory (never `.` and `..`) and its
/// `d_type`, until it returns false or the names run out.
fn each_name(dir: &OwnedFd, mut visit: impl FnMut(&CStr, u8) -> bool) -> io::Result<()> {
    let stream = DirStream::open(dir)?;
    loop {
        // readdir says "the end" and "an error" alike, apart from errno.
        clear_errno();
        // SAFETY: `stream` is an open directory stream, read by this thread alone.
        let entry = unsafe { libc::readdir(stream.0) };
        if entry.is_null() {
            let errno = io::Error::last_os_error();
            return if errno.raw_os_error() == Some(0) { Ok(()) } else { Err(errno) };
        }
        // SAFETY: readdir gave a valid entry: its d_name is NUL-terminated and stays valid until the next readdir on this stream, which comes after `visit` returned.
        let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) };
        // SAFETY: `entry` is the valid entry readdir gave (see above).
        if name.to_bytes() != b"." && name.to_bytes() != b".." && !visit(name, unsafe { (*entry).d_type }) {
            return Ok(());
        }
    }
}

/// An open directory stream, closed (with its descriptor) when dropped.
struct DirStream(*mut libc::DIR);

impl DirStream {
    /// Reads `dir` through a description of its own, from the start: a dup
    /// would share the read position with every other reader of `dir`.
    fn open(dir: &OwnedFd) -> io::Result<DirStream> {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC;
        // SAFETY: a plain syscall: open descriptors of ours and NUL-terminated names, which outlive it.
        let fd = cvt(unsafe { libc::openat(dir.as_raw_fd(), c".".as_ptr(), flags) })?;
        // SAFETY: `fd` is an open directory descriptor; on success the stream owns it.
        let stream = unsafe { libc::fdopendir(fd) };
        if stream.is_null() {
            let err = io::Error::last_os_error();
            // SAFETY: fdopendir failed, so `fd` is still ours; closed once.
            unsafe { libc::close(fd) };
            return Err(err);
        }
        // The stream owns `fd` now; closedir closes it.
        Ok(DirStream(stream))
    }
}

impl Drop for DirStream {
    fn drop(&mut self) {
        // SAFETY: an open stream (see `open`), closed once, with its descriptor.
        unsafe { libc::closedir(self.0) };
    }
}

struct Sweep<'a> {
    /// Seconds since the epoch: older files are left over.
    cutoff: libc::time_t,
    /// Names still to read.
    budget: usize,
    /// Set when a name came after the budget was spent: a tree of exactly
    /// `budget` names was read whole.
    ran_out: bool,
    /// True once the sweep should end (the server is stopping).
    stop: &'a dyn Fn() -> bool,
    removed: usize,
}

impl Sweep<'_> {
    fn dir(&mut self, dir: &OwnedFd, depth: usize) -> io::Result<()> {
        if self.ran_out || (self.stop)() {
            return Ok(());
        }
        // Only what may matter is kept: directories and temporary files.
        let mut names = Vec::new();
        each_name(dir, |name, kind| {
            if self.budget == 0 {
                self.ran_out = true;
                return false;
            }
            self.budget -= 1;
            let wanted = match kind {
                libc::DT_DIR => depth < SWEEP_DEPTH,
                libc::DT_REG | libc::DT_UNKNOWN => kind == libc::DT_UNKNOWN || is_upload_temp(name.to_bytes()),
                _ => false,
            };
            if wanted {
                names.push(name.to_owned());
            }
            !(self.stop)()
        })?;
        // A kept part's identity file goes only once its part has: its mtime
        // (touched when its transfer lets go) says nothing after a kill.
        let mut identities = Vec::new();
        for name in &names {
            if (self.stop)() {
                break;
            }
            let Ok(st) = lstat_at(dir.as_raw_fd(), name) else { continue };
            match st.st_mode & libc::S_IFMT {
                libc::S_IFDIR if depth < SWEEP_DEPTH => {
                    // A directory that cannot be read (permissions, gone) is skipped.
                    if let Ok(sub) = open_subdir(dir, name) {
                        let _ = self.dir(&sub, depth + 1);
                    }
                }
                libc::S_IFREG if is_upload_temp(name.as_bytes()) && st.st_mtime < self.cutoff => {
                    if is_identity(dir, name, &st) {
                        identities.push(name);
                    } else {
                        self.remove(dir, name, &st);
                    }
                }
                _ => {}
            }
        }
        for name in identities {
            let stem = temp_stem(name.as_bytes());
            let part_left = names.iter().any(|other| {
                other != name
                    && is_upload_temp(other.as_bytes())
                    && temp_stem(other.as_bytes()) == stem
                    && lstat_at(dir.as_raw_fd(), other).is_ok()
            });
            if let (false, Ok(st)) = (part_left, lstat_at(dir.as_raw_fd(), name)) {
                self.remove(dir, name, &st);
            }
        }
        Ok(())
    }

    /// Removes the old temporary file `name` (`st`) unless in use.
    fn remove(&mut self, dir: &OwnedFd, name: &CStr, st: &libc::stat) {
        if in_use(dir, name, st) {
            return;
        }
        // One removed meanwhile (by its own upload, say) is not counted.
        // SAFETY: a plain syscall: open descriptors of ours and NUL-terminated names, which outlive it.
        let gone = unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) } == 0;
        self.removed += usize::from(gone);
    }
}

/// A temporary file's name without its random (or hashed) tail and suffix:
/// what a kept part and its identity file share.
fn temp_stem(name: &[u8]) -> &[u8] {
    &name[..name.len().saturating_sub(PART_SUFFIX.len() + 13)]
}

/// True if the small regular file `name` (`st`) holds a kept part's
/// source identity (see [`super::resume_names`]).
fn is_identity(dir: &OwnedFd, name: &CStr, st: &libc::stat) -> bool {
    st.st_size <= 4096 && read_small_at(dir, name).and_then(|text| Identity::from_json(&text)).is_some()
}

/// True if a process holds the lock every transfer takes on its temporary
/// file (see [`lock_in_use`]); also if the file cannot be opened to ask, or is
/// no longer the regular file `st` describes. Where the file system has no
/// locks, false: the age rule alone decides.
fn in_use(dir: &OwnedFd, name: &CStr, st: &libc::stat) -> bool {
    let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: a plain syscall: open descriptors of ours and NUL-terminated names, which outlive it.
    let Ok(fd) = cvt(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) }) else { return true };
    // SAFETY: the call above succeeded: an open descriptor, owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: a plain C struct, for which all zeroes is valid.
    let mut now: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a plain syscall on an open descriptor; `now` is a valid place for the result.
    let same = unsafe { libc::fstat(fd.as_raw_fd(), &mut now) } == 0
        && now.st_mode & libc::S_IFMT == libc::S_IFREG
        && (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino);
    if !same {
        return true;
    }
    // The probe's own lock goes with `fd`.
    // SAFETY: a plain syscall on an open descriptor of ours.
    if unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return false;
    }
    !locks_unsupported(io::Error::last_os_error().raw_os_error())
}

/// True for the errors of a `flock` on a file system that has no locks.
fn locks_unsupported(errno: Option<i32>) -> bool {
    matches!(errno, Some(libc::ENOLCK | libc::EOPNOTSUPP | libc::EINVAL | libc::ENOSYS)) || errno == Some(libc::ENOTSUP)
}

/// Marks a temporary file as in use for as long as `fd` is open (a process
/// that dies lets go of it), so that no sweep removes it, however long it
/// goes unwritten. Best effort: where locks do not reach the sweeping process
/// (a file system without them, some network file systems), the age rule
/// alone protects the file.
fn lock_in_use(fd: libc::c_int) {
    // SAFETY: a plain syscall on an open descriptor of ours.
    unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) };
}

fn clear_errno() {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    // SAFETY: a plain syscall on an open descriptor of ours; advisory, errors surface at the fsync.
    unsafe {
        *libc::__errno_location() = 0
    };
    #[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd"))]
    // SAFETY: this thread's errno, always valid to write.
    unsafe {
        *libc::__error() = 0
    };
}

/// The directory `name` in `dir`, refused if it is a symlink.
fn open_subdir(dir: &OwnedFd, name: &CStr) -> io::Result<OwnedFd> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: a plain syscall: open descriptors of ours and NUL-terminated names, which outlive it.
    let fd = cvt(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) })?;
    // SAFETY: the call above succeeded: an open descriptor, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn lstat_at(dir: libc::c_int, name: &CStr) -> io::Result<libc::stat> {
    // SAFETY: a plain C struct, for which all zeroes is valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a plain syscall: `dir` is an open descriptor, `name` NUL-terminated, `st` a valid place for the result.
    cvt(unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(st)
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a name may not contain NUL"))
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// True for the name [`Root::create`] gives an upload in progress:
/// `.NAME.<12 lowercase hex digits>.rframe-part`.
fn is_upload_temp(name: &[u8]) -> bool {
    let Some(rest) = name.strip_suffix(PART_SUFFIX.as_bytes()) else { return false };
    let Some((stem, random)) = rest.split_last_chunk::<13>() else { return false };
    stem.len() >= 2
        && stem[0] == b'.'
        && random[0] == b'.'
        && random[1..].iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Where a local download of `path` goes: its name for errors, its
/// directory (opened) and its last component.
fn local_place(path: &Path) -> io::Result<(String, OwnedFd, CString)> {
    let base = path.file_name().ok_or_else(|| io::Error::from_raw_os_error(libc::EISDIR))?;
    let dir_path = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let c = cstring(dir_path.as_os_str().as_bytes())?;
    // SAFETY: a plain syscall: open descriptors of ours and NUL-terminated names, which outlive it.
    let dir = cvt(unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) })?;
    // SAFETY: the call above succeeded: an open descriptor, owned by nobody else.
    let dir = unsafe { OwnedFd::from_raw_fd(dir) };
    Ok((path.to_string_lossy().into_owned(), dir, cstring(base.as_bytes())?))
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
