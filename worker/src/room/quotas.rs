//! What one peer may hold, and how much a room may list: the bounds that keep one careless
//! or hostile participant from using up a worker (its ports, its memory) or from making what
//! every other participant is sent grow without bound.
//!
//! Per peer: transports (each holds a UDP port and a socket), producers, consumers, and the
//! size of the application data it attaches. Per room: the size of the listing every joiner
//! receives (its peers and their producers, with their appData), which is also the size of
//! `GET /v1/rooms/{room}`'s answer up to the consumers. The per-peer bounds are far below
//! the room's, so one peer at its quota leaves the room open to everyone else.

use std::time::Duration;

use serde::Serialize;

/// The quotas a [`Rooms`](super::Rooms) enforces; refusals are [`RoomError`](super::RoomError)s
/// with their own codes (`TOO_MANY_TRANSPORTS`, `TOO_MANY_PRODUCERS`, `TOO_MANY_CONSUMERS`,
/// `APP_DATA_TOO_LARGE`, `PEER_INFO_TOO_LARGE`, `ROOM_FULL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Transports one peer may have open at once (a mediasoup-client app uses one or two).
    pub transports_per_peer: usize,
    /// Producers one peer may have open at once (camera, microphone, screen and its audio
    /// are four).
    pub producers_per_peer: usize,
    /// Consumers one peer may have open at once.
    pub consumers_per_peer: usize,
    /// Largest producer `appData`, in bytes of JSON.
    pub app_data_bytes: usize,
    /// Largest peer info (`userId`, `displayName`, `role`, `appData`), in bytes of JSON.
    pub peer_info_bytes: usize,
    /// Largest listing of a room: its peers and producers as a joiner receives them, in
    /// bytes of JSON.
    pub room_listing_bytes: usize,
    /// How long a room without peers stays open before the worker closes it, unless the
    /// room's own `emptyTimeoutSeconds` says otherwise.
    pub empty_room_timeout: Duration,
}

impl Default for Quotas {
    fn default() -> Self {
        Quotas {
            transports_per_peer: 8,
            producers_per_peer: 8,
            consumers_per_peer: 1000,
            app_data_bytes: 2 * 1024,
            peer_info_bytes: 4 * 1024,
            room_listing_bytes: 2 * 1024 * 1024,
            empty_room_timeout: Duration::from_secs(60),
        }
    }
}

/// The length of `value` as compact JSON, without building the text.
pub(super) fn json_size(value: &impl Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(bytes.len());
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Maps of strings and JSON values always serialise; a failure would be a bug, counted
    // as "too large" rather than as free.
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_size_is_the_length_of_the_compact_text() {
        for value in [json!({}), json!({"source": "screen", "n": [1, 2, 3]}), json!("é\"")] {
            assert_eq!(json_size(&value), serde_json::to_vec(&value).unwrap().len(), "{value}");
        }
    }

    #[test]
    fn one_peer_at_its_quotas_lists_far_less_than_a_room() {
        let q = Quotas::default();
        // A producer summary is its appData plus ids, kind and flags (under 200 bytes).
        let one_peer = q.peer_info_bytes + q.producers_per_peer * (q.app_data_bytes + 200);
        assert!(one_peer * 50 < q.room_listing_bytes, "{one_peer}");
    }
}
