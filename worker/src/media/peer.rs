//! A minimal WebRTC client for tests and load programs: it reaches a worker transport the way
//! a browser under mediasoup-client does (ICE checks with USE-CANDIDATE, DTLS as client, SRTP),
//! over a real UDP socket, or over ICE-TCP as a browser's `tcptype active` candidate does
//! (a connection to the worker's TCP port, RFC 4571 frames).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::media::ice_tcp::{frame, FrameDecoder};

use crate::media::dtls::{DtlsEvent, DtlsIdentity, DtlsSession, FingerprintAlgorithm, SrtpSession};
use crate::media::ice::binding_request;
use crate::room::{DtlsParameters, DtlsRole, IceParameters, IceProtocol, ListenAddress, TransportCreated, TransportNetwork};

/// Why the peer could not connect.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("DTLS: {0}")]
    Dtls(String),
    #[error("no answer from the worker within {0:?}")]
    Timeout(Duration),
    #[error("the transport offered no candidate")]
    NoCandidate,
}

/// How the peer reaches the worker.
enum Link {
    Udp(UdpSocket),
    Tcp { stream: TcpStream, decoder: FrameDecoder },
}

impl Link {
    async fn send(&mut self, data: &[u8], to: SocketAddr) -> std::io::Result<()> {
        match self {
            Link::Udp(socket) => socket.send_to(data, to).await.map(drop),
            Link::Tcp { stream, .. } => stream.write_all(&frame(data)).await,
        }
    }

    /// One datagram, or one frame. Cancel-safe: a frame read in part stays in the decoder.
    async fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Link::Udp(socket) => socket.recv_from(buf).await.map(|(n, _)| n),
            Link::Tcp { stream, decoder } => loop {
                let next = decoder.next_frame().map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
                if let Some(frame) = next {
                    let n = frame.len().min(buf.len());
                    buf[..n].copy_from_slice(&frame[..n]);
                    return Ok(n);
                }
                let mut chunk = [0u8; 4096];
                match stream.read(&mut chunk).await? {
                    0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                    n => decoder.extend(&chunk[..n]),
                }
            },
        }
    }
}

/// One transport's worth of a browser.
pub struct TestPeer {
    socket: Link,
    identity: DtlsIdentity,
    remote: SocketAddr,
    ice_ufrag: String,
    ice_password: String,
    remote_fingerprints: DtlsParameters,
    srtp: Option<SrtpSession>,
    buf: Vec<u8>,
}

impl TestPeer {
    /// A peer for a transport the worker created (`iceParameters`, `iceCandidates`,
    /// `dtlsParameters` as the REST API returns them).
    pub async fn new(network: &TransportNetwork) -> Result<TestPeer, PeerError> {
        TestPeer::over(network, IceProtocol::Udp).await
    }

    /// A peer that uses only the transport's candidate of `protocol` (over TCP: it connects
    /// now, and the worker waits for its first check from the moment it accepts).
    pub async fn over(network: &TransportNetwork, protocol: IceProtocol) -> Result<TestPeer, PeerError> {
        let address = network.addresses.iter().find(|a| a.protocol == protocol).ok_or(PeerError::NoCandidate)?;
        let remote = SocketAddr::new(address.ip, address.port);
        let bind = if remote.is_ipv4() { "127.0.0.1:0" } else { "[::1]:0" };
        let socket = match protocol {
            IceProtocol::Udp => Link::Udp(UdpSocket::bind(bind).await?),
            IceProtocol::Tcp => {
                let stream = TcpStream::connect(remote).await?;
                stream.set_nodelay(true)?;
                Link::Tcp { stream, decoder: FrameDecoder::default() }
            }
        };
        TestPeer::on(network, remote, socket)
    }

    /// [`TestPeer::new`] on a UDP socket the caller bound (another address, another network
    /// namespace).
    pub fn with_socket(network: &TransportNetwork, socket: UdpSocket) -> Result<TestPeer, PeerError> {
        let address = network.addresses.iter().find(|a| a.protocol == IceProtocol::Udp).ok_or(PeerError::NoCandidate)?;
        TestPeer::on(network, SocketAddr::new(address.ip, address.port), Link::Udp(socket))
    }

    fn on(network: &TransportNetwork, remote: SocketAddr, socket: Link) -> Result<TestPeer, PeerError> {
        let provider = rtc::crypto::default_provider().map_err(|e| PeerError::Dtls(e.to_string()))?;
        let identity = DtlsIdentity::generate(provider).map_err(|e| PeerError::Dtls(e.to_string()))?;
        Ok(TestPeer {
            socket,
            identity,
            remote,
            ice_ufrag: network.ice_username_fragment.clone(),
            ice_password: network.ice_password.clone(),
            remote_fingerprints: DtlsParameters { role: DtlsRole::Auto, fingerprints: network.fingerprints.clone() },
            srtp: None,
            buf: vec![0; 2048],
        })
    }

    /// A peer for a transport as `POST .../transports` answered it (what mediasoup-client gets).
    pub async fn for_transport(created: &TransportCreated) -> Result<TestPeer, PeerError> {
        TestPeer::for_transport_over(created, IceProtocol::Udp).await
    }

    /// [`TestPeer::for_transport`] over the candidate of `protocol`.
    pub async fn for_transport_over(created: &TransportCreated, protocol: IceProtocol) -> Result<TestPeer, PeerError> {
        TestPeer::over(&Self::network_of(created), protocol).await
    }

    /// The network half of a created transport, for [`TestPeer::with_socket`].
    pub fn network_of(created: &TransportCreated) -> TransportNetwork {
        TransportNetwork {
            ice_username_fragment: created.ice_parameters.username_fragment.clone(),
            ice_password: created.ice_parameters.password.clone(),
            addresses: created
                .ice_candidates
                .iter()
                .map(|c| ListenAddress { ip: c.address, port: c.port, protocol: c.protocol })
                .collect(),
            fingerprints: created.dtls_parameters.fingerprints.clone(),
        }
    }

    /// What the peer sends in `connect-transport` (it takes the DTLS client role).
    pub fn dtls_parameters(&self) -> DtlsParameters {
        DtlsParameters { role: DtlsRole::Client, fingerprints: self.identity.fingerprints() }
    }

    /// `connect-transport` parameters with the certificate's fingerprint in another hash only
    /// (aiortc, under pymediasoup, signals only sha-512).
    pub fn dtls_parameters_with(&self, algorithm: FingerprintAlgorithm) -> DtlsParameters {
        DtlsParameters { role: DtlsRole::Client, fingerprints: vec![self.identity.fingerprint_with(algorithm)] }
    }

    /// After an ICE restart on the worker.
    pub fn set_ice(&mut self, ice: &IceParameters) {
        self.ice_ufrag = ice.username_fragment.clone();
        self.ice_password = ice.password.clone();
    }

    /// Sends ICE checks until answered, then runs the DTLS handshake as client. Call it after
    /// the worker accepted this peer's `connect-transport`.
    pub async fn connect(&mut self, timeout: Duration) -> Result<(), PeerError> {
        let deadline = Instant::now() + timeout;
        let provider = self.identity.provider().clone();
        // ICE: check until the worker answers.
        loop {
            let check = binding_request(&self.ice_ufrag, "testpeer", &self.ice_password, true, provider.crypto());
            self.socket.send(&check, self.remote).await?;
            match tokio::time::timeout(Duration::from_millis(200), self.socket.recv(&mut self.buf)).await {
                Ok(Ok(n)) if n > 0 && self.buf[0] < 4 => break,
                _ if Instant::now() > deadline => return Err(PeerError::Timeout(timeout)),
                _ => {}
            }
        }
        // DTLS as client.
        let mut dtls = DtlsSession::new(&self.identity, &self.remote_fingerprints, DtlsRole::Client, Instant::now())
            .map_err(|e| PeerError::Dtls(e.to_string()))?;
        loop {
            while let Some(data) = dtls.poll_transmit() {
                self.socket.send(&data, self.remote).await?;
            }
            if self.srtp.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(PeerError::Timeout(timeout));
            }
            match tokio::time::timeout(Duration::from_millis(100), self.socket.recv(&mut self.buf)).await {
                Ok(Ok(n)) if (20..=63).contains(&self.buf[0]) => {
                    for event in dtls.handle_datagram(&self.buf[..n], Instant::now()).map_err(|e| PeerError::Dtls(e.to_string()))? {
                        if let DtlsEvent::Connected(srtp) = event {
                            self.srtp = Some(*srtp);
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    let now = Instant::now();
                    if dtls.poll_timeout().is_some_and(|at| at <= now) {
                        dtls.handle_timeout(now).map_err(|e| PeerError::Dtls(e.to_string()))?;
                    }
                }
            }
        }
    }

    pub fn is_connected(&self) -> bool {
        self.srtp.is_some()
    }

    /// Encrypts and sends an RTP packet.
    pub async fn send_rtp(&mut self, packet: &[u8]) -> Result<(), PeerError> {
        self.send(packet, false).await
    }

    /// Encrypts and sends an RTCP compound packet.
    pub async fn send_rtcp(&mut self, packet: &[u8]) -> Result<(), PeerError> {
        self.send(packet, true).await
    }

    async fn send(&mut self, packet: &[u8], rtcp: bool) -> Result<(), PeerError> {
        let srtp = self.srtp.as_mut().ok_or_else(|| PeerError::Dtls("not connected".into()))?;
        let sealed = if rtcp { srtp.outbound.encrypt_rtcp(packet) } else { srtp.outbound.encrypt_rtp(packet) }
            .map_err(|e| PeerError::Dtls(e.to_string()))?;
        self.socket.send(&sealed, self.remote).await?;
        Ok(())
    }

    /// The next decrypted RTP (`Ok(Some((false, packet)))`) or RTCP (`Ok(Some((true, packet)))`)
    /// packet, or `None` when nothing arrives within `wait`. STUN and DTLS are skipped.
    pub async fn recv(&mut self, wait: Duration) -> Result<Option<(bool, Vec<u8>)>, PeerError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let received = match tokio::time::timeout_at(deadline, self.socket.recv(&mut self.buf)).await {
                Ok(r) => r?,
                Err(_) => return Ok(None),
            };
            let data = &self.buf[..received];
            if !(128..=191).contains(&data[0]) {
                continue;
            }
            let Some(srtp) = self.srtp.as_mut() else { continue };
            let rtcp = data.get(1).is_some_and(|pt| (192..=223).contains(pt));
            let opened = if rtcp { srtp.inbound.decrypt_rtcp(data) } else { srtp.inbound.decrypt_rtp(data) };
            if let Ok(plain) = opened {
                return Ok(Some((rtcp, plain.to_vec())));
            }
        }
    }

    /// The next decrypted RTP packet within `wait` (RTCP is skipped).
    pub async fn recv_rtp(&mut self, wait: Duration) -> Result<Option<Vec<u8>>, PeerError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv(left).await? {
                Some((false, packet)) => return Ok(Some(packet)),
                Some((true, _)) => continue,
                None => return Ok(None),
            }
        }
    }
}
