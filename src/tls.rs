//! The server's TLS identity and configuration: its certificate and key (made
//! on first use and kept, or read from PEM files), their fingerprint, and a
//! rustls configuration that speaks TLS 1.3 only. No sockets here: the server
//! runs the handshake (`server::tls_accept`).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// The one application protocol a TLS connection may negotiate (ALPN).
pub const ALPN: &[u8] = b"rframe/1";

/// The file in the state directory that holds the generated certificate and
/// its key, together: one file is written (and replaced) atomically, so a
/// certificate never meets another server's key.
pub const IDENTITY_FILE: &str = "server.pem";

pub use crate::protocol::config::IdentitySource;

/// A certificate chain, its key, and the fingerprint clients pin.
pub struct Identity {
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// What the server needs of TLS: the rustls configuration, and the hash the
/// handshake's channel binding covers.
#[derive(Debug)]
pub struct ServerTls {
    pub config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the server certificate's DER bytes: `tls-server-end-point`
    /// (RFC 5929), which the token handshake binds to.
    pub cert_hash: [u8; 32],
}

impl ServerTls {
    /// The lowercase hex of [`ServerTls::cert_hash`]: what users pin.
    pub fn fingerprint(&self) -> String {
        hex::encode(self.cert_hash)
    }
}

/// SHA-256 of a certificate's DER bytes.
pub fn cert_hash(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

/// `$XDG_STATE_HOME/rframe`, else `~/.local/state/rframe`; on Windows,
/// `%LOCALAPPDATA%\rframe` first (the user's own, not roaming).
pub fn default_dir() -> io::Result<PathBuf> {
    if let Some(state) = std::env::var_os("XDG_STATE_HOME").filter(|s| Path::new(s).is_absolute()) {
        return Ok(PathBuf::from(state).join("rframe"));
    }
    #[cfg(windows)]
    if let Some(local) = std::env::var_os("LOCALAPPDATA").filter(|s| Path::new(s).is_absolute()) {
        return Ok(PathBuf::from(local).join("rframe"));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".local/state/rframe")),
        None => Err(io::Error::new(
            io::ErrorKind::NotFound,
            "neither XDG_STATE_HOME nor HOME is set: give a directory for the server's certificate (tls_dir, --tls-dir)",
        )),
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

impl Identity {
    pub fn load(source: &IdentitySource) -> io::Result<Identity> {
        match source {
            IdentitySource::Files { cert, key } => Identity::from_files(cert, key),
            IdentitySource::Generated(dir) => {
                let dir = match dir {
                    Some(d) => d.clone(),
                    None => default_dir()?,
                };
                Identity::load_or_generate(&dir)
            }
        }
    }

    fn from_files(cert: &Path, key: &Path) -> io::Result<Identity> {
        let certs = read_certs(&fs::read(cert)?).map_err(|e| invalid(format!("{}: {e}", cert.display())))?;
        let key = read_key(&fs::read(key)?).map_err(|e| invalid(format!("{}: {e}", key.display())))?;
        Ok(Identity { certs, key })
    }

    /// The identity kept in `dir`, made there first if there is none.
    fn load_or_generate(dir: &Path) -> io::Result<Identity> {
        let path = dir.join(IDENTITY_FILE);
        match fs::read(&path) {
            Ok(pem) => return Identity::from_pem(&pem).map_err(|e| invalid(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        }
        private::dir_builder().recursive(true).create(dir)?;
        let pem = generate()?;
        // Written under a name of its own, then linked to the final name: a
        // link fails if the name exists, so of two servers starting at once
        // one wins and both load the winner's.
        let temp = dir.join(format!(".{IDENTITY_FILE}.{}", crate::protocol::auth::nonce()));
        let written = write_private(&temp, pem.as_bytes()).and_then(|()| fs::hard_link(&temp, &path));
        let _ = fs::remove_file(&temp);
        match written {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        }
        let pem = fs::read(&path)?;
        Identity::from_pem(&pem).map_err(|e| invalid(format!("{}: {e}", path.display())))
    }

    fn from_pem(pem: &[u8]) -> Result<Identity, String> {
        Ok(Identity { certs: read_certs(pem)?, key: read_key(pem)? })
    }

    /// SHA-256 of the leaf certificate.
    pub fn cert_hash(&self) -> [u8; 32] {
        cert_hash(&self.certs[0])
    }

    /// TLS 1.3 only, ALPN `rframe/1`, no session tickets or resumption (so
    /// no 0-RTT), no client certificates: the token authenticates clients.
    pub fn server_tls(self) -> io::Result<ServerTls> {
        let cert_hash = self.cert_hash();
        // ring, not aws-lc: a wheel then builds with a C compiler alone (no
        // cmake, no nasm). ring has no post-quantum key exchange, which is why
        // rustls deprecates this; the classical X25519/P-256 groups remain.
        #[allow(deprecated)]
        let mut provider = rustls::crypto::ring::default_provider();
        // AES-128-GCM first, and the server's order, not the client's
        // (OpenSSL asks for AES-256 first): four fewer AES rounds per block,
        // a quarter less CPU on every byte moved, and a mandatory TLS 1.3
        // suite of the same standing.
        provider.cipher_suites.sort_by_key(|suite| suite.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        let provider = Arc::new(provider);
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| invalid(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(self.certs, self.key)
            .map_err(|e| invalid(format!("the certificate and key do not make a usable pair: {e}")))?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        config.ignore_client_order = true;
        config.send_tls13_tickets = 0;
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        Ok(ServerTls { config: Arc::new(config), cert_hash })
    }
}

fn read_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate (-----BEGIN CERTIFICATE-----) in it".into());
    }
    Ok(certs)
}

fn read_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("no private key in it: {e}"))
}

/// A new self-signed certificate (ECDSA P-256) and its key, as one PEM text.
/// Its names do not matter: clients pin its fingerprint or bind the token to
/// it, they do not check names against a CA.
fn generate() -> io::Result<String> {
    let rcgen::CertifiedKey { cert, signing_key } = rcgen::generate_simple_self_signed(vec!["rframe".to_string()])
        .map_err(|e| io::Error::other(format!("cannot generate a certificate: {e}")))?;
    Ok(format!("{}{}", cert.pem(), signing_key.serialize_pem()))
}

/// Creates `path` (which must not exist) readable by its owner alone, with
/// `data`, on disk before it returns.
fn write_private(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = private::open_options().write(true).create_new(true).open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Files and directories only their owner may use: modes 0600 and 0700 on
/// Unix; on Windows, what the user's profile directory gives (its ACL lets
/// in the user, SYSTEM and administrators).
mod private {
    use std::fs;

    pub fn dir_builder() -> fs::DirBuilder {
        #[allow(unused_mut)]
        let mut b = fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b
    }

    pub fn open_options() -> fs::OpenOptions {
        #[allow(unused_mut)]
        let mut o = fs::OpenOptions::new();
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rframe-tls-{name}-{}", crate::protocol::auth::nonce()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_generated_identity_is_kept_private_and_reused() {
        let dir = temp_dir("gen").join("state");
        let first = Identity::load(&IdentitySource::Generated(Some(dir.clone()))).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.join(IDENTITY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        }
        let again = Identity::load(&IdentitySource::Generated(Some(dir.clone()))).unwrap();
        assert_eq!(first.cert_hash(), again.cert_hash());
        // Nothing else is left beside it.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        let tls = again.server_tls().unwrap();
        assert_eq!(tls.fingerprint().len(), 64);
        assert_eq!(tls.config.alpn_protocols, vec![ALPN.to_vec()]);
        fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[test]
    fn pem_files_load_and_bad_ones_say_which() {
        let dir = temp_dir("files");
        let pem = generate().unwrap();
        let (cert, key) = pem.split_at(pem.find("-----BEGIN PRIVATE KEY-----").unwrap());
        fs::write(dir.join("c.pem"), cert).unwrap();
        fs::write(dir.join("k.pem"), key).unwrap();
        let source = IdentitySource::Files { cert: dir.join("c.pem"), key: dir.join("k.pem") };
        let identity = Identity::load(&source).unwrap();
        assert_eq!(identity.certs.len(), 1);
        // The key file has no certificate, the certificate file no key.
        let swapped = IdentitySource::Files { cert: dir.join("k.pem"), key: dir.join("c.pem") };
        let err = Identity::load(&swapped).err().unwrap().to_string();
        assert!(err.contains("k.pem") && err.contains("no certificate"), "{err}");
        // A key that is not the certificate's is refused when the pair is made.
        let other = generate().unwrap();
        fs::write(dir.join("k2.pem"), &other[other.find("-----BEGIN PRIVATE KEY-----").unwrap()..]).unwrap();
        let mismatched = IdentitySource::Files { cert: dir.join("c.pem"), key: dir.join("k2.pem") };
        let err = Identity::load(&mismatched).unwrap().server_tls().err().unwrap().to_string();
        assert!(err.contains("usable pair"), "{err}");
        fs::remove_dir_all(dir).unwrap();
    }
}
