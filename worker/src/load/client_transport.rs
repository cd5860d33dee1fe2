//! The browser's end of one worker transport, sans-IO: ICE checks as a browser sends them
//! (PRIORITY, ICE-CONTROLLING, USE-CANDIDATE) until the worker answers with a signed Binding
//! success, DTLS as client, then SRTP. A Binding error response fails the transport. The load program drives thousands of these
//! over a few shared sockets, telling them apart by the worker port a datagram comes from.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::media::dtls::{DtlsEvent, DtlsIdentity, DtlsSession, SrtpSession};
use crate::media::ice::{BindingAnswer, binding_request, read_binding_answer};
use crate::room::{DtlsParameters, DtlsRole, TransportCreated};

/// How often an unanswered ICE check is repeated, and how often consent is refreshed once
/// connected (the worker closes a transport after 30 s without a check).
const CHECK_INTERVAL: Duration = Duration::from_millis(100);
pub const CONSENT_INTERVAL: Duration = Duration::from_secs(5);

pub struct ClientTransport {
    /// The worker's address for this transport (its candidate).
    pub remote: SocketAddr,
    ufrag: String,
    password: String,
    remote_dtls: DtlsParameters,
    identity: DtlsIdentity,
    dtls: Option<DtlsSession>,
    pub srtp: Option<SrtpSession>,
    next_check: Instant,
    failed: Option<String>,
}

impl ClientTransport {
    pub fn new(created: &TransportCreated, identity: DtlsIdentity, now: Instant) -> Option<Self> {
        let candidate = created.ice_candidates.first()?;
        Some(ClientTransport {
            remote: SocketAddr::new(candidate.address, candidate.port),
            ufrag: created.ice_parameters.username_fragment.clone(),
            password: created.ice_parameters.password.clone(),
            remote_dtls: DtlsParameters { role: DtlsRole::Auto, fingerprints: created.dtls_parameters.fingerprints.clone() },
            identity,
            dtls: None,
            srtp: None,
            next_check: now,
            failed: None,
        })
    }

    /// What goes into `connect-transport`: this end is the DTLS client, as mediasoup-client is.
    pub fn dtls_parameters(&self) -> DtlsParameters {
        DtlsParameters { role: DtlsRole::Client, fingerprints: self.identity.fingerprints() }
    }

    pub fn is_connected(&self) -> bool {
        self.srtp.is_some()
    }

    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// A datagram from the worker during the handshake (media is handled by the caller).
    pub fn on_datagram(&mut self, data: &[u8], now: Instant) {
        match data.first() {
            Some(0..=3) if self.dtls.is_none() => {
                let crypto = self.identity.provider().clone();
                match read_binding_answer(data, &self.password, crypto.crypto()) {
                    // The worker accepted a check: the tuple is selected, start DTLS.
                    BindingAnswer::Success => {
                        match DtlsSession::new(&self.identity, &self.remote_dtls, DtlsRole::Client, now) {
                            Ok(session) => self.dtls = Some(session),
                            Err(e) => self.failed = Some(e.to_string()),
                        }
                        self.next_check = now + CONSENT_INTERVAL;
                    }
                    BindingAnswer::Error { code, reason } => {
                        self.failed = Some(format!("the worker refused the ICE check: STUN error {code} {reason}"))
                    }
                    // Not an answer to our checks (or forged): keep checking.
                    BindingAnswer::Invalid(_) => {}
                }
            }
            Some(20..=63) => {
                let Some(dtls) = self.dtls.as_mut() else { return };
                match dtls.handle_datagram(data, now) {
                    Ok(events) => {
                        for event in events {
                            if let DtlsEvent::Connected(srtp) = event {
                                self.srtp = Some(*srtp);
                            }
                        }
                    }
                    Err(e) if !dtls.is_connected() => self.failed = Some(e.to_string()),
                    Err(_) => {}
                }
            }
            Some(128..=191) if !data.get(1).is_some_and(|pt| (192..=223).contains(pt)) => {
                // Media before the measuring loop takes over: open it anyway, as a browser
                // would, so the SRTP rollover counter follows a sequence wrap in the meantime.
                if let Some(srtp) = self.srtp.as_mut() {
                    let _ = srtp.inbound.decrypt_rtp(data);
                }
            }
            _ => {}
        }
    }

    /// Datagrams to send to [`Self::remote`] now: ICE checks (repeated until answered, then as
    /// consent refreshes) and DTLS flights (retransmitted on their timers).
    pub fn poll_transmit(&mut self, now: Instant, out: &mut Vec<Vec<u8>>) {
        if self.failed.is_some() {
            return;
        }
        if now >= self.next_check {
            let crypto = self.identity.provider().clone();
            out.push(binding_request(&self.ufrag, "loadpeer", &self.password, true, crypto.crypto()));
            self.next_check = now + if self.dtls.is_some() { CONSENT_INTERVAL } else { CHECK_INTERVAL };
        }
        if let Some(dtls) = self.dtls.as_mut() {
            if dtls.poll_timeout().is_some_and(|at| at <= now)
                && let Err(e) = dtls.handle_timeout(now)
                && !dtls.is_connected()
            {
                self.failed = Some(e.to_string());
            }
            while let Some(datagram) = dtls.poll_transmit() {
                out.push(datagram);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::ice::{BindingRequest, IceLite};
    use crate::room::{DtlsFingerprint, IceCandidate, IceParameters, IceProtocol, ListenAddress};

    const UFRAG: &str = "workerufrag";
    const PWD: &str = "worker-password-0123456789";

    fn transport() -> ClientTransport {
        let provider = rtc::crypto::default_provider().unwrap();
        let address = ListenAddress { ip: [127, 0, 0, 1].into(), port: 40000, protocol: IceProtocol::Udp };
        let created = TransportCreated {
            id: "t".into(),
            ice_parameters: IceParameters { username_fragment: UFRAG.into(), password: PWD.into(), ice_lite: true },
            ice_candidates: vec![IceCandidate::host(&address, 0)],
            dtls_parameters: DtlsParameters {
                role: DtlsRole::Auto,
                fingerprints: vec![DtlsFingerprint { algorithm: "sha-256".into(), value: ["00"; 32].join(":") }],
            },
            sctp_parameters: None,
        };
        ClientTransport::new(&created, DtlsIdentity::generate(provider).unwrap(), Instant::now()).unwrap()
    }

    #[test]
    fn its_checks_carry_what_browsers_send_and_a_worker_accepts_them() {
        use rtc::stun::attributes::{ATTR_ICE_CONTROLLING, ATTR_PRIORITY, ATTR_USE_CANDIDATE};
        let mut client = transport();
        let mut out = Vec::new();
        client.poll_transmit(Instant::now(), &mut out);
        let mut check = rtc::stun::message::Message::new();
        check.unmarshal_binary(&out[0]).unwrap();
        for attribute in [ATTR_PRIORITY, ATTR_ICE_CONTROLLING, ATTR_USE_CANDIDATE] {
            assert!(check.contains(attribute), "{attribute}");
        }
        let provider = rtc::crypto::default_provider().unwrap();
        let mut worker = IceLite::new(UFRAG, PWD);
        let reply = worker.handle("127.0.0.1:5000".parse().unwrap(), &out[0], Instant::now(), provider.crypto()).unwrap();
        client.on_datagram(&reply.response, Instant::now());
        assert_eq!(client.failure(), None);
        assert!(client.dtls.is_some(), "a signed success starts DTLS");
    }

    #[test]
    fn a_stun_error_response_is_a_failure_not_a_success() {
        let mut client = transport();
        let provider = rtc::crypto::default_provider().unwrap();
        let mut worker = IceLite::new(UFRAG, PWD);
        let controlled = BindingRequest { controlling: None, controlled: Some(3), ..BindingRequest::browser(UFRAG, "x", PWD, true) };
        let refused = worker.handle("127.0.0.1:5000".parse().unwrap(), &controlled.build(provider.crypto()), Instant::now(), provider.crypto());
        client.on_datagram(&refused.unwrap_err().response.unwrap(), Instant::now());
        assert!(client.dtls.is_none());
        assert!(client.failure().is_some_and(|f| f.contains("487")), "{:?}", client.failure());
    }

    #[test]
    fn an_unsigned_or_foreign_stun_message_starts_nothing() {
        let mut client = transport();
        let provider = rtc::crypto::default_provider().unwrap();
        // A check (a request, not an answer) and a success signed with another password.
        let request = binding_request(UFRAG, "x", PWD, true, provider.crypto());
        client.on_datagram(&request, Instant::now());
        let mut stranger = IceLite::new(UFRAG, "someone-elses-password-xx");
        let forged = binding_request(UFRAG, "x", "someone-elses-password-xx", true, provider.crypto());
        let reply = stranger.handle("127.0.0.1:5000".parse().unwrap(), &forged, Instant::now(), provider.crypto()).unwrap();
        client.on_datagram(&reply.response, Instant::now());
        assert!(client.dtls.is_none());
        assert_eq!(client.failure(), None);
    }
}
