//! The pure parts together over simulated time, as the router drives them for one consumer of
//! a three-encoding simulcast producer: what the producer sends and the downlink's available
//! bitrate change, [`allocate`] caps the consumer, [`choose_layers`] sets its target and the
//! [`LayerSelector`] switches only on keyframes, which arrive some frames after being asked
//! for (as a browser's do).

use super::allocation::{Demand, allocate};
use super::descriptor::PayloadInfo;
use super::layers::{Cap, LayerChoice, Layers, SpatialLayer, choose_layers};
use super::selector::{LayerSelector, Mode, Verdict};

const FRAME_MS: u64 = 33;
/// A stream without a packet for this long counts as not sent (the router's `INACTIVE_AFTER`).
const INACTIVE_AFTER_MS: u64 = 1500;
/// What each encoding costs, bits per second (Chrome's 1280x720 camera, roughly).
const COST: [u64; 3] = [150_000, 500_000, 1_500_000];
/// Browsers answer a keyframe request after a few frames.
const KEYFRAME_DELAY_MS: u64 = 100;
/// Unasked keyframes, per encoding (offset so they rarely coincide).
const KEYFRAME_INTERVAL_MS: u64 = 3000;

struct Sim {
    now_ms: u64,
    selector: LayerSelector,
    preferred: Layers,
    last_packet: [Option<u64>; 3],
    keyframe_at: [Option<u64>; 3],
    /// The encoding forwarded at each frame (None: nothing), and switches (time, encoding).
    forwarded: Vec<(u64, Option<u8>)>,
    switches: Vec<(u64, u8)>,
    choice: LayerChoice,
}

impl Sim {
    fn new() -> Self {
        Sim {
            now_ms: 0,
            selector: LayerSelector::new(Mode::Simulcast, 3, 1),
            preferred: Layers::new(2, 0),
            last_packet: [None; 3],
            keyframe_at: [None; 3],
            forwarded: Vec::new(),
            switches: Vec::new(),
            choice: LayerChoice::ProducerInactive,
        }
    }

    /// Runs until `until_ms` with the producer sending `sent` and `available_bps` on the
    /// consumer's downlink.
    fn run(&mut self, until_ms: u64, sent: [bool; 3], available_bps: u64) {
        while self.now_ms < until_ms {
            self.step(sent, available_bps);
            self.now_ms += FRAME_MS;
        }
    }

    fn step(&mut self, sent: [bool; 3], available_bps: u64) {
        let now = self.now_ms;
        // What the producer sends, as the router sees it, and what each layer costs.
        let spatial: Vec<SpatialLayer> = (0..3)
            .map(|s| SpatialLayer { active: self.last_packet[s].is_some_and(|at| now - at < INACTIVE_AFTER_MS), temporal_layers: 1 })
            .collect();
        let layers: Vec<(Layers, u64)> = (0..3).filter(|&s| spatial[s].active).map(|s| (Layers::new(s as u8, 0), COST[s])).collect();
        let cap = allocate(available_bps, &[Demand { priority: 1, preferred: self.preferred, layers: &layers }])[0];
        self.choice = choose_layers(self.preferred, cap, &spatial);
        let before = self.selector.target();
        if self.selector.set_target(self.choice.layers())
            && self.selector.target() != before
            && let Some(target) = self.selector.target()
        {
            let s = usize::from(target.spatial_layer);
            self.keyframe_at[s].get_or_insert(now + KEYFRAME_DELAY_MS);
        }
        // One packet (a whole frame) per encoding sent.
        let mut forwarded = None;
        for s in (0..3).filter(|&s| sent[s]) {
            let periodic = (now + s as u64 * 1000) % KEYFRAME_INTERVAL_MS < FRAME_MS;
            let asked = self.keyframe_at[s].is_some_and(|at| at <= now);
            let keyframe = periodic || asked || self.last_packet[s].is_none();
            if keyframe {
                self.keyframe_at[s] = None;
            }
            self.last_packet[s] = Some(now);
            let info = PayloadInfo { keyframe, begins_frame: true, ..PayloadInfo::default() };
            match self.selector.admit(s as u8, &info) {
                Verdict::Forward(forward) => {
                    // The old encoding's frame may still go out at the instant of the switch
                    // (before the new one's keyframe); otherwise one encoding at a time.
                    assert!(forwarded.is_none() || forward.switched, "{now} ms: two encodings forwarded at once");
                    forwarded = Some(s as u8);
                    if forward.switched {
                        assert!(keyframe, "{now} ms: switched to r{s} on a frame that is not a keyframe");
                        self.switches.push((now, s as u8));
                    }
                }
                Verdict::Skip => panic!("simulcast without temporal layers skips nothing"),
                Verdict::Drop => {}
            }
        }
        self.forwarded.push((now, forwarded));
    }

    fn current(&self) -> Option<u8> {
        self.selector.current().map(|c| c.spatial_layer)
    }

    /// The first switch to `encoding` at or after `from_ms`.
    fn switch_to(&self, encoding: u8, from_ms: u64) -> Option<u64> {
        self.switches.iter().find(|&&(at, s)| at >= from_ms && s == encoding).map(|&(at, _)| at)
    }

    /// Frames between `from_ms` and `to_ms` at which nothing was forwarded.
    fn gaps(&self, from_ms: u64, to_ms: u64) -> usize {
        self.forwarded.iter().filter(|&&(at, f)| at >= from_ms && at < to_ms && f.is_none()).count()
    }
}

const ALL: [bool; 3] = [true; 3];
const PLENTY: u64 = 5_000_000;

#[test]
fn a_consumer_climbs_as_encodings_start_and_the_bitrate_allows_and_only_at_keyframes() {
    let mut sim = Sim::new();
    // Chrome starts with r0 alone and adds r1 and r2 as its estimate grows.
    sim.run(2000, [true, false, false], PLENTY);
    assert_eq!(sim.current(), Some(0));
    sim.run(4000, ALL, PLENTY);
    assert_eq!(sim.current(), Some(2), "up to r2 once it is sent: {:?}", sim.switches);
    let up = sim.switch_to(2, 2000).unwrap();
    // r2 counts as sent from its second frame; the keyframe asked for then comes
    // KEYFRAME_DELAY_MS later, and the switch waits for it.
    assert!((2000 + KEYFRAME_DELAY_MS..=2000 + KEYFRAME_DELAY_MS + 3 * FRAME_MS).contains(&up), "up at {up} ms");
    // From r0's first keyframe on, r0 went on until r2's: the picture never stopped.
    assert_eq!(sim.gaps(200, 4000), 0);
}

#[test]
fn a_consumer_steps_down_when_the_bitrate_falls_and_back_up_when_it_recovers() {
    let mut sim = Sim::new();
    sim.run(3000, ALL, PLENTY);
    assert_eq!(sim.current(), Some(2));
    // The downlink now carries 700 kbps: r1 (500 kbps), not r2.
    sim.run(5000, ALL, 700_000);
    let down = sim.switch_to(1, 3000).expect("down to r1");
    assert_eq!(sim.current(), Some(1));
    assert!(down >= 3000 + KEYFRAME_DELAY_MS, "a move down also waits for r1's keyframe ({down} ms)");
    // 200 kbps: r0.
    sim.run(7000, ALL, 200_000);
    assert_eq!(sim.current(), Some(0));
    // Recovered: back on top.
    sim.run(9000, ALL, PLENTY);
    assert_eq!(sim.current(), Some(2));
    assert_eq!(sim.gaps(200, 9000), 0, "one encoding forwarded at every frame from the first keyframe on");
    let encodings: Vec<u8> = sim.switches.iter().map(|&(_, s)| s).collect();
    assert_eq!(encodings, [2, 1, 0, 2], "each change one switch, none back and forth");
}

#[test]
fn a_stream_that_stops_is_left_for_the_next_one_down() {
    let mut sim = Sim::new();
    sim.run(3000, ALL, PLENTY);
    assert_eq!(sim.current(), Some(2));
    // r2 stops arriving (the publisher's uplink dropped it): its score falls to 0 after
    // INACTIVE_AFTER_MS, and r1 is asked for.
    sim.run(6000, [true, true, false], PLENTY);
    let down = sim.switch_to(1, 3000).expect("down to r1");
    assert!(down >= 3000 + INACTIVE_AFTER_MS, "not before r2 counts as stopped ({down} ms)");
    assert!(down <= 3000 + INACTIVE_AFTER_MS + KEYFRAME_DELAY_MS + 2 * FRAME_MS, "at r1's asked-for keyframe ({down} ms)");
    assert_eq!(sim.current(), Some(1));
    // r2 comes back: up again at its keyframe.
    sim.run(9000, ALL, PLENTY);
    assert_eq!(sim.current(), Some(2));
}

#[test]
fn below_the_lowest_layer_nothing_is_sent_until_a_layer_fits_again() {
    let mut sim = Sim::new();
    sim.run(3000, ALL, PLENTY);
    sim.run(5000, ALL, 100_000);
    assert_eq!(sim.choice, LayerChoice::NoLayerFits);
    assert_eq!(sim.current(), None);
    let frames = sim.forwarded.iter().filter(|&&(at, _)| (3000..5000).contains(&at)).count();
    assert_eq!(sim.gaps(3000, 5000), frames, "stopped at once, not starved on a layer the link cannot carry");
    sim.run(7000, ALL, 600_000);
    assert_eq!(sim.current(), Some(1), "600 kbps carries r1 again");
    assert_eq!(
        allocate(100_000, &[Demand { priority: 1, preferred: Layers::new(2, 0), layers: &[(Layers::new(0, 0), COST[0])] }]),
        [Cap::Nothing]
    );
}
