//! Optional body digests carried in the JSON header (`Codec(checksum=...)`).

use md5::Md5;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Checksum {
    Md5,
    Sha256,
    /// BLAKE3 (256-bit output): cryptographic, and several times faster than
    /// sha256 on a core with SIMD.
    Blake3,
}

impl Checksum {
    pub fn from_name(name: &str) -> Option<Checksum> {
        match name {
            "md5" => Some(Checksum::Md5),
            "sha256" => Some(Checksum::Sha256),
            "blake3" => Some(Checksum::Blake3),
            _ => None,
        }
    }

    /// The algorithm's name, which is also the header field that carries the digest.
    pub const fn name(self) -> &'static str {
        match self {
            Checksum::Md5 => "md5",
            Checksum::Sha256 => "sha256",
            Checksum::Blake3 => "blake3",
        }
    }

    /// Lower-case hex digest, as `hashlib.new(name, data).hexdigest()` gives.
    pub fn hex_digest(self, data: &[u8]) -> String {
        match self {
            Checksum::Md5 => hex::encode(Md5::digest(data)),
            Checksum::Sha256 => hex::encode(Sha256::digest(data)),
            Checksum::Blake3 => blake3::hash(data).to_hex().to_string(),
        }
    }
}

/// A digest computed piece by piece (a file that moves in chunks).
#[derive(Clone)]
pub enum Hasher {
    Md5(Md5),
    Sha256(Sha256),
    Blake3(Box<blake3::Hasher>),
}

impl Hasher {
    pub fn new(checksum: Checksum) -> Hasher {
        match checksum {
            Checksum::Md5 => Hasher::Md5(Md5::new()),
            Checksum::Sha256 => Hasher::Sha256(Sha256::new()),
            Checksum::Blake3 => Hasher::Blake3(Box::new(blake3::Hasher::new())),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Blake3(h) => {
                h.update(data);
            }
        }
    }

    /// Lower-case hex digest of everything given to `update`.
    pub fn hex_digest(self) -> String {
        match self {
            Hasher::Md5(h) => hex::encode(h.finalize()),
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Blake3(h) => h.finalize().to_hex().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blake3_matches_the_reference_vectors() {
        // The BLAKE3 team's test vectors (test_vectors.json): input byte i is i % 251.
        let input = |len: usize| (0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>();
        assert_eq!(
            Checksum::Blake3.hex_digest(&input(0)),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        assert_eq!(
            Checksum::Blake3.hex_digest(&input(1)),
            "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213"
        );
        // Piece by piece, across the 1 KiB chunks and beyond: the same digest.
        let data = input(102_400);
        let mut h = Hasher::new(Checksum::Blake3);
        for piece in data.chunks(1000) {
            h.update(piece);
        }
        assert_eq!(h.hex_digest(), Checksum::Blake3.hex_digest(&data));
        assert_eq!(Checksum::from_name("blake3"), Some(Checksum::Blake3));
    }

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
