//! bench/server.py's native client. One thread drives every connection (as
//! the Python client does), but each request costs it a few microseconds
//! instead of tens, so a round measures the server.
//!
//! It speaks to bench/server.py as the Python client does: its one argument
//! is the round's configuration as JSON; once connected (TLS handshakes
//! included) and warmed up it prints `ready`; each `go` on stdin runs one
//! measured round and prints one JSON line; anything else ends it.

use std::io::BufRead;
use std::sync::Arc;
use std::time::Instant;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

type Error = Box<dyn std::error::Error + Send + Sync>;

trait Conn: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Conn for T {}

#[derive(Clone, Copy, PartialEq)]
enum Framing {
    /// `<i` header length, a JSON header with `total_size`, the body.
    Json,
    /// `>I` body length, the body.
    Int32,
}

/// One request and what its reply must be.
struct Work {
    wire: Vec<u8>,
    seq: u64,
    upper: Vec<u8>,
}

/// The same workload as the Python client: a 16..64-byte lowercase body and,
/// with JSON framing, the header `{"seq": n}`, echoed by the server.
fn make_work(framing: Framing, n: usize, rng: &mut Rng, seq0: u64) -> Vec<Work> {
    (0..n as u64)
        .map(|i| {
            let seq = seq0 + i;
            let len = 16 + rng.below(49) as usize;
            let body: Vec<u8> = (0..len).map(|_| b'a' + rng.below(26) as u8).collect();
            let mut wire = Vec::with_capacity(len + 48);
            match framing {
                Framing::Json => {
                    let header = format!(r#"{{"seq": {seq}, "total_size": {len}}}"#);
                    wire.extend_from_slice(&(header.len() as i32).to_le_bytes());
                    wire.extend_from_slice(header.as_bytes());
                }
                Framing::Int32 => wire.extend_from_slice(&(len as u32).to_be_bytes()),
            }
            wire.extend_from_slice(&body);
            Work { wire, seq, upper: body.to_ascii_uppercase() }
        })
        .collect()
}

/// Reads one reply and checks it.
async fn read_reply(
    conn: &mut (impl AsyncRead + Unpin),
    framing: Framing,
    work: &Work,
    buf: &mut Vec<u8>,
) -> Result<(), Error> {
    let mut prefix = [0u8; 4];
    conn.read_exact(&mut prefix).await?;
    let size = match framing {
        Framing::Json => {
            let hlen = i32::from_le_bytes(prefix);
            buf.resize(usize::try_from(hlen)?, 0);
            conn.read_exact(buf).await?;
            let header: Value = serde_json::from_slice(buf)?;
            if header["seq"].as_u64() != Some(work.seq) {
                return Err(format!("wrong reply header {header}, expected seq {}", work.seq).into());
            }
            header["total_size"].as_u64().ok_or("no total_size")? as usize
        }
        Framing::Int32 => u32::from_be_bytes(prefix) as usize,
    };
    buf.resize(size, 0);
    conn.read_exact(buf).await?;
    if *buf != work.upper {
        return Err(format!("wrong reply body {:?}", String::from_utf8_lossy(buf)).into());
    }
    Ok(())
}

async fn drive(mut conn: Box<dyn Conn>, framing: Framing, work: Vec<Work>) -> (Box<dyn Conn>, Result<Vec<f64>, Error>) {
    let mut latencies = Vec::with_capacity(work.len());
    let mut buf = Vec::new();
    for w in &work {
        let t0 = Instant::now();
        let sent = async {
            conn.write_all(&w.wire).await?;
            conn.flush().await?;
            read_reply(&mut conn, framing, w, &mut buf).await
        };
        if let Err(e) = sent.await {
            return (conn, Err(e));
        }
        latencies.push(t0.elapsed().as_secs_f64());
    }
    (conn, Ok(latencies))
}

/// A round: `total` requests spread over every connection, all at once,
/// each connection a task of this thread's runtime.
async fn round(
    conns: &mut Vec<Box<dyn Conn>>,
    framing: Framing,
    total: usize,
    rng: &mut Rng,
    seq0: u64,
) -> Result<(f64, Vec<f64>), Error> {
    let n = conns.len();
    let mut seq = seq0;
    let work: Vec<Vec<Work>> = (0..n)
        .map(|i| {
            let k = total / n + usize::from(i < total % n);
            let w = make_work(framing, k, rng, seq);
            seq += k as u64;
            w
        })
        .collect();
    let t0 = Instant::now();
    let tasks: Vec<_> = conns.drain(..).zip(work).map(|(c, w)| tokio::spawn(drive(c, framing, w))).collect();
    let mut latencies = Vec::with_capacity(total);
    let mut failed = None;
    for task in tasks {
        let (conn, result) = task.await?;
        conns.push(conn);
        match result {
            Ok(l) => latencies.extend(l),
            Err(e) => failed = Some(e),
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    match failed {
        Some(e) => Err(e),
        None => Ok((wall, latencies)),
    }
}

/// Accepts the one certificate whose SHA-256 is the pin, and checks that the
/// server holds its key (the handshake's signature), as the Python client's
/// `ssl.SSLContext` with a fingerprint check does.
#[derive(Debug)]
struct Pinned {
    fingerprint: Vec<u8>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if Sha256::digest(end_entity.as_ref()).as_slice() == self.fingerprint.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("the server's certificate is not the pinned one".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

async fn connect(port: u16, tls: Option<&tokio_rustls::TlsConnector>) -> Result<Box<dyn Conn>, Error> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    // replies are read in three parts (prefix, header, body): one read from
    // the socket each without a buffer
    Ok(match tls {
        None => Box::new(tokio::io::BufReader::new(tcp)),
        Some(connector) => {
            let stream = connector.connect(ServerName::try_from("localhost")?, tcp).await?;
            let (_, session) = stream.get_ref();
            if session.alpn_protocol() != Some(b"rframe/1") {
                return Err("the server did not choose ALPN rframe/1".into());
            }
            Box::new(stream)
        }
    })
}

fn tls_connector(fingerprint: &str) -> Result<tokio_rustls::TlsConnector, Error> {
    // the server's provider (src/tls.rs): ring, whose default is deprecated
    // only for lacking post-quantum key exchange
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(Pinned { fingerprint: hex::decode(fingerprint)?, provider: provider.clone() });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"rframe/1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

fn process_cpu_seconds() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid clock id and a pointer to a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// xorshift64*: the same requests every run, with no dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

async fn main_loop(cfg: Value) -> Result<(), Error> {
    let port = u16::try_from(cfg["port"].as_u64().ok_or("no port")?)?;
    let framing = match cfg["framing"].as_str() {
        Some("json") => Framing::Json,
        Some("int32") => Framing::Int32,
        other => return Err(format!("unknown framing {other:?}").into()),
    };
    if cfg["workload"].as_str() != Some("upper") {
        return Err("the native client runs the `upper` workload only".into());
    }
    let nconn = cfg["conns"].as_u64().ok_or("no conns")? as usize;
    let requests = cfg["requests"].as_u64().ok_or("no requests")? as usize;
    let warmup = cfg["warmup"].as_u64().ok_or("no warmup")? as usize;
    let connector = cfg["fingerprint"].as_str().map(tls_connector).transpose()?;
    let mut conns = Vec::with_capacity(nconn);
    for _ in 0..nconn {
        let conn =
            tokio::time::timeout(std::time::Duration::from_secs(10), connect(port, connector.as_ref())).await??;
        conns.push(conn);
    }
    let mut rng = Rng(1234);
    round(&mut conns, framing, warmup, &mut rng, 0).await?;
    let mut seq0 = warmup as u64;
    println!("ready");
    for line in std::io::stdin().lock().lines() {
        if line?.trim() != "go" {
            break;
        }
        let cpu0 = process_cpu_seconds();
        let (wall, mut latencies) = round(&mut conns, framing, requests, &mut rng, seq0).await?;
        let client_cpu = process_cpu_seconds() - cpu0;
        seq0 += requests as u64;
        latencies.sort_by(f64::total_cmp);
        let n = latencies.len();
        let out = json!({
            "requests": n, "wall": wall, "p50": latencies[n / 2],
            "p99": latencies[(n - 1).min(n * 99 / 100)], "client_cpu": client_cpu,
        });
        println!("{out}");
    }
    Ok(())
}

fn main() {
    let cfg: Value = match std::env::args().nth(1).map(|a| serde_json::from_str(&a)) {
        Some(Ok(cfg)) => cfg,
        _ => {
            println!("{}", json!({"error": "usage: rframe-loadgen CONFIG_JSON"}));
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    if let Err(e) = rt.block_on(main_loop(cfg)) {
        println!("{}", json!({"error": e.to_string()}));
        std::process::exit(1);
    }
}
