//! Packets grouped into send bursts, and the delay variation between consecutive bursts
//! (libwebrtc's `InterArrivalDelta`, which str0m's `ArrivalGroupAccumulator` follows).
//!
//! A sender emits a video frame as a burst, so the congestion signal lives between bursts, not
//! between packets: the packets sent within [`SEND_TIME_GROUP_LENGTH`] of a group's first one
//! belong to it. A packet sent later still joins the group when it arrived sooner after the
//! previous one than it was sent (it queued behind it) and within [`BURST_DELTA_THRESHOLD`]: that
//! is a burst the network has already spaced out, and splitting it would measure the burst's
//! own spacing. Each closed group is compared with the one before it.
//!
//! Times are microseconds on two clocks that never meet: `sent_us` on the sender's,
//! `arrived_us` on the receiver's. Only differences on one clock are used.

/// Packets sent within this of a group's first packet belong to it.
pub const SEND_TIME_GROUP_LENGTH_US: i64 = 5_000;
/// A packet arriving within this of the group's last arrival, earlier than its send spacing
/// predicts, is part of the same burst.
pub const BURST_DELTA_THRESHOLD_US: i64 = 5_000;
/// A burst is never longer than this on arrival.
pub const MAX_BURST_DURATION_US: i64 = 100_000;
/// A receiver clock that jumps by more than this against ours (a restarted receiver) restarts
/// the grouping.
const ARRIVAL_TIME_OFFSET_THRESHOLD_US: i64 = 3_000_000;
/// Groups that arrive out of order this many times in a row restart the grouping.
const REORDERED_RESET_THRESHOLD: u32 = 3;

/// One received packet as the delay estimators see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketTiming {
    /// When it left, on the sender's clock.
    pub sent_us: i64,
    /// When it arrived, on the receiver's clock.
    pub arrived_us: i64,
    /// Bytes on the wire (RTP).
    pub size: usize,
}

/// The variation between two consecutive groups.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupDelta {
    /// Send time of the later group's last packet minus the earlier group's, in ms.
    pub send_ms: f64,
    /// Arrival of the later group's last packet minus the earlier group's, in ms.
    pub arrival_ms: f64,
    /// When the later group completed, on the receiver's clock.
    pub arrived_us: i64,
}

#[derive(Debug, Clone, Copy)]
struct Group {
    first_sent_us: i64,
    /// Latest send time in the group.
    sent_us: i64,
    first_arrived_us: i64,
    /// Arrival of its latest packet.
    complete_us: i64,
    /// Our clock when its latest packet was processed.
    system_us: i64,
}

/// Groups packets into bursts and yields the delta between each closed group and the previous.
#[derive(Debug, Clone, Default)]
pub struct InterArrival {
    current: Option<Group>,
    previous: Option<Group>,
    reordered: u32,
}

impl InterArrival {
    pub fn new() -> Self {
        InterArrival::default()
    }

    /// Feeds one packet, in arrival order; `system_us` is our clock when it is processed (to
    /// notice a receiver clock that jumped). Returns the delta when this packet closed a group
    /// that has a predecessor.
    pub fn on_packet(&mut self, packet: PacketTiming, system_us: i64) -> Option<GroupDelta> {
        let Some(current) = self.current.as_mut() else {
            self.current = Some(Group {
                first_sent_us: packet.sent_us,
                sent_us: packet.sent_us,
                first_arrived_us: packet.arrived_us,
                complete_us: packet.arrived_us,
                system_us,
            });
            return None;
        };
        if packet.sent_us < current.first_sent_us {
            // Reordered: sent before the group it arrived in.
            return None;
        }
        let mut delta = None;
        if starts_new_group(current, packet) {
            if let Some(previous) = self.previous {
                let send_us = current.sent_us - previous.sent_us;
                let arrival_us = current.complete_us - previous.complete_us;
                let system_delta_us = current.system_us - previous.system_us;
                if arrival_us - system_delta_us >= ARRIVAL_TIME_OFFSET_THRESHOLD_US {
                    self.reset();
                    return None;
                }
                if arrival_us < 0 {
                    // The group was reordered after it arrived (feedback out of order).
                    self.reordered += 1;
                    if self.reordered >= REORDERED_RESET_THRESHOLD {
                        self.reset();
                    }
                    return None;
                }
                self.reordered = 0;
                delta = Some(GroupDelta {
                    send_ms: send_us as f64 / 1000.0,
                    arrival_ms: arrival_us as f64 / 1000.0,
                    arrived_us: current.complete_us,
                });
            }
            self.previous = Some(*current);
            *current = Group {
                first_sent_us: packet.sent_us,
                sent_us: packet.sent_us,
                first_arrived_us: packet.arrived_us,
                complete_us: packet.arrived_us,
                system_us,
            };
        } else {
            current.sent_us = current.sent_us.max(packet.sent_us);
        }
        current.complete_us = packet.arrived_us;
        current.system_us = system_us;
        delta
    }

    fn reset(&mut self) {
        *self = InterArrival::default();
    }
}

fn starts_new_group(current: &Group, packet: PacketTiming) -> bool {
    !belongs_to_burst(current, packet) && packet.sent_us - current.first_sent_us > SEND_TIME_GROUP_LENGTH_US
}

fn belongs_to_burst(current: &Group, packet: PacketTiming) -> bool {
    let arrival_delta = packet.arrived_us - current.complete_us;
    let send_delta = packet.sent_us - current.sent_us;
    if send_delta == 0 {
        return true;
    }
    let propagation_delta = arrival_delta - send_delta;
    propagation_delta < 0
        && arrival_delta <= BURST_DELTA_THRESHOLD_US
        && packet.arrived_us - current.first_arrived_us < MAX_BURST_DURATION_US
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(sent_ms: f64, arrived_ms: f64) -> PacketTiming {
        PacketTiming { sent_us: (sent_ms * 1000.0) as i64, arrived_us: (arrived_ms * 1000.0) as i64, size: 1200 }
    }

    fn deltas(packets: &[(f64, f64)]) -> Vec<GroupDelta> {
        let mut groups = InterArrival::new();
        packets.iter().filter_map(|&(s, a)| groups.on_packet(packet(s, a), (a * 1000.0) as i64)).collect()
    }

    #[test]
    fn a_frame_sent_as_a_burst_is_one_group() {
        // Three frames 33 ms apart, each three packets sent 1 ms apart; the fourth frame's
        // first packet closes the third group.
        let mut packets = Vec::new();
        for frame in 0..4 {
            for p in 0..3 {
                let sent = frame as f64 * 33.0 + p as f64;
                packets.push((sent, sent + 20.0));
            }
        }
        let found = deltas(&packets);
        assert_eq!(found.len(), 2, "{found:?}");
        for d in found {
            assert_eq!((d.send_ms, d.arrival_ms), (33.0, 33.0), "a path that does not queue");
        }
    }

    #[test]
    fn a_growing_queue_spreads_arrivals_wider_than_sends() {
        let packets: Vec<(f64, f64)> = (0..6).map(|i| (i as f64 * 20.0, 10.0 + i as f64 * 25.0)).collect();
        for d in deltas(&packets) {
            assert_eq!(d.arrival_ms - d.send_ms, 5.0);
        }
    }

    #[test]
    fn packets_queued_behind_a_burst_join_it() {
        // Sent 10 ms apart, but the second arrives 1 ms after the first: it waited in a queue
        // behind it, and the pair is one burst.
        let packets = [(0.0, 50.0), (10.0, 51.0), (40.0, 80.0), (80.0, 120.0)];
        let found = deltas(&packets);
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].send_ms, found[0].arrival_ms), (30.0, 29.0));
    }

    #[test]
    fn a_packet_sent_before_its_group_is_ignored() {
        let packets = [(0.0, 10.0), (20.0, 30.0), (15.0, 31.0), (40.0, 50.0), (60.0, 70.0)];
        let found = deltas(&packets);
        assert_eq!(found.iter().map(|d| (d.send_ms, d.arrival_ms)).collect::<Vec<_>>(), vec![(20.0, 20.0), (20.0, 20.0)]);
    }
}
