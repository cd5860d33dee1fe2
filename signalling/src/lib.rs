//! Fanout's Socket.IO signalling server: the public front door (docs/architecture.md, docs/protocol.md).
//!
//! Browsers connect with a JWT ([`auth`]), join rooms and negotiate WebRTC transports over
//! Socket.IO ([`events`], [`handlers`]); signalling finds each room's worker ([`placement`]) and
//! proxies the media calls to it ([`worker`]), and follows the room's events on the worker to
//! notify participants ([`followers`]). [`server::app`] puts it together as an axum router.
//!
//! Every request event is answered twice, as the seed's clients and mediasoup-client apps
//! expect: through the acknowledgement when the client asked for one, and with the named
//! response event. Refusals carry a stable code ([`error::SignallingError::code`]).

pub mod auth;
pub mod chat;
pub mod embedded;
pub mod kube_placement;
pub mod error;
pub mod events;
pub mod expiry;
pub mod followers;
pub mod http;
pub mod ice_servers;
pub mod ids;
mod handlers;
pub mod metrics;
pub mod placement;
pub mod replicas;
pub mod server;
pub mod session;
pub mod worker;
pub mod worker_pool;

pub use error::{Result, SignallingError};
#[doc(hidden)]
pub use handlers::read_request;
#[doc(hidden)]
pub use server::admit_payload;
pub use server::{Limits, Signalling, app, app_replicated, app_with};
