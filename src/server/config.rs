//! The checks a server's configuration passes before a socket is bound,
//! whoever starts the server (`rframe.Server`, a Rust program): the settings
//! that contradict each other or that no server can keep.

use super::ServerConfig;

/// More connections than this is a typo, not a plan (and the count must fit
/// the semaphore that keeps it).
pub const MAX_CONNECTIONS: usize = 1 << 24;

impl ServerConfig {
    /// Refuses a configuration no server can serve; `has_handler`: frames go
    /// to a handler, not to the command server. The message names the setting.
    pub fn check(&self, has_handler: bool) -> Result<(), String> {
        if self.token.as_ref().is_some_and(|t| t.is_empty()) {
            return Err("token must not be empty".into());
        }
        if self.max_connections == 0 || self.max_connections > MAX_CONNECTIONS {
            return Err(format!("max_connections must be from 1 to {MAX_CONNECTIONS}"));
        }
        if has_handler && self.root.is_some() {
            return Err(
                "root serves files from the command server; a handler server passes every frame to its handler".into(),
            );
        }
        self.max_startups.validate()?;
        if self.max_startups.full > MAX_CONNECTIONS {
            return Err(format!("max_startups: full must be at most {MAX_CONNECTIONS}"));
        }
        if self.max_startups_per_source == 0 || self.max_startups_per_source > MAX_CONNECTIONS {
            return Err(format!("max_startups_per_source must be from 1 to {MAX_CONNECTIONS}"));
        }
        if self.token.is_some() && !self.codec.json_header {
            return Err("token needs a JSON-header codec: the handshake travels in headers".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;
    use crate::server::MaxStartups;

    fn refused(config: ServerConfig, has_handler: bool) -> String {
        config.check(has_handler).expect_err("refused")
    }

    #[test]
    fn the_default_passes_with_and_without_a_handler() {
        assert_eq!(ServerConfig::default().check(false), Ok(()));
        assert_eq!(ServerConfig::default().check(true), Ok(()));
        let with_token = ServerConfig { token: Some(b"t".to_vec()), ..ServerConfig::default() };
        assert_eq!(with_token.check(false), Ok(()));
    }

    #[test]
    fn an_empty_token_is_refused() {
        let config = ServerConfig { token: Some(Vec::new()), ..ServerConfig::default() };
        assert_eq!(refused(config, false), "token must not be empty");
    }

    #[test]
    fn max_connections_is_from_one_to_the_limit() {
        for n in [0, MAX_CONNECTIONS + 1] {
            let config = ServerConfig { max_connections: n, ..ServerConfig::default() };
            assert!(refused(config, false).starts_with("max_connections must be from 1 to"));
        }
        let config = ServerConfig { max_connections: MAX_CONNECTIONS, ..ServerConfig::default() };
        assert_eq!(config.check(false), Ok(()));
    }

    #[test]
    fn a_handler_server_serves_no_files() {
        let config = ServerConfig { root: Some(".".into()), ..ServerConfig::default() };
        assert_eq!(config.check(false), Ok(()));
        assert!(refused(config, true).starts_with("root serves files from the command server"));
    }

    #[test]
    fn max_startups_is_valid_and_within_the_connection_limit() {
        let bad = MaxStartups { start: 0, rate: 100, full: 1 };
        let config = ServerConfig { max_startups: bad, ..ServerConfig::default() };
        assert!(refused(config, false).starts_with("max_startups (start, rate, full) needs"));
        let huge = MaxStartups { start: 1, rate: 100, full: MAX_CONNECTIONS + 1 };
        let config = ServerConfig { max_startups: huge, ..ServerConfig::default() };
        assert!(refused(config, false).starts_with("max_startups: full must be at most"));
    }

    #[test]
    fn max_startups_per_source_is_from_one_to_the_limit() {
        for n in [0, MAX_CONNECTIONS + 1] {
            let config = ServerConfig { max_startups_per_source: n, ..ServerConfig::default() };
            assert!(refused(config, false).starts_with("max_startups_per_source must be from 1 to"));
        }
    }

    #[test]
    fn a_token_needs_a_json_header_codec() {
        let codec = Codec { json_header: false, ..Codec::default() };
        let config = ServerConfig { codec, ..ServerConfig::default() };
        assert_eq!(config.clone().check(false), Ok(()));
        let config = ServerConfig { token: Some(b"t".to_vec()), ..config };
        assert_eq!(refused(config, false), "token needs a JSON-header codec: the handshake travels in headers");
    }
}
