//! The production id generator.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::room::{ConsumerId, IdGenerator, ProducerId, TransportId};
use crate::rtp::Ssrc;

/// Random ids and SSRCs, as mediasoup draws them: version 4 UUIDs for transports, producers
/// and consumers, SSRCs between 100 000 000 and 999 999 999.
///
/// Ids are unguessable on purpose: the REST API is internal, but ids travel through browsers
/// (mediasoup-client echoes them), and one peer must not be able to name another's objects
/// by counting.
#[derive(Debug)]
pub struct RandomIds {
    rng: StdRng,
}

impl RandomIds {
    /// A generator seeded from the operating system.
    pub fn new() -> Self {
        RandomIds {
            rng: StdRng::from_os_rng(),
        }
    }

    fn uuid(&mut self) -> String {
        let mut bytes: [u8; 16] = self.rng.random();
        // RFC 9562 version 4 (random) and variant 10.
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )
    }
}

impl Default for RandomIds {
    fn default() -> Self {
        RandomIds::new()
    }
}

impl IdGenerator for RandomIds {
    fn transport_id(&mut self) -> TransportId {
        TransportId(self.uuid())
    }

    fn producer_id(&mut self) -> ProducerId {
        ProducerId(self.uuid())
    }

    fn consumer_id(&mut self) -> ConsumerId {
        ConsumerId(self.uuid())
    }

    fn ssrc(&mut self) -> Ssrc {
        // mediasoup's range: far from 0 and from u32::MAX, so a producer's few consecutive
        // SSRCs (one per simulcast encoding) never wrap.
        Ssrc(self.rng.random_range(100_000_000..1_000_000_000))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_version_4_uuids_and_differ() {
        let mut ids = RandomIds::new();
        let first = ids.transport_id().0;
        let second = ids.transport_id().0;
        assert_ne!(first, second);
        assert_eq!(first.len(), 36);
        assert_eq!(&first[14..15], "4");
        assert!(matches!(&first[19..20], "8" | "9" | "a" | "b"), "{first}");
    }

    #[test]
    fn ssrcs_stay_in_mediasoups_range() {
        let mut ids = RandomIds::new();
        for _ in 0..100 {
            let Ssrc(ssrc) = ids.ssrc();
            assert!((100_000_000..1_000_000_000).contains(&ssrc));
        }
    }
}
