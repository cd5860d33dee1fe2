//! Who a connection is: JWT verification, pure (no sockets, no clocks beyond the token's own
//! `exp` check, which [`jsonwebtoken`] does against the system clock).
//!
//! The application's backend issues the tokens; signalling only verifies them, with a shared
//! secret (HS256) or the backend's public key (RS256 or ES256). Everything a participant is
//! (user id, name, role, the rooms it may join) comes from the verified claims and is never
//! taken from an event payload.

use std::collections::HashSet;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::error::{Result, SignallingError};

/// How tokens are signed.
#[derive(Clone)]
pub enum JwtKey {
    /// HS256 with a secret shared with the application's backend.
    Hs256 { secret: Vec<u8> },
    /// RS256 with the backend's RSA public key (PEM, `BEGIN PUBLIC KEY` or `BEGIN RSA PUBLIC KEY`).
    Rs256 { public_key_pem: Vec<u8> },
    /// ES256 with the backend's P-256 public key (PEM).
    Es256 { public_key_pem: Vec<u8> },
}

impl std::fmt::Debug for JwtKey {
    // The secret must never reach a log line through a Debug of the config.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwtKey::Hs256 { .. } => f.write_str("Hs256 { secret: <redacted> }"),
            JwtKey::Rs256 { .. } => f.write_str("Rs256 { public_key_pem }"),
            JwtKey::Es256 { .. } => f.write_str("Es256 { public_key_pem }"),
        }
    }
}

/// What to accept.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// The verification key and with it the one accepted algorithm.
    pub key: JwtKey,
    /// When set, the token's `aud` must contain it; when unset, `aud` is not checked.
    pub audience: Option<String>,
    /// When set, the token's `iss` must equal it.
    pub issuer: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_seconds: u64,
}

impl JwtConfig {
    /// HS256 with this secret, no audience or issuer check, 30 s leeway.
    pub fn hs256(secret: impl Into<Vec<u8>>) -> Self {
        JwtConfig {
            key: JwtKey::Hs256 {
                secret: secret.into(),
            },
            audience: None,
            issuer: None,
            leeway_seconds: 30,
        }
    }
}

/// A verified participant, as the token describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `sub`: the application's user id.
    pub user_id: String,
    /// `email`, empty when absent.
    pub email: String,
    /// `name`: the name shown to other participants, empty when absent.
    pub name: String,
    /// `role` (e.g. `teacher`, `student`), empty when absent; decides who may publish.
    pub role: String,
    /// `rooms`: the rooms this token may join; `None` means any room.
    pub rooms: Option<Vec<String>>,
    /// `exp`, seconds since the Unix epoch: the session ends then.
    pub expires_at: u64,
}

/// The longest session signalling keeps, whatever the token's `exp` says. A token valid for
/// centuries (or `exp` = 10^19) ends its session after this; reconnecting with it starts a new
/// one. Never reached in practice, and small enough that adding it to a clock cannot overflow.
pub const LONGEST_SESSION: Duration = Duration::from_secs(365 * 24 * 3600);

impl Identity {
    /// How long the session may last from `now` (seconds since the Unix epoch): until the
    /// token's `exp` plus `leeway_seconds`, the tolerance the verifier accepted it with, so the
    /// session ends exactly when the token would be refused; never longer than
    /// [`LONGEST_SESSION`]. `exp` is the token issuer's number, anything up to `u64::MAX`,
    /// so the arithmetic saturates.
    pub fn session_length(&self, leeway_seconds: u64, now: u64) -> Duration {
        let ends = self.expires_at.saturating_add(leeway_seconds);
        Duration::from_secs(ends.saturating_sub(now)).min(LONGEST_SESSION)
    }

    /// Whether the token's allow-list lets it join `room`. `"*"` in the list allows any room.
    pub fn may_join(&self, room: &str) -> Result<()> {
        match &self.rooms {
            None => Ok(()),
            Some(rooms) if rooms.iter().any(|r| r == room || r == "*") => Ok(()),
            Some(_) => Err(SignallingError::RoomNotAllowed(room.to_owned())),
        }
    }
}

/// The claims are read one by one from the verified claims object rather than through a
/// struct, so that a claim that is missing or of the wrong type is reported by name
/// (`TOKEN_INVALID`: "the exp claim is missing") instead of as JSON that does not fit a struct
/// (`TOKEN_MALFORMED`).
type Claims = serde_json::Map<String, serde_json::Value>;

/// A string claim: absent is empty, another type is refused by name.
fn string_claim(claims: &Claims, name: &str) -> Result<String> {
    match claims.get(name) {
        None | Some(serde_json::Value::Null) => Ok(String::new()),
        Some(serde_json::Value::String(value)) => Ok(value.clone()),
        Some(_) => Err(SignallingError::TokenInvalid(format!(
            "the {name} claim must be a string"
        ))),
    }
}

/// `rooms`: absent means any room; otherwise a list of room ids.
fn rooms_claim(claims: &Claims) -> Result<Option<Vec<String>>> {
    let refused = || {
        SignallingError::TokenInvalid(
            "the rooms claim must be a list of room ids (strings), or \"*\" in a list for any room"
                .to_owned(),
        )
    };
    match claims.get("rooms") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Array(rooms)) => rooms
            .iter()
            .map(|room| room.as_str().map(str::to_owned).ok_or_else(refused))
            .collect::<Result<Vec<_>>>()
            .map(Some),
        Some(_) => Err(refused()),
    }
}

/// Checks tokens against one key. Cheap to share: build once, verify per connection.
#[derive(Clone)]
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// A verifier for this configuration; fails when the public key is not a readable PEM key
    /// of the configured kind (a configuration error, reported at startup).
    pub fn new(config: &JwtConfig) -> std::result::Result<Self, String> {
        // Pick the pure-Rust provider explicitly: should any other crate in the build turn on
        // jsonwebtoken's aws_lc_rs feature too, automatic selection would panic on first use.
        let _ = jsonwebtoken::crypto::CryptoProvider::install_default(
            &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER,
        );
        let (key, algorithm) = match &config.key {
            JwtKey::Hs256 { secret } => {
                if secret.is_empty() {
                    return Err("the JWT secret is empty".to_owned());
                }
                (DecodingKey::from_secret(secret), Algorithm::HS256)
            }
            JwtKey::Rs256 { public_key_pem } => (
                DecodingKey::from_rsa_pem(public_key_pem)
                    .map_err(|e| format!("the RS256 public key is not a PEM RSA key: {e}"))?,
                Algorithm::RS256,
            ),
            JwtKey::Es256 { public_key_pem } => (
                DecodingKey::from_ec_pem(public_key_pem)
                    .map_err(|e| format!("the ES256 public key is not a PEM EC key: {e}"))?,
                Algorithm::ES256,
            ),
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = config.leeway_seconds;
        validation.validate_exp = true;
        // jsonwebtoken leaves `nbf` unchecked unless asked.
        validation.validate_nbf = true;
        // Presence is checked in `verify`, which can then tell a missing claim from one of the
        // wrong type (jsonwebtoken reports both as missing). A present `exp` or `nbf` of the
        // wrong type is still refused by jsonwebtoken's own check.
        validation.required_spec_claims = HashSet::new();
        // jsonwebtoken compares `aud` and `iss` only when the token has them, so a configured
        // audience or issuer is also a required claim: a token made for no one in particular
        // is not one made for us.
        match &config.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.required_spec_claims.insert("aud".to_owned());
            }
            // Application backends often stamp an `aud` of their own; without a configured
            // audience there is nothing to compare it with, so it is not a reason to refuse.
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &config.issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".to_owned());
        }
        Ok(JwtVerifier { key, validation })
    }

    /// Verifies a token and returns who it names, or the reason it is refused.
    pub fn verify(&self, token: &str) -> Result<Identity> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| refusal(e.into_kind()))?;
        let claims = data.claims;
        // jsonwebtoken has checked `exp` against the clock when present (and refused it when not
        // a whole number); a token that never expires is not accepted.
        let expires_at = match claims.get("exp") {
            Some(exp) => exp.as_u64().ok_or_else(|| {
                SignallingError::TokenInvalid(
                    "the exp claim must be a whole number of seconds since 1970-01-01 UTC".to_owned(),
                )
            })?,
            None => {
                return Err(SignallingError::TokenInvalid(
                    "the exp claim (when the token expires, in seconds since 1970-01-01 UTC) is \
                     missing: tokens must expire"
                        .to_owned(),
                ));
            }
        };
        let user_id = string_claim(&claims, "sub")?;
        if user_id.is_empty() {
            return Err(SignallingError::TokenInvalid(
                "the sub claim (user id) is missing or empty".to_owned(),
            ));
        }
        Ok(Identity {
            user_id,
            email: string_claim(&claims, "email")?,
            name: string_claim(&claims, "name")?,
            role: string_claim(&claims, "role")?,
            rooms: rooms_claim(&claims)?,
            expires_at,
        })
    }

    /// The clock skew tolerated on `exp`, in seconds.
    pub fn leeway_seconds(&self) -> u64 {
        self.validation.leeway
    }

    /// The one algorithm this verifier accepts.
    pub fn algorithm(&self) -> Algorithm {
        self.validation.algorithms[0]
    }
}

/// Maps a jsonwebtoken failure onto the stable refusal codes.
fn refusal(kind: ErrorKind) -> SignallingError {
    match kind {
        ErrorKind::ExpiredSignature => SignallingError::TokenExpired,
        ErrorKind::InvalidSignature => SignallingError::TokenInvalidSignature,
        ErrorKind::InvalidToken => {
            SignallingError::TokenMalformed("it does not have three dot-separated parts".to_owned())
        }
        ErrorKind::Base64(e) => SignallingError::TokenMalformed(format!("bad base64url: {e}")),
        ErrorKind::Json(e) => SignallingError::TokenMalformed(format!(
            "the header or claims are not a JSON object: {e}"
        )),
        ErrorKind::Utf8(_) => SignallingError::TokenMalformed("invalid UTF-8".to_owned()),
        ErrorKind::InvalidAlgorithm => SignallingError::TokenInvalid(
            "it is signed with another algorithm than this server accepts".to_owned(),
        ),
        ErrorKind::MissingRequiredClaim(claim) => {
            SignallingError::TokenInvalid(format!("the {claim} claim is missing"))
        }
        ErrorKind::InvalidClaimFormat(claim) => SignallingError::TokenInvalid(format!(
            "the {claim} claim must be a whole number of seconds since 1970-01-01 UTC"
        )),
        ErrorKind::ImmatureSignature => SignallingError::TokenNotYetValid,
        ErrorKind::InvalidAudience => {
            SignallingError::TokenInvalid("it is meant for another audience (aud)".to_owned())
        }
        ErrorKind::InvalidIssuer => {
            SignallingError::TokenInvalid("it comes from another issuer (iss)".to_owned())
        }
        other => SignallingError::TokenInvalid(format!("{other:?}")),
    }
}

/// Finds the token of a connection: the Socket.IO `auth` payload's `token` first (what
/// `io(url, {auth: {token}})` sends), then an `Authorization: Bearer` header, then a `token`
/// query parameter. A `Bearer ` prefix is accepted everywhere, since apps often keep the
/// header value around.
pub fn find_token(
    auth: Option<&serde_json::Value>,
    headers: &http::HeaderMap,
    query: Option<&str>,
) -> Result<String> {
    let from_auth = auth
        .and_then(|auth| auth.get("token"))
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned);
    let from_header = || {
        headers
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let from_query = || query.and_then(|q| query_param(q, "token"));
    [from_auth, from_header(), from_query()]
        .into_iter()
        .flatten()
        .map(|token| strip_bearer(token.trim()).to_owned())
        .find(|token| !token.is_empty())
        .ok_or(SignallingError::TokenMissing)
}

fn strip_bearer(value: &str) -> &str {
    match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        _ => value,
    }
}

/// The percent-decoded value of `name` in a query string.
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| percent_decode(value))
    })
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (escaped, bytes[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, byte) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &[u8] = b"test-secret-of-reasonable-length";
    const RSA_PRIVATE: &str = include_str!("../tests/keys/rsa_private.pem");
    const RSA_PUBLIC: &str = include_str!("../tests/keys/rsa_public.pem");
    const EC_PRIVATE: &str = include_str!("../tests/keys/ec_private.pem");
    const EC_PUBLIC: &str = include_str!("../tests/keys/ec_public.pem");

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn claims() -> serde_json::Value {
        json!({"sub": "u-1", "email": "ada@example.com", "name": "Ada", "role": "teacher", "exp": now() + 3600})
    }

    fn hs256(claims: &serde_json::Value, secret: &[u8]) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    fn verifier() -> JwtVerifier {
        JwtVerifier::new(&JwtConfig::hs256(SECRET)).unwrap()
    }

    #[test]
    fn a_valid_hs256_token_gives_the_identity_from_its_claims() {
        let identity = verifier().verify(&hs256(&claims(), SECRET)).unwrap();
        assert_eq!(identity.user_id, "u-1");
        assert_eq!(identity.email, "ada@example.com");
        assert_eq!(identity.name, "Ada");
        assert_eq!(identity.role, "teacher");
        assert_eq!(identity.rooms, None);
    }

    #[test]
    fn a_valid_rs256_token_is_accepted_with_the_public_key() {
        let token = encode(
            &Header::new(Algorithm::RS256),
            &claims(),
            &EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
        )
        .unwrap();
        let config = JwtConfig {
            key: JwtKey::Rs256 {
                public_key_pem: RSA_PUBLIC.as_bytes().to_vec(),
            },
            ..JwtConfig::hs256("unused")
        };
        assert_eq!(
            JwtVerifier::new(&config)
                .unwrap()
                .verify(&token)
                .unwrap()
                .user_id,
            "u-1"
        );
    }

    #[test]
    fn a_valid_es256_token_is_accepted_with_the_public_key() {
        let token = encode(
            &Header::new(Algorithm::ES256),
            &claims(),
            &EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap(),
        )
        .unwrap();
        let config = JwtConfig {
            key: JwtKey::Es256 {
                public_key_pem: EC_PUBLIC.as_bytes().to_vec(),
            },
            ..JwtConfig::hs256("unused")
        };
        assert_eq!(
            JwtVerifier::new(&config)
                .unwrap()
                .verify(&token)
                .unwrap()
                .role,
            "teacher"
        );
    }

    #[test]
    fn an_expired_token_is_refused_as_expired() {
        let mut claims = claims();
        claims["exp"] = json!(now() - 3600);
        let error = verifier().verify(&hs256(&claims, SECRET)).unwrap_err();
        assert_eq!(error.code(), "TOKEN_EXPIRED");
    }

    #[test]
    fn a_huge_exp_is_accepted_and_its_session_is_bounded() {
        for exp in [10_000_000_000_000_000_000_u64, u64::MAX] {
            let mut claims = claims();
            claims["exp"] = json!(exp);
            let identity = verifier().verify(&hs256(&claims, SECRET)).unwrap();
            assert_eq!(identity.expires_at, exp);
            assert_eq!(identity.session_length(30, now()), LONGEST_SESSION);
            assert_eq!(identity.session_length(u64::MAX, 0), LONGEST_SESSION);
        }
    }

    fn identity_expiring_at(exp: u64) -> Identity {
        Identity {
            user_id: "u".into(),
            email: String::new(),
            name: String::new(),
            role: String::new(),
            rooms: None,
            expires_at: exp,
        }
    }

    #[test]
    fn a_session_ends_when_the_token_would_be_refused() {
        let now = 1_700_000_000;
        // Expired 25 s ago, inside the 30 s leeway: 5 s left, not 30.
        assert_eq!(
            identity_expiring_at(now - 25).session_length(30, now),
            Duration::from_secs(5)
        );
        assert_eq!(
            identity_expiring_at(now + 60).session_length(30, now),
            Duration::from_secs(90)
        );
        // Past the leeway (a clock that jumped between verifying and this): over at once.
        assert_eq!(
            identity_expiring_at(now - 31).session_length(30, now),
            Duration::ZERO
        );
        assert_eq!(identity_expiring_at(0).session_length(0, u64::MAX), Duration::ZERO);
    }

    #[test]
    fn a_token_that_is_not_valid_yet_is_refused_with_its_own_code() {
        for nbf in [now() + 3600, u64::MAX] {
            let mut claims = claims();
            claims["nbf"] = json!(nbf);
            let error = verifier().verify(&hs256(&claims, SECRET)).unwrap_err();
            assert_eq!(error.code(), "TOKEN_NOT_YET_VALID", "nbf {nbf}");
        }
        // Inside the clock-skew tolerance, and in the past: fine.
        for nbf in [now() + 20, now() - 3600] {
            let mut claims = claims();
            claims["nbf"] = json!(nbf);
            assert!(verifier().verify(&hs256(&claims, SECRET)).is_ok(), "nbf {nbf}");
        }
    }

    #[test]
    fn an_iat_of_any_size_is_informational() {
        for iat in [0, now() + 3600, u64::MAX] {
            let mut claims = claims();
            claims["iat"] = json!(iat);
            assert!(verifier().verify(&hs256(&claims, SECRET)).is_ok(), "iat {iat}");
        }
    }

    #[test]
    fn a_token_without_exp_is_refused_saying_exp_is_missing() {
        let mut claims = claims();
        claims.as_object_mut().unwrap().remove("exp");
        let error = verifier().verify(&hs256(&claims, SECRET)).unwrap_err();
        assert_eq!(error.code(), "TOKEN_INVALID");
        assert!(error.to_string().contains("exp claim"), "{error}");
        assert!(error.to_string().contains("missing"), "{error}");
    }

    #[test]
    fn claims_of_the_wrong_type_are_refused_by_name() {
        for (claim, value) in [
            ("exp", json!("tomorrow")),
            ("exp", json!(-1)),
            ("exp", json!(1.0e19)),
            ("nbf", json!("now")),
            ("sub", json!(42)),
            ("role", json!(["teacher"])),
            ("rooms", json!("maths")),
            ("rooms", json!([1, 2])),
        ] {
            let mut claims = claims();
            claims[claim] = value.clone();
            let error = verifier().verify(&hs256(&claims, SECRET)).unwrap_err();
            assert_eq!(error.code(), "TOKEN_INVALID", "{claim}: {value}");
            assert!(
                error.to_string().contains(&format!("the {claim} claim")),
                "{claim}: {value}: {error}"
            );
        }
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused_as_invalid_signature() {
        let error = verifier()
            .verify(&hs256(&claims(), b"another-secret"))
            .unwrap_err();
        assert_eq!(error.code(), "TOKEN_INVALID_SIGNATURE");
    }

    #[test]
    fn garbage_is_refused_as_malformed() {
        for garbage in ["not-a-jwt", "a.b.c", "only.two"] {
            let error = verifier().verify(garbage).unwrap_err();
            assert_eq!(error.code(), "TOKEN_MALFORMED", "{garbage}: {error}");
        }
    }

    #[test]
    fn a_token_of_another_algorithm_is_refused_as_invalid() {
        let token = encode(
            &Header::new(Algorithm::RS256),
            &claims(),
            &EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
        )
        .unwrap();
        let error = verifier().verify(&token).unwrap_err();
        assert_eq!(error.code(), "TOKEN_INVALID");
    }

    #[test]
    fn a_token_without_sub_is_refused_as_invalid() {
        let mut claims = claims();
        claims.as_object_mut().unwrap().remove("sub");
        let error = verifier().verify(&hs256(&claims, SECRET)).unwrap_err();
        assert_eq!(error.code(), "TOKEN_INVALID");
        assert!(error.to_string().contains("sub"), "{error}");
    }

    #[test]
    fn a_foreign_audience_is_ignored_unless_one_is_configured() {
        let mut claims = claims();
        claims["aud"] = json!("some-app");
        let token = hs256(&claims, SECRET);
        assert!(verifier().verify(&token).is_ok());
        let strict = JwtConfig {
            audience: Some("fanout".to_owned()),
            ..JwtConfig::hs256(SECRET)
        };
        let error = JwtVerifier::new(&strict)
            .unwrap()
            .verify(&token)
            .unwrap_err();
        assert_eq!(error.code(), "TOKEN_INVALID");
    }

    #[test]
    fn a_configured_audience_and_issuer_must_be_in_the_token() {
        let strict = JwtVerifier::new(&JwtConfig {
            audience: Some("fanout".to_owned()),
            issuer: Some("https://app.example".to_owned()),
            ..JwtConfig::hs256(SECRET)
        })
        .unwrap();
        let mut claims = claims();
        claims["aud"] = json!("fanout");
        claims["iss"] = json!("https://app.example");
        assert!(strict.verify(&hs256(&claims, SECRET)).is_ok());
        for missing in ["aud", "iss"] {
            let mut without = claims.clone();
            without.as_object_mut().unwrap().remove(missing);
            let error = strict.verify(&hs256(&without, SECRET)).unwrap_err();
            assert_eq!(error.code(), "TOKEN_INVALID", "without {missing}");
            assert!(error.to_string().contains(missing), "{error}");
        }
    }

    #[test]
    fn the_rooms_allow_list_limits_which_rooms_may_be_joined() {
        let mut claims = claims();
        claims["rooms"] = json!(["maths-101"]);
        let identity = verifier().verify(&hs256(&claims, SECRET)).unwrap();
        assert!(identity.may_join("maths-101").is_ok());
        assert_eq!(
            identity.may_join("physics").unwrap_err().code(),
            "ROOM_NOT_ALLOWED"
        );
        let anywhere = Identity {
            rooms: Some(vec!["*".to_owned()]),
            ..identity
        };
        assert!(anywhere.may_join("physics").is_ok());
    }

    #[test]
    fn a_bad_public_key_is_a_startup_error() {
        let config = JwtConfig {
            key: JwtKey::Rs256 {
                public_key_pem: b"not a key".to_vec(),
            },
            ..JwtConfig::hs256("unused")
        };
        assert!(JwtVerifier::new(&config).is_err());
    }

    fn headers(authorization: Option<&str>) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn the_auth_payload_token_comes_first() {
        let auth = json!({"token": "from-auth"});
        let token = find_token(
            Some(&auth),
            &headers(Some("Bearer from-header")),
            Some("token=q"),
        );
        assert_eq!(token.unwrap(), "from-auth");
    }

    #[test]
    fn the_bearer_header_is_the_first_fallback() {
        let token = find_token(None, &headers(Some("Bearer from-header")), Some("token=q"));
        assert_eq!(token.unwrap(), "from-header");
    }

    #[test]
    fn the_query_parameter_is_the_last_fallback_and_is_decoded() {
        let token = find_token(
            Some(&json!({})),
            &headers(None),
            Some("EIO=4&token=a%2Eb.c&x=1"),
        );
        assert_eq!(token.unwrap(), "a.b.c");
    }

    #[test]
    fn no_token_anywhere_is_token_missing() {
        let error =
            find_token(Some(&json!({"token": ""})), &headers(None), Some("EIO=4")).unwrap_err();
        assert_eq!(error.code(), "TOKEN_MISSING");
    }
}
