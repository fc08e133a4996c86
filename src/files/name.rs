//! What a file name sent by a client may look like. Sans-IO: the kernel
//! still resolves names beneath the root (see `Root`); this refuses early,
//! with a clear message, what can never be right.

use super::FileError;

/// The longest name accepted, in bytes (Linux's PATH_MAX).
pub const MAX_NAME: usize = 4096;

/// The components of a relative `name`, with `.` and empty ones dropped.
/// Refuses an empty name, an absolute one, `..`, NUL, and components longer
/// than NAME_MAX.
pub fn check_name(name: &str) -> Result<Vec<&str>, FileError> {
    let bad = |why| Err(FileError::BadName(name.to_owned(), why));
    if name.len() > MAX_NAME {
        return bad("longer than 4096 bytes");
    }
    if name.contains('\0') {
        return bad("contains NUL");
    }
    if name.starts_with('/') {
        return bad("absolute names are refused: names are relative to the server's root");
    }
    let mut parts = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => return bad("'..' is refused: names stay beneath the server's root"),
            p if p.len() > 255 => return bad("a path component is longer than 255 bytes"),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return bad("names no file");
    }
    if parts.iter().any(|p| p.ends_with(super::PART_SUFFIX)) {
        return bad("names ending in .rframe-part are kept for transfers in progress");
    }
    Ok(parts)
}

/// Refuses a symlink `target` for a link at `name` that could lead out of
/// the root: empty, absolute, with NUL, with `..` anywhere but at its start,
/// or with more leading `..` than there are directories above the link.
///
/// Why `..` only leads: a `..` after a name climbs from wherever that name
/// leads, and if the name is itself a link (`q` -> `.`), counting it as one
/// level down is wrong (`q/q/../x` is the root's parent's `x`). With `..`
/// only first, and the link made in a directory reached through no link (the
/// caller's part), the climb stays beneath the root, and every name after it
/// is a real directory or a link that obeyed this same rule. The server never
/// follows links out anyway (names are resolved beneath the root); this keeps
/// the tree it serves free of links that others would.
pub fn check_link_target(name: &str, target: &str) -> Result<(), FileError> {
    let refuse = |why| Err(FileError::BadLink(name.to_owned(), target.to_owned(), why));
    let parts = check_name(name)?;
    if target.is_empty() || target.contains('\0') || target.len() > MAX_NAME {
        return refuse("an empty, over-long or NUL-holding target");
    }
    if target.starts_with('/') {
        return refuse("an absolute target");
    }
    let mut climbs = 0;
    let mut named = false;
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." if named => return refuse("'..' after a name: only a target's first steps may climb"),
            ".." => climbs += 1,
            _ => named = true,
        }
    }
    if climbs > parts.len() - 1 {
        return refuse("a target out of the root");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_targets_stay_beneath_the_root() {
        for (name, target) in [("l", "f"), ("d/l", "../f"), ("d/e/l", "../../x/y"), ("l", "./a/./b"), ("d/l", ".")] {
            assert!(check_link_target(name, target).is_ok(), "{name} -> {target}");
        }
        for (name, target) in [
            ("l", "/etc"),
            ("l", ".."),
            ("d/l", "../.."),
            ("l", "a/../../x"),
            ("l", ""),
            ("l", "a\0"),
            // Through a link: q -> "." makes q/q/q/.. the root's parent.
            ("p", "q/q/q/../SECRET"),
            ("d/l", "../a/../b"),
        ] {
            assert!(matches!(check_link_target(name, target), Err(FileError::BadLink(..))), "{name} -> {target}");
        }
        assert!(matches!(check_link_target("../l", "x"), Err(FileError::BadName(..))));
    }

    #[test]
    fn relative_names_are_split() {
        assert_eq!(check_name("a.txt").unwrap(), ["a.txt"]);
        assert_eq!(check_name("dir/./b//c.bin").unwrap(), ["dir", "b", "c.bin"]);
        assert_eq!(check_name("..a/b..").unwrap(), ["..a", "b.."]);
    }

    #[test]
    fn escaping_and_empty_names_are_refused() {
        for name in ["", ".", "./", "/etc/passwd", "..", "../x", "a/../../x", "a/..", "a\0b"] {
            assert!(matches!(check_name(name), Err(FileError::BadName(..))), "{name:?}");
        }
        assert!(check_name(&"x".repeat(256)).is_err());
        assert!(check_name(".a.0123.rframe-part").is_err());
        assert!(check_name("d.rframe-part/x").is_err());
        assert!(check_name(&"a/".repeat(3000)).is_err());
    }
}
