//! One subscriber's view of a room's events ([`RoomSubscription`]), and how they travel to it:
//! the events of one request as one message ([`EventBatch`]).

use std::sync::Arc;

use tokio::sync::broadcast;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::room::RoomEvent;

/// The events one request made in one room, in order. They travel together, so a room's
/// buffer counts requests rather than events: closing a producer that has hundreds of
/// consumers (a `consumerClosed` for each) takes one slot, and subscribers never lose part of
/// a request.
pub(super) type EventBatch = Arc<[RoomEvent]>;

/// A room's events from the moment of [`ControlPlane::subscribe`](super::ControlPlane::subscribe),
/// one at a time, in order.
#[derive(Debug)]
pub struct RoomSubscription {
    batches: broadcast::Receiver<EventBatch>,
    /// The batch being read, and how much of it has been.
    batch: EventBatch,
    read: usize,
}

impl RoomSubscription {
    pub(super) fn new(batches: broadcast::Receiver<EventBatch>) -> Self {
        RoomSubscription {
            batches,
            batch: Arc::new([]),
            read: 0,
        }
    }

    /// The next event. `RecvError::Lagged(n)` when the subscriber fell more than
    /// [`EVENT_BUFFER`](super::EVENT_BUFFER) requests behind and missed the events of `n`;
    /// `RecvError::Closed` after the room's `roomClosed`.
    pub async fn recv(&mut self) -> Result<RoomEvent, RecvError> {
        loop {
            if let Some(event) = self.next_in_batch() {
                return Ok(event);
            }
            self.batch = self.batches.recv().await?;
            self.read = 0;
        }
    }

    /// The next event if one is waiting; errors as [`RoomSubscription::recv`], plus
    /// `TryRecvError::Empty`.
    pub fn try_recv(&mut self) -> Result<RoomEvent, TryRecvError> {
        loop {
            if let Some(event) = self.next_in_batch() {
                return Ok(event);
            }
            self.batch = self.batches.try_recv()?;
            self.read = 0;
        }
    }

    fn next_in_batch(&mut self) -> Option<RoomEvent> {
        let event = self.batch.get(self.read)?.clone();
        self.read += 1;
        Some(event)
    }
}
