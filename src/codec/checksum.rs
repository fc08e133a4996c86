//! Optional body digests carried in the JSON header (`Codec(checksum=...)`).

use md5::Md5;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Checksum {
    Md5,
    Sha256,
}

impl Checksum {
    pub fn from_name(name: &str) -> Option<Checksum> {
        match name {
            "md5" => Some(Checksum::Md5),
            "sha256" => Some(Checksum::Sha256),
            _ => None,
        }
    }

    /// The algorithm's name, which is also the header field that carries the digest.
    pub const fn name(self) -> &'static str {
        match self {
            Checksum::Md5 => "md5",
            Checksum::Sha256 => "sha256",
        }
    }

    /// Lower-case hex digest, as `hashlib.new(name, data).hexdigest()` gives.
    pub fn hex_digest(self, data: &[u8]) -> String {
        match self {
            Checksum::Md5 => hex::encode(Md5::digest(data)),
            Checksum::Sha256 => hex::encode(Sha256::digest(data)),
        }
    }
}

/// A digest computed piece by piece (a file that moves in chunks).
#[derive(Clone)]
pub enum Hasher {
    Md5(Md5),
    Sha256(Sha256),
}

impl Hasher {
    pub fn new(checksum: Checksum) -> Hasher {
        match checksum {
            Checksum::Md5 => Hasher::Md5(Md5::new()),
            Checksum::Sha256 => Hasher::Sha256(Sha256::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
        }
    }

    /// Lower-case hex digest of everything given to `update`.
    pub fn hex_digest(self) -> String {
        match self {
            Hasher::Md5(h) => hex::encode(h.finalize()),
            Hasher::Sha256(h) => hex::encode(h.finalize()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_match_hashlib() {
        assert_eq!(Checksum::Md5.hex_digest(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(
            Checksum::Sha256.hex_digest(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn hasher_in_pieces_matches_one_shot() {
        for checksum in [Checksum::Md5, Checksum::Sha256] {
            let mut h = Hasher::new(checksum);
            h.update(b"a");
            h.update(b"");
            h.update(b"bc");
            assert_eq!(h.hex_digest(), checksum.hex_digest(b"abc"));
        }
    }
}
