//! Mutual HMAC-SHA256 challenge-response over random nonces, in the manner of
//! CPython's `multiprocessing.connection`: the token never crosses the wire, and
//! proofs are compared in constant time.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Which side a proof comes from; each side's proof covers a different label,
/// so one side's proof can never be replayed as the other's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

impl Role {
    fn label(self) -> &'static [u8] {
        match self {
            Role::Client => b"rframe-client",
            Role::Server => b"rframe-server",
        }
    }
}

/// 32 random bytes from the OS, as hex.
pub fn nonce() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    hex::encode(bytes)
}

fn mac(token: &[u8], role: Role, server_nonce: &str, client_nonce: &str) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(token).expect("HMAC takes a key of any length");
    mac.update(role.label());
    mac.update(b":");
    mac.update(server_nonce.as_bytes());
    mac.update(b":");
    mac.update(client_nonce.as_bytes());
    mac
}

/// The hex proof that `role` holds `token`.
pub fn proof(token: &[u8], role: Role, server_nonce: &str, client_nonce: &str) -> String {
    hex::encode(mac(token, role, server_nonce, client_nonce).finalize().into_bytes())
}

/// Checks a hex proof in constant time.
pub fn verify(token: &[u8], role: Role, server_nonce: &str, client_nonce: &str, proof_hex: &str) -> bool {
    let Ok(given) = hex::decode(proof_hex) else { return false };
    mac(token, role, server_nonce, client_nonce).verify_slice(&given).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_verifies_only_with_the_same_token_role_and_nonces() {
        let (sn, cn) = (nonce(), nonce());
        let p = proof(b"secret", Role::Client, &sn, &cn);
        assert!(verify(b"secret", Role::Client, &sn, &cn, &p));
        assert!(!verify(b"other", Role::Client, &sn, &cn, &p));
        assert!(!verify(b"secret", Role::Server, &sn, &cn, &p));
        assert!(!verify(b"secret", Role::Client, &nonce(), &cn, &p));
        assert!(!verify(b"secret", Role::Client, &sn, &cn, "zz"));
    }

    #[test]
    fn nonces_are_64_hex_digits_and_differ() {
        let (a, b) = (nonce(), nonce());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }

    #[test]
    fn proof_matches_python_hmac() {
        // hmac.new(b"k", b"rframe-client:s:c", "sha256").hexdigest()
        assert_eq!(
            proof(b"k", Role::Client, "s", "c"),
            "12ac460db2af7218977a2b6cd29a5579a4e98e98a95b0e4045d6bfd1d7f5928b"
        );
    }
}
