//! The server's request parsing: what a connection does with the bytes it
//! reads, up to the point where a command would run, and nothing past it.
//!
//! The connection is modelled as `server::connection` runs it: at the start of
//! a request, bytes that look like a raw command line are one (each piece is a
//! burst followed by a pause); otherwise the server's codec decodes frames,
//! `protocol::parse_request` reads each header, `op: auth` goes through the
//! challenge and `auth::verify`, and `op: run` through `command_spec`, the
//! validation that makes a command spec. No command is run, ever.
//!
//! Flags (byte 0): bit 0 token (the fuzz server's is `fuzz-token` and its
//! challenge nonce is fixed, so a seed can carry a valid proof), bit 1
//! length-only, bit 2 big endian, bit 3 md5 checksum, bit 4 allow list
//! (`echo`, `ls`), bit 5 no shell, bit 6 a server cwd.
//! Limits (byte 1): bits 0-1 max_header 64 KiB / 4 KiB / 512 / 64;
//! bits 2-3 max_body 16 MiB / 1 KiB / 16 / 0.
//!
//! Checks: nothing panics; an accepted command obeys the configuration (with
//! an allow list: an allowed program, no env, no cwd from the request; no
//! shell unless allowed; a positive timeout within the server's; stdin only
//! when asked for); a refusal is an error reply whose header is a small JSON
//! object the server can send; `auth::verify` accepts exactly the right proof
//! (any hex case), for the client role only.
#![no_main]

use std::path::PathBuf;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;

use _rframe::codec::{ByteOrder, Checksum, Codec, Decoder, Frame};
use _rframe::exec::{CommandSpec, Program};
use _rframe::protocol::{self, auth, ErrorCode, RequestHeader};
use _rframe::server::{command_spec, looks_raw, raw_request, Reply, ServerConfig, PRE_AUTH_CODEC};
use rframe_fuzz::Input;

const TOKEN: &[u8] = b"fuzz-token";
/// The challenge the fuzz server hands out (a real one is random).
const SERVER_NONCE: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
/// No error reply needs more: a refusal must not echo unbounded request bytes.
const MAX_ERROR_HEADER: usize = 4096;

fn config_from(flags: u8, limits: u8) -> ServerConfig {
    let json_header = flags & 2 == 0;
    let codec = Codec {
        json_header,
        byteorder: if flags & 4 == 0 { ByteOrder::Little } else { ByteOrder::Big },
        max_header: [64 << 10, 4096, 512, 64][limits as usize & 3],
        max_body: [16 << 20, 1024, 16, 0][(limits as usize >> 2) & 3],
        checksum: (json_header && flags & 8 != 0).then_some(Checksum::Md5),
    };
    codec.validate().expect("the fuzz configurations are valid codecs");
    ServerConfig {
        codec,
        token: (flags & 1 != 0).then(|| TOKEN.to_vec()),
        allow: (flags & 16 != 0).then(|| vec!["echo".into(), "ls".into()]),
        shell: flags & 32 == 0,
        cwd: (flags & 64 != 0).then(|| PathBuf::from("/srv")),
        ..ServerConfig::default()
    }
}

/// A connection's state, as far as parsing goes.
struct Conn {
    config: ServerConfig,
    buf: BytesMut,
    decoder: Decoder,
    authenticated: bool,
    server_nonce: Option<String>,
    /// The connection is over (closed by the server): later bytes are ignored.
    closed: bool,
}

impl Conn {
    fn new(config: ServerConfig) -> Conn {
        let needs_auth = config.token.is_some();
        let codec =
            if needs_auth { Codec { byteorder: config.codec.byteorder, ..PRE_AUTH_CODEC } } else { config.codec };
        Conn {
            config,
            buf: BytesMut::new(),
            decoder: Decoder::new(codec),
            authenticated: !needs_auth,
            server_nonce: None,
            closed: false,
        }
    }

    /// Handles one burst of bytes, followed by a pause.
    fn burst(&mut self, piece: &[u8]) {
        self.buf.extend_from_slice(piece);
        while !self.closed {
            if self.decoder.consumed() == 0 && !self.buf.is_empty() && looks_raw(self.decoder.codec(), &self.buf) {
                // The pause ends the line: the server takes the whole burst.
                let line = self.buf.split().to_vec();
                if !self.authenticated {
                    self.closed = true;
                    return;
                }
                match raw_request(line) {
                    Ok(request) => self.run(request, Bytes::new()),
                    Err(reply) => self.refused(&reply),
                }
                continue;
            }
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(frame)) => self.dispatch(frame),
                Ok(None) => return,
                // A framing error ends the connection.
                Err(_) => self.closed = true,
            }
        }
    }

    fn dispatch(&mut self, frame: Frame) {
        let request = match &frame.header {
            Some(header) => match protocol::parse_request(header) {
                Ok(request) => Some(request),
                Err(e) if self.authenticated => return self.refused(&Reply::error(ErrorCode::BadRequest, &e)),
                Err(_) => {
                    self.closed = true;
                    return;
                }
            },
            None => None,
        };
        if let Some(request) = &request {
            check_verify(request);
        }
        if request.as_ref().and_then(|r| r.op.as_deref()) == Some("auth") {
            return self.authenticate(request.expect("checked above"));
        }
        if !self.authenticated {
            self.closed = true;
            return;
        }
        let request = request.unwrap_or_default();
        if request.op.as_deref() == Some("run") {
            self.run(request, frame.body);
        }
    }

    fn authenticate(&mut self, request: RequestHeader) {
        let Some(token) = self.config.token.clone() else { return };
        let Some(proof) = request.proof else {
            self.server_nonce = Some(SERVER_NONCE.into());
            return;
        };
        let (Some(sn), Some(cn)) = (self.server_nonce.take(), request.client_nonce) else {
            self.closed = true;
            return;
        };
        let verified = auth::verify(&token, auth::Role::Client, &sn, &cn, None, &proof);
        assert_eq!(verified, proof.eq_ignore_ascii_case(&auth::proof(&token, auth::Role::Client, &sn, &cn, None)));
        if request.nonce.as_deref() != Some(sn.as_str()) || !verified {
            self.closed = true;
            return;
        }
        self.authenticated = true;
        self.decoder = Decoder::new(self.config.codec);
    }

    /// Where the server would run a command: only the validation runs here.
    fn run(&mut self, request: RequestHeader, body: Bytes) {
        match command_spec(&self.config, request.clone(), body.clone(), Some(self.config.timeout)) {
            Ok(spec) => check_spec(&self.config, &request, &body, &spec),
            Err(reply) => self.refused(&reply),
        }
    }

    fn refused(&self, reply: &Reply) {
        assert!(reply.error.is_some() && reply.body.is_empty());
        let header = reply.header.as_deref().expect("an error reply has a header");
        let value: serde_json::Value = serde_json::from_slice(header).expect("an error header is JSON");
        assert_eq!(value["op"], "error");
        assert_eq!(value["total_size"], 0);
        assert!(header.len() <= MAX_ERROR_HEADER, "an error header of {} bytes", header.len());
        if self.config.codec.json_header && self.config.codec.max_header >= MAX_ERROR_HEADER as u64 {
            // As `Conn::send` frames it.
            let codec = Codec { max_body: u64::MAX, ..self.config.codec };
            codec.encode_head(Some(header), 0).expect("the server can send its error reply");
        }
    }
}

/// An accepted command obeys the server's configuration.
fn check_spec(config: &ServerConfig, request: &RequestHeader, body: &Bytes, spec: &CommandSpec) {
    let use_shell = config.shell && config.allow.is_none();
    match &spec.program {
        Program::Shell(line) => assert!(use_shell && !line.trim().is_empty()),
        Program::Argv(argv) => {
            let first = argv.first().expect("an argv is never empty");
            if let Some(allow) = &config.allow {
                assert!(allow.contains(first), "{first:?} ran past the allow list");
                assert!(spec.env.is_empty() && spec.cwd == config.cwd, "env or cwd set past the allow list");
            }
        }
    }
    assert!(spec.timeout > Duration::ZERO && spec.timeout <= config.timeout);
    assert_eq!(spec.input.is_some(), request.input);
    if !request.input {
        assert!(body.is_empty());
    }
    assert_eq!(spec.max_output, config.max_output);
    let env: Vec<(String, String)> = request.env.clone().unwrap_or_default().into_iter().collect();
    assert_eq!(spec.env, env);
    assert_eq!(spec.cwd, request.cwd.as_ref().map(PathBuf::from).or_else(|| config.cwd.clone()));
}

/// `auth::verify` on whatever the request carries: exactly the right proof
/// passes, and a client's proof never passes as the server's.
fn check_verify(request: &RequestHeader) {
    let sn = request.nonce.as_deref().unwrap_or_default();
    let cn = request.client_nonce.as_deref().unwrap_or_default();
    let proof = request.proof.as_deref().unwrap_or_default();
    for role in [auth::Role::Client, auth::Role::Server] {
        let right = auth::proof(TOKEN, role, sn, cn, None);
        assert_eq!(auth::verify(TOKEN, role, sn, cn, None, proof), proof.eq_ignore_ascii_case(&right));
        assert!(auth::verify(TOKEN, role, sn, cn, None, &right.to_ascii_uppercase()));
    }
    let client = auth::proof(TOKEN, auth::Role::Client, sn, cn, None);
    assert!(!auth::verify(TOKEN, auth::Role::Server, sn, cn, None, &client));
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else { return };
    let mut conn = Conn::new(config_from(input.flags, input.limits));
    for piece in input.pieces() {
        conn.burst(piece);
    }
});
