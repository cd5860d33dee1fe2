//! Several signalling replicas behind one address, sharing one Redis (`--redis-url`).
//!
//! Most of what a participant sees needs no replica to talk to another: each replica follows
//! the room's events on the worker for its own sockets ([`crate::followers`]), and participant
//! lists come from the worker. Two things do cross replicas:
//!
//! - **A packet for a socket on another replica**: the seed's peer-to-peer relay
//!   (`webrtc-offer`, `webrtc-answer`, `ice-candidate`) names its target by participant id,
//!   and the target may be connected anywhere. socketioxide's Redis adapter
//!   (`socketioxide-redis`, over Redis pub/sub) finds it: every participant's socket is in a
//!   Socket.IO room of its own ([`peer_channel`]), and a relay whose target is not local asks
//!   the other replicas for that room's socket.
//! - **Who owns a worker peer**: a replica that dies without leaving its rooms (SIGKILL, a
//!   lost node) would leave its participants on the workers as ghosts that others keep seeing
//!   and subscribing to. Each replica holds a lease in Redis and lists its peers under it
//!   ([`Ownership`]); when a lease runs out, another replica removes the dead one's peers from
//!   their workers, whose `peerLeft` events then reach everybody. A ghost stays at most
//!   [`Lease::removal_bound`].
//!
//! Without `--redis-url` the same adapter runs on [`Bus::Alone`], which delivers nothing
//! anywhere else: one process, one type of socket, no Redis.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use fanout_worker::room::PeerId;
use serde::{Deserialize, Serialize};
use socketioxide::adapter::Emitter;
use socketioxide_redis::drivers::redis::{RedisDriver, RedisError, redis_client as redis};
use socketioxide_redis::drivers::{ChanItem, Driver, MessageStream};
use socketioxide_redis::{CustomRedisAdapter, RedisAdapterConfig, RedisAdapterCtr};

use crate::worker::MediaBackend;

/// The Socket.IO adapter every namespace uses: socketioxide's Redis adapter over a [`Bus`].
pub type Adapter = CustomRedisAdapter<Emitter, Bus>;
/// socketioxide's `SocketIo` with Fanout's [`Adapter`].
pub type SocketIo = socketioxide::SocketIo<Adapter>;
/// socketioxide's `SocketRef` with Fanout's [`Adapter`].
pub type SocketRef = socketioxide::extract::SocketRef<Adapter>;

/// The Socket.IO room of one participant of one room: the relay's way to find its socket on
/// whichever replica holds it. Joined with the room, left with it.
pub fn peer_channel(room: &str, peer: &PeerId) -> String {
    format!("peer:{room}:{peer}")
}

/// How replicas reach each other: Redis pub/sub, or nobody.
#[derive(Clone)]
pub enum Bus {
    /// The only replica: publishing reaches nobody, and no other server answers.
    Alone,
    /// socketioxide-redis's driver for the `redis` crate.
    Redis(RedisDriver),
}

impl Driver for Bus {
    type Error = RedisError;

    async fn publish(&self, chan: String, val: Vec<u8>) -> Result<(), Self::Error> {
        match self {
            Bus::Alone => Ok(()),
            Bus::Redis(driver) => driver.publish(chan, val).await,
        }
    }

    async fn subscribe(&self, chan: String, size: usize) -> Result<MessageStream<ChanItem>, Self::Error> {
        match self {
            Bus::Alone => Ok(MessageStream::new_empty()),
            Bus::Redis(driver) => driver.subscribe(chan, size).await,
        }
    }

    async fn unsubscribe(&self, chan: String) -> Result<(), Self::Error> {
        match self {
            Bus::Alone => Ok(()),
            Bus::Redis(driver) => driver.unsubscribe(chan).await,
        }
    }

    async fn num_serv(&self, chan: &str) -> Result<u16, Self::Error> {
        match self {
            // Itself: requests that wait for other servers' answers end at once.
            Bus::Alone => Ok(1),
            Bus::Redis(driver) => driver.num_serv(chan).await,
        }
    }
}

/// How long a replica's lease lasts without renewal, and what follows from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub ttl: Duration,
}

impl Lease {
    /// Renewed three times per lifetime, so that two lost renewals in a row do not end it.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// Other replicas look for expired leases as often as the lease is renewed.
    pub fn sweep_every(&self) -> Duration {
        self.ttl / 3
    }

    /// The longest a dead replica's peers stay on their workers: its lease's life after the
    /// last renewal, then up to one sweep.
    pub fn removal_bound(&self) -> Duration {
        self.ttl + self.sweep_every()
    }
}

/// A peer as its owner lists it in Redis: enough for another replica to remove it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedPeer {
    pub room: String,
    pub endpoint: String,
}

/// Of the replicas listed in Redis, the ones whose peers must be removed: every one but this
/// one whose lease is gone. `alive[i]` says whether `listed[i]` still has its lease.
pub fn orphaned<'a>(me: &str, listed: &'a [String], alive: &[bool]) -> Vec<&'a str> {
    listed
        .iter()
        .zip(alive)
        .filter(|(id, alive)| id.as_str() != me && !**alive)
        .map(|(id, _)| id.as_str())
        .collect()
}

/// Entries of this replica's peer list that no longer name a local participant (the worker
/// removed them, or a cleanup was lost): `listed` was read before `local` was taken, so a peer
/// that joined in between is in `local` and is kept.
pub fn stale<'a>(listed: &'a [String], local: &HashSet<String>) -> Vec<&'a str> {
    listed.iter().filter(|peer| !local.contains(peer.as_str())).map(String::as_str).collect()
}

/// This replica's lease and peer list in Redis, and the sweep that removes dead replicas'
/// peers. Keys (all under `fanout:`): `replicas` (a set of replica ids), `replica:{id}:lease`
/// (expires unless renewed), `replica:{id}:peers` (peer id to [`OwnedPeer`] JSON) and
/// `replica:{id}:sweeper` (who is removing a dead replica's peers).
#[derive(Clone)]
pub struct Ownership {
    id: String,
    lease: Lease,
    redis: redis::aio::MultiplexedConnection,
}

fn replica_key(id: &str, what: &str) -> String {
    format!("fanout:replica:{id}:{what}")
}
const REPLICAS_KEY: &str = "fanout:replicas";

/// How long a replica may take removing a dead replica's peers before another one tries.
const SWEEP_CLAIM: Duration = Duration::from_secs(60);

impl Ownership {
    /// This replica's id (random per process: a restarted replica is a new one, and the old
    /// one's peers are removed like any dead replica's).
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn lease(&self) -> Lease {
        self.lease
    }

    /// Lists `peer` as this replica's. A peer that could not be listed is still served (a
    /// Redis outage must not stop calls); it is only not removed if this replica then dies.
    pub async fn record(&self, peer: &PeerId, owned: &OwnedPeer) {
        let value = serde_json::to_string(owned).unwrap_or_default();
        let result: redis::RedisResult<()> = redis::cmd("HSET")
            .arg(replica_key(&self.id, "peers"))
            .arg(peer.as_str())
            .arg(value)
            .query_async(&mut self.redis.clone())
            .await;
        if let Err(error) = result {
            tracing::warn!(%peer, %error, "could not list a peer under this replica's lease in Redis");
        }
    }

    /// Takes `peer` off this replica's list (it left).
    pub async fn forget(&self, peer: &PeerId) {
        let result: redis::RedisResult<()> = redis::cmd("HDEL")
            .arg(replica_key(&self.id, "peers"))
            .arg(peer.as_str())
            .query_async(&mut self.redis.clone())
            .await;
        if let Err(error) = result {
            tracing::debug!(%peer, %error, "could not take a peer off this replica's list");
        }
    }

    async fn renew(&self) -> redis::RedisResult<()> {
        let ttl_ms = u64::try_from(self.lease.ttl.as_millis()).unwrap_or(u64::MAX);
        redis::pipe()
            .cmd("SET").arg(replica_key(&self.id, "lease")).arg(1).arg("PX").arg(ttl_ms).ignore()
            .cmd("SADD").arg(REPLICAS_KEY).arg(&self.id).ignore()
            .query_async(&mut self.redis.clone())
            .await
    }

    /// Ends this replica's lease at shutdown: the next sweep of another replica removes
    /// whatever peers it still lists, without waiting for the lease to run out.
    pub async fn release(&self) {
        let _: redis::RedisResult<()> = redis::cmd("DEL")
            .arg(replica_key(&self.id, "lease"))
            .query_async(&mut self.redis.clone())
            .await;
    }

    /// Removes the peers of every replica whose lease has run out; returns how many it removed.
    pub async fn sweep(&self, backend: &dyn MediaBackend) -> redis::RedisResult<usize> {
        let mut redis = self.redis.clone();
        let listed: Vec<String> = redis::cmd("SMEMBERS").arg(REPLICAS_KEY).query_async(&mut redis).await?;
        let mut check = redis::pipe();
        for id in &listed {
            check.cmd("EXISTS").arg(replica_key(id, "lease"));
        }
        let alive: Vec<bool> = if listed.is_empty() { Vec::new() } else { check.query_async(&mut redis).await? };
        let mut removed = 0;
        for dead in orphaned(&self.id, &listed, &alive) {
            let claim_ms = u64::try_from(SWEEP_CLAIM.as_millis()).unwrap_or(u64::MAX);
            let claimed: Option<String> = redis::cmd("SET")
                .arg(replica_key(dead, "sweeper"))
                .arg(&self.id)
                .arg("NX")
                .arg("PX")
                .arg(claim_ms)
                .query_async(&mut redis)
                .await?;
            if claimed.is_none() {
                continue; // another replica is on it
            }
            let peers: HashMap<String, String> =
                redis::cmd("HGETALL").arg(replica_key(dead, "peers")).query_async(&mut redis).await?;
            for (peer, owned) in &peers {
                let Ok(owned) = serde_json::from_str::<OwnedPeer>(owned) else { continue };
                let peer = PeerId(peer.clone());
                match backend.leave(&owned.endpoint, &owned.room, &peer).await {
                    Ok(()) => removed += 1,
                    // Gone already (it left, or its room closed): nothing to do.
                    Err(error) => tracing::debug!(%peer, room = owned.room, %error, "removing a dead replica's peer"),
                }
            }
            tracing::info!(replica = dead, peers = peers.len(), "removed the peers of a signalling replica whose lease ran out");
            redis::pipe()
                .cmd("DEL").arg(replica_key(dead, "peers")).arg(replica_key(dead, "sweeper")).ignore()
                .cmd("SREM").arg(REPLICAS_KEY).arg(dead).ignore()
                .query_async::<()>(&mut redis)
                .await?;
        }
        Ok(removed)
    }

    /// Takes entries off this replica's list whose participants are no longer here, `local`
    /// giving the peer ids of local participants when called.
    async fn prune(&self, local: impl FnOnce() -> HashSet<String>) -> redis::RedisResult<()> {
        let mut redis = self.redis.clone();
        let listed: Vec<String> = redis::cmd("HKEYS").arg(replica_key(&self.id, "peers")).query_async(&mut redis).await?;
        let local = local();
        let stale = stale(&listed, &local);
        if !stale.is_empty() {
            redis::cmd("HDEL").arg(replica_key(&self.id, "peers")).arg(&stale).query_async::<()>(&mut redis).await?;
        }
        Ok(())
    }

    /// Renews the lease, sweeps dead replicas and prunes this replica's list, forever.
    pub async fn run(
        self,
        backend: Arc<dyn MediaBackend>,
        local_peers: impl Fn() -> HashSet<String> + Send + Sync + 'static,
    ) {
        let mut renewal = tokio::time::interval(self.lease.renew_every());
        renewal.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            renewal.tick().await;
            if let Err(error) = self.renew().await {
                tracing::warn!(%error, "could not renew this replica's lease in Redis");
                continue;
            }
            if let Err(error) = self.sweep(backend.as_ref()).await {
                tracing::warn!(%error, "could not look for dead signalling replicas in Redis");
            }
            if let Err(error) = self.prune(&local_peers).await {
                tracing::debug!(%error, "could not prune this replica's peer list");
            }
        }
    }
}

/// What [`crate::app_with`] builds Socket.IO with: the adapter's bus and, with Redis, this
/// replica's [`Ownership`].
#[derive(Clone)]
pub struct Replicas {
    pub(crate) adapter: Bus,
    pub(crate) ownership: Option<Ownership>,
}

impl Default for Replicas {
    fn default() -> Self {
        Replicas::alone()
    }
}

impl Replicas {
    /// The only replica.
    pub fn alone() -> Self {
        Replicas { adapter: Bus::Alone, ownership: None }
    }

    /// One of several replicas sharing the Redis at `url` (`redis://host:port/`; RESP3 is
    /// asked for, since pub/sub messages arrive as pushes on the shared connection). Fails when
    /// Redis cannot be reached, so that a misconfigured replica stops at start.
    pub async fn connect(url: &str, lease: Lease) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let url = with_resp3(url)?;
        let client = redis::Client::open(url.as_str()).context("reading the Redis URL")?;
        let unreachable = || format!("connecting to Redis at {}", redacted(&url));
        let driver = RedisDriver::new(&client).await.with_context(unreachable)?;
        let redis = client.get_multiplexed_async_connection().await.with_context(unreachable)?;
        let id = crate::embedded::random_secret().chars().take(16).collect();
        let ownership = Ownership { id, lease, redis };
        ownership.renew().await.context("taking this replica's lease in Redis")?;
        Ok(Replicas { adapter: Bus::Redis(driver), ownership: Some(ownership) })
    }

    /// This replica's lease and peer list, when it shares a Redis with others.
    pub fn ownership(&self) -> Option<&Ownership> {
        self.ownership.as_ref()
    }

    /// A connection to the shared Redis, when there is one (for the chat history).
    pub(crate) fn redis(&self) -> Option<redis::aio::MultiplexedConnection> {
        self.ownership.as_ref().map(|o| o.redis.clone())
    }

    pub(crate) fn adapter_state(&self) -> RedisAdapterCtr<Bus> {
        // A relay waits this long at most for other replicas' answers (a replica that hangs,
        // not one that died: a dead one's subscription is gone from Redis at once).
        let config = RedisAdapterConfig::new()
            .with_prefix("fanout-socket.io")
            .with_request_timeout(Duration::from_secs(2));
        RedisAdapterCtr::new_with_driver(self.adapter.clone(), config)
    }
}

/// A Socket.IO server on [`Bus::Alone`] with no HTTP in front, for unit tests.
#[cfg(test)]
pub(crate) fn io_alone() -> SocketIo {
    let (_, io) = socketioxide::SocketIo::builder()
        .with_adapter::<Adapter>(Replicas::alone().adapter_state())
        .build_svc();
    io
}

/// `url` without its password, for messages.
fn redacted(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://…{}", &url[at..]),
        _ => url.to_owned(),
    }
}

/// `url` with `protocol=resp3`: pub/sub messages arrive as RESP3 pushes on the adapter's
/// shared connection, so another protocol cannot work.
fn with_resp3(url: &str) -> anyhow::Result<String> {
    if let Some((_, protocol)) = url.split_once("protocol=") {
        let protocol = protocol.split('&').next().unwrap_or_default();
        if !protocol.eq_ignore_ascii_case("resp3") {
            anyhow::bail!(
                "the Redis URL asks for protocol={protocol}, but the Socket.IO adapter needs RESP3: \
                 drop the protocol parameter"
            );
        }
        return Ok(url.to_owned());
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    Ok(format!("{url}{separator}protocol=resp3"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_other_replicas_without_a_lease_are_orphaned() {
        let listed = ids(&["me", "a", "b", "c"]);
        assert_eq!(orphaned("me", &listed, &[false, true, false, false]), vec!["b", "c"]);
        assert!(orphaned("me", &listed, &[true, true, true, true]).is_empty());
        // Its own lease lapsing (a Redis hiccup) never makes a replica remove its own peers.
        assert_eq!(orphaned("me", &ids(&["me"]), &[false]), Vec::<&str>::new());
    }

    #[test]
    fn entries_for_peers_no_longer_here_are_stale() {
        let listed = ids(&["s1-1", "s2-1", "s3-2"]);
        let local: HashSet<String> = ["s2-1".to_owned(), "s4-1".to_owned()].into();
        assert_eq!(stale(&listed, &local), vec!["s1-1", "s3-2"]);
    }

    #[test]
    fn a_dead_replicas_peers_go_within_one_lease_and_one_sweep() {
        let lease = Lease { ttl: Duration::from_secs(9) };
        assert_eq!(lease.renew_every(), Duration::from_secs(3));
        assert_eq!(lease.removal_bound(), Duration::from_secs(12));
    }

    #[test]
    fn the_url_asks_for_resp3_and_refuses_another_protocol() {
        assert_eq!(with_resp3("redis://r:6379/").unwrap(), "redis://r:6379/?protocol=resp3");
        assert_eq!(with_resp3("redis://r:6379/0?x=1").unwrap(), "redis://r:6379/0?x=1&protocol=resp3");
        assert_eq!(with_resp3("redis://r/?protocol=RESP3").unwrap(), "redis://r/?protocol=RESP3");
        let refused = with_resp3("redis://r/?protocol=resp2&x=1").unwrap_err().to_string();
        assert!(refused.contains("protocol=resp2") && refused.contains("RESP3"), "{refused}");
    }

    #[test]
    fn a_participants_channel_names_room_and_peer() {
        assert_eq!(peer_channel("math", &PeerId("abc-2".into())), "peer:math:abc-2");
    }
}
