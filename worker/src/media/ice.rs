//! ICE-lite, as mediasoup-client expects of a server (DESIGN.md section 7).
//!
//! The worker never sends checks; it answers the browser's. A Binding request is valid when
//! its USERNAME starts with our ufrag and `:` (the remote half is not checked: mediasoup-client
//! never signals the browser's ufrag to us), its MESSAGE-INTEGRITY verifies with our password,
//! and it carries a FINGERPRINT. A valid request with USE-CANDIDATE selects its tuple; media
//! goes to the selected tuple. Requests keep consent alive: none for 30 s and the transport is
//! disconnected.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rtc::crypto::RTCCrypto;
use rtc::ice::attributes::use_candidate::UseCandidateAttr;
use rtc::stun::attributes::ATTR_USERNAME;
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{Message, Setter, BINDING_REQUEST, BINDING_SUCCESS};
use rtc::stun::textattrs::TextAttribute;
use rtc::stun::xoraddr::XorMappedAddress;

/// How long without a valid request before consent is lost (RFC 7675 uses 30 s).
pub const CONSENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a STUN datagram was dropped; counted in metrics, never answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StunDrop {
    /// Not a parsable STUN message.
    Malformed,
    /// A STUN message, but not a Binding request (indications, responses).
    NotBindingRequest,
    /// USERNAME missing or not for this transport.
    WrongUsername,
    /// FINGERPRINT missing or wrong.
    BadFingerprint,
    /// MESSAGE-INTEGRITY missing or not made with our password.
    BadIntegrity,
}

impl StunDrop {
    pub fn as_str(self) -> &'static str {
        match self {
            StunDrop::Malformed => "stun_malformed",
            StunDrop::NotBindingRequest => "stun_not_binding_request",
            StunDrop::WrongUsername => "stun_wrong_username",
            StunDrop::BadFingerprint => "stun_bad_fingerprint",
            StunDrop::BadIntegrity => "stun_bad_integrity",
        }
    }
}

/// The answer to a valid Binding request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StunReply {
    /// The Binding success response, to send back to the request's source.
    pub response: Vec<u8>,
    /// The request selected a new tuple (first valid nomination, or a switch).
    pub selected: Option<SocketAddr>,
}

/// The ICE-lite side of one transport.
#[derive(Debug, Clone)]
pub struct IceLite {
    ufrag: String,
    password: String,
    selected: Option<SocketAddr>,
    last_consent: Option<Instant>,
}

impl IceLite {
    pub fn new(ufrag: impl Into<String>, password: impl Into<String>) -> Self {
        IceLite { ufrag: ufrag.into(), password: password.into(), selected: None, last_consent: None }
    }

    pub fn ufrag(&self) -> &str {
        &self.ufrag
    }

    /// The tuple media is sent to.
    pub fn selected(&self) -> Option<SocketAddr> {
        self.selected
    }

    /// New credentials (ICE restart). The selected tuple stays until a check with the new
    /// credentials selects one, so media keeps flowing meanwhile.
    pub fn restart(&mut self, ufrag: impl Into<String>, password: impl Into<String>) {
        self.ufrag = ufrag.into();
        self.password = password.into();
    }

    /// True once a tuple was selected and no valid request came for [`CONSENT_TIMEOUT`].
    pub fn consent_expired(&self, now: Instant) -> bool {
        self.last_consent.is_some_and(|at| now.saturating_duration_since(at) >= CONSENT_TIMEOUT)
    }

    /// When consent runs out, if nothing else arrives.
    pub fn consent_deadline(&self) -> Option<Instant> {
        self.last_consent.map(|at| at + CONSENT_TIMEOUT)
    }

    /// Handles one STUN datagram from `from`.
    pub fn handle(&mut self, from: SocketAddr, data: &[u8], now: Instant, crypto: &dyn RTCCrypto) -> Result<StunReply, StunDrop> {
        let mut msg = Message::new();
        msg.unmarshal_binary(data).map_err(|_| StunDrop::Malformed)?;
        if msg.typ != BINDING_REQUEST {
            return Err(StunDrop::NotBindingRequest);
        }
        let username = TextAttribute::get_from_as(&msg, ATTR_USERNAME).map_err(|_| StunDrop::WrongUsername)?.text;
        let ours = username.len() > self.ufrag.len()
            && username.starts_with(self.ufrag.as_str())
            && username.as_bytes()[self.ufrag.len()] == b':';
        if !ours {
            return Err(StunDrop::WrongUsername);
        }
        FINGERPRINT.check(&msg).map_err(|_| StunDrop::BadFingerprint)?;
        MessageIntegrity::check(&mut msg, self.password.as_bytes(), crypto).map_err(|_| StunDrop::BadIntegrity)?;

        self.last_consent = Some(now);
        let nominated = UseCandidateAttr::is_set(&msg);
        // A nomination selects its tuple. Until one arrives, the first valid tuple is used, so a
        // peer that never nominates (some test clients) still gets media.
        let selected = if (nominated && self.selected != Some(from)) || self.selected.is_none() {
            self.selected = Some(from);
            Some(from)
        } else {
            None
        };

        let mut response = Message::new();
        let setters: [Box<dyn Setter + '_>; 5] = [
            Box::new(BINDING_SUCCESS),
            Box::new(msg.transaction_id),
            Box::new(XorMappedAddress { ip: from.ip(), port: from.port() }),
            Box::new(MessageIntegrity::new_short_term_integrity_with_provider(self.password.clone(), crypto)),
            Box::new(FINGERPRINT),
        ];
        // Building a response from a request we just parsed only fails on a bug.
        response.build(&setters).map_err(|_| StunDrop::Malformed)?;
        Ok(StunReply { response: response.raw, selected })
    }
}

/// Builds a Binding request as a browser would (for tests and load clients).
pub fn binding_request(
    remote_ufrag: &str,
    local_ufrag: &str,
    remote_password: &str,
    use_candidate: bool,
    crypto: &dyn RTCCrypto,
) -> Vec<u8> {
    use rtc::stun::message::TransactionId;
    let mut msg = Message::new();
    let username = TextAttribute::new(ATTR_USERNAME, format!("{remote_ufrag}:{local_ufrag}"));
    let mut setters: Vec<Box<dyn Setter + '_>> = vec![Box::new(BINDING_REQUEST), Box::new(TransactionId::new()), Box::new(username)];
    if use_candidate {
        setters.push(Box::new(UseCandidateAttr::new()));
    }
    setters.push(Box::new(MessageIntegrity::new_short_term_integrity_with_provider(remote_password.to_string(), crypto)));
    setters.push(Box::new(FINGERPRINT));
    // Every attribute here is well formed.
    msg.build(&setters).expect("a binding request always builds");
    msg.raw
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crypto() -> std::sync::Arc<dyn rtc::crypto::RTCCryptoProvider> {
        rtc::crypto::default_provider().unwrap()
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_valid_nominating_request_is_answered_and_selects_its_tuple() {
        let p = crypto();
        let mut ice = IceLite::new("srvufrag", "serverpassword0123456789");
        let req = binding_request("srvufrag", "browser", "serverpassword0123456789", true, p.crypto());
        let now = Instant::now();
        let reply = ice.handle(addr(5000), &req, now, p.crypto()).unwrap();
        assert_eq!(reply.selected, Some(addr(5000)));
        assert_eq!(ice.selected(), Some(addr(5000)));
        // The response is a Binding success with the mapped address, signed with our password.
        let mut resp = Message::new();
        resp.unmarshal_binary(&reply.response).unwrap();
        assert_eq!(resp.typ, BINDING_SUCCESS);
        let mut mapped = XorMappedAddress::default();
        use rtc::stun::message::Getter;
        mapped.get_from(&resp).unwrap();
        assert_eq!((mapped.ip, mapped.port), (addr(5000).ip(), 5000));
        MessageIntegrity::check(&mut resp, b"serverpassword0123456789", p.crypto()).unwrap();
        FINGERPRINT.check(&resp).unwrap();
    }

    #[test]
    fn a_later_nomination_moves_the_selected_tuple() {
        let p = crypto();
        let mut ice = IceLite::new("u", "pw-pw-pw-pw-pw-pw-pw-pw");
        let now = Instant::now();
        let plain = binding_request("u", "b", "pw-pw-pw-pw-pw-pw-pw-pw", false, p.crypto());
        ice.handle(addr(1), &plain, now, p.crypto()).unwrap();
        assert_eq!(ice.selected(), Some(addr(1)), "first valid tuple used until a nomination");
        let again = ice.handle(addr(2), &plain, now, p.crypto()).unwrap();
        assert_eq!(again.selected, None, "a plain check does not move the selection");
        let nominated = binding_request("u", "b", "pw-pw-pw-pw-pw-pw-pw-pw", true, p.crypto());
        assert_eq!(ice.handle(addr(2), &nominated, now, p.crypto()).unwrap().selected, Some(addr(2)));
    }

    #[test]
    fn wrong_ufrag_password_or_garbage_is_dropped_without_an_answer() {
        let p = crypto();
        let mut ice = IceLite::new("right", "the-right-password-1234");
        let now = Instant::now();
        let wrong_user = binding_request("wrong", "b", "the-right-password-1234", true, p.crypto());
        assert_eq!(ice.handle(addr(1), &wrong_user, now, p.crypto()), Err(StunDrop::WrongUsername));
        let prefix_only = binding_request("rightish", "b", "the-right-password-1234", true, p.crypto());
        assert_eq!(ice.handle(addr(1), &prefix_only, now, p.crypto()), Err(StunDrop::WrongUsername));
        let wrong_pw = binding_request("right", "b", "another-password-123456", true, p.crypto());
        assert_eq!(ice.handle(addr(1), &wrong_pw, now, p.crypto()), Err(StunDrop::BadIntegrity));
        assert_eq!(ice.handle(addr(1), &[0u8; 7], now, p.crypto()), Err(StunDrop::Malformed));
        let mut tampered = binding_request("right", "b", "the-right-password-1234", true, p.crypto());
        let last = tampered.len() - 1;
        tampered[last] ^= 0xff;
        assert_eq!(ice.handle(addr(1), &tampered, now, p.crypto()), Err(StunDrop::BadFingerprint));
        assert_eq!(ice.selected(), None, "nothing was selected by invalid requests");
    }

    #[test]
    fn consent_expires_thirty_seconds_after_the_last_valid_request() {
        let p = crypto();
        let mut ice = IceLite::new("u", "pw-pw-pw-pw-pw-pw-pw-pw");
        let t0 = Instant::now();
        assert!(!ice.consent_expired(t0 + Duration::from_secs(100)), "no consent to lose before connecting");
        let req = binding_request("u", "b", "pw-pw-pw-pw-pw-pw-pw-pw", true, p.crypto());
        ice.handle(addr(1), &req, t0, p.crypto()).unwrap();
        assert!(!ice.consent_expired(t0 + Duration::from_secs(29)));
        ice.handle(addr(1), &req, t0 + Duration::from_secs(20), p.crypto()).unwrap();
        assert!(!ice.consent_expired(t0 + Duration::from_secs(45)));
        assert!(ice.consent_expired(t0 + Duration::from_secs(50)));
    }

    #[test]
    fn after_an_ice_restart_only_the_new_credentials_are_accepted() {
        let p = crypto();
        let mut ice = IceLite::new("old", "old-password-0123456789");
        ice.restart("new", "new-password-0123456789");
        let now = Instant::now();
        let old = binding_request("old", "b", "old-password-0123456789", true, p.crypto());
        assert_eq!(ice.handle(addr(1), &old, now, p.crypto()), Err(StunDrop::WrongUsername));
        let new = binding_request("new", "b", "new-password-0123456789", true, p.crypto());
        assert!(ice.handle(addr(1), &new, now, p.crypto()).is_ok());
    }
}
