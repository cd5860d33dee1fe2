//! Sessions end when their token expires ([`Expiries`]): one task for the whole process sleeps
//! until the earliest expiry, where a timer task per connection would cost every connection
//! about half a KiB.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use crate::replicas::SocketIo;
use socketioxide::socket::Sid;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::SignallingError;

/// When each connected socket's session ends, earliest first.
#[derive(Default)]
pub struct Expiries {
    due: Mutex<BTreeSet<(Instant, Sid)>>,
    /// Wakes the task when a session ends before everything it is waiting for.
    sooner: Notify,
    task: OnceLock<()>,
}

impl Expiries {
    /// Ends `sid`'s session at `at`, with `TOKEN_EXPIRED` on its `error` event. The first call
    /// starts the task that does it.
    pub fn add(self: &Arc<Self>, io: &SocketIo, at: Instant, sid: Sid) {
        self.task.get_or_init(|| {
            tokio::spawn(Arc::clone(self).end_sessions(io.clone()));
        });
        let sooner = {
            let mut due = self.due();
            let sooner = due.first().is_none_or(|&(next, _)| at < next);
            due.insert((at, sid));
            sooner
        };
        if sooner {
            self.sooner.notify_one();
        }
    }

    /// Forgets a session that ended otherwise (`at` as given to [`Expiries::add`]).
    pub fn remove(&self, at: Instant, sid: Sid) {
        self.due().remove(&(at, sid));
    }

    fn due(&self) -> MutexGuard<'_, BTreeSet<(Instant, Sid)>> {
        // Plain data, consistent after any panic.
        self.due.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn end_sessions(self: Arc<Self>, io: SocketIo) {
        loop {
            // Made before reading the next expiry, so an earlier one added meanwhile wakes it.
            let sooner = self.sooner.notified();
            let next = self.due().first().map(|&(at, _)| at);
            match next {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = sooner => continue,
                    }
                }
                None => {
                    sooner.await;
                    continue;
                }
            }
            let now = Instant::now();
            let ended: Vec<Sid> = {
                let mut due = self.due();
                let mut ended = Vec::new();
                while let Some(&(at, sid)) = due.first()
                    && at <= now
                {
                    due.pop_first();
                    ended.push(sid);
                }
                ended
            };
            for sid in ended {
                // Looked up by id, so a socket that closed meanwhile is simply not found.
                if let Some(socket) = io.get_socket(sid) {
                    let _ = socket.emit("error", &SignallingError::TokenExpired.to_event("connection"));
                    let _ = socket.disconnect();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn pending(expiries: &Expiries) -> Vec<Sid> {
        expiries.due().iter().map(|&(_, sid)| sid).collect()
    }

    #[tokio::test]
    async fn a_session_ending_sooner_than_the_others_is_ended_on_time() {
        let io = crate::replicas::io_alone();
        let expiries = Arc::new(Expiries::default());
        let (later, sooner) = (Sid::new(), Sid::new());
        expiries.add(&io, Instant::now() + Duration::from_secs(30), later);
        // The task is asleep until `later` by now; `sooner` must wake it.
        tokio::time::sleep(Duration::from_millis(20)).await;
        expiries.add(&io, Instant::now() + Duration::from_millis(50), sooner);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(pending(&expiries), vec![later]);
    }

    #[tokio::test]
    async fn a_session_that_ended_otherwise_is_forgotten() {
        let io = crate::replicas::io_alone();
        let expiries = Arc::new(Expiries::default());
        let (at, sid) = (Instant::now() + Duration::from_secs(30), Sid::new());
        expiries.add(&io, at, sid);
        expiries.remove(at, sid);
        assert!(pending(&expiries).is_empty());
    }
}
