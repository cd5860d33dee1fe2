//! The browser's end of one worker transport, sans-IO: ICE checks (with USE-CANDIDATE) until
//! the worker answers, DTLS as client, then SRTP. The load program drives thousands of these
//! over a few shared sockets, telling them apart by the worker port a datagram comes from.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::media::dtls::{DtlsEvent, DtlsIdentity, DtlsSession, SrtpSession};
use crate::media::ice::binding_request;
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
                // The worker answered a check: the tuple is selected, start DTLS.
                match DtlsSession::new(&self.identity, &self.remote_dtls, DtlsRole::Client, now) {
                    Ok(session) => self.dtls = Some(session),
                    Err(e) => self.failed = Some(e.to_string()),
                }
                self.next_check = now + CONSENT_INTERVAL;
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
            if dtls.poll_timeout().is_some_and(|at| at <= now) {
                if let Err(e) = dtls.handle_timeout(now) {
                    if !dtls.is_connected() {
                        self.failed = Some(e.to_string());
                    }
                }
            }
            while let Some(datagram) = dtls.poll_transmit() {
                out.push(datagram);
            }
        }
    }
}
