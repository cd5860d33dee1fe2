//! A peer's WebRTC transport as mediasoup-client sees it: ICE-lite parameters and host
//! candidates on the way out, the client's DTLS parameters on the way in.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::error::RoomError;
use super::ids::{PeerId, TransportId};

/// Which way media flows on a transport, seen from the client: a `send` transport carries its
/// producers, a `recv` transport its consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Client to worker: producers.
    Send,
    /// Worker to client: consumers.
    Recv,
}

impl Direction {
    /// `"send"` or `"recv"`, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Send => "send",
            Direction::Recv => "recv",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Transport protocol of an ICE candidate: a UDP port per transport, and one TCP port per
/// worker that all transports share (ICE-TCP, RFC 6544).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IceProtocol {
    Udp,
    Tcp,
}

/// The TCP candidate type (RFC 6544 section 4.5). The worker only accepts connections:
/// `passive`, and the browser's candidates are `active`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TcpType {
    Passive,
}

/// Type of an ICE candidate. An ICE-lite server only has host candidates (with the announced
/// address, which may be the node's external IP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IceCandidateType {
    Host,
}

/// Which protocols a transport listens on, as a client asks for them: mediasoup's
/// `WebRtcTransportOptions` `enableUdp`, `enableTcp`, `preferUdp` and `preferTcp`. What a
/// request leaves out comes from the worker's flags ([`ProtocolDefaults`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransportProtocols {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_udp: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_tcp: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefer_udp: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefer_tcp: Option<bool>,
}

/// The worker's defaults for [`TransportProtocols`] (`--enable-udp`, `--enable-tcp`,
/// `--prefer-tcp`), and whether it listens on TCP at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolDefaults {
    pub enable_udp: bool,
    pub enable_tcp: bool,
    pub prefer_tcp: bool,
}

impl Default for ProtocolDefaults {
    fn default() -> Self {
        ProtocolDefaults { enable_udp: true, enable_tcp: true, prefer_tcp: false }
    }
}

/// Why a transport's protocols cannot be met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("enableUdp and enableTcp leave the transport no protocol: enable at least one")]
    NoProtocol,
    #[error("preferUdp and preferTcp are both set: prefer one of them at most")]
    BothPreferred,
    #[error("enableTcp asks for ICE-TCP, which this worker does not offer (started with --enable-tcp=false): use UDP or another worker")]
    TcpUnavailable,
}

impl ProtocolError {
    /// Stable code for the REST error body.
    pub fn code(self) -> &'static str {
        match self {
            ProtocolError::NoProtocol => "NO_TRANSPORT_PROTOCOL",
            ProtocolError::BothPreferred => "CONFLICTING_PROTOCOL_PREFERENCE",
            ProtocolError::TcpUnavailable => "TCP_UNAVAILABLE",
        }
    }
}

impl TransportProtocols {
    /// The protocols to listen on, preferred first, with `defaults` for what the request
    /// leaves out; `tcp_available` says whether the worker listens on TCP. A default of TCP
    /// on a worker without it is simply UDP only; asking for TCP there is an error.
    pub fn resolve(&self, defaults: ProtocolDefaults, tcp_available: bool) -> Result<Vec<IceProtocol>, ProtocolError> {
        if self.prefer_udp == Some(true) && self.prefer_tcp == Some(true) {
            return Err(ProtocolError::BothPreferred);
        }
        if self.enable_tcp == Some(true) && !tcp_available {
            return Err(ProtocolError::TcpUnavailable);
        }
        let udp = self.enable_udp.unwrap_or(defaults.enable_udp);
        let tcp = self.enable_tcp.unwrap_or(defaults.enable_tcp) && tcp_available;
        let tcp_first = match (self.prefer_udp, self.prefer_tcp) {
            (_, Some(true)) => true,
            (Some(true), _) => false,
            _ => defaults.prefer_tcp,
        };
        let mut protocols: Vec<IceProtocol> = [(udp, IceProtocol::Udp), (tcp, IceProtocol::Tcp)]
            .into_iter()
            .filter_map(|(on, protocol)| on.then_some(protocol))
            .collect();
        if tcp_first {
            protocols.reverse();
        }
        if protocols.is_empty() {
            return Err(ProtocolError::NoProtocol);
        }
        Ok(protocols)
    }
}

/// One address the media plane listens on for this transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenAddress {
    /// The announced address clients send to.
    pub ip: IpAddr,
    /// The UDP or TCP port.
    pub port: u16,
    pub protocol: IceProtocol,
}

/// What the media plane decided for a new transport: its ICE credentials, where it listens
/// and its certificate fingerprints. The media plane owns sockets and certificates; the room
/// graph only records and reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransportNetwork {
    /// The local ICE username fragment; STUN requests for this transport start with it.
    pub ice_username_fragment: String,
    /// The local ICE password (MESSAGE-INTEGRITY key).
    pub ice_password: String,
    /// Listening addresses, most preferred first.
    pub addresses: Vec<ListenAddress>,
    /// Fingerprints of the worker's DTLS certificate.
    pub fingerprints: Vec<DtlsFingerprint>,
}

/// mediasoup's `IceParameters`. `iceLite` is always true: the worker never sends checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceParameters {
    /// The local ICE username fragment.
    pub username_fragment: String,
    /// The local ICE password.
    pub password: String,
    /// Always `true`.
    pub ice_lite: bool,
}

/// mediasoup's `IceCandidate`, as mediasoup-client puts it into its remote SDP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IceCandidate {
    /// mediasoup's fixed `udpcandidate` or `tcpcandidate`: all candidates share one base per
    /// protocol.
    pub foundation: String,
    /// RFC 8445 priority for a host candidate, earlier addresses higher.
    pub priority: u32,
    /// The address (mediasoup >= 3.13 and current mediasoup-client read this one).
    pub address: IpAddr,
    /// The same address under its older name, which mediasoup-client before 3.7 reads.
    pub ip: IpAddr,
    /// `udp` or `tcp`.
    pub protocol: IceProtocol,
    /// The port.
    pub port: u16,
    /// `host`.
    pub r#type: IceCandidateType,
    /// `passive` on TCP candidates (mediasoup's `tcpType`); absent on UDP ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_type: Option<TcpType>,
}

impl IceCandidate {
    /// The host candidate for the `index`-th listening address (index 0 preferred: the engine
    /// lists UDP before TCP unless the transport prefers TCP).
    pub fn host(address: &ListenAddress, index: usize) -> Self {
        // RFC 8445 section 5.1.2.1: (2^24) * type preference (126 for host) + (2^8) * local
        // preference + (256 - component id); rtcp-mux means component 1 only.
        let local_preference = 65_535u32.saturating_sub(u32::try_from(index).unwrap_or(u32::MAX));
        let (foundation, tcp_type) = match address.protocol {
            IceProtocol::Udp => ("udpcandidate", None),
            IceProtocol::Tcp => ("tcpcandidate", Some(TcpType::Passive)),
        };
        IceCandidate {
            foundation: foundation.to_owned(),
            priority: (126 << 24) | (local_preference << 8) | 255,
            address: address.ip,
            ip: address.ip,
            protocol: address.protocol,
            port: address.port,
            r#type: IceCandidateType::Host,
            tcp_type,
        }
    }
}

/// A DTLS role. The client tells its own in `connect`; the worker takes the other one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DtlsRole {
    /// Either; the other side decides.
    #[default]
    Auto,
    /// Sends the ClientHello.
    Client,
    /// Waits for the ClientHello.
    Server,
}

impl DtlsRole {
    /// The role the worker takes when the client announces `remote` (mediasoup's
    /// `WebRtcTransport` connect): the opposite one, and client for `auto`, because the
    /// ICE-lite worker is ICE-controlled and mediasoup has the controlled side start DTLS.
    /// mediasoup-client always announces `client` or `server`, so `auto` only comes from other
    /// clients that expect mediasoup's answer.
    pub fn local_role_for(remote: DtlsRole) -> DtlsRole {
        match remote {
            DtlsRole::Client => DtlsRole::Server,
            DtlsRole::Server | DtlsRole::Auto => DtlsRole::Client,
        }
    }
}

/// A certificate fingerprint: `{"algorithm": "sha-256", "value": "AB:CD:..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DtlsFingerprint {
    /// The hash function, as in SDP `a=fingerprint` (`sha-256`, ...).
    pub algorithm: String,
    /// The digest as upper- or lowercase hex byte pairs separated by colons.
    pub value: String,
}

/// mediasoup's `DtlsParameters`: a role and the certificate fingerprints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DtlsParameters {
    /// The sender's role; `auto` when absent, as in mediasoup.
    #[serde(default)]
    pub role: DtlsRole,
    /// The sender's certificate fingerprints.
    pub fingerprints: Vec<DtlsFingerprint>,
}

/// Hash functions the media plane can check a peer certificate with, and their digest sizes:
/// the ones mediasoup accepts. Browsers send sha-256; aiortc (pymediasoup) sends only sha-512.
pub const SUPPORTED_FINGERPRINT_ALGORITHMS: [(&str, usize); 5] = [
    ("sha-1", 20),
    ("sha-224", 28),
    ("sha-256", 32),
    ("sha-384", 48),
    ("sha-512", 64),
];

impl DtlsParameters {
    /// Checks a client's DTLS parameters: at least one fingerprint, each with a supported
    /// algorithm (case-insensitive, as SDP) and a value of that algorithm's digest size in
    /// colon-separated hex. Returns them with lowercase algorithm names, so the media plane
    /// matches them exactly.
    pub fn validated(&self) -> Result<DtlsParameters, RoomError> {
        let invalid = |message: String| RoomError::InvalidDtlsParameters(message);
        if self.fingerprints.is_empty() {
            return Err(invalid(
                "fingerprints is empty; pass the dtlsParameters of the client transport's \
                 'connect' event unchanged"
                    .to_owned(),
            ));
        }
        let mut fingerprints = Vec::with_capacity(self.fingerprints.len());
        for (index, fingerprint) in self.fingerprints.iter().enumerate() {
            let algorithm = fingerprint.algorithm.to_ascii_lowercase();
            let Some((_, digest_len)) = SUPPORTED_FINGERPRINT_ALGORITHMS
                .iter()
                .find(|(name, _)| *name == algorithm)
            else {
                let supported: Vec<&str> = SUPPORTED_FINGERPRINT_ALGORITHMS
                    .iter()
                    .map(|(name, _)| *name)
                    .collect();
                return Err(invalid(format!(
                    "fingerprints[{index}].algorithm {:?} is not supported; use one of {}",
                    fingerprint.algorithm,
                    supported.join(", ")
                )));
            };
            if !is_hex_digest(&fingerprint.value, *digest_len) {
                return Err(invalid(format!(
                    "fingerprints[{index}].value is not a {algorithm} digest: expected \
                     {digest_len} hex byte pairs separated by colons, like \"AB:CD:...\""
                )));
            }
            fingerprints.push(DtlsFingerprint {
                algorithm,
                value: fingerprint.value.clone(),
            });
        }
        Ok(DtlsParameters {
            role: self.role,
            fingerprints,
        })
    }
}

fn is_hex_digest(value: &str, bytes: usize) -> bool {
    let pairs: Vec<&str> = value.split(':').collect();
    pairs.len() == bytes
        && pairs
            .iter()
            .all(|pair| pair.len() == 2 && pair.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// What creating a transport answers, exactly the object mediasoup-client's
/// `device.createSendTransport` / `createRecvTransport` takes (plus nothing else).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransportCreated {
    /// The transport id.
    pub id: TransportId,
    /// ICE-lite credentials.
    pub ice_parameters: IceParameters,
    /// Host candidates, most preferred first.
    pub ice_candidates: Vec<IceCandidate>,
    /// The worker's fingerprints with role `auto` (the client picks, then `connect` tells).
    pub dtls_parameters: DtlsParameters,
    /// The transport's SCTP port, streams and message size, when it was created with
    /// `sctpCapabilities` (for data producers and consumers); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sctp_parameters: Option<super::SctpParameters>,
}

/// The DTLS outcome of `connect`: the client's parameters and the role the worker takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DtlsConnection {
    /// The client's validated parameters; the media plane checks its certificate against
    /// these fingerprints.
    pub remote: DtlsParameters,
    /// The role the worker plays in the handshake.
    pub local_role: DtlsRole,
}

/// One transport of a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transport {
    /// Its id.
    pub id: TransportId,
    /// The peer that created it.
    pub peer_id: PeerId,
    /// Send (producers) or recv (consumers).
    pub direction: Direction,
    /// Current ICE credentials (they change on ICE restart).
    pub ice_parameters: IceParameters,
    /// Where the media plane listens for it.
    pub ice_candidates: Vec<IceCandidate>,
    /// The worker's own DTLS parameters (role `auto`).
    pub local_dtls: DtlsParameters,
    /// Set once by `connect`.
    pub dtls: Option<DtlsConnection>,
    /// The `mid` the next consumer on this transport gets (mediasoup's per-transport counter).
    pub(super) next_consumer_mid: u32,
    /// The RTCP CNAME of every producer on this transport (mediasoup's `cnameForProducers`):
    /// the first one a producer gave, so that a peer's audio and video keep one CNAME (which
    /// receivers sync them by) even when a simulcast producer's parameters have none.
    pub(super) producer_cname: Option<String>,
    /// Set when created with `sctpCapabilities`: data producers and consumers may use it.
    pub sctp: Option<super::SctpParameters>,
    /// Where the search for the next data consumer's stream id starts
    /// ([`next_sctp_stream_id`](super::next_sctp_stream_id)).
    pub(super) next_sctp_stream_id: u16,
    /// Creation order within the room.
    pub(super) seq: u64,
}

impl Transport {
    /// The answer mediasoup-client needs to build its transport.
    pub fn created(&self) -> TransportCreated {
        TransportCreated {
            id: self.id.clone(),
            ice_parameters: self.ice_parameters.clone(),
            ice_candidates: self.ice_candidates.clone(),
            dtls_parameters: self.local_dtls.clone(),
            sctp_parameters: self.sctp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256() -> String {
        (0..32)
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    fn params(role: DtlsRole, algorithm: &str, value: String) -> DtlsParameters {
        DtlsParameters {
            role,
            fingerprints: vec![DtlsFingerprint {
                algorithm: algorithm.to_owned(),
                value,
            }],
        }
    }

    #[test]
    fn the_worker_takes_the_opposite_role_and_client_for_auto() {
        assert_eq!(DtlsRole::local_role_for(DtlsRole::Client), DtlsRole::Server);
        assert_eq!(DtlsRole::local_role_for(DtlsRole::Server), DtlsRole::Client);
        assert_eq!(DtlsRole::local_role_for(DtlsRole::Auto), DtlsRole::Client);
    }

    #[test]
    fn an_uppercase_sha256_fingerprint_is_accepted_and_normalised() {
        let checked = params(DtlsRole::Client, "SHA-256", sha256())
            .validated()
            .expect("valid");
        assert_eq!(checked.fingerprints[0].algorithm, "sha-256");
    }

    #[test]
    fn an_unsupported_algorithm_is_refused_with_the_supported_list() {
        let error = params(DtlsRole::Client, "md5", sha256())
            .validated()
            .expect_err("md5");
        assert_eq!(error.code(), "INVALID_DTLS_PARAMETERS");
        assert!(
            error
                .to_string()
                .contains("sha-1, sha-224, sha-256, sha-384, sha-512"),
            "{error}"
        );
    }

    #[test]
    fn a_digest_of_the_wrong_length_is_refused() {
        let short = sha256()[3..].to_owned();
        let error = params(DtlsRole::Client, "sha-256", short)
            .validated()
            .expect_err("31 bytes");
        assert!(error.to_string().contains("32 hex byte pairs"), "{error}");
        assert!(
            params(DtlsRole::Client, "sha-256", sha256().replace('0', "G"))
                .validated()
                .is_err()
        );
    }

    #[test]
    fn no_fingerprint_is_refused() {
        let error = DtlsParameters {
            role: DtlsRole::Client,
            fingerprints: Vec::new(),
        }
        .validated()
        .expect_err("empty");
        assert_eq!(error.code(), "INVALID_DTLS_PARAMETERS");
    }

    #[test]
    fn an_unknown_role_does_not_deserialise_and_a_missing_one_is_auto() {
        let fingerprints = serde_json::json!([{"algorithm": "sha-256", "value": sha256()}]);
        let bad = serde_json::from_value::<DtlsParameters>(
            serde_json::json!({"role": "leader", "fingerprints": fingerprints}),
        );
        assert!(bad.is_err());
        let missing: DtlsParameters =
            serde_json::from_value(serde_json::json!({"fingerprints": fingerprints}))
                .expect("role is optional");
        assert_eq!(missing.role, DtlsRole::Auto);
    }

    #[test]
    fn host_candidates_prefer_earlier_addresses() {
        let address = ListenAddress {
            ip: "203.0.113.7".parse().expect("ip"),
            port: 40000,
            protocol: IceProtocol::Udp,
        };
        let first = IceCandidate::host(&address, 0);
        let second = IceCandidate::host(&address, 1);
        assert!(first.priority > second.priority);
        assert_eq!(first.priority, 2_130_706_431);
    }

    #[test]
    fn protocols_come_from_the_request_then_the_worker_defaults_and_bad_combinations_are_refused() {
        use IceProtocol::{Tcp, Udp};
        let ask = |json: serde_json::Value| serde_json::from_value::<TransportProtocols>(json).expect("options");
        let defaults = ProtocolDefaults::default();
        let resolve = |json, tcp_available| ask(json).resolve(defaults, tcp_available);
        assert_eq!(resolve(serde_json::json!({}), true), Ok(vec![Udp, Tcp]), "both, UDP first");
        assert_eq!(resolve(serde_json::json!({}), false), Ok(vec![Udp]), "no listener: UDP only");
        assert_eq!(resolve(serde_json::json!({"preferTcp": true}), true), Ok(vec![Tcp, Udp]));
        assert_eq!(resolve(serde_json::json!({"enableUdp": false}), true), Ok(vec![Tcp]));
        assert_eq!(resolve(serde_json::json!({"enableTcp": false, "preferTcp": true}), true), Ok(vec![Udp]));
        let tcp_first = ProtocolDefaults { prefer_tcp: true, ..defaults };
        assert_eq!(ask(serde_json::json!({})).resolve(tcp_first, true), Ok(vec![Tcp, Udp]), "the worker's --prefer-tcp");
        assert_eq!(ask(serde_json::json!({"preferUdp": true})).resolve(tcp_first, true), Ok(vec![Udp, Tcp]), "the request wins");
        let udp_off = ProtocolDefaults { enable_udp: false, ..defaults };
        assert_eq!(ask(serde_json::json!({})).resolve(udp_off, true), Ok(vec![Tcp]));
        assert_eq!(ask(serde_json::json!({})).resolve(udp_off, false), Err(ProtocolError::NoProtocol));
        for (json, tcp_available, error, code) in [
            (serde_json::json!({"enableUdp": false, "enableTcp": false}), true, ProtocolError::NoProtocol, "NO_TRANSPORT_PROTOCOL"),
            (serde_json::json!({"preferUdp": true, "preferTcp": true}), true, ProtocolError::BothPreferred, "CONFLICTING_PROTOCOL_PREFERENCE"),
            (serde_json::json!({"enableTcp": true}), false, ProtocolError::TcpUnavailable, "TCP_UNAVAILABLE"),
        ] {
            assert_eq!(resolve(json.clone(), tcp_available), Err(error), "{json}");
            assert_eq!(error.code(), code);
        }
        assert!(serde_json::from_value::<TransportProtocols>(serde_json::json!({"enableTcp": "yes"})).is_err());
    }

    #[test]
    fn a_tcp_candidate_is_passive_in_mediasoups_shape_and_a_udp_one_has_no_tcp_type() {
        let ip = "203.0.113.7".parse().expect("ip");
        let udp = IceCandidate::host(&ListenAddress { ip, port: 40000, protocol: IceProtocol::Udp }, 0);
        let tcp = IceCandidate::host(&ListenAddress { ip, port: 50000, protocol: IceProtocol::Tcp }, 1);
        assert!(udp.priority > tcp.priority);
        assert_eq!(
            serde_json::to_value(&tcp).expect("json"),
            serde_json::json!({
                "foundation": "tcpcandidate", "priority": tcp.priority, "address": "203.0.113.7",
                "ip": "203.0.113.7", "protocol": "tcp", "port": 50000, "type": "host", "tcpType": "passive",
            })
        );
        assert!(serde_json::to_value(&udp).expect("json").get("tcpType").is_none());
    }
}
