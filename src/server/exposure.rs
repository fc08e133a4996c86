//! Who may reach a server, and what that requires of it: the rule that keeps
//! a server safe by default, in one place, for every way of starting one.

/// The fewest bytes a token may have on a server reachable from the network.
/// A recorded handshake lets its observer test guesses offline; 32 random
/// characters (`--new-token`) are far beyond that.
pub const MIN_NETWORK_TOKEN: usize = 32;

pub use crate::protocol::config::TlsMode;

/// What a server bound to some address does, once allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposure {
    pub tls: bool,
    /// What the operator must hear (an insecure choice), loudly.
    pub warnings: Vec<String>,
}

/// Decides whether a server may serve `address` (`local`: only this machine
/// can reach it) with this token and TLS choice, and whether it uses TLS.
/// Off loopback it needs a token of [`MIN_NETWORK_TOKEN`] bytes or more, and
/// TLS; `insecure` allows no token and plaintext there, with warnings.
pub fn check(
    address: &str,
    local: bool,
    token: Option<&[u8]>,
    tls: TlsMode,
    insecure: bool,
) -> Result<Exposure, String> {
    if local {
        return Ok(Exposure { tls: tls == TlsMode::On, warnings: Vec::new() });
    }
    let mut warnings = Vec::new();
    match token {
        None if !insecure => {
            return Err(format!(
                "refusing to serve on {address} without a token: anyone who can reach it could run commands. \
                 Set a token (token=..., --token-file or RFRAME_TOKEN; python -m rframe.server --new-token FILE \
                 makes one), bind to 127.0.0.1 or a Unix socket, or pass insecure=True (--insecure) if you really \
                 mean it"
            ))
        }
        None => warnings
            .push(format!("serving on {address} without a token (insecure): anyone who can reach it can run commands")),
        Some(t) if t.len() < MIN_NETWORK_TOKEN => {
            return Err(format!(
                "refusing to serve on {address} with a token of {} bytes: a server reachable from the network \
                 needs one of {MIN_NETWORK_TOKEN} or more (python -m rframe.server --new-token FILE writes a \
                 random one; rframe.new_token() returns one)",
                t.len()
            ))
        }
        Some(_) => {}
    }
    let tls = match tls {
        TlsMode::On => true,
        TlsMode::Auto => !insecure,
        TlsMode::Off if insecure => false,
        TlsMode::Off => {
            return Err(format!(
                "refusing to serve on {address} without TLS: anyone on the path could read the output and inject \
                 commands. Leave TLS on, or pass insecure=True (--insecure) if you really mean it"
            ))
        }
    };
    if !tls {
        warnings.push(format!(
            "serving on {address} without TLS (insecure): anyone on the path can read the output and inject commands"
        ));
    }
    Ok(Exposure { tls, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn loopback_needs_nothing_and_uses_tls_only_when_asked() {
        for token in [None, Some(&b"t"[..])] {
            assert_eq!(check("a", true, token, TlsMode::Auto, false), Ok(Exposure { tls: false, warnings: vec![] }));
            assert!(check("a", true, token, TlsMode::On, false).unwrap().tls);
            assert!(!check("a", true, token, TlsMode::Off, false).unwrap().tls);
        }
    }

    #[test]
    fn the_network_needs_a_long_token_and_tls() {
        assert!(check("a", false, None, TlsMode::Auto, false).unwrap_err().contains("without a token"));
        let short = check("a", false, Some(b"s3cret"), TlsMode::Auto, false).unwrap_err();
        assert!(short.contains("6 bytes") && short.contains("--new-token"), "{short}");
        // insecure lifts neither the length rule (a short token is guessed offline)...
        assert!(check("a", false, Some(b"s3cret"), TlsMode::Auto, true).is_err());
        assert!(check("a", false, Some(&GOOD[1..]), TlsMode::Auto, false).is_err());
        // ...nor is TLS off without it.
        assert!(check("a", false, Some(GOOD), TlsMode::Off, false).unwrap_err().contains("without TLS"));
        assert_eq!(check("a", false, Some(GOOD), TlsMode::Auto, false), Ok(Exposure { tls: true, warnings: vec![] }));
        assert!(check("a", false, Some(GOOD), TlsMode::On, false).unwrap().tls);
    }

    #[test]
    fn insecure_is_plaintext_and_loud() {
        let e = check("0.0.0.0:1", false, None, TlsMode::Auto, true).unwrap();
        assert!(!e.tls);
        assert_eq!(e.warnings.len(), 2, "{:?}", e.warnings);
        let e = check("0.0.0.0:1", false, Some(GOOD), TlsMode::Off, true).unwrap();
        assert!(!e.tls && e.warnings[0].contains("without TLS"));
        // Asked for, TLS stays on even when insecure.
        let e = check("0.0.0.0:1", false, None, TlsMode::On, true).unwrap();
        assert!(e.tls && e.warnings.len() == 1);
    }
}
