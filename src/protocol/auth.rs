//! Mutual HMAC-SHA256 challenge-response over random nonces, in the manner of
//! CPython's `multiprocessing.connection`: the token never crosses the wire, and
//! proofs are compared in constant time. On TLS both proofs also cover the
//! server certificate's SHA-256 (`tls-server-end-point`, RFC 5929, as
//! PostgreSQL's SCRAM-SHA-256-PLUS): a relay that ends TLS with a certificate
//! of its own can neither pass the client's proof on nor answer as the server.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The handshake's version, in the server's challenge: 1 is this one.
pub const VERSION: u64 = 1;
/// The `channel_binding` of a handshake on TLS, and of one without.
pub const TLS_SERVER_END_POINT: &str = "tls-server-end-point";
pub const NO_BINDING: &str = "none";

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

/// `binding`: the SHA-256 of the server's certificate on TLS, `None` on a
/// plaintext connection (the proof of protocol version 0, unchanged).
fn mac(token: &[u8], role: Role, server_nonce: &str, client_nonce: &str, binding: Option<&[u8]>) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(token).expect("HMAC takes a key of any length");
    mac.update(role.label());
    mac.update(b":");
    mac.update(server_nonce.as_bytes());
    mac.update(b":");
    mac.update(client_nonce.as_bytes());
    if let Some(binding) = binding {
        mac.update(b":");
        mac.update(hex::encode(binding).as_bytes());
    }
    mac
}

/// The hex proof that `role` holds `token`, bound to `binding` (see [`mac`]).
pub fn proof(token: &[u8], role: Role, server_nonce: &str, client_nonce: &str, binding: Option<&[u8]>) -> String {
    hex::encode(mac(token, role, server_nonce, client_nonce, binding).finalize().into_bytes())
}

/// Checks a hex proof in constant time.
pub fn verify(
    token: &[u8],
    role: Role,
    server_nonce: &str,
    client_nonce: &str,
    binding: Option<&[u8]>,
    proof_hex: &str,
) -> bool {
    let Ok(given) = hex::decode(proof_hex) else { return false };
    mac(token, role, server_nonce, client_nonce, binding).verify_slice(&given).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_verifies_only_with_the_same_token_role_and_nonces() {
        let (sn, cn) = (nonce(), nonce());
        let p = proof(b"secret", Role::Client, &sn, &cn, None);
        assert!(verify(b"secret", Role::Client, &sn, &cn, None, &p));
        assert!(!verify(b"other", Role::Client, &sn, &cn, None, &p));
        assert!(!verify(b"secret", Role::Server, &sn, &cn, None, &p));
        assert!(!verify(b"secret", Role::Client, &nonce(), &cn, None, &p));
        assert!(!verify(b"secret", Role::Client, &sn, &cn, None, "zz"));
    }

    #[test]
    fn a_bound_proof_verifies_only_on_the_same_channel() {
        let (sn, cn) = (nonce(), nonce());
        let (mine, relays) = ([1u8; 32], [2u8; 32]);
        let p = proof(b"secret", Role::Client, &sn, &cn, Some(&mine));
        assert!(verify(b"secret", Role::Client, &sn, &cn, Some(&mine), &p));
        // Relayed through a TLS endpoint with another certificate, or
        // stripped to plaintext: refused either way.
        assert!(!verify(b"secret", Role::Client, &sn, &cn, Some(&relays), &p));
        assert!(!verify(b"secret", Role::Client, &sn, &cn, None, &p));
        let unbound = proof(b"secret", Role::Client, &sn, &cn, None);
        assert!(!verify(b"secret", Role::Client, &sn, &cn, Some(&mine), &unbound));
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
            proof(b"k", Role::Client, "s", "c", None),
            "12ac460db2af7218977a2b6cd29a5579a4e98e98a95b0e4045d6bfd1d7f5928b"
        );
        // hmac.new(b"k", b"rframe-client:s:c:" + b"ab" * 32, "sha256").hexdigest()
        assert_eq!(
            proof(b"k", Role::Client, "s", "c", Some(&[0xab; 32])),
            "295bce891e5a1b4e77b4762044041f0515da691554e34c2b704deb82dfb466be"
        );
    }
}
