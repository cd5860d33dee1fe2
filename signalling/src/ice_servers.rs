//! The ICE servers (STUN, TURN) signalling hands each client with its transports, so that a
//! browser behind a firewall that blocks UDP, or allows only TLS on 443, can still reach the
//! media worker through a TURN relay.
//!
//! Two sources, both optional: a static list from the configuration (passed on as it is), and
//! short-lived TURN credentials by the TURN REST API scheme (draft-uberti-behave-turn-rest,
//! coturn's `use-auth-secret` / `static-auth-secret`): the username is `<expiry unix
//! time>:<peer id>`, the password base64(HMAC-SHA1(shared secret, username)). The TURN server
//! checks both with the same secret, and no per-user state is kept anywhere.
//!
//! Pure: the caller passes the clock.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};

/// One entry of `RTCConfiguration.iceServers`, as mediasoup-client's `createSendTransport` and
/// `createRecvTransport` take it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IceServer {
    /// `stun:`, `turn:` or `turns:` URLs of one server.
    #[serde(deserialize_with = "one_or_many")]
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// `urls` may be one string or a list, as in `RTCIceServer`.
fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Urls {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Urls::deserialize(deserializer)? {
        Urls::One(url) => vec![url],
        Urls::Many(urls) => urls,
    })
}

/// `RTCConfiguration.iceTransportPolicy`: `relay` makes browsers use TURN relays only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IceTransportPolicy {
    All,
    Relay,
}

/// TURN servers that take TURN REST API credentials made with a secret they share with us.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnRest {
    /// `turn:`/`turns:` URLs of the TURN service (e.g. `turns:turn.example.com:443?transport=tcp`).
    pub urls: Vec<String>,
    /// The shared secret (coturn's `static-auth-secret`).
    pub secret: String,
    /// How long a credential stays valid. Browsers refresh their TURN allocations with the
    /// same credential, so a relayed call outliving it loses its relay: keep it longer than
    /// calls last (the draft recommends a day).
    pub ttl_seconds: u64,
}

impl std::fmt::Debug for TurnRest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnRest")
            .field("urls", &self.urls)
            .field("secret", &"<hidden>")
            .field("ttl_seconds", &self.ttl_seconds)
            .finish()
    }
}

/// What every transport answer carries: `iceServers` and, when configured, `iceTransportPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IceConfig {
    /// Passed on unchanged (STUN servers, TURN servers with long-term credentials).
    pub static_servers: Vec<IceServer>,
    /// TURN servers whose credentials are made per participant.
    pub turn: Option<TurnRest>,
    pub policy: Option<IceTransportPolicy>,
}

/// Why an ICE configuration cannot work; said at start-up, not to each client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IceConfigError {
    #[error("ICE server URL {0:?} is not a stun:, turn: or turns: URL")]
    BadUrl(String),
    #[error("an ICE server entry has no URL")]
    NoUrl,
    #[error("the TURN REST API secret is set but there are no TURN URLs: set --turn-urls (FANOUT_TURN_URLS)")]
    SecretWithoutUrls,
    #[error("TURN URLs are set without a shared secret: set --turn-secret (FANOUT_TURN_SECRET), or list servers with long-term credentials in --ice-servers")]
    UrlsWithoutSecret,
    #[error("the TURN credential lifetime must be at least 60 seconds")]
    TtlTooShort,
    #[error("iceTransportPolicy relay needs a TURN server (--turn-urls, or a turn: URL in --ice-servers): without one no browser could connect")]
    RelayWithoutTurn,
}

impl IceConfig {
    /// Checks that the configuration can work: URLs of known schemes, a secret with TURN
    /// URLs, a TURN server when only relays may be used.
    pub fn validate(&self) -> Result<(), IceConfigError> {
        let turn_urls = self.turn.iter().flat_map(|t| &t.urls);
        let all_urls = self.static_servers.iter().flat_map(|s| &s.urls).chain(turn_urls);
        for url in all_urls {
            if !["stun:", "stuns:", "turn:", "turns:"].iter().any(|scheme| url.starts_with(scheme)) {
                return Err(IceConfigError::BadUrl(url.clone()));
            }
        }
        if self.static_servers.iter().any(|s| s.urls.is_empty()) {
            return Err(IceConfigError::NoUrl);
        }
        if let Some(turn) = &self.turn {
            match (turn.urls.is_empty(), turn.secret.is_empty()) {
                (true, false) => return Err(IceConfigError::SecretWithoutUrls),
                (false, true) => return Err(IceConfigError::UrlsWithoutSecret),
                _ => {}
            }
            if turn.ttl_seconds < 60 {
                return Err(IceConfigError::TtlTooShort);
            }
        }
        let is_turn = |url: &String| url.starts_with("turn:") || url.starts_with("turns:");
        let has_turn = self.turn.as_ref().is_some_and(|t| !t.urls.is_empty())
            || self.static_servers.iter().flat_map(|s| &s.urls).any(is_turn);
        if self.policy == Some(IceTransportPolicy::Relay) && !has_turn {
            return Err(IceConfigError::RelayWithoutTurn);
        }
        Ok(())
    }

    /// The `iceServers` for `peer` at `now_unix` (seconds): the static list, then the TURN
    /// servers with a credential valid for the configured lifetime.
    pub fn servers_for(&self, peer: &str, now_unix: u64) -> Vec<IceServer> {
        let mut servers = self.static_servers.clone();
        if let Some(turn) = self.turn.as_ref().filter(|t| !t.urls.is_empty()) {
            let username = format!("{}:{peer}", now_unix.saturating_add(turn.ttl_seconds));
            servers.push(IceServer {
                urls: turn.urls.clone(),
                credential: Some(turn_credential(turn.secret.as_bytes(), &username)),
                username: Some(username),
            });
        }
        servers
    }
}

/// The TURN REST API password of `username`: base64(HMAC-SHA1(secret, username)), what
/// coturn computes with `use-auth-secret`.
pub fn turn_credential(secret: &[u8], username: &str) -> String {
    // HMAC takes keys of any length: new_from_slice cannot fail.
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(urls: &[&str], secret: &str) -> TurnRest {
        TurnRest {
            urls: urls.iter().map(|u| u.to_string()).collect(),
            secret: secret.to_owned(),
            ttl_seconds: 86_400,
        }
    }

    #[test]
    fn the_credential_is_base64_of_hmac_sha1_of_the_username() {
        // Computed independently: printf '%s' 1433895918:alice | openssl dgst -sha1 -hmac north -binary | base64
        assert_eq!(turn_credential(b"north", "1433895918:alice"), "RqMvcGPYTJMGThVLSi4amT4zFtI=");
        assert_ne!(turn_credential(b"south", "1433895918:alice"), "RqMvcGPYTJMGThVLSi4amT4zFtI=");
    }

    #[test]
    fn a_peer_gets_the_static_servers_then_turn_with_an_expiring_username() {
        let config = IceConfig {
            static_servers: vec![IceServer { urls: vec!["stun:stun.example.com:3478".into()], username: None, credential: None }],
            turn: Some(turn(&["turn:turn.example.com:3478?transport=tcp"], "north")),
            policy: None,
        };
        let servers = config.servers_for("sid-1", 1_433_809_518);
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0], config.static_servers[0]);
        assert_eq!(servers[1].urls, ["turn:turn.example.com:3478?transport=tcp"]);
        let username = servers[1].username.as_deref().unwrap();
        assert_eq!(username, "1433895918:sid-1");
        assert_eq!(servers[1].credential.as_deref(), Some(turn_credential(b"north", username).as_str()));
        // No configuration, no servers.
        assert!(IceConfig::default().servers_for("sid-1", 0).is_empty());
    }

    #[test]
    fn servers_serialise_as_rtc_ice_servers_and_read_from_one_url_or_many() {
        let one: IceServer = serde_json::from_value(serde_json::json!({"urls": "stun:a"})).unwrap();
        assert_eq!(one.urls, ["stun:a"]);
        assert_eq!(serde_json::to_value(&one).unwrap(), serde_json::json!({"urls": ["stun:a"]}));
        let many: Vec<IceServer> =
            serde_json::from_str(r#"[{"urls": ["turn:b", "turns:c"], "username": "u", "credential": "p"}]"#).unwrap();
        assert_eq!(many[0].credential.as_deref(), Some("p"));
        assert!(serde_json::from_str::<IceServer>(r#"{"urls": "stun:a", "password": "p"}"#).is_err());
    }

    #[test]
    fn configurations_that_cannot_work_are_refused() {
        let with = |static_urls: &[&str], turn_rest: Option<TurnRest>, policy| IceConfig {
            static_servers: static_urls
                .iter()
                .map(|u| IceServer { urls: vec![u.to_string()], username: None, credential: None })
                .collect(),
            turn: turn_rest,
            policy,
        };
        assert_eq!(with(&["http://x"], None, None).validate(), Err(IceConfigError::BadUrl("http://x".into())));
        assert_eq!(with(&[], Some(turn(&[], "s")), None).validate(), Err(IceConfigError::SecretWithoutUrls));
        assert_eq!(with(&[], Some(turn(&["turn:t"], "")), None).validate(), Err(IceConfigError::UrlsWithoutSecret));
        let relay = Some(IceTransportPolicy::Relay);
        assert_eq!(with(&["stun:s"], None, relay).validate(), Err(IceConfigError::RelayWithoutTurn));
        assert_eq!(with(&["turns:t:443"], None, relay).validate(), Ok(()));
        assert_eq!(with(&[], Some(turn(&["turn:t"], "s")), relay).validate(), Ok(()));
        let mut short = turn(&["turn:t"], "s");
        short.ttl_seconds = 5;
        assert_eq!(with(&[], Some(short), None).validate(), Err(IceConfigError::TtlTooShort));
        assert_eq!(IceConfig::default().validate(), Ok(()));
    }

    #[test]
    fn the_secret_stays_out_of_debug_output() {
        assert!(!format!("{:?}", turn(&["turn:t"], "very-secret")).contains("very-secret"));
    }
}
