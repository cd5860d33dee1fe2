//! Spatial and temporal layers, and the one decision about them: which layers a consumer
//! should receive ([`choose_layers`]).
//!
//! A consumer of a simulcast or SVC producer keeps three values apart, as mediasoup's
//! `SimulcastConsumer` does:
//!
//! - **preferred**: what the application asked for (`setPreferredLayers`), the highest by
//!   default;
//! - **target**: what it should get now, [`choose_layers`] of the preferred layers, what the
//!   subscriber's downlink allows (the allocator's cap) and what the producer sends;
//! - **current**: what it actually gets. A spatial switch only happens on a keyframe of the
//!   new layer, so current trails target until one arrives.

use serde::{Deserialize, Serialize};

/// A spatial and a temporal layer, both counted from 0 (the lowest). They order
/// lexicographically: any temporal layer of spatial layer 1 is above every one of layer 0,
/// which is how bitrate and quality order them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Layers {
    /// For simulcast the encoding (0 = the smallest); for SVC the spatial layer.
    pub spatial_layer: u8,
    /// The temporal layer (0 = the lowest frame rate).
    pub temporal_layer: u8,
}

impl Layers {
    /// Spatial layer `spatial`, temporal layer `temporal`.
    pub const fn new(spatial: u8, temporal: u8) -> Self {
        Layers { spatial_layer: spatial, temporal_layer: temporal }
    }
}

/// A webrtc-svc scalability mode such as `L1T3`, `L3T3_KEY` or `S2T1`, as mediasoup reads it
/// (`^[LS]([1-9]\d?)T([1-9]\d?)`, with `_KEY` for K-SVC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScalabilityMode {
    pub spatial_layers: u8,
    pub temporal_layers: u8,
    /// `..._KEY`: upper spatial layers depend on lower ones only at keyframes.
    pub k_svc: bool,
}

impl ScalabilityMode {
    /// One layer of each, what an encoding without a mode has.
    pub const SINGLE: ScalabilityMode = ScalabilityMode { spatial_layers: 1, temporal_layers: 1, k_svc: false };

    /// The mode `mode` names; [`Self::SINGLE`] when absent or unreadable.
    pub fn parse(mode: Option<&str>) -> ScalabilityMode {
        fn count(text: &[u8]) -> Option<(u8, &[u8])> {
            let (&first, mut rest) = text.split_first()?;
            if !(b'1'..=b'9').contains(&first) {
                return None;
            }
            let mut value = first - b'0';
            if let Some((&second, after)) = rest.split_first()
                && second.is_ascii_digit()
            {
                value = value * 10 + (second - b'0');
                rest = after;
            }
            Some((value, rest))
        }
        let parsed = mode.and_then(|mode| {
            let rest = mode.as_bytes().strip_prefix(b"L").or_else(|| mode.as_bytes().strip_prefix(b"S"))?;
            let (spatial_layers, rest) = count(rest)?;
            let (temporal_layers, rest) = count(rest.strip_prefix(b"T")?)?;
            Some(ScalabilityMode { spatial_layers, temporal_layers, k_svc: rest.starts_with(b"_KEY") })
        });
        parsed.unwrap_or(Self::SINGLE)
    }
}

/// What the producer sends of one spatial layer right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpatialLayer {
    /// Packets of it arrive (its stream's score is above 0).
    pub active: bool,
    /// Its temporal layers, from the producer's scalability mode (1 when it has none).
    pub temporal_layers: u8,
}

/// The layers a consumer should receive, or why none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerChoice {
    /// Forward these.
    Layers(Layers),
    /// The producer sends none of its layers (all inactive): nothing to forward.
    ProducerInactive,
    /// Every layer the producer sends is above what the downlink allows: the consumer is
    /// stopped rather than starved (the allocator's "paused for bandwidth").
    NoLayerFits,
}

impl LayerChoice {
    /// The layers, when there are some.
    pub fn layers(self) -> Option<Layers> {
        match self {
            LayerChoice::Layers(layers) => Some(layers),
            _ => None,
        }
    }
}

/// The allocator's limit on a consumer's layers, from what its subscriber's downlink carries
/// ([`super::allocation::allocate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cap {
    /// No estimate limits it (none yet, or none negotiated).
    #[default]
    Unlimited,
    /// At most these layers.
    UpTo(Layers),
    /// Not even the lowest layer sent fits: it gets nothing ([`LayerChoice::NoLayerFits`]).
    Nothing,
}

/// Which layers a consumer gets: the highest the producer sends that is no higher than both
/// `preferred` and `cap` (the allocator's limit from the subscriber's downlink).
///
/// mediasoup's rules (`SimulcastConsumer::RecalculateTargetLayers`) fill in the rest:
/// - spatial layers the producer does not send (inactive) are never chosen;
/// - the temporal layer is the preferred one on the preferred spatial layer, and the highest
///   on a lower spatial layer (which is all that could be had of it);
/// - when every active layer is above the preferred one, the lowest of them is chosen with
///   temporal layer 0: the app asked for little, it gets the least there is. That does not
///   apply above a cap: what the downlink cannot carry is not sent ([`LayerChoice::NoLayerFits`]).
///
/// A temporal layer above a spatial layer's count is read as its top one, so `Layers::new(9,
/// 9)` prefers the highest of everything.
pub fn choose_layers(preferred: Layers, cap: Cap, producer: &[SpatialLayer]) -> LayerChoice {
    if !producer.iter().any(|layer| layer.active) {
        return LayerChoice::ProducerInactive;
    }
    let cap = match cap {
        Cap::Unlimited => None,
        Cap::UpTo(layers) => Some(layers),
        Cap::Nothing => return LayerChoice::NoLayerFits,
    };
    let ceiling = match cap {
        Some(cap) => preferred.min(cap),
        None => preferred,
    };
    let top = |spatial: usize| producer[spatial].temporal_layers.max(1) - 1;
    // The highest active spatial layer at or below the ceiling's.
    let below = (0..producer.len()).rev().find(|&s| producer[s].active && s <= usize::from(ceiling.spatial_layer));
    if let Some(spatial) = below {
        let temporal = if spatial == usize::from(ceiling.spatial_layer) { ceiling.temporal_layer.min(top(spatial)) } else { top(spatial) };
        return LayerChoice::Layers(Layers::new(spatial as u8, temporal));
    }
    // Everything active is above the ceiling.
    let lowest = (0..producer.len()).find(|&s| producer[s].active).map(|s| s as u8);
    match (lowest, cap) {
        (Some(spatial), Some(cap)) if Layers::new(spatial, 0) > cap => LayerChoice::NoLayerFits,
        (Some(spatial), _) => LayerChoice::Layers(Layers::new(spatial, 0)),
        (None, _) => LayerChoice::ProducerInactive,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three simulcast encodings of three temporal layers each; `active` says which are sent.
    fn simulcast(active: [bool; 3]) -> Vec<SpatialLayer> {
        active.iter().map(|&active| SpatialLayer { active, temporal_layers: 3 }).collect()
    }

    const ALL: [bool; 3] = [true, true, true];
    const TOP: Layers = Layers::new(2, 2);

    #[test]
    fn scalability_modes_are_read_as_mediasoup_reads_them() {
        let mode = |s| ScalabilityMode::parse(Some(s));
        assert_eq!(mode("L1T3"), ScalabilityMode { spatial_layers: 1, temporal_layers: 3, k_svc: false });
        assert_eq!(mode("L3T3_KEY"), ScalabilityMode { spatial_layers: 3, temporal_layers: 3, k_svc: true });
        assert_eq!(mode("S2T1"), ScalabilityMode { spatial_layers: 2, temporal_layers: 1, k_svc: false });
        assert_eq!(mode("L12T3"), ScalabilityMode { spatial_layers: 12, temporal_layers: 3, k_svc: false });
        for odd in ["", "x", "L0T3", "L3", "T3", "L3T0", "l3t3"] {
            assert_eq!(mode(odd), ScalabilityMode::SINGLE, "{odd}");
        }
        assert_eq!(ScalabilityMode::parse(None), ScalabilityMode::SINGLE);
    }

    #[test]
    fn layers_order_spatial_first() {
        assert!(Layers::new(1, 0) > Layers::new(0, 2));
        assert!(Layers::new(1, 2) > Layers::new(1, 1));
        assert_eq!(Layers::new(2, 0).min(Layers::new(1, 2)), Layers::new(1, 2));
    }

    #[test]
    fn with_no_limit_the_preferred_layers_are_chosen() {
        assert_eq!(choose_layers(TOP, Cap::Unlimited, &simulcast(ALL)), LayerChoice::Layers(TOP));
        assert_eq!(choose_layers(Layers::new(0, 1), Cap::Unlimited, &simulcast(ALL)), LayerChoice::Layers(Layers::new(0, 1)));
        assert_eq!(choose_layers(Layers::new(1, 0), Cap::Unlimited, &simulcast(ALL)), LayerChoice::Layers(Layers::new(1, 0)));
    }

    #[test]
    fn a_preference_above_what_exists_means_the_highest() {
        assert_eq!(choose_layers(Layers::new(9, 9), Cap::Unlimited, &simulcast(ALL)), LayerChoice::Layers(TOP));
        assert_eq!(choose_layers(Layers::new(2, 7), Cap::Unlimited, &simulcast(ALL)), LayerChoice::Layers(TOP));
    }

    #[test]
    fn a_layer_the_producer_does_not_send_is_never_chosen() {
        // Chrome sends its top encoding only once its bandwidth estimate carries it.
        assert_eq!(choose_layers(TOP, Cap::Unlimited, &simulcast([true, true, false])), LayerChoice::Layers(Layers::new(1, 2)));
        assert_eq!(choose_layers(TOP, Cap::Unlimited, &simulcast([true, false, false])), LayerChoice::Layers(Layers::new(0, 2)));
        // A gap in the middle: the highest below the preference that is sent.
        assert_eq!(choose_layers(TOP, Cap::Unlimited, &simulcast([true, false, true])), LayerChoice::Layers(TOP));
        assert_eq!(choose_layers(Layers::new(1, 1), Cap::Unlimited, &simulcast([true, false, true])), LayerChoice::Layers(Layers::new(0, 2)));
    }

    #[test]
    fn below_the_preferred_spatial_layer_its_top_temporal_layer_is_chosen() {
        let chosen = choose_layers(Layers::new(2, 0), Cap::Unlimited, &simulcast([true, true, false]));
        assert_eq!(chosen, LayerChoice::Layers(Layers::new(1, 2)), "all of layer 1 is less than any of layer 2");
    }

    #[test]
    fn when_only_higher_layers_are_sent_the_lowest_of_them_is_chosen_at_temporal_0() {
        assert_eq!(choose_layers(Layers::new(0, 2), Cap::Unlimited, &simulcast([false, true, true])), LayerChoice::Layers(Layers::new(1, 0)));
    }

    #[test]
    fn nothing_sent_is_its_own_answer() {
        assert_eq!(choose_layers(TOP, Cap::Unlimited, &simulcast([false; 3])), LayerChoice::ProducerInactive);
        assert_eq!(choose_layers(TOP, Cap::UpTo(Layers::new(0, 0)), &[]), LayerChoice::ProducerInactive);
    }

    #[test]
    fn the_cap_lowers_the_choice_below_the_preference() {
        assert_eq!(choose_layers(TOP, Cap::UpTo(Layers::new(1, 1)), &simulcast(ALL)), LayerChoice::Layers(Layers::new(1, 1)));
        assert_eq!(choose_layers(TOP, Cap::UpTo(Layers::new(0, 0)), &simulcast(ALL)), LayerChoice::Layers(Layers::new(0, 0)));
        // A cap above the preference changes nothing.
        assert_eq!(choose_layers(Layers::new(0, 1), Cap::UpTo(TOP), &simulcast(ALL)), LayerChoice::Layers(Layers::new(0, 1)));
    }

    #[test]
    fn a_cap_below_everything_sent_means_no_layer_fits() {
        assert_eq!(choose_layers(TOP, Cap::UpTo(Layers::new(0, 2)), &simulcast([false, true, true])), LayerChoice::NoLayerFits);
        // Without the cap the same preference would still get the lowest sent layer.
        assert_eq!(choose_layers(Layers::new(0, 2), Cap::Unlimited, &simulcast([false, true, true])), LayerChoice::Layers(Layers::new(1, 0)));
    }

    #[test]
    fn a_cap_of_nothing_stops_the_consumer_while_something_is_sent() {
        assert_eq!(choose_layers(TOP, Cap::Nothing, &simulcast(ALL)), LayerChoice::NoLayerFits);
        assert_eq!(choose_layers(Layers::new(0, 0), Cap::Nothing, &simulcast([true, false, false])), LayerChoice::NoLayerFits);
        assert_eq!(choose_layers(TOP, Cap::Nothing, &simulcast([false; 3])), LayerChoice::ProducerInactive);
    }

    #[test]
    fn the_choice_is_min_of_preference_cap_and_what_is_sent() {
        // Exhaustively over small worlds: the choice is never above the preference or the
        // cap when something fits, and is always an active layer.
        let layer = |s, t| Layers::new(s, t);
        for mask in 0u8..8 {
            let producer = simulcast([mask & 1 != 0, mask & 2 != 0, mask & 4 != 0]);
            for preferred in (0..3).flat_map(|s| (0..3).map(move |t| layer(s, t))) {
                for cap in std::iter::once(None).chain((0..3).flat_map(|s| (0..3).map(move |t| Some(layer(s, t))))) {
                    match choose_layers(preferred, cap.map_or(Cap::Unlimited, Cap::UpTo), &producer) {
                        LayerChoice::Layers(chosen) => {
                            assert!(producer[usize::from(chosen.spatial_layer)].active, "{chosen:?} from {mask:b}");
                            assert!(cap.is_none_or(|cap| chosen <= cap), "{chosen:?} above cap {cap:?}");
                            let ceiling = cap.map_or(preferred, |cap| preferred.min(cap));
                            let below = (0..3).rev().find(|&s| producer[s].active && s <= usize::from(ceiling.spatial_layer));
                            if let Some(highest) = below {
                                assert!(chosen <= ceiling, "{chosen:?} above {ceiling:?}");
                                assert_eq!(usize::from(chosen.spatial_layer), highest, "the highest that fits");
                            }
                        }
                        LayerChoice::ProducerInactive => assert_eq!(mask, 0),
                        LayerChoice::NoLayerFits => assert!(cap.is_some()),
                    }
                }
            }
        }
    }
}
