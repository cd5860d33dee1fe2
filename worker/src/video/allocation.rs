//! How one recv transport's available bitrate is shared across its layered consumers: the
//! [`Cap`] of each, which [`super::choose_layers`] then applies.
//!
//! [`allocate`] is pure: the caller gives it the transport's estimate (from the congestion
//! controller) and, per consumer, its priority, preferred layers and what each layer the
//! producer sends costs now (`Router::layer_candidates`); it hands back one cap per consumer
//! for `Router::set_consumer_cap`. It follows mediasoup's
//! `Transport::DistributeAvailableOutgoingBitrate`:
//!
//! 1. in priority order (highest first; equal priorities in the order given), each consumer
//!    gets its lowest wanted layer if that still fits, else nothing (stopped, not starved:
//!    a lower layer it cannot have would only lose packets for everyone on the link);
//! 2. then in rounds, each consumer in priority order climbs up to `priority` layers, each
//!    step taken only if its extra bitrate still fits, until a round changes nothing. A
//!    consumer of priority 3 thus climbs three layers for every one of a consumer of
//!    priority 1, and a costly step of one consumer does not block cheaper steps of others.
//!
//! "Wanted" layers are those at or below the preferred ones; when the producer sends only
//! layers above the preference, the lowest of them (what `choose_layers` would pick).

use super::layers::{Cap, Layers};

/// One consumer's claim on its transport's bitrate.
#[derive(Debug, Clone, Copy)]
pub struct Demand<'a> {
    /// 1-255: how fast it climbs against the others.
    pub priority: u8,
    /// What its app prefers: it is never given more.
    pub preferred: Layers,
    /// Every layer its producer sends now, lowest first, with the bits per second a consumer
    /// of that layer receives (cumulative: the layer and what it depends on).
    pub layers: &'a [(Layers, u64)],
}

/// Shares `available_bps` across `demands`: one cap per demand, in the same order.
pub fn allocate(available_bps: u64, demands: &[Demand<'_>]) -> Vec<Cap> {
    let wanted: Vec<&[(Layers, u64)]> = demands
        .iter()
        .map(|d| {
            let upto = d.layers.iter().take_while(|(layers, _)| *layers <= d.preferred).count();
            &d.layers[..upto.max(d.layers.len().min(1))]
        })
        .collect();
    let mut order: Vec<usize> = (0..demands.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(demands[i].priority));
    // Per demand, the index of its granted layer in `wanted`.
    let mut granted: Vec<Option<usize>> = vec![None; demands.len()];
    let mut left = available_bps;
    for &i in &order {
        if let Some(&(_, cost)) = wanted[i].first()
            && cost <= left
        {
            granted[i] = Some(0);
            left -= cost;
        }
    }
    loop {
        let mut climbed = false;
        for &i in &order {
            let Some(mut at) = granted[i] else { continue };
            for _ in 0..demands[i].priority.max(1) {
                let Some(&(_, next)) = wanted[i].get(at + 1) else { break };
                let step = next.saturating_sub(wanted[i][at].1);
                if step > left {
                    break;
                }
                left -= step;
                at += 1;
                climbed = true;
            }
            granted[i] = Some(at);
        }
        if !climbed {
            break;
        }
    }
    (0..demands.len())
        .map(|i| match (granted[i], wanted[i].is_empty()) {
            // Nothing is sent: nothing to limit (choose_layers says the producer is inactive).
            (_, true) => Cap::Unlimited,
            (Some(at), false) => Cap::UpTo(wanted[i][at].0),
            (None, false) => Cap::Nothing,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three simulcast encodings of three temporal layers, as Chrome sends a 1280x720 camera:
    /// about 150 kbps, 500 kbps and 1.5 Mbps at the top temporal layer.
    fn chrome_simulcast() -> Vec<(Layers, u64)> {
        let tops = [150_000u64, 500_000, 1_500_000];
        let mut layers = Vec::new();
        for (spatial, top) in tops.iter().enumerate() {
            for temporal in 0..3u8 {
                // Temporal layers at 50 %, 75 % and 100 % of the encoding's bitrate.
                layers.push((Layers::new(spatial as u8, temporal), top * (2 + u64::from(temporal)) / 4));
            }
        }
        layers
    }

    const TOP: Layers = Layers::new(2, 2);

    fn one(available: u64, preferred: Layers, layers: &[(Layers, u64)]) -> Cap {
        allocate(available, &[Demand { priority: 1, preferred, layers }])[0]
    }

    #[test]
    fn one_consumer_gets_the_highest_layer_that_fits() {
        let layers = chrome_simulcast();
        assert_eq!(one(10_000_000, TOP, &layers), Cap::UpTo(TOP));
        assert_eq!(one(1_500_000, TOP, &layers), Cap::UpTo(TOP), "exactly enough");
        assert_eq!(one(1_499_999, TOP, &layers), Cap::UpTo(Layers::new(2, 1)));
        assert_eq!(one(600_000, TOP, &layers), Cap::UpTo(Layers::new(1, 2)));
        assert_eq!(one(200_000, TOP, &layers), Cap::UpTo(Layers::new(0, 2)));
        assert_eq!(one(75_000, TOP, &layers), Cap::UpTo(Layers::new(0, 0)));
    }

    #[test]
    fn below_the_lowest_layer_the_consumer_gets_nothing() {
        assert_eq!(one(74_999, TOP, &chrome_simulcast()), Cap::Nothing);
        assert_eq!(one(0, TOP, &chrome_simulcast()), Cap::Nothing);
    }

    #[test]
    fn no_more_than_the_preference_is_given_and_the_rest_is_left_to_others() {
        let layers = chrome_simulcast();
        let caps = allocate(
            1_000_000,
            &[
                Demand { priority: 1, preferred: Layers::new(0, 2), layers: &layers },
                Demand { priority: 1, preferred: TOP, layers: &layers },
            ],
        );
        // The first takes no more than r0 (150 kbps); the second gets what is left, 850 kbps:
        // r2's lowest temporal layer (750 kbps), not its next (1.125 Mbps).
        assert_eq!(caps, [Cap::UpTo(Layers::new(0, 2)), Cap::UpTo(Layers::new(2, 0))]);
    }

    #[test]
    fn a_preference_below_what_is_sent_still_gets_the_lowest_sent_layer() {
        // r0 is not sent (Chrome dropped it): only r1 and r2 are candidates.
        let layers: Vec<(Layers, u64)> = chrome_simulcast().into_iter().filter(|(l, _)| l.spatial_layer > 0).collect();
        assert_eq!(one(10_000_000, Layers::new(0, 2), &layers), Cap::UpTo(Layers::new(1, 0)));
        assert_eq!(one(100_000, Layers::new(0, 2), &layers), Cap::Nothing);
    }

    #[test]
    fn nothing_sent_is_not_limited() {
        assert_eq!(one(0, TOP, &[]), Cap::Unlimited);
    }

    #[test]
    fn higher_priority_climbs_faster_and_is_served_first() {
        let layers = chrome_simulcast();
        let demands = |first: u8, second: u8| {
            [
                Demand { priority: first, preferred: TOP, layers: &layers },
                Demand { priority: second, preferred: TOP, layers: &layers },
            ]
        };
        // 1.2 Mbps for two: equal priorities climb in step and both end on r1 (500 kbps each)...
        assert_eq!(allocate(1_200_000, &demands(1, 1)), [Cap::UpTo(Layers::new(1, 2)); 2]);
        // ...a priority of 3 climbs three layers per round to the other's one: it reaches r2
        // (750 kbps) and the other is left with part of r1 (375 kbps).
        let caps = allocate(1_200_000, &demands(1, 3));
        assert_eq!(caps, [Cap::UpTo(Layers::new(1, 1)), Cap::UpTo(Layers::new(2, 0))]);
        // Too little for two lowest layers: the higher priority gets the one there is.
        assert_eq!(allocate(100_000, &demands(1, 2)), [Cap::Nothing, Cap::UpTo(Layers::new(0, 0))]);
        // Equal priorities: the order given decides.
        assert_eq!(allocate(100_000, &demands(1, 1)), [Cap::UpTo(Layers::new(0, 0)), Cap::Nothing]);
    }

    #[test]
    fn a_costly_step_of_one_consumer_does_not_block_cheaper_steps_of_others() {
        let big = [(Layers::new(0, 0), 100_000), (Layers::new(1, 0), 2_000_000)];
        let small = [(Layers::new(0, 0), 50_000), (Layers::new(0, 1), 80_000), (Layers::new(0, 2), 100_000)];
        let caps = allocate(
            300_000,
            &[
                Demand { priority: 5, preferred: TOP, layers: &big },
                Demand { priority: 1, preferred: TOP, layers: &small },
            ],
        );
        assert_eq!(caps, [Cap::UpTo(Layers::new(0, 0)), Cap::UpTo(Layers::new(0, 2))]);
    }

    #[test]
    fn what_is_granted_never_exceeds_what_is_available() {
        // Over many budgets and priority mixes: the granted layers' costs add up to at most
        // the budget, each cap is a wanted layer, and one more step for anyone would not fit
        // (nothing is left unused that a consumer could have climbed with).
        let layers = chrome_simulcast();
        let cost = |cap: Cap| match cap {
            Cap::UpTo(l) => layers.iter().find(|(x, _)| *x == l).map(|(_, c)| *c).unwrap(),
            _ => 0,
        };
        for budget in (0..4_000_000).step_by(37_000) {
            for priorities in [[1, 1, 1], [1, 2, 3], [255, 1, 7], [3, 3, 1]] {
                let demands: Vec<Demand> = priorities.iter().map(|&priority| Demand { priority, preferred: TOP, layers: &layers }).collect();
                let caps = allocate(budget, &demands);
                let used: u64 = caps.iter().map(|&c| cost(c)).sum();
                assert!(used <= budget, "{budget}: {caps:?} uses {used}");
                for &cap in &caps {
                    let next = match cap {
                        Cap::UpTo(l) => layers.iter().find(|(x, _)| *x > l).map(|(_, c)| c - cost(cap)),
                        Cap::Nothing => Some(layers[0].1),
                        Cap::Unlimited => panic!("layers are sent"),
                    };
                    if let Some(step) = next {
                        assert!(used + step > budget, "{budget} {priorities:?}: {caps:?} leaves {} unused", budget - used);
                    }
                }
            }
        }
    }
}
