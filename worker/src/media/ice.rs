//! ICE-lite, as mediasoup-client expects of a server (RFC 8445 section 2.5; mediasoup's
//! `IceServer`).
//!
//! The worker never sends checks; it answers the browser's, as a STUN server (RFC 5389
//! section 7.3, RFC 8445 section 7.3), in this order:
//!
//! 1. Not STUN, a FINGERPRINT that does not verify, or a response or indication: dropped
//!    silently (RFC 8445 section 7.3 treats a bad FINGERPRINT as "not STUN").
//! 2. A request of another method than Binding, or without FINGERPRINT: 400.
//! 3. Short-term credentials (RFC 5389 section 10.1.2): no USERNAME or MESSAGE-INTEGRITY is
//!    400; a USERNAME that does not start with our ufrag and `:`, or a MESSAGE-INTEGRITY that
//!    does not verify with our password, is 401. The remote half of USERNAME is not checked
//!    (mediasoup-client never signals the browser's ufrag). Error responses before this point
//!    carry no MESSAGE-INTEGRITY, as the RFC says; those after it do.
//! 4. An unknown comprehension-required attribute (type below 0x8000) is 420 with
//!    UNKNOWN-ATTRIBUTES listing them.
//! 5. Roles: a lite agent is always controlled, so a peer that says ICE-CONTROLLED is a role
//!    conflict that cannot be resolved by switching: 487, as mediasoup answers. Both
//!    ICE-CONTROLLING and ICE-CONTROLLED, or a malformed PRIORITY, is 400. PRIORITY may be
//!    absent (it only matters for peer-reflexive candidates, which a lite agent does not
//!    form), and ICE-CONTROLLING is what browsers send.
//! 6. Success: a Binding success response with XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY and
//!    FINGERPRINT. The request's tuple becomes valid; with USE-CANDIDATE it is selected, and
//!    media goes to the selected tuple.
//!
//! After an ICE restart the old credentials keep working until a check with the new ones
//! arrives (as in mediasoup), so the peer's consent checks do not fail while it applies them.
//!
//! Timers ([`IceTimeouts`]): a transport that gets no valid check within the ICE timeout of
//! its creation has timed out; one that had checks and then none for the consent timeout
//! (RFC 7675: 30 s) has lost consent.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rtc::crypto::RTCCrypto;
use rtc::ice::attributes::use_candidate::UseCandidateAttr;
use rtc::stun::attributes::{
    ATTR_FINGERPRINT, ATTR_ICE_CONTROLLED, ATTR_ICE_CONTROLLING, ATTR_MESSAGE_INTEGRITY, ATTR_PRIORITY, ATTR_USERNAME,
    AttrType,
};
use rtc::stun::error_code::{
    CODE_BAD_REQUEST, CODE_ROLE_CONFLICT, CODE_UNAUTHORIZED, CODE_UNKNOWN_ATTRIBUTE, ErrorCode, ErrorCodeAttribute,
};
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{BINDING_ERROR, BINDING_REQUEST, BINDING_SUCCESS, CLASS_REQUEST, METHOD_BINDING, Message, Setter};
use rtc::stun::textattrs::TextAttribute;
use rtc::stun::uattrs::UnknownAttributes;
use rtc::stun::xoraddr::XorMappedAddress;

/// How long without a valid request before consent is lost (RFC 7675).
pub const CONSENT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a new transport waits for its first valid check before it is closed.
pub const DEFAULT_ICE_TIMEOUT: Duration = Duration::from_secs(30);

/// Comprehension-required attributes (type below 0x8000) this server understands: the ones
/// it reads, and those RFC 5389 defines, which a request may carry without harm. Anything
/// else below 0x8000 is answered with 420.
const UNDERSTOOD_REQUIRED_ATTRIBUTES: [u16; 9] = [
    0x0001, // MAPPED-ADDRESS
    0x0006, // USERNAME
    0x0008, // MESSAGE-INTEGRITY
    0x0009, // ERROR-CODE
    0x000A, // UNKNOWN-ATTRIBUTES
    0x0014, // REALM
    0x0015, // NONCE
    0x0020, // XOR-MAPPED-ADDRESS
    0x0024, // PRIORITY
];

/// Also understood: USE-CANDIDATE (RFC 8445).
const USE_CANDIDATE: u16 = 0x0025;

/// The two ICE timers of a transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IceTimeouts {
    /// From creation to the first valid check.
    pub setup: Duration,
    /// From the last valid check, once there was one.
    pub consent: Duration,
}

impl Default for IceTimeouts {
    fn default() -> Self {
        IceTimeouts { setup: DEFAULT_ICE_TIMEOUT, consent: CONSENT_TIMEOUT }
    }
}

/// Which ICE timer ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IceExpiry {
    /// No valid check ever arrived.
    Timeout,
    /// Checks arrived, then stopped.
    ConsentLost,
}

/// Why a STUN datagram was not accepted as a valid check; counted in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StunDrop {
    /// Not a parsable STUN message (dropped).
    Malformed,
    /// A STUN response or indication (dropped).
    NotBindingRequest,
    /// A FINGERPRINT that does not verify (dropped: not STUN).
    BadFingerprint,
    /// A request of another method, without FINGERPRINT, with both role attributes or a
    /// malformed PRIORITY (400).
    BadRequest,
    /// USERNAME or MESSAGE-INTEGRITY missing (400).
    MissingCredentials,
    /// USERNAME not for this transport (401).
    WrongUsername,
    /// MESSAGE-INTEGRITY not made with our password (401).
    BadIntegrity,
    /// An unknown comprehension-required attribute (420).
    UnknownAttributes,
    /// The peer says it is ICE-controlled too (487).
    RoleConflict,
}

impl StunDrop {
    pub fn as_str(self) -> &'static str {
        match self {
            StunDrop::Malformed => "stun_malformed",
            StunDrop::NotBindingRequest => "stun_not_binding_request",
            StunDrop::BadFingerprint => "stun_bad_fingerprint",
            StunDrop::BadRequest => "stun_bad_request",
            StunDrop::MissingCredentials => "stun_missing_credentials",
            StunDrop::WrongUsername => "stun_wrong_username",
            StunDrop::BadIntegrity => "stun_bad_integrity",
            StunDrop::UnknownAttributes => "stun_unknown_attributes",
            StunDrop::RoleConflict => "stun_role_conflict",
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

/// A datagram that was not a valid check: why, and the error response to send back, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StunRefused {
    pub reason: StunDrop,
    /// A Binding error response for the request's source; `None` when dropped silently.
    pub response: Option<Vec<u8>>,
}

impl StunRefused {
    fn dropped(reason: StunDrop) -> Self {
        StunRefused { reason, response: None }
    }
}

/// Sets one attribute from its raw value.
struct RawAttribute(AttrType, Vec<u8>);

impl Setter for RawAttribute {
    fn add_to(&self, m: &mut Message) -> Result<(), rtc::shared::error::Error> {
        m.add(self.0, &self.1);
        Ok(())
    }
}

/// The ICE-lite side of one transport.
#[derive(Debug, Clone)]
pub struct IceLite {
    ufrag: String,
    password: String,
    /// The credentials before the last ICE restart, accepted until the new ones are used.
    previous: Option<(String, String)>,
    selected: Option<SocketAddr>,
    created: Instant,
    timeouts: IceTimeouts,
    first_check: Option<Instant>,
    last_consent: Option<Instant>,
}

impl IceLite {
    /// With the default timeouts, created now.
    pub fn new(ufrag: impl Into<String>, password: impl Into<String>) -> Self {
        Self::with_timeouts(ufrag, password, Instant::now(), IceTimeouts::default())
    }

    /// Created at `created`, closing on `timeouts`.
    pub fn with_timeouts(ufrag: impl Into<String>, password: impl Into<String>, created: Instant, timeouts: IceTimeouts) -> Self {
        IceLite {
            ufrag: ufrag.into(),
            password: password.into(),
            previous: None,
            selected: None,
            created,
            timeouts,
            first_check: None,
            last_consent: None,
        }
    }

    pub fn ufrag(&self) -> &str {
        &self.ufrag
    }

    /// The tuple media is sent to.
    pub fn selected(&self) -> Option<SocketAddr> {
        self.selected
    }

    /// When the first valid check arrived, if one did.
    pub fn first_check(&self) -> Option<Instant> {
        self.first_check
    }

    /// New credentials (ICE restart). The selected tuple stays until a check with the new
    /// credentials selects one, so media keeps flowing meanwhile, and the old credentials
    /// are accepted until then.
    pub fn restart(&mut self, ufrag: impl Into<String>, password: impl Into<String>) {
        let old = (std::mem::replace(&mut self.ufrag, ufrag.into()), std::mem::replace(&mut self.password, password.into()));
        // A second restart before the first one's credentials were used: the ones the peer
        // may still use are the oldest.
        if self.previous.is_none() {
            self.previous = Some(old);
        }
    }

    /// Which timer has run out at `now`, if any.
    pub fn expired(&self, now: Instant) -> Option<IceExpiry> {
        match self.last_consent {
            Some(at) if now.saturating_duration_since(at) >= self.timeouts.consent => Some(IceExpiry::ConsentLost),
            Some(_) => None,
            None if now.saturating_duration_since(self.created) >= self.timeouts.setup => Some(IceExpiry::Timeout),
            None => None,
        }
    }

    /// True once a tuple was selected and no valid request came for the consent timeout.
    pub fn consent_expired(&self, now: Instant) -> bool {
        self.expired(now) == Some(IceExpiry::ConsentLost)
    }

    /// When the next timer runs out, if nothing else arrives; `None` for a timeout too large
    /// to reach.
    pub fn consent_deadline(&self) -> Option<Instant> {
        match self.last_consent {
            Some(at) => at.checked_add(self.timeouts.consent),
            None => self.created.checked_add(self.timeouts.setup),
        }
    }

    /// Handles one STUN datagram from `from` (see the module docs for the order of checks).
    pub fn handle(&mut self, from: SocketAddr, data: &[u8], now: Instant, crypto: &dyn RTCCrypto) -> Result<StunReply, StunRefused> {
        let mut msg = Message::new();
        msg.unmarshal_binary(data).map_err(|_| StunRefused::dropped(StunDrop::Malformed))?;
        let has = |msg: &Message, typ: AttrType| msg.attributes.0.iter().any(|a| a.typ == typ);
        if has(&msg, ATTR_FINGERPRINT) && FINGERPRINT.check(&msg).is_err() {
            return Err(StunRefused::dropped(StunDrop::BadFingerprint));
        }
        if msg.typ.class != CLASS_REQUEST {
            return Err(StunRefused::dropped(StunDrop::NotBindingRequest));
        }
        let refuse = |msg: &Message, reason: StunDrop, code: ErrorCode, phrase: &str, signed_with: Option<&str>| StunRefused {
            reason,
            response: error_response(msg, code, phrase, &[], signed_with, crypto),
        };
        if msg.typ.method != METHOD_BINDING || !has(&msg, ATTR_FINGERPRINT) {
            return Err(refuse(&msg, StunDrop::BadRequest, CODE_BAD_REQUEST, "Bad Request", None));
        }
        if !has(&msg, ATTR_USERNAME) || !has(&msg, ATTR_MESSAGE_INTEGRITY) {
            return Err(refuse(&msg, StunDrop::MissingCredentials, CODE_BAD_REQUEST, "Bad Request", None));
        }
        let username = match TextAttribute::get_from_as(&msg, ATTR_USERNAME) {
            Ok(username) => username.text,
            Err(_) => return Err(refuse(&msg, StunDrop::MissingCredentials, CODE_BAD_REQUEST, "Bad Request", None)),
        };
        let is_for = |ufrag: &str| {
            username.len() > ufrag.len() && username.starts_with(ufrag) && username.as_bytes()[ufrag.len()] == b':'
        };
        let (password, current) = if is_for(&self.ufrag) {
            (self.password.clone(), true)
        } else if let Some((_, password)) = self.previous.as_ref().filter(|(ufrag, _)| is_for(ufrag)) {
            (password.clone(), false)
        } else {
            return Err(refuse(&msg, StunDrop::WrongUsername, CODE_UNAUTHORIZED, "Unauthorized", None));
        };
        if MessageIntegrity::check(&mut msg, password.as_bytes(), crypto).is_err() {
            return Err(refuse(&msg, StunDrop::BadIntegrity, CODE_UNAUTHORIZED, "Unauthorized", None));
        }
        // Authenticated: from here on, answers are signed.
        let unknown = unknown_required_attributes(&msg);
        if !unknown.is_empty() {
            return Err(StunRefused {
                reason: StunDrop::UnknownAttributes,
                response: error_response(&msg, CODE_UNKNOWN_ATTRIBUTE, "Unknown Attribute", &unknown, Some(&password), crypto),
            });
        }
        let priority_ok = msg.attributes.0.iter().filter(|a| a.typ == ATTR_PRIORITY).all(|a| a.value.len() == 4);
        if !priority_ok || (has(&msg, ATTR_ICE_CONTROLLING) && has(&msg, ATTR_ICE_CONTROLLED)) {
            return Err(refuse(&msg, StunDrop::BadRequest, CODE_BAD_REQUEST, "Bad Request", Some(&password)));
        }
        if has(&msg, ATTR_ICE_CONTROLLED) {
            return Err(refuse(&msg, StunDrop::RoleConflict, CODE_ROLE_CONFLICT, "Role Conflict", Some(&password)));
        }

        if current {
            // The peer uses the new credentials: the old ones are done with.
            self.previous = None;
        }
        self.first_check.get_or_insert(now);
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
            Box::new(MessageIntegrity::new_short_term_integrity_with_provider(password, crypto)),
            Box::new(FINGERPRINT),
        ];
        // Building a response from a request we just parsed only fails on a bug.
        response.build(&setters).map_err(|_| StunRefused::dropped(StunDrop::Malformed))?;
        Ok(StunReply { response: response.raw, selected })
    }
}

/// The comprehension-required attributes of `msg` that this server does not understand,
/// among those before MESSAGE-INTEGRITY (RFC 5389 section 15.4: later ones are ignored).
fn unknown_required_attributes(msg: &Message) -> Vec<AttrType> {
    let mut unknown = Vec::new();
    for attribute in &msg.attributes.0 {
        if attribute.typ == ATTR_MESSAGE_INTEGRITY {
            break;
        }
        let typ = attribute.typ.0;
        let required = typ < 0x8000;
        if required && typ != USE_CANDIDATE && !UNDERSTOOD_REQUIRED_ATTRIBUTES.contains(&typ) && !unknown.contains(&attribute.typ) {
            unknown.push(attribute.typ);
        }
    }
    unknown
}

/// A Binding error response to `request`: ERROR-CODE, UNKNOWN-ATTRIBUTES when given,
/// MESSAGE-INTEGRITY when the request was authenticated with `password`, and FINGERPRINT.
fn error_response(
    request: &Message,
    code: ErrorCode,
    phrase: &str,
    unknown: &[AttrType],
    password: Option<&str>,
    crypto: &dyn RTCCrypto,
) -> Option<Vec<u8>> {
    let mut setters: Vec<Box<dyn Setter + '_>> = vec![
        Box::new(BINDING_ERROR),
        Box::new(request.transaction_id),
        Box::new(ErrorCodeAttribute { code, reason: phrase.as_bytes().to_vec() }),
    ];
    if !unknown.is_empty() {
        setters.push(Box::new(UnknownAttributes(unknown.to_vec())));
    }
    if let Some(password) = password {
        setters.push(Box::new(MessageIntegrity::new_short_term_integrity_with_provider(password.to_owned(), crypto)));
    }
    setters.push(Box::new(FINGERPRINT));
    let mut response = Message::new();
    response.build(&setters).ok()?;
    Some(response.raw)
}

/// A Binding request as a browser sends it: USERNAME, PRIORITY, ICE-CONTROLLING, then
/// USE-CANDIDATE when nominating, MESSAGE-INTEGRITY and FINGERPRINT. Tests change the parts
/// they are about.
#[derive(Debug, Clone)]
pub struct BindingRequest {
    /// `<worker's ufrag>:<client's ufrag>`.
    pub username: Option<String>,
    /// The worker's ICE password; `None` leaves MESSAGE-INTEGRITY out.
    pub password: Option<String>,
    pub use_candidate: bool,
    pub priority: Option<u32>,
    /// ICE-CONTROLLING with this tie-breaker.
    pub controlling: Option<u64>,
    /// ICE-CONTROLLED with this tie-breaker.
    pub controlled: Option<u64>,
    /// More attributes, before MESSAGE-INTEGRITY, as `(type, value)`.
    pub extra: Vec<(u16, Vec<u8>)>,
    pub fingerprint: bool,
}

impl BindingRequest {
    /// What Chrome sends to reach `remote_ufrag` with `remote_password`.
    pub fn browser(remote_ufrag: &str, local_ufrag: &str, remote_password: &str, use_candidate: bool) -> Self {
        BindingRequest {
            username: Some(format!("{remote_ufrag}:{local_ufrag}")),
            password: Some(remote_password.to_owned()),
            use_candidate,
            // Chrome's priority for a peer-reflexive UDP candidate of its host interface.
            priority: Some(1_853_817_087),
            controlling: Some(rand::random()),
            controlled: None,
            extra: Vec::new(),
            fingerprint: true,
        }
    }

    /// The request's bytes, with a fresh transaction id.
    pub fn build(&self, crypto: &dyn RTCCrypto) -> Vec<u8> {
        use rtc::stun::message::TransactionId;
        let mut setters: Vec<Box<dyn Setter + '_>> = vec![Box::new(BINDING_REQUEST), Box::new(TransactionId::new())];
        if let Some(username) = &self.username {
            setters.push(Box::new(TextAttribute::new(ATTR_USERNAME, username.clone())));
        }
        if let Some(priority) = self.priority {
            setters.push(Box::new(RawAttribute(ATTR_PRIORITY, priority.to_be_bytes().to_vec())));
        }
        if let Some(tiebreaker) = self.controlling {
            setters.push(Box::new(RawAttribute(ATTR_ICE_CONTROLLING, tiebreaker.to_be_bytes().to_vec())));
        }
        if let Some(tiebreaker) = self.controlled {
            setters.push(Box::new(RawAttribute(ATTR_ICE_CONTROLLED, tiebreaker.to_be_bytes().to_vec())));
        }
        if self.use_candidate {
            setters.push(Box::new(UseCandidateAttr::new()));
        }
        for (typ, value) in &self.extra {
            setters.push(Box::new(RawAttribute(AttrType(*typ), value.clone())));
        }
        if let Some(password) = &self.password {
            setters.push(Box::new(MessageIntegrity::new_short_term_integrity_with_provider(password.clone(), crypto)));
        }
        if self.fingerprint {
            setters.push(Box::new(FINGERPRINT));
        }
        let mut msg = Message::new();
        // Every attribute here is well formed.
        msg.build(&setters).expect("a binding request always builds");
        msg.raw
    }
}

/// Builds a Binding request as a browser would (for tests and load clients): see
/// [`BindingRequest::browser`].
pub fn binding_request(
    remote_ufrag: &str,
    local_ufrag: &str,
    remote_password: &str,
    use_candidate: bool,
    crypto: &dyn RTCCrypto,
) -> Vec<u8> {
    BindingRequest::browser(remote_ufrag, local_ufrag, remote_password, use_candidate).build(crypto)
}

/// What a client makes of the worker's answer to its check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindingAnswer {
    /// A Binding success response signed with the password: the check passed.
    Success,
    /// A Binding error response: the check failed, with this code and reason phrase.
    Error { code: u16, reason: String },
    /// Not a STUN response to a Binding request, or one whose integrity does not verify.
    Invalid(String),
}

/// Reads the worker's answer to a Binding request made with `password` (load clients and
/// tests): only a success response whose MESSAGE-INTEGRITY verifies means connectivity.
pub fn read_binding_answer(data: &[u8], password: &str, crypto: &dyn RTCCrypto) -> BindingAnswer {
    use rtc::stun::message::Getter;
    let mut msg = Message::new();
    if let Err(e) = msg.unmarshal_binary(data) {
        return BindingAnswer::Invalid(format!("not STUN: {e}"));
    }
    if msg.typ == BINDING_ERROR {
        let mut error = ErrorCodeAttribute::default();
        return match error.get_from(&msg) {
            Ok(()) => BindingAnswer::Error { code: error.code.0, reason: String::from_utf8_lossy(&error.reason).into_owned() },
            Err(e) => BindingAnswer::Invalid(format!("an error response without a readable ERROR-CODE: {e}")),
        };
    }
    if msg.typ != BINDING_SUCCESS {
        return BindingAnswer::Invalid(format!("a {} message, not a Binding response", msg.typ));
    }
    if let Err(e) = MessageIntegrity::check(&mut msg, password.as_bytes(), crypto) {
        return BindingAnswer::Invalid(format!("MESSAGE-INTEGRITY does not verify: {e}"));
    }
    BindingAnswer::Success
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
        let reason = |ice: &mut IceLite, data: &[u8]| ice.handle(addr(1), data, now, p.crypto()).unwrap_err().reason;
        assert_eq!(reason(&mut ice, &wrong_user), StunDrop::WrongUsername);
        let prefix_only = binding_request("rightish", "b", "the-right-password-1234", true, p.crypto());
        assert_eq!(reason(&mut ice, &prefix_only), StunDrop::WrongUsername);
        let wrong_pw = binding_request("right", "b", "another-password-123456", true, p.crypto());
        assert_eq!(reason(&mut ice, &wrong_pw), StunDrop::BadIntegrity);
        assert_eq!(reason(&mut ice, &[0u8; 7]), StunDrop::Malformed);
        let mut tampered = binding_request("right", "b", "the-right-password-1234", true, p.crypto());
        let last = tampered.len() - 1;
        tampered[last] ^= 0xff;
        assert_eq!(ice.handle(addr(1), &tampered, now, p.crypto()), Err(StunRefused::dropped(StunDrop::BadFingerprint)));
        assert_eq!(ice.selected(), None, "nothing was selected by invalid requests");
        assert_eq!(ice.expired(now + Duration::from_secs(31)), Some(IceExpiry::Timeout), "and no check counted");
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
    fn after_an_ice_restart_the_old_credentials_work_until_the_new_ones_are_used() {
        let p = crypto();
        let mut ice = IceLite::new("old", "old-password-0123456789");
        ice.restart("new", "new-password-0123456789");
        let now = Instant::now();
        let old = binding_request("old", "b", "old-password-0123456789", true, p.crypto());
        let reply = ice.handle(addr(1), &old, now, p.crypto()).expect("the peer has not applied the restart yet");
        let mut response = Message::new();
        response.unmarshal_binary(&reply.response).unwrap();
        MessageIntegrity::check(&mut response, b"old-password-0123456789", p.crypto()).expect("answered with the old password");
        let new = binding_request("new", "b", "new-password-0123456789", true, p.crypto());
        assert!(ice.handle(addr(1), &new, now, p.crypto()).is_ok());
        assert_eq!(ice.handle(addr(1), &old, now, p.crypto()).unwrap_err().reason, StunDrop::WrongUsername, "retired once the new ones came");
    }

    const UFRAG: &str = "srvufrag";
    const PWD: &str = "serverpassword0123456789";

    fn browser_request() -> BindingRequest {
        BindingRequest::browser(UFRAG, "browser", PWD, true)
    }

    /// The error response's code, after checking it answers `request` and carries FINGERPRINT
    /// (and MESSAGE-INTEGRITY when `signed`).
    fn error_code(reply: &StunRefused, request: &[u8], signed: bool) -> u16 {
        use rtc::stun::message::Getter;
        let p = crypto();
        let mut msg = Message::new();
        msg.unmarshal_binary(reply.response.as_ref().expect("an error response")).unwrap();
        let mut req = Message::new();
        req.unmarshal_binary(request).unwrap();
        assert_eq!(msg.typ, BINDING_ERROR);
        assert_eq!(msg.transaction_id, req.transaction_id);
        FINGERPRINT.check(&msg).expect("FINGERPRINT");
        assert_eq!(msg.contains(ATTR_MESSAGE_INTEGRITY), signed, "MESSAGE-INTEGRITY only on authenticated requests");
        if signed {
            MessageIntegrity::check(&mut msg, PWD.as_bytes(), p.crypto()).expect("signed with our password");
        }
        let mut code = ErrorCodeAttribute::default();
        code.get_from(&msg).unwrap();
        code.code.0
    }

    fn answer(request: &BindingRequest) -> (Vec<u8>, Result<StunReply, StunRefused>) {
        let p = crypto();
        let mut ice = IceLite::new(UFRAG, PWD);
        let data = request.build(p.crypto());
        let result = ice.handle(addr(9), &data, Instant::now(), p.crypto());
        (data, result)
    }

    #[test]
    fn browsers_checks_with_priority_and_ice_controlling_are_accepted() {
        assert!(answer(&browser_request()).1.is_ok());
        let p = crypto();
        let (_, reply) = answer(&browser_request());
        assert_eq!(read_binding_answer(&reply.unwrap().response, PWD, p.crypto()), BindingAnswer::Success);
    }

    #[test]
    fn a_check_without_priority_or_role_is_accepted() {
        let request = BindingRequest { priority: None, controlling: None, ..browser_request() };
        assert!(answer(&request).1.is_ok());
    }

    #[test]
    fn a_peer_claiming_to_be_controlled_gets_487_role_conflict() {
        let request = BindingRequest { controlling: None, controlled: Some(7), ..browser_request() };
        let (data, result) = answer(&request);
        let refused = result.unwrap_err();
        assert_eq!(refused.reason, StunDrop::RoleConflict);
        assert_eq!(error_code(&refused, &data, true), 487);
        let p = crypto();
        assert_eq!(
            read_binding_answer(refused.response.as_ref().unwrap(), PWD, p.crypto()),
            BindingAnswer::Error { code: 487, reason: "Role Conflict".into() }
        );
    }

    #[test]
    fn both_roles_or_a_malformed_priority_is_400() {
        let both = BindingRequest { controlled: Some(1), ..browser_request() };
        let (data, result) = answer(&both);
        assert_eq!(error_code(&result.unwrap_err(), &data, true), 400);
        let short_priority = BindingRequest { priority: None, extra: vec![(0x0024, vec![1, 2])], ..browser_request() };
        let (data, result) = answer(&short_priority);
        let refused = result.unwrap_err();
        assert_eq!(refused.reason, StunDrop::BadRequest);
        assert_eq!(error_code(&refused, &data, true), 400);
    }

    #[test]
    fn an_unknown_comprehension_required_attribute_is_420_listing_it() {
        use rtc::stun::message::Getter;
        let request = BindingRequest { extra: vec![(0x0042, vec![0; 4]), (0xC057, vec![0; 4])], ..browser_request() };
        let (data, result) = answer(&request);
        let refused = result.unwrap_err();
        assert_eq!(refused.reason, StunDrop::UnknownAttributes);
        assert_eq!(error_code(&refused, &data, true), 420);
        let mut msg = Message::new();
        msg.unmarshal_binary(refused.response.as_ref().unwrap()).unwrap();
        let mut unknown = UnknownAttributes(Vec::new());
        unknown.get_from(&msg).unwrap();
        assert_eq!(unknown.0, vec![AttrType(0x0042)], "the optional one (GOOG-NETWORK-INFO) is not listed");
        // Comprehension-optional attributes alone are fine: Chrome sends GOOG-NETWORK-INFO.
        let optional = BindingRequest { extra: vec![(0xC057, vec![0; 4])], ..browser_request() };
        assert!(answer(&optional).1.is_ok());
    }

    #[test]
    fn missing_credentials_are_400_and_wrong_ones_401_unsigned() {
        let no_username = BindingRequest { username: None, ..browser_request() };
        let (data, result) = answer(&no_username);
        let refused = result.unwrap_err();
        assert_eq!((refused.reason, error_code(&refused, &data, false)), (StunDrop::MissingCredentials, 400));
        let no_integrity = BindingRequest { password: None, ..browser_request() };
        let (data, result) = answer(&no_integrity);
        assert_eq!(error_code(&result.unwrap_err(), &data, false), 400);
        let wrong_password = BindingRequest { password: Some("not-the-password-at-all".into()), ..browser_request() };
        let (data, result) = answer(&wrong_password);
        let refused = result.unwrap_err();
        assert_eq!((refused.reason, error_code(&refused, &data, false)), (StunDrop::BadIntegrity, 401));
        let wrong_user = BindingRequest { username: Some("someone:else".into()), ..browser_request() };
        let (data, result) = answer(&wrong_user);
        assert_eq!(error_code(&result.unwrap_err(), &data, false), 401);
    }

    #[test]
    fn a_request_without_fingerprint_is_400_and_responses_are_dropped() {
        let no_fingerprint = BindingRequest { fingerprint: false, ..browser_request() };
        let (data, result) = answer(&no_fingerprint);
        assert_eq!(error_code(&result.unwrap_err(), &data, false), 400);
        // The worker's own answer fed back to it is a response: dropped, not answered.
        let p = crypto();
        let (_, reply) = answer(&browser_request());
        let mut ice = IceLite::new(UFRAG, PWD);
        let refused = ice.handle(addr(9), &reply.unwrap().response, Instant::now(), p.crypto()).unwrap_err();
        assert_eq!(refused, StunRefused::dropped(StunDrop::NotBindingRequest));
    }

    #[test]
    fn a_transport_without_any_valid_check_times_out_and_one_with_checks_loses_consent() {
        let p = crypto();
        let t0 = Instant::now();
        let timeouts = IceTimeouts { setup: Duration::from_secs(10), consent: Duration::from_secs(30) };
        let silent = IceLite::with_timeouts(UFRAG, PWD, t0, timeouts);
        assert_eq!(silent.consent_deadline(), Some(t0 + Duration::from_secs(10)));
        assert_eq!(silent.expired(t0 + Duration::from_secs(9)), None);
        assert_eq!(silent.expired(t0 + Duration::from_secs(10)), Some(IceExpiry::Timeout));
        let mut checked = IceLite::with_timeouts(UFRAG, PWD, t0, timeouts);
        checked.handle(addr(1), &browser_request().build(p.crypto()), t0 + Duration::from_secs(5), p.crypto()).unwrap();
        assert_eq!(checked.first_check(), Some(t0 + Duration::from_secs(5)));
        assert_eq!(checked.expired(t0 + Duration::from_secs(20)), None, "the ICE timeout no longer applies");
        assert_eq!(checked.expired(t0 + Duration::from_secs(35)), Some(IceExpiry::ConsentLost));
    }

    #[test]
    fn a_timeout_too_large_to_add_never_expires() {
        let t0 = Instant::now();
        let forever = IceLite::with_timeouts(UFRAG, PWD, t0, IceTimeouts { setup: Duration::MAX, consent: Duration::MAX });
        assert_eq!(forever.consent_deadline(), None);
        assert_eq!(forever.expired(t0 + Duration::from_secs(1_000_000)), None);
    }

    #[test]
    fn only_a_signed_success_answer_reads_as_success() {
        let p = crypto();
        let (_, reply) = answer(&browser_request());
        let response = reply.unwrap().response;
        assert!(matches!(read_binding_answer(&response, "another-password-xxxxxxx", p.crypto()), BindingAnswer::Invalid(_)));
        assert!(matches!(read_binding_answer(&[0, 1, 2], PWD, p.crypto()), BindingAnswer::Invalid(_)));
        let request = browser_request().build(p.crypto());
        assert!(matches!(read_binding_answer(&request, PWD, p.crypto()), BindingAnswer::Invalid(_)));
    }
}
