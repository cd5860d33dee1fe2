//! One consumer's numbering of VP8 pictures (`PictureID`, 15 or 7 bits) and of temporal
//! layer 0 pictures (`TL0PICIDX`, 8 bits).
//!
//! The decoder finds a frame's references by these numbers, so a consumer that moves between
//! simulcast encodings (each numbered on its own) or skips temporal layers must see them
//! continue without a jump or hole, as mediasoup's `SeqManager` does for them:
//! - after [`Renumbering::sync`] (a switch), the next picture gets the number after the
//!   newest given out;
//! - a picture [`Renumbering::drop`]ped (a temporal layer the consumer does not get) takes no
//!   number: the next one closes over it;
//! - a late picture (older than the newest) keeps the number it would have had. Over one
//!   drop that works; pictures from before the drop before that are numbered as if it had not
//!   happened, which with 30 pictures a second is a reordering no network does.

/// A gap-closing renumbering of values modulo `2^bits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Renumbering {
    bits: u8,
    /// Added (modulo) to a value to get the consumer's.
    offset: u16,
    newest_in: Option<u16>,
    newest_out: Option<u16>,
    sync_pending: bool,
    /// Values before `.0` are numbered with offset `.1` (the offset before the last drop).
    boundary: Option<(u16, u16)>,
    /// The newest value seen was dropped.
    last_dropped: bool,
}

impl Renumbering {
    /// A numbering modulo `2^bits` (7, 8 or 15) that starts with the first value as it is.
    pub fn new(bits: u8) -> Self {
        Renumbering { bits, offset: 0, newest_in: None, newest_out: None, sync_pending: false, boundary: None, last_dropped: false }
    }

    fn mask(&self) -> u16 {
        ((1u32 << self.bits) - 1) as u16
    }

    /// `a - b` as a signed distance modulo `2^bits`.
    fn distance(&self, a: u16, b: u16) -> i32 {
        let modulus = 1i32 << self.bits;
        let d = (i32::from(a) - i32::from(b)).rem_euclid(modulus);
        if d >= modulus / 2 { d - modulus } else { d }
    }

    fn add(&self, value: u16, offset: u16) -> u16 {
        value.wrapping_add(offset) & self.mask()
    }

    /// The next value comes from another numbering (a switch of encoding): it continues after
    /// the newest one given out.
    pub fn sync(&mut self) {
        self.sync_pending = true;
    }

    /// The consumer's number for `value`.
    pub fn input(&mut self, value: u16) -> u16 {
        let value = value & self.mask();
        let Some(newest) = self.newest_in.filter(|_| !self.sync_pending) else {
            self.offset = match self.newest_out {
                Some(out) => self.add(out, 1).wrapping_sub(value) & self.mask(),
                None => 0,
            };
            self.sync_pending = false;
            self.boundary = None;
            self.last_dropped = false;
            self.newest_in = Some(value);
            let out = self.add(value, self.offset);
            self.newest_out = Some(out);
            return out;
        };
        if self.distance(value, newest) > 0 {
            self.newest_in = Some(value);
            self.last_dropped = false;
            let out = self.add(value, self.offset);
            self.newest_out = Some(out);
            return out;
        }
        match self.boundary {
            Some((start, offset)) if self.distance(value, start) < 0 => self.add(value, offset),
            _ => self.add(value, self.offset),
        }
    }

    /// `value` is not for the consumer: the numbers after it close over it. Only a value
    /// newer than every one seen can be closed over.
    pub fn drop(&mut self, value: u16) {
        let value = value & self.mask();
        let Some(newest) = self.newest_in.filter(|_| !self.sync_pending) else { return };
        let ahead = self.distance(value, newest);
        if ahead <= 0 {
            return;
        }
        if !(ahead == 1 && self.last_dropped) {
            self.boundary = Some((value, self.offset));
        }
        self.offset = self.offset.wrapping_sub(1) & self.mask();
        self.newest_in = Some(value);
        self.last_dropped = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_pass_unchanged_until_something_happens() {
        let mut n = Renumbering::new(15);
        assert_eq!((n.input(100), n.input(101), n.input(101), n.input(102)), (100, 101, 101, 102));
    }

    #[test]
    fn a_sync_continues_after_the_newest_number() {
        let mut n = Renumbering::new(15);
        n.input(100);
        n.input(101);
        n.sync();
        // The other encoding numbers its pictures from 7000.
        assert_eq!(n.input(7000), 102);
        assert_eq!(n.input(7001), 103);
    }

    #[test]
    fn dropped_values_leave_no_hole() {
        let mut n = Renumbering::new(15);
        n.input(10);
        n.drop(11);
        assert_eq!(n.input(12), 11);
        n.drop(13);
        n.drop(14);
        assert_eq!(n.input(15), 12);
    }

    #[test]
    fn a_late_value_from_before_a_drop_keeps_its_number() {
        let mut n = Renumbering::new(15);
        n.input(10);
        n.drop(12);
        assert_eq!(n.input(13), 12);
        assert_eq!(n.input(11), 11, "11 was on its way when 12 was dropped");
        assert_eq!(n.input(10), 10);
    }

    #[test]
    fn numbers_wrap_at_their_width() {
        let mut n = Renumbering::new(15);
        n.input(0x7ffe);
        assert_eq!(n.input(0x7fff), 0x7fff);
        assert_eq!(n.input(0), 0);
        let mut tl0 = Renumbering::new(8);
        tl0.input(250);
        tl0.sync();
        assert_eq!(tl0.input(3), 251);
        tl0.drop(4);
        assert_eq!(tl0.input(5), 252);
        let mut short = Renumbering::new(7);
        short.input(127);
        short.sync();
        assert_eq!(short.input(40), 0);
    }

    #[test]
    fn drops_before_the_first_value_or_of_old_values_change_nothing() {
        let mut n = Renumbering::new(15);
        n.drop(5);
        assert_eq!(n.input(6), 6);
        n.input(7);
        n.drop(3);
        assert_eq!(n.input(8), 8);
    }
}
