//! Room chat (docs/protocol.md, "Chat"): `chat-message` and `delete-chat-message`, the
//! room's bounded history in the join answer, and where that history is kept.
//!
//! Chat goes over Socket.IO through signalling rather than over a WebRTC data channel:
//!
//! - the sender's identity is the verified token's, set here, never the client's say;
//! - it works for participants without a media transport (a viewer who only reads);
//! - a late joiner gets the history with its join answer;
//! - the limits (size, rate) and moderation (who may delete) sit in one place;
//! - across several signalling replicas, a message rides socketioxide's Redis adapter
//!   ([`crate::replicas`]) to the room's sockets on the other replicas, and the history lives
//!   in the same Redis, so every replica answers joins with the same history.
//!
//! The decisions ([`check_text`], [`may_delete`], [`RoomHistory`]) are pure; the handlers
//! are a thin shell around them and a [`ChatHistory`] store.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use fanout_worker::room::PeerId;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use socketioxide_redis::drivers::redis::redis_client as redis;

use crate::auth::Identity;
use crate::error::{Result, SignallingError};
use crate::followers::room_channel;
use crate::handlers::{parse, to_value};
use crate::replicas::SocketRef;
use crate::server::{Connection, Signalling};
use crate::session::TokenBucket;

/// Chat's limits and who moderates, per server (`--chat-*` flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatRules {
    /// Longest message text, in UTF-8 bytes after trimming.
    pub max_text_bytes: usize,
    /// Messages a participant may send at once.
    pub burst: u32,
    /// Messages a participant may send per second, sustained, after a burst.
    pub per_second: u32,
    /// Messages of a room kept and sent to joiners (the most recent ones).
    pub history: usize,
    /// Roles that may delete anybody's message (an author may always delete its own).
    pub moderator_roles: Vec<String>,
    /// Without Redis: rooms whose history is kept at once; beyond it, the room written to
    /// longest ago loses its history. Bounds memory to about `max_rooms × history ×
    /// max_text_bytes`.
    pub max_rooms: usize,
    /// With Redis: a room's history is dropped this long after its last message.
    pub history_ttl: Duration,
}

impl Default for ChatRules {
    fn default() -> Self {
        ChatRules {
            max_text_bytes: 2000,
            burst: 5,
            per_second: 1,
            history: 100,
            moderator_roles: ["teacher", "moderator", "admin"].map(String::from).to_vec(),
            max_rooms: 1000,
            history_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

impl ChatRules {
    /// A participant's chat allowance: a full bucket at `now`.
    pub fn allowance(&self, now: Instant) -> TokenBucket {
        TokenBucket::new(self.per_second, self.burst, now)
    }
}

/// Who wrote (or deleted) a message, from the token: `{participantId, userId, fullName, role}`,
/// a participant's fields as `participants` lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Author {
    /// Its participant id at the time (a new one at every join).
    pub participant_id: PeerId,
    /// The token's `sub`: what authorship is checked by, so that an author who rejoined may
    /// still delete its messages.
    pub user_id: String,
    /// The token's `name`.
    pub full_name: String,
    /// The token's `role`.
    pub role: String,
}

impl Author {
    /// `peer` with the token's identity.
    pub fn new(peer: &PeerId, identity: &Identity) -> Self {
        Author {
            participant_id: peer.clone(),
            user_id: identity.user_id.clone(),
            full_name: identity.name.clone(),
            role: identity.role.clone(),
        }
    }
}

/// One chat message, as sent to the room and kept in its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatMessage {
    pub room_id: String,
    /// The server's id for it (32 hex digits).
    pub message_id: String,
    pub from: Author,
    /// The text, trimmed.
    pub text: String,
    /// When the server took it, milliseconds since the Unix epoch.
    pub at: u64,
}

/// `chat-message`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendChat {
    /// The room; must be the joined one when given.
    #[serde(default)]
    pub room_id: Option<String>,
    /// The message; a string.
    pub text: String,
}

/// `delete-chat-message`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteChat {
    /// The room; must be the joined one when given.
    #[serde(default)]
    pub room_id: Option<String>,
    /// A message of the room's history.
    pub message_id: String,
}

/// The text to send: `text` trimmed, refused when empty or longer than the rules allow.
pub fn check_text<'a>(text: &'a str, rules: &ChatRules) -> Result<&'a str> {
    let text = text.trim();
    if text.is_empty() {
        return Err(SignallingError::ChatMessageEmpty);
    }
    if text.len() > rules.max_text_bytes {
        return Err(SignallingError::ChatMessageTooLong {
            bytes: text.len(),
            limit: rules.max_text_bytes,
        });
    }
    Ok(text)
}

/// Whether `identity`'s role may delete anybody's message.
pub fn is_moderator(identity: &Identity, rules: &ChatRules) -> bool {
    !identity.role.is_empty() && rules.moderator_roles.contains(&identity.role)
}

/// Whether `identity` may delete `message`: its author (by user id) or a moderator role.
pub fn may_delete(message: &ChatMessage, identity: &Identity, rules: &ChatRules) -> Result<()> {
    if is_moderator(identity, rules) || message.from.user_id == identity.user_id {
        Ok(())
    } else {
        let moderators = match rules.moderator_roles.join(", ") {
            none if none.is_empty() => "none on this server".to_owned(),
            roles => roles,
        };
        Err(SignallingError::ChatDeleteNotAllowed { moderators })
    }
}

/// One room's most recent messages, oldest first, at most `capacity`.
#[derive(Debug, Clone, Default)]
pub struct RoomHistory {
    capacity: usize,
    messages: VecDeque<ChatMessage>,
}

impl RoomHistory {
    pub fn new(capacity: usize) -> Self {
        RoomHistory { capacity, messages: VecDeque::new() }
    }

    /// Adds the newest message, forgetting the oldest beyond capacity.
    pub fn push(&mut self, message: ChatMessage) {
        self.messages.push_back(message);
        while self.messages.len() > self.capacity {
            self.messages.pop_front();
        }
    }

    pub fn find(&self, message_id: &str) -> Option<&ChatMessage> {
        self.messages.iter().find(|m| m.message_id == message_id)
    }

    /// Removes a message; whether it was there.
    pub fn remove(&mut self, message_id: &str) -> bool {
        let before = self.messages.len();
        self.messages.retain(|m| m.message_id != message_id);
        self.messages.len() != before
    }

    /// The messages, oldest first.
    pub fn messages(&self) -> Vec<ChatMessage> {
        self.messages.iter().cloned().collect()
    }
}

/// Where rooms' histories are kept: this process's memory ([`MemoryHistory`], the only
/// replica) or Redis ([`RedisHistory`], shared by every replica).
#[async_trait]
pub trait ChatHistory: Send + Sync {
    /// Keeps `message` as its room's newest.
    async fn append(&self, message: &ChatMessage) -> Result<()>;
    /// The room's history, oldest first.
    async fn recent(&self, room: &str) -> Result<Vec<ChatMessage>>;
    /// A message of the room's history.
    async fn find(&self, room: &str, message_id: &str) -> Result<Option<ChatMessage>>;
    /// Removes a message from the room's history; whether it was there (of two deletes of one
    /// message at once, one finds it).
    async fn remove(&self, room: &str, message_id: &str) -> Result<bool>;
    /// This process's last participant of `room` left.
    fn room_emptied(&self, room: &str);
}

/// Histories in memory, for the only replica: dropped when the room's last participant
/// leaves, and at most [`ChatRules::max_rooms`] rooms.
pub struct MemoryHistory {
    capacity: usize,
    max_rooms: usize,
    rooms: Mutex<MemoryRooms>,
}

#[derive(Default)]
struct MemoryRooms {
    /// Each room's history, with the number of the write that last touched it.
    rooms: HashMap<String, (u64, RoomHistory)>,
    writes: u64,
}

impl MemoryHistory {
    pub fn new(rules: &ChatRules) -> Self {
        MemoryHistory {
            capacity: rules.history,
            max_rooms: rules.max_rooms.max(1),
            rooms: Mutex::default(),
        }
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, MemoryRooms> {
        // Plain data, consistent after every statement: a panic elsewhere cannot break it.
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Rooms with a history now.
    pub fn len(&self) -> usize {
        self.rooms().rooms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl ChatHistory for MemoryHistory {
    async fn append(&self, message: &ChatMessage) -> Result<()> {
        let mut state = self.rooms();
        state.writes += 1;
        let write = state.writes;
        if !state.rooms.contains_key(&message.room_id) && state.rooms.len() >= self.max_rooms {
            // Full: the room written to longest ago makes way (a scan, only when a new room
            // arrives at a full store).
            if let Some(oldest) = state.rooms.iter().min_by_key(|(_, (w, _))| *w).map(|(r, _)| r.clone()) {
                tracing::warn!(room = oldest, max_rooms = self.max_rooms, "chat history of a room dropped to make way for another (--chat-max-rooms)");
                state.rooms.remove(&oldest);
            }
        }
        let capacity = self.capacity;
        let entry = state
            .rooms
            .entry(message.room_id.clone())
            .or_insert_with(|| (write, RoomHistory::new(capacity)));
        entry.0 = write;
        entry.1.push(message.clone());
        Ok(())
    }

    async fn recent(&self, room: &str) -> Result<Vec<ChatMessage>> {
        Ok(self.rooms().rooms.get(room).map(|(_, h)| h.messages()).unwrap_or_default())
    }

    async fn find(&self, room: &str, message_id: &str) -> Result<Option<ChatMessage>> {
        Ok(self.rooms().rooms.get(room).and_then(|(_, h)| h.find(message_id).cloned()))
    }

    async fn remove(&self, room: &str, message_id: &str) -> Result<bool> {
        Ok(self.rooms().rooms.get_mut(room).is_some_and(|(_, h)| h.remove(message_id)))
    }

    fn room_emptied(&self, room: &str) {
        self.rooms().rooms.remove(room);
    }
}

/// Histories in Redis, shared by every replica: a list per room (`fanout:chat:{room}`, newest
/// first, JSON messages) capped at [`ChatRules::history`] and expiring
/// [`ChatRules::history_ttl`] after its last message. An emptied room's history stays until
/// then, since other replicas may still have participants there.
pub struct RedisHistory {
    redis: redis::aio::MultiplexedConnection,
    capacity: usize,
    ttl: Duration,
}

fn chat_key(room: &str) -> String {
    format!("fanout:chat:{room}")
}

fn unavailable(error: redis::RedisError) -> SignallingError {
    tracing::warn!(%error, "chat history in Redis");
    SignallingError::ChatUnavailable
}

impl RedisHistory {
    pub fn new(redis: redis::aio::MultiplexedConnection, rules: &ChatRules) -> Self {
        RedisHistory { redis, capacity: rules.history, ttl: rules.history_ttl }
    }

    /// The room's list as stored (newest first), each entry with its message.
    async fn entries(&self, room: &str) -> Result<Vec<(String, ChatMessage)>> {
        if self.capacity == 0 {
            return Ok(Vec::new());
        }
        let last = isize::try_from(self.capacity).unwrap_or(isize::MAX).saturating_sub(1);
        let raw: Vec<String> = redis::cmd("LRANGE")
            .arg(chat_key(room))
            .arg(0)
            .arg(last)
            .query_async(&mut self.redis.clone())
            .await
            .map_err(unavailable)?;
        // An entry that is not a message (written by something else) is skipped, not fatal.
        Ok(raw
            .into_iter()
            .filter_map(|entry| serde_json::from_str(&entry).ok().map(|m| (entry, m)))
            .collect())
    }
}

#[async_trait]
impl ChatHistory for RedisHistory {
    async fn append(&self, message: &ChatMessage) -> Result<()> {
        // LTRIM to -1 would keep everything.
        if self.capacity == 0 {
            return Ok(());
        }
        let entry = serde_json::to_string(message).map_err(|_| SignallingError::Internal)?;
        let key = chat_key(&message.room_id);
        let last = isize::try_from(self.capacity).unwrap_or(isize::MAX).saturating_sub(1);
        let ttl = i64::try_from(self.ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        // One transaction: no replica ever reads the list longer than its cap.
        redis::pipe()
            .atomic()
            .cmd("LPUSH").arg(&key).arg(entry).ignore()
            .cmd("LTRIM").arg(&key).arg(0).arg(last).ignore()
            .cmd("EXPIRE").arg(&key).arg(ttl).ignore()
            .query_async::<()>(&mut self.redis.clone())
            .await
            .map_err(unavailable)
    }

    async fn recent(&self, room: &str) -> Result<Vec<ChatMessage>> {
        Ok(self.entries(room).await?.into_iter().rev().map(|(_, m)| m).collect())
    }

    async fn find(&self, room: &str, message_id: &str) -> Result<Option<ChatMessage>> {
        Ok(self.entries(room).await?.into_iter().map(|(_, m)| m).find(|m| m.message_id == message_id))
    }

    async fn remove(&self, room: &str, message_id: &str) -> Result<bool> {
        let Some((entry, _)) = self.entries(room).await?.into_iter().find(|(_, m)| m.message_id == message_id) else {
            return Ok(false);
        };
        // LREM of the exact entry is atomic: of two replicas deleting it at once, one removes
        // it and the other removes nothing.
        let removed: i64 = redis::cmd("LREM")
            .arg(chat_key(room))
            .arg(1)
            .arg(entry)
            .query_async(&mut self.redis.clone())
            .await
            .map_err(unavailable)?;
        Ok(removed > 0)
    }

    fn room_emptied(&self, _room: &str) {}
}

/// A new message id: 128 random bits in hex.
fn new_message_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Signalling {
    /// The room's chat history for a join answer. A store that cannot answer gives an empty
    /// history rather than a failed join: the call matters more than the backlog.
    pub(crate) async fn chat_history(&self, room: &str) -> Vec<ChatMessage> {
        self.chat().recent(room).await.unwrap_or_default()
    }

    /// `chat-message`: the text, checked and with the token's identity, goes to everybody
    /// else in the room (on every replica) and into the history; the answer is the same
    /// message, so that every participant gets one `chat-message` of it.
    pub(crate) async fn chat_message(
        self: Arc<Self>,
        socket: SocketRef,
        connection: Arc<Connection>,
        payload: Value,
    ) -> Result<Value> {
        let request: SendChat = parse("chat-message", payload)?;
        let session = connection.session(request.room_id.as_deref())?;
        let rules = &self.limits.chat;
        let text = check_text(&request.text, rules)?;
        // After the checks: a refused message costs nothing of the allowance.
        connection
            .chat_allowance
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(Instant::now())
            .map_err(|_| SignallingError::ChatRateLimited { burst: rules.burst, per_second: rules.per_second })?;
        let message = ChatMessage {
            room_id: session.room.clone(),
            message_id: new_message_id(),
            from: Author::new(&session.peer, &connection.identity),
            text: text.to_owned(),
            at: now_ms(),
        };
        // A history that cannot be written does not stop the conversation.
        if let Err(error) = self.chat().append(&message).await {
            tracing::warn!(room = session.room, %error, "a chat message was sent but not kept in the history");
        }
        let body = to_value(&message)?;
        broadcast(&socket, &session.room, "chat-message", &body).await;
        Ok(body)
    }

    /// `delete-chat-message`: by its author or a moderator; removed from the history and
    /// everybody else told.
    pub(crate) async fn delete_chat_message(
        self: Arc<Self>,
        socket: SocketRef,
        connection: Arc<Connection>,
        payload: Value,
    ) -> Result<Value> {
        let request: DeleteChat = parse("delete-chat-message", payload)?;
        let session = connection.session(request.room_id.as_deref())?;
        let rules = &self.limits.chat;
        let not_found = || SignallingError::ChatMessageNotFound {
            message_id: crate::ids::excerpt(&request.message_id),
            kept: rules.history,
        };
        let history = self.chat();
        let message = history.find(&session.room, &request.message_id).await?.ok_or_else(not_found)?;
        may_delete(&message, &connection.identity, rules)?;
        if !history.remove(&session.room, &request.message_id).await? {
            return Err(not_found());
        }
        let body = json!({
            "roomId": session.room,
            "messageId": message.message_id,
            "by": Author::new(&session.peer, &connection.identity),
        });
        broadcast(&socket, &session.room, "chat-message-deleted", &body).await;
        Ok(body)
    }
}

/// `event` to every socket of the room but `socket`, on every replica. A replica that cannot
/// be reached is logged; the sender's answer does not wait for it.
async fn broadcast(socket: &SocketRef, room: &str, event: &str, body: &Value) {
    if let Err(error) = socket.to(room_channel(room)).emit(event, body).await {
        tracing::warn!(room, event, %error, "a chat event did not reach every replica");
    }
}

/// The store for this process: Redis when replicas share one, memory otherwise.
pub(crate) fn history_store(
    redis: Option<redis::aio::MultiplexedConnection>,
    rules: &ChatRules,
) -> Arc<dyn ChatHistory> {
    match redis {
        Some(redis) => Arc::new(RedisHistory::new(redis, rules)),
        None => Arc::new(MemoryHistory::new(rules)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(user: &str, role: &str) -> Identity {
        Identity {
            user_id: user.into(),
            email: String::new(),
            name: format!("{user} name"),
            role: role.into(),
            rooms: None,
            expires_at: 0,
        }
    }

    fn message(room: &str, id: &str, user: &str) -> ChatMessage {
        ChatMessage {
            room_id: room.into(),
            message_id: id.into(),
            from: Author::new(&PeerId::from("p1"), &identity(user, "student")),
            text: format!("hello from {user}"),
            at: 1,
        }
    }

    #[test]
    fn text_is_trimmed_and_must_not_be_empty() {
        let rules = ChatRules::default();
        assert_eq!(check_text("  hi there \n", &rules).unwrap(), "hi there");
        for blank in ["", "   ", "\n\t "] {
            assert_eq!(check_text(blank, &rules).unwrap_err().code(), "CHAT_MESSAGE_EMPTY");
        }
    }

    #[test]
    fn text_is_limited_in_utf8_bytes_after_trimming() {
        let rules = ChatRules { max_text_bytes: 10, ..ChatRules::default() };
        assert!(check_text("0123456789", &rules).is_ok());
        assert!(check_text("   0123456789   ", &rules).is_ok(), "spaces around do not count");
        let error = check_text("01234567890", &rules).unwrap_err();
        assert_eq!(error.code(), "CHAT_MESSAGE_TOO_LONG");
        assert!(error.to_string().contains("11 bytes") && error.to_string().contains("10"), "{error}");
        // Four 3-byte characters are 12 bytes, over a limit of 10.
        assert_eq!(check_text("€€€€", &rules).unwrap_err().code(), "CHAT_MESSAGE_TOO_LONG");
    }

    #[test]
    fn the_author_and_moderators_may_delete_and_nobody_else() {
        let rules = ChatRules::default();
        let m = message("maths", "m1", "ada");
        assert!(may_delete(&m, &identity("ada", "student"), &rules).is_ok(), "author");
        assert!(may_delete(&m, &identity("tom", "teacher"), &rules).is_ok(), "moderator role");
        let refused = may_delete(&m, &identity("bob", "student"), &rules).unwrap_err();
        assert_eq!(refused.code(), "CHAT_DELETE_NOT_ALLOWED");
        assert!(refused.to_string().contains("teacher, moderator, admin"), "{refused}");
        // An empty role is never a moderator, even if the list has an empty entry.
        let odd = ChatRules { moderator_roles: vec![String::new()], ..ChatRules::default() };
        assert!(may_delete(&m, &identity("bob", ""), &odd).is_err());
    }

    #[test]
    fn the_allowance_is_a_burst_then_the_sustained_rate() {
        let rules = ChatRules::default();
        let start = Instant::now();
        let mut allowance = rules.allowance(start);
        for _ in 0..5 {
            allowance.take(start).unwrap();
        }
        assert!(allowance.take(start).is_err(), "a sixth at once is refused");
        assert!(allowance.take(start + Duration::from_millis(500)).is_err());
        allowance.take(start + Duration::from_secs(1)).unwrap();
    }

    #[test]
    fn a_room_history_keeps_the_newest_messages_in_order() {
        let mut history = RoomHistory::new(3);
        for i in 0..5 {
            history.push(message("maths", &format!("m{i}"), "ada"));
        }
        let ids: Vec<_> = history.messages().into_iter().map(|m| m.message_id).collect();
        assert_eq!(ids, ["m2", "m3", "m4"]);
        assert!(history.find("m1").is_none());
        assert!(history.remove("m3"));
        assert!(!history.remove("m3"), "a second delete finds nothing");
        let ids: Vec<_> = history.messages().into_iter().map(|m| m.message_id).collect();
        assert_eq!(ids, ["m2", "m4"]);
    }

    #[tokio::test]
    async fn memory_history_is_per_room_bounded_in_rooms_and_dropped_when_emptied() {
        let rules = ChatRules { history: 2, max_rooms: 2, ..ChatRules::default() };
        let store = MemoryHistory::new(&rules);
        store.append(&message("a", "a1", "ada")).await.unwrap();
        store.append(&message("b", "b1", "ada")).await.unwrap();
        store.append(&message("a", "a2", "ada")).await.unwrap();
        assert_eq!(store.recent("b").await.unwrap().len(), 1);
        // A third room: b, written to longest ago, makes way; a keeps its messages.
        store.append(&message("c", "c1", "ada")).await.unwrap();
        assert_eq!(store.len(), 2);
        assert!(store.recent("b").await.unwrap().is_empty());
        assert_eq!(store.recent("a").await.unwrap().len(), 2);
        assert!(store.find("a", "a1").await.unwrap().is_some());
        assert!(store.find("c", "a1").await.unwrap().is_none(), "another room's id is not found");
        assert!(store.remove("a", "a1").await.unwrap());
        assert!(!store.remove("a", "a1").await.unwrap());
        store.room_emptied("a");
        assert!(store.recent("a").await.unwrap().is_empty());
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn a_message_serialises_as_the_protocol_says() {
        let value = serde_json::to_value(message("maths", "m1", "ada")).unwrap();
        assert_eq!(value["roomId"], "maths");
        assert_eq!(value["messageId"], "m1");
        assert_eq!(value["from"]["participantId"], "p1");
        assert_eq!(value["from"]["userId"], "ada");
        assert_eq!(value["from"]["fullName"], "ada name");
        assert_eq!(value["from"]["role"], "student");
        assert!(value["from"].get("email").is_none());
    }

    #[test]
    fn message_ids_are_distinct() {
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| new_message_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|id| id.len() == 32));
    }
}
