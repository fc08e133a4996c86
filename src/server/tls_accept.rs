//! The opening of a connection to a TLS server: one port serves both, and the
//! first bytes decide. A TLS ClientHello gets the handshake; anything else is
//! plaintext (a frame, or the course client's command line), which the
//! connection serves only to a peer on this machine.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::timeout_at;

use super::listener::Stream;
use crate::codec::{Codec, PREFIX_LEN};
use crate::protocol::looks_like_tls_hello;
use crate::tls::ServerTls;

pub enum Opening {
    /// The TLS handshake is done: frames follow inside it.
    Tls(Box<dyn Stream>),
    /// Plaintext; its first bytes are in the buffer handed to [`open`].
    Plain(Box<dyn Stream>),
    /// The peer left, the server is stopping, a deadline passed, or the
    /// handshake failed (why, for the log).
    Closed(String),
}

/// When the opening must be done by.
pub struct Deadlines {
    /// For the first byte (a local client may connect and wait, as the
    /// course's does).
    pub first_byte: Instant,
    /// From the first byte: for the rest of the hello and the handshake.
    pub handshake: Duration,
    /// The login deadline, on a server with a token: bounds it all.
    pub login: Option<Instant>,
}

/// Reads the first bytes into `buf` and, for a ClientHello, runs the TLS
/// handshake, within `deadlines`.
pub async fn open(
    mut stream: Box<dyn Stream>,
    buf: &mut BytesMut,
    codec: &Codec,
    deadlines: Deadlines,
    tls: &ServerTls,
    shutdown: &mut watch::Receiver<bool>,
) -> Opening {
    let by_login = |t: Instant| deadlines.login.map_or(t, |login| login.min(t));
    let mut deadline = by_login(deadlines.first_byte);
    // A frame's four length bytes, a course line, or a TLS record header:
    // the first three decide, once the codec has had its say on four.
    while buf.len() < PREFIX_LEN && (buf.is_empty() || buf[0] == 0x16) {
        let first = buf.is_empty();
        let read = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return Opening::Closed("server stopping".into()),
            read = timeout_at(deadline.into(), stream.read_buf(buf)) => read,
        };
        match read {
            Ok(Ok(0)) if buf.is_empty() => return Opening::Closed("closed before a request".into()),
            Ok(Ok(0)) => break,
            Ok(Ok(_)) if first => deadline = by_login(Instant::now() + deadlines.handshake),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Opening::Closed(format!("read failed: {e}")),
            Err(_) => return Opening::Closed("nothing arrived in time".into()),
        }
    }
    if !is_tls(codec, buf) {
        return Opening::Plain(stream);
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
    let rewound = Rewind::new(buf.split(), stream);
    let handshake = tokio::select! {
        _ = shutdown.wait_for(|stop| *stop) => return Opening::Closed("server stopping".into()),
        done = timeout_at(deadline.into(), acceptor.accept(rewound)) => done,
    };
    match handshake {
        Ok(Ok(stream)) => Opening::Tls(Box::new(stream)),
        Ok(Err(e)) => Opening::Closed(format!("TLS handshake failed: {e}")),
        Err(_) => Opening::Closed("TLS handshake not finished in time".into()),
    }
}

/// A TLS record header where the codec would refuse the same four bytes as a
/// frame's length: never a frame this server could have read.
pub fn is_tls(codec: &Codec, first: &[u8]) -> bool {
    looks_like_tls_hello(first)
        && first.len() >= PREFIX_LEN
        && codec.parse_length(first[..PREFIX_LEN].try_into().expect("four bytes")).is_err()
}

/// True if `codec` refuses, as a frame's length, every four bytes a TLS
/// handshake record can start with: only then can one port serve both.
pub fn tells_hellos_apart(codec: &Codec) -> bool {
    (1..=4u8).all(|minor| (0..=u8::MAX).all(|high| codec.parse_length([0x16, 0x03, minor, high]).is_err()))
}

/// The stream under TLS: it first gives back the bytes already read from it,
/// then reads ahead. rustls asks for at most 4 KiB at a time, so a 16 KiB
/// record would cost four reads from the socket; this reads up to
/// [`READ_AHEAD`] at once and hands it out in rustls's portions.
struct Rewind {
    prefix: BytesMut,
    inner: Box<dyn Stream>,
    /// The last read ahead filled the buffer: the peer is streaming, so the
    /// buffer is kept for the next; otherwise it goes once drained. Either
    /// way it goes when a read finds nothing to read: a peer that idles does
    /// not keep one of ours.
    streaming: bool,
}

/// The most read from the socket at once under TLS: four full records.
const READ_AHEAD: usize = 64 * 1024;

impl Rewind {
    fn new(prefix: BytesMut, inner: Box<dyn Stream>) -> Rewind {
        Rewind { prefix, inner, streaming: false }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if this.prefix.is_empty() {
            if buf.remaining() >= READ_AHEAD {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            this.prefix.reserve(READ_AHEAD);
            let mut ahead = ReadBuf::uninit(&mut this.prefix.spare_capacity_mut()[..READ_AHEAD]);
            let start = ahead.filled().as_ptr();
            match Pin::new(&mut this.inner).poll_read(cx, &mut ahead) {
                // Nothing to read: a waiting connection (rustls always has a
                // read outstanding) keeps no buffer of ours.
                Poll::Pending => {
                    this.prefix = BytesMut::new();
                    return Poll::Pending;
                }
                Poll::Ready(result) => result?,
            }
            // The stream filled the buffer it was given, not one of its own.
            assert_eq!(start, ahead.filled().as_ptr());
            let (got, full) = (ahead.filled().len(), ahead.remaining() == 0);
            // SAFETY: `ahead`, over the spare capacity, reports `got` bytes of it filled.
            unsafe { this.prefix.set_len(got) };
            this.streaming = full;
        }
        let n = this.prefix.len().min(buf.remaining());
        buf.put_slice(&this.prefix[..n]);
        this.prefix.advance(n);
        if this.prefix.is_empty() && !this.streaming {
            this.prefix = BytesMut::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::PRE_AUTH_CODEC;

    #[test]
    fn a_hello_is_tls_and_a_frame_never_is() {
        let hello = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01];
        assert!(is_tls(&Codec::default(), &hello));
        assert!(is_tls(&PRE_AUTH_CODEC, &hello));
        assert!(!is_tls(&Codec::default(), &hello[..3]));
        // A frame whose header is 790 bytes starts 16 03 00: a frame.
        assert!(!is_tls(&Codec::default(), &790u32.to_le_bytes()));
        // One of 66,326 (16 03 01 00) would be over the default max_header.
        assert!(is_tls(&Codec::default(), &66_326u32.to_le_bytes()));
        // A codec whose limits take the hello's bytes as a length reads a frame.
        let huge = Codec { max_header: u64::MAX, max_body: u64::MAX, ..Codec::default() };
        assert!(!is_tls(&huge, &hello));
        // Such a codec cannot share its port with TLS; the usual ones can.
        assert!(!tells_hellos_apart(&huge));
        assert!(tells_hellos_apart(&Codec::default()) && tells_hellos_apart(&PRE_AUTH_CODEC));
        let length_only = Codec { json_header: false, ..Codec::default() };
        assert!(!tells_hellos_apart(&length_only));
        let big_endian = Codec { byteorder: crate::codec::ByteOrder::Big, ..length_only };
        assert!(tells_hellos_apart(&big_endian));
        assert!(!tells_hellos_apart(&Codec { max_header: 66_326, ..Codec::default() }));
        assert!(tells_hellos_apart(&Codec { max_header: 66_325, ..Codec::default() }));
        assert!(!is_tls(&Codec::default(), b"ls -l"));
    }

    #[tokio::test]
    async fn a_waiting_connection_keeps_no_read_ahead_buffer() {
        let (mut peer, ours) = tokio::io::duplex(1 << 20);
        let mut rewind = Rewind::new(BytesMut::new(), Box::new(ours));
        // a full read ahead first: the peer streams
        tokio::io::AsyncWriteExt::write_all(&mut peer, &vec![1u8; READ_AHEAD]).await.unwrap();
        let mut portion = [0u8; 4096];
        assert_eq!(rewind.read(&mut portion).await.unwrap(), 4096);
        assert!(rewind.streaming && rewind.prefix.capacity() >= READ_AHEAD - 4096);
        let mut rest = vec![0u8; READ_AHEAD - 4096];
        rewind.read_exact(&mut rest).await.unwrap();
        // then nothing comes: the read waits, and holds no buffer meanwhile
        let waited = tokio::time::timeout(Duration::from_millis(50), rewind.read(&mut portion)).await;
        assert!(waited.is_err(), "nothing was sent, so the read waits");
        assert_eq!(rewind.prefix.capacity(), 0);
        // and a read after it gets what comes next
        tokio::io::AsyncWriteExt::write_all(&mut peer, b"next").await.unwrap();
        assert_eq!(rewind.read(&mut portion).await.unwrap(), 4);
        assert_eq!(&portion[..4], b"next");
    }

    #[tokio::test]
    async fn rewind_gives_back_the_prefix_then_reads_ahead_in_order() {
        let (mut peer, ours) = tokio::io::duplex(1 << 20);
        let sent: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut rewind = Rewind::new(BytesMut::from(&b"head"[..]), Box::new(ours));
        let writer = tokio::spawn({
            let sent = sent.clone();
            async move {
                tokio::io::AsyncWriteExt::write_all(&mut peer, &sent).await.unwrap();
                // a short read next, then the end
                tokio::io::AsyncWriteExt::write_all(&mut peer, b"tail").await.unwrap();
            }
        });
        let mut got = Vec::new();
        let mut portion = [0u8; 4096]; // what rustls asks for
        loop {
            let n = rewind.read(&mut portion).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&portion[..n]);
            if got.len() == 4 + sent.len() + 4 {
                break;
            }
        }
        writer.await.unwrap();
        assert_eq!(&got[..4], b"head");
        assert_eq!(&got[4..4 + sent.len()], &sent[..]);
        assert_eq!(&got[4 + sent.len()..], b"tail");
        // the short read drained: no buffer kept while the peer idles
        assert_eq!(rewind.prefix.capacity(), 0);
        // a caller with a big buffer reads straight from the stream
        let mut big = vec![0u8; READ_AHEAD];
        assert_eq!(rewind.read(&mut []).await.unwrap(), 0); // and one with none gets nothing at once
        assert_eq!(rewind.read(&mut big).await.unwrap(), 0);
    }
}
