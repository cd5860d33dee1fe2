//! The JWT decoder (`fanout_signalling::auth`) with real keys of each kind it accepts (HS256,
//! RS256, ES256: the test keys in `signalling/tests/keys`): no token panics, every refusal has
//! a `TOKEN_*` code and a message of bounded size, no token passes whose signature was not
//! made with the key (algorithm confusion, a stripped or altered signature, `alg: none`), and
//! every token that passes is unexpired, valid already, carries the configured audience and
//! issuer, and gets a session no longer than its token and the cap.
//!
//! Input: a mode byte, then the rest.
//! - bits 0-1: the verifier: HS256, RS256, ES256, or HS256 that also checks `aud` and `iss`.
//! - bits 2-3: 0, the rest is the token text. 1, the rest is a header and claims (JSON text or
//!   not), separated by a 0xFF byte (never in UTF-8), signed with the verifier's real key and
//!   then changed as bits 4-7 say (see [`Forgery`]); an empty header is the algorithm's usual
//!   one. 2, the rest is where a connection's token is found (the `auth` payload, the
//!   Authorization header and the query string, 0xFF-separated), as the connect middleware
//!   reads it. 3: as 1, but `exp` and `nbf` placeholders in the claims are set relative to now,
//!   so expiry and leeway are reached however old the corpus is.
#![no_main]

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use fanout_signalling::SignallingError;
use fanout_signalling::auth::{Identity, JwtConfig, JwtKey, JwtVerifier, LONGEST_SESSION, find_token};
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"fuzz-secret-of-reasonable-length";
const RSA_PRIVATE: &str = include_str!("../../tests/keys/rsa_private.pem");
const RSA_PUBLIC: &str = include_str!("../../tests/keys/rsa_public.pem");
const EC_PRIVATE: &str = include_str!("../../tests/keys/ec_private.pem");
const EC_PUBLIC: &str = include_str!("../../tests/keys/ec_public.pem");
/// The claims whose signature [`Forgery::SwappedClaims`] puts under other claims.
const OTHER_CLAIMS: &[u8] = br#"{"sub":"someone-else","exp":99999999999}"#;
/// Longer refusal messages echo the input back (an attacker's megabyte of `alg`).
const MAX_MESSAGE: usize = 1024;

struct Key {
    verifier: JwtVerifier,
    algorithm: Algorithm,
    signing: EncodingKey,
    /// What a confused verifier would take as an HMAC secret: the public key.
    public: Vec<u8>,
}

fn keys() -> &'static [Key; 4] {
    static KEYS: OnceLock<[Key; 4]> = OnceLock::new();
    KEYS.get_or_init(|| {
        let config = |key| JwtConfig { key, ..JwtConfig::hs256(SECRET) };
        let key = |config: JwtConfig, algorithm, signing, public: &[u8]| Key {
            verifier: JwtVerifier::new(&config).expect("a usable test key"),
            algorithm,
            signing,
            public: public.to_vec(),
        };
        [
            key(JwtConfig::hs256(SECRET), Algorithm::HS256, EncodingKey::from_secret(SECRET), SECRET),
            key(
                config(JwtKey::Rs256 { public_key_pem: RSA_PUBLIC.into() }),
                Algorithm::RS256,
                EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).expect("rsa key"),
                RSA_PUBLIC.as_bytes(),
            ),
            key(
                config(JwtKey::Es256 { public_key_pem: EC_PUBLIC.into() }),
                Algorithm::ES256,
                EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).expect("ec key"),
                EC_PUBLIC.as_bytes(),
            ),
            key(
                JwtConfig {
                    audience: Some("fanout".into()),
                    issuer: Some("https://app.example".into()),
                    ..JwtConfig::hs256(SECRET)
                },
                Algorithm::HS256,
                EncodingKey::from_secret(SECRET),
                SECRET,
            ),
        ]
    })
}

/// How a signed token is changed before it is verified. Only the genuine token may pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Forgery {
    Genuine,
    /// Signed with HS256 and the public key as the secret (the classic RS256/HS256 confusion).
    HmacWithPublicKey,
    /// No signature at all.
    Stripped,
    /// One character of the signature changed.
    AlteredSignature,
    /// `{"alg":"none"}` and no signature.
    AlgNone,
    /// Claims of another token under this token's signature.
    SwappedClaims,
    /// A fourth segment.
    ExtraSegment,
    /// Standard base64 with padding in every segment.
    Padded,
}

impl Forgery {
    fn from_bits(bits: u8) -> Forgery {
        match bits % 8 {
            0 => Forgery::Genuine,
            1 => Forgery::HmacWithPublicKey,
            2 => Forgery::Stripped,
            3 => Forgery::AlteredSignature,
            4 => Forgery::AlgNone,
            5 => Forgery::SwappedClaims,
            6 => Forgery::ExtraSegment,
            _ => Forgery::Padded,
        }
    }
}

fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// `"$NOW+60"`, `"$NOW-25"`, `"$NOW"` in the claims become numbers relative to the clock.
fn relative_times(claims: &str) -> String {
    let mut out = String::with_capacity(claims.len());
    let mut rest = claims;
    while let Some(at) = rest.find("\"$NOW") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 5..];
        let Some(end) = after.find('"') else {
            out.push_str(&rest[at..]);
            return out;
        };
        let offset = &after[..end];
        let value = match offset.split_at_checked(1) {
            Some(("+", n)) => n.parse::<u64>().map(|n| now().saturating_add(n)).ok(),
            Some(("-", n)) => n.parse::<u64>().map(|n| now().saturating_sub(n)).ok(),
            _ if offset.is_empty() => Some(now()),
            _ => None,
        };
        match value {
            Some(value) => out.push_str(&value.to_string()),
            None => out.push_str(&rest[at..at + 5 + end + 1]),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The token as `forgery` makes it, and whether it may pass: when it is the genuine token
/// after all (re-encoding that changed nothing), or signed with the real secret anyway.
/// The real signature is made only for the forgeries that use it: an RSA signature costs
/// about a hundred times what verifying does, and it set the pace of the whole target.
fn signed(key: &Key, header: &[u8], claims: &[u8], forgery: Forgery) -> (String, bool) {
    let usual = format!(r#"{{"alg":"{:?}","typ":"JWT"}}"#, key.algorithm);
    let header = if header.is_empty() { usual.as_bytes() } else { header };
    let sign = |message: &str| jsonwebtoken::crypto::sign(message.as_bytes(), &key.signing, key.algorithm).expect("signs");
    let message = format!("{}.{}", b64(header), b64(claims));
    match forgery {
        Forgery::Genuine => {
            let signature = sign(&message);
            (format!("{message}.{signature}"), true)
        }
        Forgery::HmacWithPublicKey => {
            let message = format!("{}.{}", b64(br#"{"alg":"HS256","typ":"JWT"}"#), b64(claims));
            let hmac = jsonwebtoken::crypto::sign(message.as_bytes(), &EncodingKey::from_secret(&key.public), Algorithm::HS256)
                .expect("signs");
            // With an HMAC verifier the "public key" is the secret: that token is genuine.
            (format!("{message}.{hmac}"), key.algorithm == Algorithm::HS256)
        }
        Forgery::Stripped => (format!("{message}."), false),
        Forgery::AlteredSignature => {
            let signature = sign(&message);
            // The last character of unpadded base64 carries only some bits; change the first.
            let first = if signature.starts_with('A') { 'B' } else { 'A' };
            (format!("{message}.{first}{}", &signature[1..]), false)
        }
        Forgery::AlgNone => (format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), b64(claims)), false),
        Forgery::SwappedClaims => {
            let other = format!("{}.{}", b64(header), b64(OTHER_CLAIMS));
            (format!("{message}.{}", sign(&other)), claims == OTHER_CLAIMS)
        }
        Forgery::ExtraSegment => (format!("{message}.{}.{}", sign(&message), b64(b"more")), false),
        Forgery::Padded => {
            let signature = sign(&message);
            let genuine = format!("{message}.{signature}");
            let raw = URL_SAFE_NO_PAD.decode(&signature).expect("base64");
            let token = format!("{}.{}.{}", STANDARD.encode(header), STANDARD.encode(claims), STANDARD.encode(raw));
            let may_pass = token == genuine;
            (token, may_pass)
        }
    }
}

/// What a verifier that passed `token` promised about it, checked against the claims it
/// carries: an unexpired `exp` and a past `nbf` (within the leeway), the configured `aud` and
/// `iss`; and the session it gets is bounded.
fn check_accepted(key_index: usize, token: &str, identity: &Identity) {
    let claims = token
        .split('.')
        .nth(1)
        .and_then(|claims| URL_SAFE_NO_PAD.decode(claims.trim_end_matches('=')).ok())
        .and_then(|claims| serde_json::from_slice::<serde_json::Value>(&claims).ok())
        .expect("an accepted token has readable claims");
    let exp = claims["exp"].as_u64().expect("an accepted token has a numeric exp");
    // The leeway is 30 s; one more for the clock ticking between verifying and this.
    assert!(exp.saturating_add(31) >= now(), "expired token accepted: exp {exp}");
    if let Some(nbf) = claims.get("nbf").filter(|nbf| !nbf.is_null()) {
        let nbf = nbf.as_u64().expect("an accepted token's nbf is numeric");
        assert!(nbf <= now().saturating_add(30), "token not valid yet accepted: nbf {nbf}");
    }
    assert_eq!(identity.expires_at, exp);
    // The session it gets: never past exp plus the leeway, never longer than the cap.
    let length = identity.session_length(30, now());
    assert!(length <= LONGEST_SESSION);
    assert!(length.as_secs() <= exp.saturating_add(30).saturating_sub(now().saturating_sub(1)));
    if key_index == 3 {
        let aud = &claims["aud"];
        let for_us = aud == "fanout" || aud.as_array().is_some_and(|a| a.iter().any(|v| v == "fanout"));
        assert!(for_us, "token without our audience accepted: aud {aud}");
        assert_eq!(claims["iss"], "https://app.example", "token without our issuer accepted");
    }
}

fn check_refusal(error: &SignallingError, token: &str) {
    assert!(error.code().starts_with("TOKEN_"), "{} for {token:?}", error.code());
    let message = error.to_string();
    assert!(message.len() <= MAX_MESSAGE, "a {}-byte refusal: {}", message.len(), &message[..MAX_MESSAGE]);
}

/// `FANOUT_FUZZ_TRACE=1` prints what each signed input gave, to see what an input does.
fn trace() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("FANOUT_FUZZ_TRACE").is_some())
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let key_index = usize::from(mode & 3);
    let key = &keys()[key_index];
    match (mode >> 2) & 3 {
        0 => {
            let token = String::from_utf8_lossy(rest);
            match key.verifier.verify(&token) {
                Ok(identity) => check_accepted(key_index, &token, &identity),
                Err(error) => check_refusal(&error, &token),
            }
        }
        1 | 3 => {
            let mut parts = rest.splitn(2, |&b| b == 0xff);
            let header = parts.next().unwrap_or_default();
            let claims = parts.next().unwrap_or_default();
            let claims = if (mode >> 2) & 3 == 3 {
                relative_times(&String::from_utf8_lossy(claims)).into_bytes()
            } else {
                claims.to_vec()
            };
            let forgery = Forgery::from_bits(mode >> 4);
            let (token, may_pass) = signed(key, header, &claims, forgery);
            let verified = key.verifier.verify(&token);
            if trace() {
                eprintln!("{:?} {forgery:?}: {:?}", key.algorithm, verified.as_ref().map_err(|e| e.to_string()));
            }
            match verified {
                Ok(identity) => {
                    assert!(may_pass, "{forgery:?} passed: {token}");
                    check_accepted(key_index, &token, &identity);
                    assert!(!identity.user_id.is_empty());
                    let _ = identity.may_join("maths-101");
                }
                Err(error) => check_refusal(&error, &token),
            }
        }
        _ => {
            let mut parts = rest.split(|&b| b == 0xff);
            let auth = parts.next().and_then(|auth| serde_json::from_slice(auth).ok());
            let mut headers = http::HeaderMap::new();
            if let Some(value) = parts.next().and_then(|value| http::HeaderValue::from_bytes(value).ok()) {
                headers.insert(http::header::AUTHORIZATION, value);
            }
            let query = parts.next().map(String::from_utf8_lossy);
            match find_token(auth.as_ref(), &headers, query.as_deref()) {
                Ok(token) => {
                    assert!(!token.is_empty());
                    match key.verifier.verify(&token) {
                        Ok(identity) => check_accepted(key_index, &token, &identity),
                        Err(error) => check_refusal(&error, &token),
                    }
                }
                Err(error) => assert_eq!(error.code(), "TOKEN_MISSING"),
            }
        }
    }
});
