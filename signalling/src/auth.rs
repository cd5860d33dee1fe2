//! Who a connection is: JWT verification, pure (no sockets, no clocks beyond the token's own
//! `exp` check, which [`jsonwebtoken`] does against the system clock).
//!
//! The application's backend issues the tokens; signalling only verifies them, with a shared
//! secret (HS256) or the backend's public key (RS256 or ES256). Everything a participant is
//! (user id, name, role, the rooms it may join) comes from the verified claims and is never
//! taken from an event payload.

use std::collections::HashSet;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

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

impl Identity {
    /// Whether the token's allow-list lets it join `room`. `"*"` in the list allows any room.
    pub fn may_join(&self, room: &str) -> Result<()> {
        match &self.rooms {
            None => Ok(()),
            Some(rooms) if rooms.iter().any(|r| r == room || r == "*") => Ok(()),
            Some(_) => Err(SignallingError::RoomNotAllowed(room.to_owned())),
        }
    }
}

/// The claims signalling reads; others are ignored.
#[derive(Debug, Deserialize)]
struct Claims {
    // Defaulted so that a missing `sub` is reported as such (TOKEN_INVALID), not as JSON
    // that does not fit the struct (TOKEN_MALFORMED).
    #[serde(default)]
    sub: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
    exp: u64,
    #[serde(default)]
    rooms: Option<Vec<String>>,
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
        validation.set_required_spec_claims(&["exp", "sub"]);
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
        if claims.sub.is_empty() {
            return Err(SignallingError::TokenInvalid(
                "the sub claim (user id) is missing or empty".to_owned(),
            ));
        }
        Ok(Identity {
            user_id: claims.sub,
            email: claims.email,
            name: claims.name,
            role: claims.role,
            rooms: claims.rooms,
            expires_at: claims.exp,
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

    /// The required claims, for the startup log.
    pub fn required_claims(&self) -> &HashSet<String> {
        &self.validation.required_spec_claims
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
        ErrorKind::Json(e) => {
            SignallingError::TokenMalformed(format!("the header or claims are not valid JSON: {e}"))
        }
        ErrorKind::Utf8(_) => SignallingError::TokenMalformed("invalid UTF-8".to_owned()),
        ErrorKind::InvalidAlgorithm => SignallingError::TokenInvalid(
            "it is signed with another algorithm than this server accepts".to_owned(),
        ),
        ErrorKind::MissingRequiredClaim(claim) => {
            SignallingError::TokenInvalid(format!("the {claim} claim is missing"))
        }
        ErrorKind::InvalidClaimFormat(claim) => {
            SignallingError::TokenInvalid(format!("the {claim} claim has the wrong type"))
        }
        ErrorKind::ImmatureSignature => {
            SignallingError::TokenInvalid("it is not valid yet (nbf)".to_owned())
        }
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
