//! Test support for code that drives a worker without a media plane: a [`FakeEngine`] that
//! records what it is asked, and the parameters Chrome's mediasoup-client really sends.
//!
//! Signalling's tests can run a real REST server on a [`ControlPlane`](super::ControlPlane)
//! with this engine: everything but packets behaves as in production.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;
use std::sync::{Mutex, PoisonError};


use crate::engine::{EngineError, MediaEngine};
use crate::room::{
    DtlsFingerprint, DtlsParameters, DtlsRole, ForwardingTable, IceProtocol, ListenAddress, RoomId,
    TransportId, TransportNetwork,
};

/// One call the control plane made on the [`FakeEngine`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineCall {
    /// `open_transport`, and the port it got.
    OpenTransport {
        room: RoomId,
        transport: TransportId,
        port: u16,
    },
    /// `connect_transport`, with the role the worker was told to take.
    ConnectTransport {
        room: RoomId,
        transport: TransportId,
        local_role: DtlsRole,
    },
    /// `restart_ice`.
    RestartIce {
        room: RoomId,
        transport: TransportId,
    },
    /// `close_transport`.
    CloseTransport {
        room: RoomId,
        transport: TransportId,
    },
    /// `update_routes`, with the table.
    UpdateRoutes {
        room: RoomId,
        table: ForwardingTable,
    },
    /// `close_room`.
    CloseRoom { room: RoomId },
}

#[derive(Debug, Default)]
struct FakeState {
    /// Open transports: their room and port.
    open: BTreeMap<TransportId, (RoomId, u16)>,
    calls: Vec<EngineCall>,
    ice_restarts: u32,
}

/// A media engine without sockets: hands out ports from a small range (so that running out is
/// easy to provoke), ICE credentials derived from the transport id, one fixed certificate
/// fingerprint, and records every call.
#[derive(Debug)]
pub struct FakeEngine {
    ports: RangeInclusive<u16>,
    ip: IpAddr,
    state: Mutex<FakeState>,
}

impl FakeEngine {
    /// An engine announcing 127.0.0.1 with the UDP ports `ports`.
    pub fn new(ports: RangeInclusive<u16>) -> Self {
        FakeEngine {
            ports,
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            state: Mutex::new(FakeState::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every call so far, oldest first.
    pub fn calls(&self) -> Vec<EngineCall> {
        self.state().calls.clone()
    }

    /// The last table `update_routes` got for `room`.
    pub fn last_routes(&self, room: &RoomId) -> Option<ForwardingTable> {
        self.state().calls.iter().rev().find_map(|call| match call {
            EngineCall::UpdateRoutes { room: r, table } if r == room => Some(table.clone()),
            _ => None,
        })
    }

    /// The transports open right now and their ports.
    pub fn open_transports(&self) -> BTreeMap<TransportId, u16> {
        self.state()
            .open
            .iter()
            .map(|(id, (_, port))| (id.clone(), *port))
            .collect()
    }

    /// The fingerprint of the fake certificate.
    pub fn fingerprint() -> DtlsFingerprint {
        DtlsFingerprint {
            algorithm: "sha-256".to_owned(),
            value: (0..32u8)
                .map(|byte| format!("{:02X}", byte.wrapping_mul(11)))
                .collect::<Vec<_>>()
                .join(":"),
        }
    }
}

impl MediaEngine for FakeEngine {
    fn open_transport(
        &self,
        room: &RoomId,
        transport: &TransportId,
        _protocols: &crate::room::TransportProtocols,
    ) -> Result<TransportNetwork, EngineError> {
        let mut state = self.state();
        let port = self
            .ports
            .clone()
            .find(|port| state.open.values().all(|(_, used)| used != port))
            .ok_or(EngineError::PortsExhausted {
                min: *self.ports.start(),
                max: *self.ports.end(),
            })?;
        state.open.insert(transport.clone(), (room.clone(), port));
        state.calls.push(EngineCall::OpenTransport {
            room: room.clone(),
            transport: transport.clone(),
            port,
        });
        Ok(TransportNetwork {
            ice_username_fragment: format!("ufrag-{transport}"),
            ice_password: format!("password-{transport}"),
            addresses: vec![ListenAddress {
                ip: self.ip,
                port,
                protocol: IceProtocol::Udp,
            }],
            fingerprints: vec![FakeEngine::fingerprint()],
        })
    }

    fn connect_transport(
        &self,
        room: &RoomId,
        transport: &TransportId,
        _remote: &DtlsParameters,
        local_role: DtlsRole,
    ) -> Result<(), EngineError> {
        let mut state = self.state();
        if !state.open.contains_key(transport) {
            return Err(EngineError::UnknownTransport(transport.to_string()));
        }
        state.calls.push(EngineCall::ConnectTransport {
            room: room.clone(),
            transport: transport.clone(),
            local_role,
        });
        Ok(())
    }

    fn restart_ice(
        &self,
        room: &RoomId,
        transport: &TransportId,
    ) -> Result<(String, String), EngineError> {
        let mut state = self.state();
        if !state.open.contains_key(transport) {
            return Err(EngineError::UnknownTransport(transport.to_string()));
        }
        state.ice_restarts += 1;
        let n = state.ice_restarts;
        state.calls.push(EngineCall::RestartIce {
            room: room.clone(),
            transport: transport.clone(),
        });
        Ok((
            format!("ufrag-{transport}-r{n}"),
            format!("password-{transport}-r{n}"),
        ))
    }

    fn close_transport(&self, room: &RoomId, transport: &TransportId) {
        let mut state = self.state();
        state.open.remove(transport);
        state.calls.push(EngineCall::CloseTransport {
            room: room.clone(),
            transport: transport.clone(),
        });
    }

    fn update_routes(&self, room: &RoomId, table: ForwardingTable) {
        self.state().calls.push(EngineCall::UpdateRoutes {
            room: room.clone(),
            table,
        });
    }

    fn close_room(&self, room: &RoomId) {
        let mut state = self.state();
        state.open.retain(|_, (owner, _)| owner != room);
        state
            .calls
            .push(EngineCall::CloseRoom { room: room.clone() });
    }
}

pub use crate::testing::{
    chrome_device_capabilities, chrome_dtls_parameters, chrome_opus_parameters, chrome_vp8_parameters,
};
