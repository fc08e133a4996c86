use super::*;
use crate::files::resume_names;
use std::fs;
use std::os::unix::fs::symlink;

/// A directory under the system temp dir, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).unwrap();
        let path = std::env::temp_dir().join(format!("rframe-files-{}", hex::encode(random)));
        fs::create_dir_all(path.join("root/sub")).unwrap();
        Scratch(path)
    }

    fn root(&self) -> Root {
        Root::open(&self.0.join("root")).unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn upload(root: &Root, name: &str, data: &[u8], overwrite: bool) -> Result<(), FileError> {
    let mut up = root.create(name, overwrite, None)?;
    up.write(data)?;
    assert!(up.commit()?.is_none(), "the directory syncs");
    Ok(())
}

fn names(root: &Root, dir: &str) -> Vec<String> {
    root.list(dir).unwrap().0.into_iter().map(|e| e.name).collect()
}

#[test]
fn upload_then_read_back() {
    let s = Scratch::new();
    let root = s.root();
    upload(&root, "sub/a.bin", b"hello", false).unwrap();
    let (mut f, size) = root.open_read("sub/a.bin").unwrap();
    let mut data = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut data).unwrap();
    assert_eq!((size, data.as_slice()), (5, &b"hello"[..]));
    assert_eq!(names(&root, "sub"), ["a.bin"]);
}

#[test]
fn existing_names_need_overwrite() {
    let s = Scratch::new();
    let root = s.root();
    upload(&root, "a", b"old", false).unwrap();
    assert!(matches!(upload(&root, "a", b"new", false), Err(FileError::Exists(_))));
    assert_eq!(fs::read(s.0.join("root/a")).unwrap(), b"old");
    upload(&root, "a", b"new", true).unwrap();
    assert_eq!(fs::read(s.0.join("root/a")).unwrap(), b"new");
    assert!(matches!(upload(&root, "sub", b"x", true), Err(FileError::IsDirectory(_))));
}

#[test]
fn a_racing_upload_does_not_replace_without_overwrite() {
    let s = Scratch::new();
    let root = s.root();
    let mut slow = root.create("a", false, None).unwrap();
    upload(&root, "a", b"first", false).unwrap();
    slow.write(b"second").unwrap();
    assert!(matches!(slow.commit(), Err(FileError::Exists(_))));
    assert_eq!(fs::read(s.0.join("root/a")).unwrap(), b"first");
    assert_eq!(names(&root, ""), ["a", "sub"], "the loser's temporary file is gone");
}

#[test]
fn an_unfinished_upload_leaves_the_old_file_and_no_litter() {
    let s = Scratch::new();
    let root = s.root();
    upload(&root, "a", b"old", false).unwrap();
    let mut up = root.create("a", true, None).unwrap();
    up.write(b"half of the new").unwrap();
    // While it runs, the part is there, but not listed.
    assert_eq!(fs::read_dir(s.0.join("root")).unwrap().count(), 3);
    assert_eq!(names(&root, ""), ["a", "sub"]);
    drop(up);
    assert_eq!(fs::read(s.0.join("root/a")).unwrap(), b"old");
    assert_eq!(fs::read_dir(s.0.join("root")).unwrap().count(), 2);
}

#[test]
fn symlinks_out_of_the_root_are_refused() {
    let s = Scratch::new();
    fs::write(s.0.join("secret"), b"x").unwrap();
    symlink(s.0.join("secret"), s.0.join("root/abs")).unwrap();
    symlink("../secret", s.0.join("root/rel")).unwrap();
    symlink("..", s.0.join("root/up")).unwrap();
    symlink("sub", s.0.join("root/inside")).unwrap();
    let root = s.root();
    for name in ["abs", "rel", "up/secret"] {
        assert!(matches!(root.open_read(name), Err(FileError::Outside(_))), "{name}");
    }
    assert!(matches!(root.create("up/new", true, None), Err(FileError::Outside(_))));
    assert!(matches!(root.list("up"), Err(FileError::Outside(_))));
    assert!(!s.0.join("new").exists());
    // A link that stays inside is followed.
    upload(&root, "inside/b", b"in", false).unwrap();
    assert_eq!(fs::read(s.0.join("root/sub/b")).unwrap(), b"in");
}

#[test]
fn the_fallback_walk_refuses_every_symlink() {
    let s = Scratch::new();
    symlink("sub", s.0.join("root/inside")).unwrap();
    fs::write(s.0.join("root/sub/f"), b"f").unwrap();
    let root = s.root();
    assert!(root.open_no_symlinks("sub/f", libc::O_RDONLY).is_ok());
    for path in ["inside/f", "inside"] {
        let err = root.open_no_symlinks(path, libc::O_RDONLY).unwrap_err();
        assert!(matches!(err.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)), "{path}: {err}");
    }
}

#[test]
fn missing_and_wrong_kinds_are_told_apart() {
    let s = Scratch::new();
    let root = s.root();
    assert!(matches!(root.open_read("nope"), Err(FileError::NotFound(_))));
    assert!(matches!(root.open_read("sub"), Err(FileError::IsDirectory(_))));
    upload(&root, "f", b"", false).unwrap();
    assert!(matches!(root.create("f/x", false, None), Err(FileError::NotDirectory(_))));
    fs::remove_file(s.0.join("root/f")).unwrap();
    assert!(matches!(root.open_read("../x"), Err(FileError::BadName(..))));
    upload(&root, "f", b"", false).unwrap();
    assert!(matches!(root.list("f"), Err(FileError::NotDirectory(_))));
}

#[test]
fn listings_are_sorted_and_say_sizes() {
    let s = Scratch::new();
    let root = s.root();
    upload(&root, "b", b"12345", false).unwrap();
    upload(&root, "a", b"", false).unwrap();
    let (entries, truncated) = root.list(".").unwrap();
    assert!(!truncated);
    let summary: Vec<_> = entries.iter().map(|e| (e.name.as_str(), e.size, e.kind)).collect();
    assert_eq!(summary[..2], [("a", 0, Kind::File), ("b", 5, Kind::File)]);
    assert_eq!((summary[2].0, summary[2].2), ("sub", Kind::Dir));
    assert!(entries[0].mtime > 1.0e9);
}

#[test]
fn fifos_are_refused_without_waiting_for_a_writer() {
    let s = Scratch::new();
    let path = CString::new(s.0.join("root/pipe").as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    symlink("pipe", s.0.join("root/link")).unwrap();
    let root = s.root();
    assert!(matches!(root.open_read("pipe"), Err(FileError::NotRegular(_))));
    let kinds: Vec<_> = root.list("").unwrap().0.into_iter().map(|e| (e.name, e.kind)).collect();
    assert_eq!(kinds[..2], [("link".to_owned(), Kind::Link), ("pipe".to_owned(), Kind::Other)]);
}

#[test]
fn long_multibyte_names_still_get_a_temporary_name() {
    let s = Scratch::new();
    let root = s.root();
    let name = "\u{1F600}".repeat(60); // 240 bytes: a valid name
    upload(&root, &name, b"smile", false).unwrap();
    assert_eq!(fs::read(s.0.join("root").join(&name)).unwrap(), b"smile");
}

/// A file at `path` last modified `age` ago.
fn aged(path: &Path, age: Duration) {
    fs::write(path, b"partial").unwrap();
    let when = std::time::SystemTime::now() - age;
    fs::File::options().write(true).open(path).unwrap().set_modified(when).unwrap();
}

#[test]
fn sweep_removes_only_old_upload_temporaries_beneath_the_root() {
    let s = Scratch::new();
    let root_dir = s.0.join("root");
    let day = Duration::from_secs(86_400);
    let stale =
        [root_dir.join(".a.txt.0123456789ab.rframe-part"), root_dir.join("sub/.b.bin.fedcba987654.rframe-part")];
    for path in &stale {
        aged(path, day);
    }
    let kept = [
        root_dir.join(".fresh.0123456789ab.rframe-part"), // still being written
        root_dir.join(".a.rframe-part"),                  // not the random part
        root_dir.join("a.0123456789ab.rframe-part"),      // no leading dot
        root_dir.join(".a.0123456789AB.rframe-part"),     // not lowercase hex
        root_dir.join(".a.0123456789ab.rframe-part.x"),   // another suffix
        root_dir.join("old.txt"),                         // an ordinary old file
        s.0.join(".outside.0123456789ab.rframe-part"),    // not beneath the root
    ];
    for path in &kept[1..] {
        aged(path, day);
    }
    fs::write(&kept[0], b"partial").unwrap();
    // Links are not followed: neither a link named like a temporary file, nor a
    // link to a directory outside holding one.
    symlink(&kept[6], root_dir.join(".link.0123456789ab.rframe-part")).unwrap();
    symlink(&s.0, root_dir.join("out")).unwrap();
    fs::create_dir(root_dir.join(".dir.0123456789ab.rframe-part")).unwrap();

    assert_eq!(s.root().sweep_uploads(Duration::from_secs(3600), 1000, &|| false).unwrap(), (2, false));
    for path in &stale {
        assert!(!path.exists(), "{} was left", path.display());
    }
    for path in &kept {
        assert!(path.exists(), "{} was removed", path.display());
    }
    assert!(root_dir.join(".link.0123456789ab.rframe-part").symlink_metadata().is_ok());
    assert!(root_dir.join(".dir.0123456789ab.rframe-part").is_dir());
    // Nothing left to do the second time.
    assert_eq!(s.root().sweep_uploads(Duration::from_secs(3600), 1000, &|| false).unwrap(), (0, false));
}

#[test]
fn sweep_reads_no_more_names_than_its_budget() {
    let s = Scratch::new();
    let day = Duration::from_secs(86_400);
    for i in 0..10 {
        aged(&s.0.join(format!("root/.f{i}.0123456789ab.rframe-part")), day);
    }
    let hour = Duration::from_secs(3600);
    let sweep = |budget| s.root().sweep_uploads(hour, budget, &|| false).unwrap();
    assert_eq!(sweep(0), (0, true));
    // Four names read (one may be the directory "sub"), so four files at most.
    let (first, ran_out) = sweep(4);
    assert!((3..=4).contains(&first) && ran_out, "{first}");
    assert_eq!(first + sweep(1000).0, 10);
    // A sweep told to stop removes nothing.
    aged(&s.0.join("root/.g.0123456789ab.rframe-part"), day);
    assert_eq!(s.root().sweep_uploads(hour, 1000, &|| true).unwrap(), (0, false));
}

#[test]
fn sweep_runs_out_only_if_a_name_is_left_after_its_budget() {
    let s = Scratch::new();
    let root = s.0.join("root");
    // The budget's last name can be a directory whose names are still unread.
    fs::create_dir_all(root.join("sub/deeper")).unwrap();
    for name in ["top", "sub/a", "sub/b", "sub/deeper/c"] {
        fs::write(root.join(name), b"").unwrap();
    }
    let names = walkdir_count(&root);
    assert_eq!(names, 6); // top, sub, sub/a, sub/b, sub/deeper, sub/deeper/c
    let sweep = |budget| s.root().sweep_uploads(Duration::from_secs(3600), budget, &|| false).unwrap();
    assert_eq!(sweep(names), (0, false));
    for budget in 0..names {
        assert_eq!(sweep(budget), (0, true), "budget {budget} of {names} names");
    }
}

#[test]
fn sweep_leaves_a_locked_temporary_file_however_old() {
    let s = Scratch::new();
    let mut up = s.root().create("big.bin", false, None).unwrap();
    up.write(b"partial").unwrap();
    let temps: Vec<PathBuf> =
        fs::read_dir(s.0.join("root")).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    assert_eq!(temps.len(), 1, "{temps:?}");
    let temp = &temps[0];
    let day_ago = std::time::SystemTime::now() - Duration::from_secs(86_400);
    fs::File::options().write(true).open(temp).unwrap().set_modified(day_ago).unwrap();
    let hour = Duration::from_secs(3600);
    assert_eq!(s.root().sweep_uploads(hour, 1000, &|| false).unwrap(), (0, false));
    assert!(temp.exists());
    drop(up); // the upload ends: its own drop removes the file
    assert!(!temp.exists());
}

#[test]
fn locks_unsupported_means_the_file_system_has_none_not_that_one_is_held() {
    assert!(!locks_unsupported(Some(libc::EWOULDBLOCK)));
    assert!(!locks_unsupported(Some(libc::EBADF)));
    assert!(!locks_unsupported(None));
    for errno in [libc::ENOLCK, libc::EOPNOTSUPP, libc::ENOTSUP, libc::EINVAL, libc::ENOSYS] {
        assert!(locks_unsupported(Some(errno)), "{errno}");
    }
}

/// Every name beneath `dir`, symlinks not followed.
fn walkdir_count(dir: &std::path::Path) -> usize {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            1 + if e.file_type().unwrap().is_dir() { walkdir_count(&e.path()) } else { 0 }
        })
        .sum()
}

#[test]
fn a_local_file_takes_its_name_only_when_committed() {
    let s = Scratch::new();
    let path = s.0.join("local.bin");
    let mut up = Upload::local(&path, false).unwrap();
    let temp = s.0.join(std::ffi::OsStr::from_bytes(up.temp_name().to_bytes()));
    assert!(is_upload_temp(up.temp_name().to_bytes()), "{temp:?}");
    up.write_io(b"hello").unwrap();
    assert!(!path.exists() && temp.exists());
    assert!(up.commit_io().unwrap().is_none());
    assert_eq!(fs::read(&path).unwrap(), b"hello");
    assert!(!temp.exists());
}

#[test]
fn a_local_file_dropped_leaves_nothing() {
    let s = Scratch::new();
    let path = s.0.join("gone");
    let up = Upload::local(&path, false).unwrap();
    let temp = s.0.join(std::ffi::OsStr::from_bytes(up.temp_name().to_bytes()));
    assert!(temp.exists());
    drop(up);
    assert!(!temp.exists() && !path.exists());
}

#[test]
fn a_local_file_never_replaces_one_made_meanwhile_unless_asked() {
    let s = Scratch::new();
    let path = s.0.join("taken");
    let mut up = Upload::local(&path, false).unwrap();
    up.write_io(b"new").unwrap();
    fs::write(&path, b"old").unwrap();
    assert_eq!(up.commit_io().unwrap_err().raw_os_error(), Some(libc::EEXIST));
    assert_eq!(fs::read(&path).unwrap(), b"old");
    let mut up = Upload::local(&path, true).unwrap();
    up.write_io(b"new").unwrap();
    up.commit_io().unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"new");
}

#[test]
fn a_local_file_in_a_missing_directory_is_not_found() {
    let s = Scratch::new();
    let err = Upload::local(&s.0.join("no/such"), false).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
}

#[test]
fn a_long_or_non_utf8_name_makes_a_short_temporary_name() {
    let s = Scratch::new();
    // 64 bytes of the name at most, and those that are UTF-8.
    for (name, stem) in [("é".repeat(100).into_bytes(), "é".repeat(32)), (b"ab\xffcd".to_vec(), "abcd".into())] {
        let up = Upload::local(&s.0.join(std::ffi::OsStr::from_bytes(&name)), false).unwrap();
        let temp = up.temp_name().to_str().expect("UTF-8");
        assert!(temp.starts_with(&format!(".{stem}.")) && is_upload_temp(temp.as_bytes()), "{temp}");
    }
}

#[test]
fn an_upload_makes_the_directories_above_it() {
    let s = Scratch::new();
    let root = s.root();
    upload(&root, "a/b/c/f.txt", b"deep", false).unwrap();
    assert_eq!(fs::read(s.0.join("root/a/b/c/f.txt")).unwrap(), b"deep");
    // Made beside what is there already.
    upload(&root, "a/b/g.txt", b"g", false).unwrap();
    assert_eq!(names(&root, "a/b"), ["c", "g.txt"]);
}

#[test]
fn directories_are_not_made_through_a_symlink_out_of_the_root() {
    let s = Scratch::new();
    fs::create_dir_all(s.0.join("outside")).unwrap();
    symlink(s.0.join("outside"), s.0.join("root/abs")).unwrap();
    symlink("../outside", s.0.join("root/rel")).unwrap();
    let root = s.root();
    for name in ["abs/new/x", "rel/new/x", "abs/x", "rel/x"] {
        assert!(matches!(root.create(name, true, None), Err(FileError::Outside(_))), "{name}");
        assert!(matches!(root.make_dir(name, None), Err(FileError::Outside(_))), "{name}");
        assert!(matches!(root.symlink(name, "t", true), Err(FileError::Outside(_))), "{name}");
    }
    assert_eq!(fs::read_dir(s.0.join("outside")).unwrap().count(), 0);
}

#[test]
fn a_tree_that_cannot_be_listed_whole_is_an_error() {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new();
    let root = s.root();
    upload(&root, "t/ok/f", b"f", false).unwrap();
    // A name that is not UTF-8: its files would go missing, or under another name.
    fs::create_dir(s.0.join("root/t").join(std::ffi::OsStr::from_bytes(b"d\xff"))).unwrap();
    let err = root.list_tree("t", None, None).unwrap_err();
    assert!(err.to_string().contains("not UTF-8"), "{err}");
    fs::remove_dir(s.0.join("root/t").join(std::ffi::OsStr::from_bytes(b"d\xff"))).unwrap();
    assert!(root.list_tree("t", None, None).is_ok());
    // A directory that cannot be read (when not root, who reads anyway).
    fs::set_permissions(s.0.join("root/t/ok"), fs::Permissions::from_mode(0o300)).unwrap();
    let readable = fs::read_dir(s.0.join("root/t/ok")).is_ok();
    let listed = root.list_tree("t", None, None);
    fs::set_permissions(s.0.join("root/t/ok"), fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(listed.is_ok(), readable, "{listed:?}");
}

#[test]
fn a_link_is_never_made_in_a_directory_reached_through_a_link() {
    // q -> "." is inside the root; a link made "in" q would really be in the
    // root, one level up from where its name says, and its `..` would climb out.
    let s = Scratch::new();
    let root = s.root();
    root.symlink("q", ".", false).unwrap();
    root.make_dir("d", None).unwrap();
    root.symlink("d/up", "..", false).unwrap();
    for name in ["q/z", "q/q/z", "d/up/z"] {
        let refused = root.symlink(name, "../x", false);
        assert!(matches!(refused, Err(FileError::Outside(_))), "{name}: {refused:?}");
    }
    assert_eq!(names(&root, "."), ["d", "q", "sub"]); // no z anywhere
}

#[test]
fn modes_are_given_to_files_and_directories() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new();
    let root = s.root();
    let mut up = root.create("x/run.sh", false, Some(0o4755)).unwrap();
    up.write(b"#!/bin/sh").unwrap();
    up.commit().unwrap();
    let mode = |p: &str| fs::metadata(s.0.join(p)).unwrap().permissions().mode() & 0o7777;
    // No setuid bit over the network.
    assert_eq!(mode("root/x/run.sh"), 0o755);
    root.make_dir("x/private", Some(0o700)).unwrap();
    assert_eq!(mode("root/x/private"), 0o700);
    // An existing directory is kept, with the mode asked for.
    root.make_dir("x/private", Some(0o750)).unwrap();
    assert_eq!(mode("root/x/private"), 0o750);
    upload(&root, "file", b"", false).unwrap();
    assert!(matches!(root.make_dir("file", None), Err(FileError::NotDirectory(_) | FileError::Exists(_))));
}

#[test]
fn a_commit_that_is_not_durable_yet_is_stored_and_synced_later() {
    let s = Scratch::new();
    let root = s.root();
    let mut up = root.create("later", false, None).unwrap();
    up.write(b"soon").unwrap();
    assert!(up.commit_with(false).unwrap().is_none());
    assert_eq!(fs::read(s.0.join("root/later")).unwrap(), b"soon");
    root.sync().unwrap();
    // The no-replace rule holds without the sync too.
    let mut again = root.create("other", false, None).unwrap();
    again.write(b"x").unwrap();
    fs::write(s.0.join("root/other"), b"won").unwrap();
    assert!(again.commit_with(false).is_err());
    assert_eq!(fs::read(s.0.join("root/other")).unwrap(), b"won");
}

#[test]
fn a_symlink_is_made_under_a_temporary_name_and_replaces_only_a_symlink() {
    let s = Scratch::new();
    let root = s.root();
    root.symlink("d/link", "../sub", false).unwrap();
    assert_eq!(fs::read_link(s.0.join("root/d/link")).unwrap(), Path::new("../sub"));
    assert!(matches!(root.symlink("d/link", "x", false), Err(FileError::Exists(_))));
    root.symlink("d/link", "x", true).unwrap();
    assert_eq!(fs::read_link(s.0.join("root/d/link")).unwrap(), Path::new("x"));
    upload(&root, "d/file", b"f", false).unwrap();
    assert!(matches!(root.symlink("d/file", "x", true), Err(FileError::Exists(_))));
    assert_eq!(names(&root, "d"), ["file", "link"]);
}

#[test]
fn a_tree_is_listed_whole_with_digests_and_links_not_followed() {
    let s = Scratch::new();
    let root = s.root();
    upload(&root, "t/a.txt", b"abc", false).unwrap();
    upload(&root, "t/d/e/b.txt", b"", false).unwrap();
    root.make_dir("t/empty", Some(0o700)).unwrap();
    root.symlink("t/link", "/etc", false).unwrap();
    let (entries, truncated) = root.list_tree("t", Some(Checksum::Sha256), None).unwrap();
    assert!(!truncated);
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["a.txt", "d", "d/e", "d/e/b.txt", "empty", "link"]);
    let a = &entries[0];
    assert_eq!(a.digest.as_deref(), Some("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    assert_eq!(entries[4].mode, 0o700);
    assert_eq!((entries[5].kind, entries[5].target.as_deref()), (Kind::Link, Some("/etc")));
    assert!(root.list_tree("", None, None).unwrap().0.iter().all(|e| e.digest.is_none()));
    assert!(matches!(root.list_tree("t/a.txt", None, None), Err(FileError::NotDirectory(_))));
    // Pages: what comes after a name, in the same order.
    let after = |a: &str| -> Vec<String> {
        root.list_tree("t", None, Some(a)).unwrap().0.into_iter().map(|e| e.name).collect()
    };
    assert_eq!(after("d"), ["d/e", "d/e/b.txt", "empty", "link"]);
    assert_eq!(after("d/e/b.txt"), ["empty", "link"]);
    assert_eq!(after("a.txt"), ["d", "d/e", "d/e/b.txt", "empty", "link"]);
    assert_eq!(after("c"), ["d", "d/e", "d/e/b.txt", "empty", "link"]);
    assert_eq!(after("link"), Vec::<String>::new());
}

#[test]
fn a_big_tree_is_listed_in_pages_that_add_up() {
    let s = Scratch::new();
    let root = s.root();
    for i in 0..MAX_LIST + 150 {
        let dir = s.0.join(format!("root/big/d{:03}", i / 100));
        if i % 100 == 0 {
            fs::create_dir_all(&dir).unwrap();
        }
        fs::write(dir.join(format!("f{i}")), b"").unwrap();
    }
    let mut names = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let (page, more) = root.list_tree("big", None, after.as_deref()).unwrap();
        assert!(page.len() <= MAX_LIST);
        after = page.last().map(|e| e.name.clone());
        names.extend(page.into_iter().map(|e| e.name));
        if !more {
            break;
        }
    }
    let dirs = (MAX_LIST + 150).div_ceil(100);
    assert_eq!(names.len(), MAX_LIST + 150 + dirs);
    let unique: std::collections::BTreeSet<_> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "no name twice");
}

#[test]
fn a_tree_too_deep_to_list_whole_is_an_error() {
    let s = Scratch::new();
    let deep: PathBuf = (0..=SWEEP_DEPTH + 1).map(|i| format!("{i}")).collect();
    fs::create_dir_all(s.0.join("root").join(&deep)).unwrap();
    assert!(matches!(s.root().list_tree("", None, None), Err(FileError::Io { .. })));
}

#[test]
fn a_resumable_upload_keeps_its_part_and_source_when_cut() {
    let s = Scratch::new();
    let root = s.root();
    let source = Identity { size: 10, mtime_ns: 42 };
    let (mut up, recorded) = root.create_resumable("sub/r.bin", false, None).unwrap();
    assert_eq!((up.written(), recorded), (0, None));
    up.restart_for(source).unwrap();
    up.write(b"0123").unwrap();
    drop(up); // cut
    let (part, identity) = resume_names(b"r.bin");
    assert_eq!(fs::read(s.0.join("root/sub").join(&part)).unwrap(), b"0123");
    assert!(names(&root, "sub").is_empty(), "a kept part is left out of listings");
    // The next one finds it, its source and its hash, and goes on after it.
    let (mut up, recorded) = root.create_resumable("sub/r.bin", false, None).unwrap();
    assert_eq!((up.written(), recorded), (4, Some(source)));
    assert_eq!(up.hash_kept(Checksum::Sha256).unwrap().hex_digest(), Checksum::Sha256.hex_digest(b"0123"));
    // Only one transfer of a name at a time.
    assert!(matches!(root.create_resumable("sub/r.bin", false, None), Err(FileError::Io { .. })));
    up.write(b"456789").unwrap();
    assert!(up.commit().unwrap().is_none());
    assert_eq!(fs::read(s.0.join("root/sub/r.bin")).unwrap(), b"0123456789");
    assert!(!s.0.join("root/sub").join(&part).exists() && !s.0.join("root/sub").join(&identity).exists());
}

#[test]
fn a_resumable_upload_restarts_and_discards() {
    let s = Scratch::new();
    let root = s.root();
    let (mut up, _) = root.create_resumable("r", false, None).unwrap();
    up.restart_for(Identity { size: 3, mtime_ns: 1 }).unwrap();
    up.write(b"abcdef").unwrap();
    up.restart_for(Identity { size: 3, mtime_ns: 2 }).unwrap();
    up.write(b"xyz").unwrap();
    drop(up);
    let (up, recorded) = root.create_resumable("r", false, None).unwrap();
    assert_eq!((up.written(), recorded), (3, Some(Identity { size: 3, mtime_ns: 2 })));
    up.discard();
    let (part, identity) = resume_names(b"r");
    assert!(!s.0.join("root").join(part).exists() && !s.0.join("root").join(identity).exists());
}

#[test]
fn sweep_removes_old_kept_parts_as_any_temporary() {
    let s = Scratch::new();
    let root = s.root();
    let (mut up, _) = root.create_resumable("k", false, None).unwrap();
    up.restart_for(Identity { size: 3, mtime_ns: 2 }).unwrap();
    up.write(b"ab").unwrap();
    drop(up);
    let (part, identity) = resume_names(b"k");
    let hour = Duration::from_secs(3600);
    assert_eq!(root.sweep_uploads(hour, 1000, &|| false).unwrap().0, 0, "fresh parts stay");
    for name in [&part, &identity] {
        let when = std::time::SystemTime::now() - Duration::from_secs(86_400);
        fs::File::options().write(true).open(s.0.join("root").join(name)).unwrap().set_modified(when).unwrap();
    }
    assert_eq!(root.sweep_uploads(hour, 1000, &|| false).unwrap().0, 2);
}

#[test]
fn sweep_takes_a_kept_identity_only_with_its_part() {
    // A killed server never touched the identity at the end: old beside a fresh part.
    let s = Scratch::new();
    let root = s.root();
    let (mut up, _) = root.create_resumable("k", false, None).unwrap();
    up.restart_for(Identity { size: 3, mtime_ns: 2 }).unwrap();
    up.write(b"ab").unwrap();
    std::mem::forget(up); // killed: no Drop (the descriptor leaks, its lock with it)
    let (part, identity) = resume_names(b"k");
    let dir = s.0.join("root");
    // The leaked lock stands for a live process: a copy of the part, unlocked, stands in.
    fs::copy(dir.join(&part), dir.join("copy")).unwrap();
    fs::remove_file(dir.join(&part)).unwrap();
    fs::rename(dir.join("copy"), dir.join(&part)).unwrap();
    let backdate = |name: &String| {
        let when = std::time::SystemTime::now() - Duration::from_secs(86_400);
        fs::File::options().write(true).open(dir.join(name)).unwrap().set_modified(when).unwrap();
    };
    backdate(&identity);
    let hour = Duration::from_secs(3600);
    assert_eq!(root.sweep_uploads(hour, 1000, &|| false).unwrap().0, 0, "the identity stays with its fresh part");
    let (_up, recorded) = root.create_resumable("k", false, None).unwrap();
    assert_eq!(recorded, Some(Identity { size: 3, mtime_ns: 2 }));
    drop(_up);
    // Once its part is gone, an old identity goes.
    fs::remove_file(dir.join(&part)).unwrap();
    backdate(&identity);
    assert_eq!(root.sweep_uploads(hour, 1000, &|| false).unwrap().0, 1);
    assert!(!dir.join(&identity).exists());
}

#[test]
fn a_resumable_transfer_cut_before_any_data_keeps_nothing() {
    let s = Scratch::new();
    let root = s.root();
    let (part, identity) = resume_names(b"e");
    let (up, _) = root.create_resumable("e", false, None).unwrap();
    drop(up); // refused, or cut before its source was known
    let (mut up, _) = root.create_resumable("e", false, None).unwrap();
    up.restart_for(Identity { size: 3, mtime_ns: 2 }).unwrap();
    drop(up); // cut before its first byte
    assert!(!s.0.join("root").join(&part).exists() && !s.0.join("root").join(&identity).exists());
}

#[test]
fn a_kept_parts_identity_is_touched_when_its_transfer_ends() {
    let s = Scratch::new();
    let root = s.root();
    let (mut up, _) = root.create_resumable("k", false, None).unwrap();
    up.restart_for(Identity { size: 3, mtime_ns: 2 }).unwrap();
    up.write(b"a").unwrap();
    let identity = s.0.join("root").join(resume_names(b"k").1);
    let long_ago = std::time::SystemTime::now() - Duration::from_secs(86_400);
    fs::File::options().write(true).open(&identity).unwrap().set_modified(long_ago).unwrap();
    drop(up); // cut after a long transfer
    let age = fs::metadata(&identity).unwrap().modified().unwrap().elapsed().unwrap_or_default();
    assert!(age < Duration::from_secs(3600), "{age:?}");
}

#[test]
fn a_whole_upload_drops_what_a_cut_resumable_one_kept_unless_held() {
    let s = Scratch::new();
    let root = s.root();
    let (part, identity) = resume_names(b"w");
    let (mut up, _) = root.create_resumable("w", false, None).unwrap();
    up.restart_for(Identity { size: 3, mtime_ns: 2 }).unwrap();
    up.write(b"ab").unwrap();
    // Held: left alone.
    upload(&root, "w", b"new", true).unwrap();
    assert!(s.0.join("root").join(&part).exists());
    drop(up);
    upload(&root, "w", b"newer", true).unwrap();
    assert!(!s.0.join("root").join(&part).exists() && !s.0.join("root").join(&identity).exists());
    assert_eq!(fs::read(s.0.join("root/w")).unwrap(), b"newer");
}
