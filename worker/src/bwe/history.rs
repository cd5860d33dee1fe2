//! What a transport sent with transport-wide sequence numbers: when, how big, in which probe
//! cluster. One fixed ring per transport, written once per forwarded copy without allocating;
//! feedback looks its packets up by sequence number.

/// Packets remembered: several seconds at video rates, far longer than feedback takes.
pub const HISTORY_LEN: usize = 1024;

#[derive(Debug, Clone, Copy, Default)]
struct Sent {
    /// The sequence number the slot holds (slots are reused every [`HISTORY_LEN`] packets).
    sequence: u16,
    size: u16,
    /// Send time, microseconds since the history's epoch, wrapping (71 minutes).
    sent_us: u32,
    probe: u8,
    filled: bool,
    /// Reported as received: a second report of it is ignored.
    acked: bool,
    /// Reported as lost.
    lost: bool,
}

/// A sent packet as feedback finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentPacket {
    pub sequence: u16,
    pub sent_us: i64,
    pub size: usize,
    /// Its probe cluster, 0 for none.
    pub probe: u8,
}

#[derive(Debug, Clone)]
pub struct SendHistory {
    slots: Box<[Sent]>,
    next: u16,
    /// Newest send time recorded.
    newest_us: i64,
}

impl Default for SendHistory {
    fn default() -> Self {
        SendHistory::new(0)
    }
}

impl SendHistory {
    /// Sequence numbers start at `first` (a transport's first packet may carry any).
    pub fn new(first: u16) -> Self {
        SendHistory { slots: vec![Sent::default(); HISTORY_LEN].into_boxed_slice(), next: first, newest_us: 0 }
    }

    /// Takes the next sequence number for a packet of `size` bytes sent at `now_us`.
    pub fn record(&mut self, size: usize, now_us: i64, probe: u8) -> u16 {
        let sequence = self.next;
        self.next = self.next.wrapping_add(1);
        self.slots[usize::from(sequence) % HISTORY_LEN] =
            Sent { sequence, size: size.min(usize::from(u16::MAX)) as u16, sent_us: now_us as u32, probe, filled: true, acked: false, lost: false };
        self.newest_us = self.newest_us.max(now_us);
        sequence
    }

    /// The packet sent with `sequence`, if it is recent enough to be remembered.
    pub fn get(&self, sequence: u16) -> Option<SentPacket> {
        let age = self.next.wrapping_sub(sequence);
        if age == 0 || usize::from(age) > HISTORY_LEN {
            return None;
        }
        let slot = self.slots[usize::from(sequence) % HISTORY_LEN];
        if !slot.filled || slot.sequence != sequence {
            return None;
        }
        let sent_us = self.newest_us - i64::from((self.newest_us as u32).wrapping_sub(slot.sent_us));
        Some(SentPacket { sequence, sent_us, size: usize::from(slot.size), probe: slot.probe })
    }

    /// The sequence number the next [`SendHistory::record`] takes.
    pub fn next_sequence(&self) -> u16 {
        self.next
    }

    /// Feedback reports `sequence` as `arrived` or lost: whether to count the report. A packet
    /// counts once as received, and as lost at most once and never after it was received
    /// (a later report may repeat an earlier one's losses).
    pub fn report(&mut self, sequence: u16, arrived: bool) -> bool {
        if self.get(sequence).is_none() {
            return false;
        }
        let slot = &mut self.slots[usize::from(sequence) % HISTORY_LEN];
        if slot.acked {
            return false;
        }
        if arrived {
            slot.acked = true;
            return true;
        }
        !std::mem::replace(&mut slot.lost, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_packets_are_found_by_sequence_until_overwritten() {
        let mut history = SendHistory::new(65_530);
        let first = history.record(1200, 5_000_000_000, 0);
        assert_eq!(first, 65_530);
        for i in 1..10 {
            history.record(100 + i, 5_000_000_000 + i as i64 * 1000, 3);
        }
        // Across the wrap of both the sequence numbers and the 32-bit clock.
        assert_eq!(history.get(65_530), Some(SentPacket { sequence: 65_530, sent_us: 5_000_000_000, size: 1200, probe: 0 }));
        assert_eq!(history.get(3).map(|p| (p.size, p.sent_us, p.probe)), Some((109, 5_000_009_000, 3)));
        assert_eq!(history.get(4), None, "not sent yet");
        for _ in 0..HISTORY_LEN {
            history.record(1, 5_100_000_000, 0);
        }
        assert_eq!(history.get(65_530), None, "too old");
    }

    #[test]
    fn a_packet_counts_once_as_received_and_at_most_once_as_lost() {
        let mut history = SendHistory::new(0);
        history.record(1000, 0, 0);
        history.record(1000, 0, 0);
        assert!(history.report(0, true));
        assert!(!history.report(0, true));
        assert!(!history.report(0, false), "received, then reported lost again");
        assert!(history.report(1, false));
        assert!(!history.report(1, false));
        assert!(history.report(1, true), "lost, then received after all");
        assert!(!history.report(2, true), "never sent");
    }
}
