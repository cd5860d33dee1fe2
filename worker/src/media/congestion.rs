//! Congestion control inside a room's [`super::router::Router`]: the state kept per transport
//! and the few calls the forwarding path makes into it (the estimators themselves are
//! [`crate::bwe`]).
//!
//! - Per **send transport** (a publisher's): a [`ReceiveSide`], transport-wide feedback every
//!   100 ms for every packet that arrived with a transport-wide sequence number (RTX and
//!   padding included: a packet left out reads as lost to the browser), or a REMB estimate
//!   when its producers negotiated only abs-send-time.
//! - Per **recv transport** (a subscriber's): a [`SendSide`]. Every copy to a consumer that
//!   negotiated transport-cc gets the transport's next sequence number, written in place (or
//!   added when the publisher's packet had none) and recorded in a fixed
//!   [`SendHistory`] ring: no allocation per copy. The subscriber's feedback joined with it
//!   drives a [`SendSideBwe`]. Probes are padding on mediasoup-client's probator stream
//!   (SSRC 1234, payload type 127, mid `probator`), paced in 5 ms steps.

use std::time::{Duration, Instant};

use rtc::rtcp::packet::Packet as RtcpPacket;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rustc_hash::FxHashMap;

use crate::bwe::probe::{MIN_PROBE_PACKETS, PROBE_DURATION_US, ProbeCluster};
use crate::bwe::{EstimateStats, PacketResult, RembEstimator, SendHistory, SendSideBwe, TransportCcFeedback};
use crate::media::router::LayerCandidates;
use crate::media::rtp_packet::RtpView;
use crate::room::{ConsumerId, Estimation, ForwardingTable, TransportId};
use crate::video::{Cap, Demand, Layers, allocate};

/// Bytes a forwarded RTP packet carries on the wire besides itself: the SRTP tag (16) and the
/// IPv4 and UDP headers (28). The estimate is of what the path carries.
pub const PACKET_OVERHEAD: usize = 44;
/// mediasoup-client's probator stream (`RTP_PROBATOR_SSRC`, `..._CODEC_PAYLOAD_TYPE`, `..._MID`).
pub const PROBATOR_SSRC: u32 = 1234;
pub const PROBATOR_PAYLOAD_TYPE: u8 = 127;
pub const PROBATOR_MID: &[u8] = b"probator";
/// Probe padding goes out in steps this far apart.
pub const PROBE_STEP: Duration = Duration::from_millis(5);
/// Probing waits until the subscriber's feedback flows and its probator has had time to exist.
const PROBE_SETTLE: Duration = Duration::from_millis(500);
/// How often each subscriber's estimate is shared out among its consumers again. mediasoup
/// redistributes on every estimate its client reports (about every 100 ms-1 s); a cap that
/// does not change costs nothing, and a switch waits for a keyframe anyway.
pub const ALLOCATION_INTERVAL: Duration = Duration::from_millis(250);

/// Feedback towards one publisher's send transport.
pub enum ReceiveSide {
    TransportCc(Box<TransportCcFeedback>),
    Remb { extension_id: u8, estimator: Box<RembEstimator>, ssrcs: Vec<u32> },
}

/// How to write a probator padding packet for one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Probator {
    transport_cc_id: u8,
    mid_id: Option<u8>,
}

#[derive(Debug, Clone, Copy)]
struct ActiveProbe {
    cluster: ProbeCluster,
    started: Instant,
    next_step: Instant,
    padding_sent: usize,
    /// Media copies sent meanwhile: stamped with the cluster's id, they count towards it.
    media_sent: usize,
    /// Packets of the cluster so far, padding and media.
    packets: u32,
    packet_size: usize,
}

/// Congestion control of one subscriber's recv transport.
pub struct SendSide {
    transport: TransportId,
    history: SendHistory,
    bwe: SendSideBwe,
    /// Set when one of its video consumers negotiated transport-cc.
    probator: Option<Probator>,
    probator_sequence: u16,
    probator_timestamp: u32,
    connected: bool,
    /// When the first feedback arrived.
    feedback_since: Option<Instant>,
    probe: Option<ActiveProbe>,
    last_sent_us: Option<i64>,
    /// Bytes sent in the current rate window and its start, and the last window's rate.
    window_bytes: usize,
    window_start_us: i64,
    sent_bps: f64,
    /// What its consumers would take unconstrained (set by allocation; the send rate until then).
    wanted_bps: Option<f64>,
}

impl SendSide {
    fn new(transport: TransportId) -> Self {
        // Start numbering somewhere unrelated to the transport's other counters.
        let first = (transport.as_str().bytes().fold(7u16, |h, b| h.wrapping_mul(31).wrapping_add(u16::from(b)))) | 1;
        SendSide {
            transport,
            history: SendHistory::new(first),
            bwe: SendSideBwe::default(),
            probator: None,
            probator_sequence: first,
            probator_timestamp: u32::from(first) << 8,
            connected: false,
            feedback_since: None,
            probe: None,
            last_sent_us: None,
            window_bytes: 0,
            window_start_us: 0,
            sent_bps: 0.0,
            wanted_bps: None,
        }
    }

    fn probe_id(&self) -> u8 {
        self.probe.map_or(0, |p| p.cluster.id)
    }

    fn on_sent(&mut self, bytes: usize, now_us: i64) {
        self.last_sent_us = Some(now_us);
        self.window_bytes += bytes;
        let elapsed = now_us - self.window_start_us;
        if elapsed >= 500_000 {
            self.sent_bps = self.window_bytes as f64 * 8e6 / elapsed as f64;
            self.window_bytes = 0;
            self.window_start_us = now_us;
        }
    }

    /// The transport's estimate.
    pub fn target_bps(&self) -> f64 {
        self.bwe.target_bps()
    }
}

/// The congestion-control state of one room.
#[derive(Default)]
pub struct Congestion {
    /// The clock every microsecond figure here counts from: the first instant seen.
    epoch: Option<Instant>,
    receive: FxHashMap<TransportId, ReceiveSide>,
    send: Vec<SendSide>,
    send_index: FxHashMap<TransportId, usize>,
    /// Reused per feedback.
    results: Vec<PacketResult>,
    /// Each layered consumer's last cap, and since when it may not climb above the spatial
    /// layer the estimate last moved it down to.
    caps: FxHashMap<ConsumerId, (Cap, Option<(Instant, u8)>)>,
}

/// After the estimate moved a consumer to a lower spatial layer, it stays at most there this
/// long (mediasoup's `BweDowngradeConservativeMs`): an estimate that hovers at a layer's
/// bitrate would otherwise switch up and down, a keyframe and a burst of loss each time.
pub const DOWNGRADE_HOLD: Duration = Duration::from_secs(10);

impl Congestion {
    /// Microseconds since the room's epoch.
    pub fn micros(&mut self, now: Instant) -> i64 {
        let epoch = *self.epoch.get_or_insert(now);
        now.saturating_duration_since(epoch).as_micros() as i64
    }

    /// Follows the room's new table: a receive side per publisher transport whose producers
    /// negotiated an estimation (the first such producer decides which, as in mediasoup), a
    /// send side per subscriber transport with a consumer that did. State of transports that
    /// stay is kept.
    pub fn update(&mut self, table: &ForwardingTable, now: Instant) {
        let mut receive = std::mem::take(&mut self.receive);
        let mut old_send: FxHashMap<TransportId, SendSide> = std::mem::take(&mut self.send).into_iter().map(|s| (s.transport.clone(), s)).collect();
        self.send_index.clear();
        for ((transport, ssrc), stream) in table.streams() {
            if let Some(estimation) = stream.estimation {
                if !self.receive.contains_key(transport) {
                    let mut side = receive.remove(transport).unwrap_or_else(|| match estimation {
                        Estimation::TransportCc { extension_id } => ReceiveSide::TransportCc(Box::new(TransportCcFeedback::new(extension_id))),
                        Estimation::Remb { abs_send_time_id } => {
                            ReceiveSide::Remb { extension_id: abs_send_time_id, estimator: Box::new(RembEstimator::new(now)), ssrcs: Vec::new() }
                        }
                    });
                    if let ReceiveSide::Remb { ssrcs, .. } = &mut side {
                        ssrcs.clear();
                    }
                    self.receive.insert(transport.clone(), side);
                }
                if let Some(ReceiveSide::Remb { ssrcs, .. }) = self.receive.get_mut(transport)
                    && !stream.rtx
                {
                    ssrcs.push(ssrc.0);
                }
            }
            for target in &stream.targets {
                let Some(estimation) = target.estimation else { continue };
                let index = *self.send_index.entry(target.transport_id.clone()).or_insert_with(|| {
                    let mut side = old_send.remove(&target.transport_id).unwrap_or_else(|| SendSide::new(target.transport_id.clone()));
                    side.probator = None;
                    self.send.push(side);
                    self.send.len() - 1
                });
                // The probator's one-byte header needs ids up to 14 (the router's are 1 and 5).
                if let (Estimation::TransportCc { extension_id: id @ 1..=14 }, crate::rtp::MediaKind::Video) = (estimation, stream.kind) {
                    self.send[index].probator.get_or_insert(Probator { transport_cc_id: id, mid_id: target.mid_extension_id });
                }
            }
        }
    }

    /// The send side of a subscriber transport, if it has one: its handle for [`Congestion::stamp`].
    pub fn send_side(&self, transport: &TransportId) -> Option<usize> {
        self.send_index.get(transport).copied()
    }

    /// Packets that arrived together on `from` at `now`: recorded for its feedback, whatever
    /// stream they belong to.
    pub fn on_arrivals(&mut self, from: &TransportId, packets: &[&[u8]], now: Instant) {
        let Some(side) = self.receive.get_mut(from) else { return };
        for packet in packets {
            let Some(view) = RtpView::parse(packet) else { continue };
            match side {
                ReceiveSide::TransportCc(feedback) => {
                    if let Some(&[a, b]) = view.extension(packet, feedback.extension_id()) {
                        feedback.on_packet(RtpView::ssrc(packet), u16::from_be_bytes([a, b]), now);
                    }
                }
                ReceiveSide::Remb { extension_id, estimator, .. } => {
                    if let Some(&[a, b, c]) = view.extension(packet, *extension_id) {
                        estimator.on_packet(u32::from_be_bytes([0, a, b, c]), packet.len(), now);
                    }
                }
            }
        }
    }

    /// Stamps a copy for a consumer with `estimation` on send side `side`, sent at `now_us`:
    /// the transport's next sequence number (or our abs-send-time for REMB), in place when the
    /// copy has the extension (as a browser's packets do), else added. `view` is the copy's
    /// layout and is updated when the extension had to be added. The hot path: no allocation
    /// while `copy` has spare capacity.
    #[inline]
    pub fn stamp(&mut self, side: usize, estimation: Estimation, view: &mut RtpView, copy: &mut Vec<u8>, now_us: i64) {
        let Some(side) = self.send.get_mut(side) else { return };
        match estimation {
            Estimation::TransportCc { extension_id } => {
                let value = side.history.next_sequence().to_be_bytes();
                if !write_extension(view, copy, extension_id, &value) {
                    return;
                }
                let probe = side.probe_id();
                side.history.record(copy.len() + PACKET_OVERHEAD, now_us, probe);
                side.on_sent(copy.len() + PACKET_OVERHEAD, now_us);
                if let Some(active) = side.probe.as_mut() {
                    active.media_sent += copy.len() + PACKET_OVERHEAD;
                    active.packets += 1;
                }
            }
            Estimation::Remb { abs_send_time_id } => {
                write_extension(view, copy, abs_send_time_id, &abs_send_time(now_us));
                side.on_sent(copy.len() + PACKET_OVERHEAD, now_us);
            }
        }
    }

    /// A subscriber transport finished DTLS: copies reach it from now on.
    pub fn on_transport_connected(&mut self, transport: &TransportId) {
        if let Some(&i) = self.send_index.get(transport) {
            self.send[i].connected = true;
        }
    }

    /// RTCP from a transport that congestion control reads: transport-cc feedback and REMB
    /// from subscribers. Returns whether it was one of those.
    pub fn on_rtcp(&mut self, from: &TransportId, packet: &dyn RtcpPacket, now: Instant) -> bool {
        let now_us = self.micros(now);
        let any = packet.as_any();
        if let Some(feedback) = any.downcast_ref::<TransportLayerCc>() {
            let Some(&i) = self.send_index.get(from) else { return true };
            let side = &mut self.send[i];
            let mut results = std::mem::take(&mut self.results);
            results.clear();
            // The last status chunk may describe more packets than the report covers.
            for ack in rtc::interceptor::convert_twcc(feedback).into_iter().take(usize::from(feedback.packet_status_count)) {
                let Some(sent) = side.history.get(ack.sequence_number) else { continue };
                if !side.history.report(ack.sequence_number, ack.arrived) {
                    continue;
                }
                let arrived_us = ack.arrived.then(|| ack.arrival.map(|a| a.as_micros() as i64)).flatten();
                if ack.arrived && arrived_us.is_none() {
                    continue;
                }
                results.push(PacketResult { sent, arrived_us });
            }
            side.bwe.on_feedback(&results, now_us);
            tracing::trace!(transport = %from, reported = feedback.packet_status_count, known = results.len(),
                lost = results.iter().filter(|r| r.arrived_us.is_none()).count(),
                probe_packets = results.iter().filter(|r| r.sent.probe != 0).count(),
                base = feedback.base_sequence_number, stats = ?side.bwe.stats(), "transport-wide feedback");
            side.feedback_since.get_or_insert(now);
            self.results = results;
            return true;
        }
        if let Some(remb) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
            if let Some(&i) = self.send_index.get(from) {
                self.send[i].bwe.on_remb(f64::from(remb.bitrate));
                self.send[i].feedback_since.get_or_insert(now);
            }
            return true;
        }
        false
    }

    /// What each subscriber transport's consumers would take unconstrained (allocation sets
    /// it; without, the send rate stands in).
    pub fn set_wanted(&mut self, transport: &TransportId, bps: f64) {
        if let Some(&i) = self.send_index.get(transport) {
            self.send[i].wanted_bps = Some(bps);
        }
    }

    /// Timers: feedback and REMBs to publishers, probes to subscribers. Each packet is
    /// `(transport, bytes, rtcp)`.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Vec<(TransportId, Vec<u8>, bool)>) {
        let now_us = self.micros(now);
        for (transport, side) in self.receive.iter_mut() {
            match side {
                ReceiveSide::TransportCc(feedback) => {
                    for report in feedback.poll_feedback(now) {
                        out.push((transport.clone(), report, true));
                    }
                }
                ReceiveSide::Remb { estimator, ssrcs, .. } => {
                    if let Some(bitrate) = estimator.poll_remb(now) {
                        let remb = ReceiverEstimatedMaximumBitrate { sender_ssrc: super::router::WORKER_SSRC, bitrate: bitrate as f32, ssrcs: ssrcs.clone() };
                        if let Ok(bytes) = rtc::rtcp::packet::marshal(&[Box::new(remb) as Box<dyn RtcpPacket>]) {
                            out.push((transport.clone(), bytes.to_vec(), true));
                        }
                    }
                }
            }
        }
        for side in &mut self.send {
            side.bwe.on_tick(side.last_sent_us, now_us);
            if side.probe.is_none() {
                let settled = side.feedback_since.is_some_and(|since| now >= since + PROBE_SETTLE);
                if let (true, true, Some(_)) = (side.connected, settled, side.probator) {
                    let wanted = side.wanted_bps.unwrap_or(side.sent_bps);
                    let cap = (2.0 * wanted).max(crate::bwe::send_side::START_BITRATE_BPS);
                    if let Some(cluster) = side.bwe.poll_probe(wanted, cap, now_us) {
                        let packet_size = (cluster.bytes() / 10).clamp(200, 1200);
                        tracing::trace!(transport = %side.transport, ?cluster, wanted, sent_bps = side.sent_bps, packet_size,
                            next_sequence = side.history.next_sequence(), "probe started");
                        side.probe = Some(ActiveProbe { cluster, started: now, next_step: now, padding_sent: 0, media_sent: 0, packets: 0, packet_size });
                    }
                }
            }
            send_probe_padding(side, now, now_us, out);
        }
    }

    /// When a probe in progress next sends padding ([`Congestion::handle_probe_steps`]); the
    /// rest runs on the router's regular tick (feedback every 100 ms give or take a tick, as
    /// libwebrtc's receivers vary theirs too).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.send.iter().filter_map(|side| side.probe.map(|p| p.next_step)).min()
    }

    /// Between ticks: the padding of probes in progress.
    pub fn handle_probe_steps(&mut self, now: Instant, out: &mut Vec<(TransportId, Vec<u8>, bool)>) {
        let now_us = self.micros(now);
        for side in self.send.iter_mut().filter(|side| side.probe.is_some_and(|p| p.next_step <= now)) {
            send_probe_padding(side, now, now_us, out);
        }
    }

    /// The estimate of each subscriber transport.
    pub fn estimates(&self) -> impl Iterator<Item = (&TransportId, EstimateStats)> + '_ {
        self.send.iter().map(|side| (&side.transport, side.bwe.stats()))
    }

    /// Shares each subscriber transport's estimate among its layered consumers by priority
    /// ([`crate::video::allocate`]) and returns every candidate's cap. The transport's prober learns what
    /// its consumers would take unconstrained.
    ///
    /// A consumer whose transport has no estimate yet is not limited: until the subscriber's
    /// first feedback the estimate is only the 600 kbps start, and a receiver that negotiated
    /// feedback but never sends it (a test peer, a load program) would be held there for good.
    ///
    /// Simple consumers (audio, single-layer video) are not shared out: their bitrate is their
    /// producer's, and the estimate is given whole to the layered ones.
    ///
    /// Linear in the candidates (it runs every [`ALLOCATION_INTERVAL`] and after every table
    /// update, with a consumer per subscriber and publisher: a search per candidate would make
    /// a room of 1,000 subscribers cost the media thread tens of milliseconds each time).
    pub fn allocate(&mut self, candidates: &[LayerCandidates], now: Instant) -> Vec<(ConsumerId, Cap)> {
        let mut caps = Vec::with_capacity(candidates.len());
        let current: rustc_hash::FxHashSet<&ConsumerId> = candidates.iter().map(|c| &c.consumer_id).collect();
        self.caps.retain(|id, _| current.contains(id));
        // The candidates by transport, transports in order.
        let mut groups: FxHashMap<&TransportId, usize> = FxHashMap::default();
        let mut grouped: Vec<Vec<&LayerCandidates>> = Vec::new();
        for c in candidates {
            let next = grouped.len();
            let at = *groups.entry(&c.transport_id).or_insert(next);
            if at == next {
                grouped.push(Vec::new());
            }
            grouped[at].push(c);
        }
        grouped.sort_by(|a, b| a[0].transport_id.cmp(&b[0].transport_id));
        for group in grouped {
            let transport = &group[0].transport_id;
            let side = self.send_index.get(transport).copied().filter(|&i| self.send[i].feedback_since.is_some());
            let Some(side) = side else {
                caps.extend(group.iter().map(|c| (c.consumer_id.clone(), Cap::Unlimited)));
                continue;
            };
            // While a downgrade's hold lasts, nothing above the spatial layer it moved to.
            let offers: Vec<Vec<(Layers, u64)>> = group
                .iter()
                .map(|c| {
                    let held = self.caps.get(&c.consumer_id).and_then(|(_, hold)| *hold).filter(|(since, _)| now < *since + DOWNGRADE_HOLD);
                    c.layers
                        .iter()
                        .filter(|l| held.is_none_or(|(_, spatial)| l.layers.spatial_layer <= spatial))
                        .map(|l| (l.layers, l.bitrate))
                        .collect()
                })
                .collect();
            let demands: Vec<Demand> =
                group.iter().zip(&offers).map(|(c, layers)| Demand { priority: c.priority, preferred: c.preferred, layers }).collect();
            let available = self.send[side].target_bps().max(0.0) as u64;
            // The start value is a guess, not a measurement: a cap from it lasts only until a
            // probe (or the path) says more, and does not hold the consumer down afterwards.
            let measured = self.send[side].bwe.is_established();
            let allocation = allocate(available, &demands);
            // What the prober may aim for: every consumer's preferred layer (or the lowest sent).
            let wanted: u64 = group
                .iter()
                .map(|c| c.layers.iter().take_while(|l| l.layers <= c.preferred).last().or(c.layers.first()).map_or(0, |l| l.bitrate))
                .sum();
            self.send[side].wanted_bps = Some(wanted as f64);
            for (c, cap) in group.iter().zip(allocation) {
                let spatial = |cap: Cap| match cap {
                    Cap::UpTo(layers) => Some(layers.spatial_layer),
                    _ => None,
                };
                let entry = self.caps.entry(c.consumer_id.clone()).or_insert((Cap::Unlimited, None));
                let before = match entry.0 {
                    Cap::Unlimited => c.layers.last().map(|l| l.layers.spatial_layer),
                    other => spatial(other),
                };
                // Only a cap below what the app prefers holds: a lower preference is no downgrade.
                let preferred = c.layers.iter().take_while(|l| l.layers <= c.preferred).last().map(|l| l.layers.spatial_layer);
                if let (true, Some(before), Some(after), Some(preferred)) = (measured, before, spatial(cap), preferred)
                    && after < before
                    && after < preferred
                {
                    entry.1 = Some((now, after));
                }
                if entry.0 != cap {
                    tracing::debug!(consumer = %c.consumer_id, transport = %transport, estimate_bps = available,
                        from = ?entry.0, to = ?cap, held = ?entry.1, "consumer layer cap changed");
                }
                entry.0 = cap;
                caps.push((c.consumer_id.clone(), cap));
            }
        }
        caps
    }

    /// The send side of `transport`, for allocation.
    pub fn side(&self, transport: &TransportId) -> Option<&SendSide> {
        self.send_index.get(transport).map(|&i| &self.send[i])
    }
}

/// Writes extension `id` in place or adds it, keeping `view` the copy's layout.
#[inline]
fn write_extension(view: &mut RtpView, copy: &mut Vec<u8>, id: u8, value: &[u8]) -> bool {
    if view.extension(copy, id).is_some_and(|v| v.len() == value.len()) {
        return view.set_extension_value(copy, id, value);
    }
    let written = if view.extension(copy, id).is_some() { view.set_extension_value(copy, id, value) } else { view.add_extension(copy, id, value) };
    if written && let Some(updated) = RtpView::parse(copy) {
        *view = updated;
    }
    written
}

/// abs-send-time for `now_us`: 6.18 fixed-point seconds in 24 bits.
fn abs_send_time(now_us: i64) -> [u8; 3] {
    let value = ((now_us as u64) << 18) / 1_000_000;
    let [_, _, _, _, _, a, b, c] = value.to_be_bytes();
    [a, b, c]
}

/// The padding due for a probe in progress, in [`PROBE_STEP`]s over [`PROBE_DURATION_US`]:
/// what the cluster's rate has sent by the end of this step, less what went out already
/// (padding, and media stamped with the cluster). The last step sends the whole remainder
/// and at least [`MIN_PROBE_PACKETS`] packets in all, however late the steps ran: a cluster
/// that falls short of what the estimator needs measures nothing, and the next probe is
/// seconds away.
fn send_probe_padding(side: &mut SendSide, now: Instant, now_us: i64, out: &mut Vec<(TransportId, Vec<u8>, bool)>) {
    let (Some(mut probe), Some(probator)) = (side.probe, side.probator) else {
        side.probe = None;
        return;
    };
    let elapsed_us = now.saturating_duration_since(probe.started).as_micros() as i64;
    let step_end_us = elapsed_us + PROBE_STEP.as_micros() as i64;
    let last_step = step_end_us >= PROBE_DURATION_US;
    let due = if last_step {
        probe.cluster.bytes()
    } else {
        (probe.cluster.target_bps * step_end_us as f64 / 8e6) as usize
    };
    loop {
        let sent = probe.padding_sent + probe.media_sent;
        let wanted = sent + probe.packet_size <= due || (last_step && (sent < due || probe.packets < MIN_PROBE_PACKETS));
        if !wanted {
            break;
        }
        let sequence = side.history.next_sequence();
        let packet = probator_packet(probator, side.probator_sequence, side.probator_timestamp, sequence, probe.packet_size);
        side.probator_sequence = side.probator_sequence.wrapping_add(1);
        side.history.record(packet.len() + PACKET_OVERHEAD, now_us, probe.cluster.id);
        side.on_sent(packet.len() + PACKET_OVERHEAD, now_us);
        probe.padding_sent += packet.len() + PACKET_OVERHEAD;
        probe.packets += 1;
        out.push((side.transport.clone(), packet, false));
    }
    side.probator_timestamp = side.probator_timestamp.wrapping_add(90);
    probe.next_step = now + PROBE_STEP;
    side.probe = (!last_step).then_some(probe);
    if side.probe.is_none() {
        tracing::trace!(transport = %side.transport, cluster = ?probe.cluster, padding_bytes = probe.padding_sent,
            next_sequence = side.history.next_sequence(), "probe ended");
    }
}

/// A probator packet of `size` bytes: mid `probator` and the transport-wide sequence number in
/// its header, zeros after (as mediasoup's `RtpProbationGenerator` sends; the browser finds
/// no frame in them and drops them once counted).
fn probator_packet(probator: Probator, sequence: u16, timestamp: u32, transport_sequence: u16, size: usize) -> Vec<u8> {
    let mut packet = Vec::with_capacity(size.max(40));
    packet.extend_from_slice(&[0x90, PROBATOR_PAYLOAD_TYPE]);
    packet.extend_from_slice(&sequence.to_be_bytes());
    packet.extend_from_slice(&timestamp.to_be_bytes());
    packet.extend_from_slice(&PROBATOR_SSRC.to_be_bytes());
    let mut block = Vec::with_capacity(16);
    if let Some(mid) = probator.mid_id.filter(|id| (1..=14).contains(id)) {
        block.push((mid << 4) | (PROBATOR_MID.len() as u8 - 1));
        block.extend_from_slice(PROBATOR_MID);
    }
    block.push((probator.transport_cc_id << 4) | 1);
    block.extend_from_slice(&transport_sequence.to_be_bytes());
    while block.len() % 4 != 0 {
        block.push(0);
    }
    packet.extend_from_slice(&[0xBE, 0xDE]);
    packet.extend_from_slice(&((block.len() / 4) as u16).to_be_bytes());
    packet.extend_from_slice(&block);
    packet.resize(size.max(packet.len() + 1), 0);
    packet
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::LayerBitrate;

    fn layers(spatial_layer: u8) -> Layers {
        Layers { spatial_layer, temporal_layer: 0 }
    }

    /// One consumer on transport `t` of a producer sending three spatial layers.
    fn candidates() -> Vec<LayerCandidates> {
        let bitrates = [150_000, 500_000, 1_500_000];
        vec![LayerCandidates {
            consumer_id: ConsumerId::from("c"),
            transport_id: TransportId::from("t"),
            priority: 1,
            preferred: layers(2),
            layers: bitrates.iter().enumerate().map(|(s, &bitrate)| LayerBitrate { layers: layers(s as u8), bitrate }).collect(),
        }]
    }

    /// Congestion control with transport `t`'s send side, its feedback flowing since `at`.
    fn with_send_side(at: Instant) -> Congestion {
        let mut congestion = Congestion::default();
        let mut side = SendSide::new(TransportId::from("t"));
        side.feedback_since = Some(at);
        congestion.send_index.insert(TransportId::from("t"), 0);
        congestion.send.push(side);
        congestion
    }

    fn spatial(caps: &[(ConsumerId, Cap)]) -> Option<u8> {
        match caps[0].1 {
            Cap::UpTo(l) => Some(l.spatial_layer),
            Cap::Unlimited => Some(u8::MAX),
            Cap::Nothing => None,
        }
    }

    #[test]
    fn a_cap_from_the_unmeasured_start_estimate_does_not_hold_the_consumer_down() {
        let t0 = Instant::now();
        let mut congestion = with_send_side(t0);
        // 600 kbps, the start value: the top layer does not fit yet.
        assert_eq!(spatial(&congestion.allocate(&candidates(), t0)), Some(1));
        // The first measurement carries it: up at once, not after a downgrade's hold.
        congestion.send[0].bwe.on_remb(3_000_000.0);
        let later = t0 + ALLOCATION_INTERVAL;
        assert_eq!(spatial(&congestion.allocate(&candidates(), later)), Some(2));
    }

    #[test]
    fn a_measured_downgrade_holds_for_the_hold_time() {
        let t0 = Instant::now();
        let mut congestion = with_send_side(t0);
        congestion.send[0].bwe.on_remb(3_000_000.0);
        assert_eq!(spatial(&congestion.allocate(&candidates(), t0)), Some(2));
        congestion.send[0].bwe.on_remb(600_000.0);
        assert_eq!(spatial(&congestion.allocate(&candidates(), t0 + Duration::from_secs(1))), Some(1));
        congestion.send[0].bwe.on_remb(3_000_000.0);
        assert_eq!(spatial(&congestion.allocate(&candidates(), t0 + Duration::from_secs(2))), Some(1), "held");
        let after = t0 + Duration::from_secs(1) + DOWNGRADE_HOLD + ALLOCATION_INTERVAL;
        assert_eq!(spatial(&congestion.allocate(&candidates(), after)), Some(2), "back up once the hold is over");
    }

    /// A send side in the middle of a probe of `target_bps`, its padding `packet_size` bytes.
    fn probing(started: Instant, target_bps: f64, packet_size: usize) -> SendSide {
        let mut side = SendSide::new(TransportId::from("t"));
        side.probator = Some(Probator { transport_cc_id: 5, mid_id: Some(1) });
        let cluster = ProbeCluster { id: 1, target_bps };
        side.probe = Some(ActiveProbe { cluster, started, next_step: started, padding_sent: 0, media_sent: 0, packets: 0, packet_size });
        side
    }

    fn sent_bytes(out: &[(TransportId, Vec<u8>, bool)]) -> usize {
        out.iter().map(|(_, packet, _)| packet.len() + PACKET_OVERHEAD).sum()
    }

    #[test]
    fn a_probe_whose_steps_run_late_still_sends_its_whole_cluster() {
        let t0 = Instant::now();
        let mut side = probing(t0, 1_800_000.0, 900);
        let cluster = side.probe.unwrap().cluster;
        let mut out = Vec::new();
        send_probe_padding(&mut side, t0, 0, &mut out);
        send_probe_padding(&mut side, t0 + Duration::from_millis(12), 12_000, &mut out);
        // The media thread came back only after the cluster's time was up.
        send_probe_padding(&mut side, t0 + Duration::from_millis(47), 47_000, &mut out);
        assert!(side.probe.is_none(), "the probe is over");
        assert!(sent_bytes(&out) >= cluster.bytes(), "{} of {} bytes", sent_bytes(&out), cluster.bytes());
        assert!(out.len() >= MIN_PROBE_PACKETS as usize);
        assert!(sent_bytes(&out) < cluster.bytes() + 900 + PACKET_OVERHEAD, "and not much more");
    }

    #[test]
    fn media_sent_during_a_probe_counts_towards_it() {
        let t0 = Instant::now();
        let mut side = probing(t0, 1_000_000.0, 500);
        let cluster = side.probe.unwrap().cluster;
        // A frame's worth of media went out stamped with the cluster.
        if let Some(probe) = side.probe.as_mut() {
            probe.media_sent = cluster.bytes() / 2;
            probe.packets = 3;
        }
        let mut out = Vec::new();
        for ms in [0u64, 10, 20, 30, 40] {
            send_probe_padding(&mut side, t0 + Duration::from_millis(ms), ms as i64 * 1000, &mut out);
        }
        assert!(side.probe.is_none());
        let padding = sent_bytes(&out);
        assert!(padding + cluster.bytes() / 2 >= cluster.bytes(), "the cluster is whole: {padding} bytes of padding");
        assert!(padding <= cluster.bytes() / 2 + 500 + PACKET_OVERHEAD, "padding only fills what media did not: {padding}");
    }

    #[test]
    fn a_small_probe_still_sends_the_packets_the_estimator_needs() {
        let t0 = Instant::now();
        // 300 kbps over 40 ms is 1500 bytes: fewer than five padding packets of 1200.
        let mut side = probing(t0, 300_000.0, 200);
        let mut out = Vec::new();
        send_probe_padding(&mut side, t0 + Duration::from_millis(40), 40_000, &mut out);
        assert!(out.len() >= MIN_PROBE_PACKETS as usize, "{} packets", out.len());
    }
}
