//! Files on Windows: the clients' downloads ([`Upload::local`]: a temporary
//! file beside the target, flushed to disk and renamed with `MoveFileExW`,
//! which refuses an existing name unless asked to replace it). A server root
//! is refused ([`Root::open`]): it belongs to the command server, which does
//! not run on Windows yet.

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::windows::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use windows_sys::Win32::Storage::FileSystem::{MoveFileExW, MOVEFILE_REPLACE_EXISTING, MOVEFILE_WRITE_THROUGH};

use super::{part_name, resume_names, Entry, FileError, Identity};
use crate::codec::{Checksum, Hasher};

/// No name leads out of a root here: there are no roots.
pub(super) fn leads_outside(_err: &io::Error) -> bool {
    false
}

/// A server root: cannot be made on Windows (see the module's comment).
#[derive(Debug)]
pub struct Root {
    never: std::convert::Infallible,
}

impl Root {
    pub fn open(path: &Path) -> io::Result<Root> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "{}: serving files (root) needs the command server, which does not run on Windows yet",
                path.display()
            ),
        ))
    }

    pub fn path(&self) -> &Path {
        match self.never {}
    }

    pub fn open_read(&self, _name: &str) -> Result<(File, u64), FileError> {
        match self.never {}
    }

    pub fn create(&self, _name: &str, _overwrite: bool, _mode: Option<u32>) -> Result<Upload, FileError> {
        match self.never {}
    }

    pub fn create_resumable(
        &self,
        _name: &str,
        _overwrite: bool,
        _mode: Option<u32>,
    ) -> Result<(Upload, Option<Identity>), FileError> {
        match self.never {}
    }

    pub fn make_dir(&self, _name: &str, _mode: Option<u32>) -> Result<(), FileError> {
        match self.never {}
    }

    pub fn symlink(&self, _name: &str, _target: &str, _overwrite: bool) -> Result<(), FileError> {
        match self.never {}
    }

    pub fn sync(&self) -> Result<(), FileError> {
        match self.never {}
    }

    pub fn list_tree(
        &self,
        _name: &str,
        _checksum: Option<Checksum>,
        _after: Option<&str>,
    ) -> Result<(Vec<Entry>, bool), FileError> {
        match self.never {}
    }

    pub fn list(&self, _name: &str) -> Result<(Vec<Entry>, bool), FileError> {
        match self.never {}
    }

    pub fn sweep_uploads(&self, _age: Duration, _budget: usize, _stop: &dyn Fn() -> bool) -> io::Result<(usize, bool)> {
        match self.never {}
    }
}

/// A file being received. Dropped without [`Upload::commit`], its temporary
/// file is removed and whatever had the final name is left as it was.
#[derive(Debug)]
pub struct Upload {
    name: String,
    temp_name: CString,
    temp: PathBuf,
    target: PathBuf,
    /// `None` once closed (before the rename).
    file: Option<File>,
    overwrite: bool,
    written: u64,
    done: bool,
    /// A resumable transfer's identity file: its part is kept when dropped.
    identity: Option<PathBuf>,
}

fn wide(path: &Path) -> Vec<u16> {
    path.as_os_str().encode_wide().chain(std::iter::once(0)).collect()
}

impl Upload {
    /// Starts receiving a file at a local `path`: a temporary file beside it,
    /// that [`Upload::commit_io`] renames into place.
    pub fn local(path: &Path, overwrite: bool) -> io::Result<Upload> {
        let base = path.file_name().ok_or_else(|| io::Error::from(io::ErrorKind::IsADirectory))?;
        let dir = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        if !std::fs::metadata(dir)?.is_dir() {
            return Err(io::Error::from(io::ErrorKind::NotADirectory));
        }
        let temp_name = part_name(base.to_string_lossy().as_bytes())?;
        let temp = dir.join(&temp_name);
        let file = File::options().write(true).create_new(true).open(&temp)?;
        Ok(Upload {
            name: path.to_string_lossy().into_owned(),
            temp_name: CString::new(temp_name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
            temp,
            target: path.to_owned(),
            file: Some(file),
            overwrite,
            written: 0,
            done: false,
            identity: None,
        })
    }

    /// The part a resumable transfer to `path` keeps beside it (see
    /// `files::resume_names`), opened or made, positioned at its end; and its
    /// source's identity.
    pub fn local_kept(path: &Path, overwrite: bool) -> io::Result<(Upload, Option<Identity>)> {
        let base = path.file_name().ok_or_else(|| io::Error::from(io::ErrorKind::IsADirectory))?;
        let dir = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let (part, identity) = resume_names(base.to_string_lossy().as_bytes());
        let temp = dir.join(&part);
        let mut file = File::options().read(true).write(true).create(true).truncate(false).open(&temp)?;
        let written = file.seek(io::SeekFrom::End(0))?;
        let identity = dir.join(identity);
        let recorded = std::fs::read(&identity).ok().and_then(|text| Identity::from_json(&text));
        let upload = Upload {
            name: path.to_string_lossy().into_owned(),
            temp_name: CString::new(part).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
            temp,
            target: path.to_owned(),
            file: Some(file),
            overwrite,
            written,
            done: false,
            identity: Some(identity),
        };
        Ok((upload, recorded))
    }

    /// A resumable transfer's kept bytes, hashed with `checksum`.
    pub fn hash_kept(&self, checksum: Checksum) -> io::Result<Hasher> {
        let mut hasher = Hasher::new(checksum);
        let mut reader = File::open(&self.temp)?.take(self.written);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                return Ok(hasher);
            }
            hasher.update(&buf[..n]);
        }
    }

    /// A resumable transfer starts over for a source of this identity.
    pub fn restart(&mut self, source: Identity) -> io::Result<()> {
        let file = self.file.as_mut().expect("open until committed");
        file.set_len(0)?;
        file.seek(io::SeekFrom::Start(0))?;
        self.written = 0;
        std::fs::write(self.identity.as_ref().expect("a resumable transfer"), source.to_json())
    }

    /// Drops the upload and removes its temporary file, a resumable
    /// transfer's kept part and identity file too.
    pub fn discard(mut self) {
        if let Some(identity) = self.identity.take() {
            let _ = std::fs::remove_file(identity);
        }
    }

    pub fn restart_for(&mut self, source: Identity) -> Result<(), FileError> {
        self.restart(source).map_err(|e| FileError::from_io(&self.name, e))
    }

    /// The temporary file's name, in the target's directory.
    pub fn temp_name(&self) -> &CStr {
        &self.temp_name
    }

    pub fn write(&mut self, data: &[u8]) -> Result<(), FileError> {
        self.write_io(data).map_err(|e| FileError::from_io(&self.name, e))
    }

    /// [`Upload::write`], with the error as the system gave it.
    pub fn write_io(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.as_mut().expect("open until committed").write_all(data)?;
        self.written += data.len() as u64;
        Ok(())
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn commit(self) -> Result<Option<io::Error>, FileError> {
        let name = self.name.clone();
        self.commit_io().map_err(|e| FileError::from_io(&name, e))
    }

    /// [`Upload::commit`]: always durable here (no root to sync later).
    pub fn commit_with(self, _durable: bool) -> Result<Option<io::Error>, FileError> {
        self.commit()
    }

    /// [`Upload::commit_io`]: always durable here.
    pub fn commit_io_with(self, _durable: bool) -> io::Result<Option<io::Error>> {
        self.commit_io()
    }

    /// Flushes the file to disk, closes it and gives it its final name
    /// (`AlreadyExists` if the name was taken meanwhile and `overwrite` was
    /// not asked for). `MOVEFILE_WRITE_THROUGH`: the rename is on disk when
    /// this returns, so there is no directory to sync afterwards.
    pub fn commit_io(mut self) -> io::Result<Option<io::Error>> {
        let file = self.file.take().expect("open until committed");
        file.sync_all()?;
        drop(file);
        let mut flags = MOVEFILE_WRITE_THROUGH;
        if self.overwrite {
            flags |= MOVEFILE_REPLACE_EXISTING;
        }
        let (from, to) = (wide(&self.temp), wide(&self.target));
        // SAFETY: both are NUL-terminated UTF-16 paths that outlive the call.
        if unsafe { MoveFileExW(from.as_ptr(), to.as_ptr(), flags) } == 0 {
            return Err(io::Error::last_os_error());
        }
        self.done = true;
        if let Some(identity) = &self.identity {
            let _ = std::fs::remove_file(identity);
        } else if let (Some(dir), Some(base)) = (self.target.parent(), self.target.file_name()) {
            // What a cut resumable download kept for this path is of no use any more.
            let (part, identity) = resume_names(base.to_string_lossy().as_bytes());
            let _ = std::fs::remove_file(dir.join(part));
            let _ = std::fs::remove_file(dir.join(identity));
        }
        Ok(None)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.done && self.identity.is_none() {
            drop(self.file.take());
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Nothing is stored without syncing here: nothing to do.
pub fn sync_path(_path: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rframe-files-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_download_appears_whole_under_its_name_or_not_at_all() {
        let dir = dir("local");
        let target = dir.join("a.txt");
        let mut upload = Upload::local(&target, false).unwrap();
        let temp = dir.join(upload.temp_name().to_str().unwrap());
        upload.write_io(b"hello ").unwrap();
        upload.write_io(b"world").unwrap();
        assert!(temp.exists() && !target.exists());
        assert_eq!(upload.commit_io().unwrap().map(|e| e.to_string()), None);
        assert_eq!(std::fs::read(&target).unwrap(), b"hello world");
        assert!(!temp.exists());

        // An existing name needs overwrite; the old file stays otherwise.
        let mut again = Upload::local(&target, false).unwrap();
        again.write_io(b"new").unwrap();
        assert_eq!(again.commit_io().unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&target).unwrap(), b"hello world");
        let mut again = Upload::local(&target, true).unwrap();
        again.write_io(b"new").unwrap();
        again.commit_io().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");

        // Dropped unfinished: no litter, the old file as it was.
        let mut cut = Upload::local(&target, true).unwrap();
        cut.write_io(b"partial").unwrap();
        drop(cut);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_directory_is_not_found_and_a_root_is_refused() {
        let missing = std::env::temp_dir().join("rframe-no-such-dir").join("a.txt");
        assert_eq!(Upload::local(&missing, false).unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(Root::open(Path::new(".")).unwrap_err().kind(), io::ErrorKind::Unsupported);
    }
}
