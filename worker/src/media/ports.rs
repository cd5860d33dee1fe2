//! The pool of UDP ports transports listen on: one port per transport, returned on close.

use std::collections::BTreeSet;

#[derive(Debug, Clone)]
pub struct PortPool {
    min: u16,
    max: u16,
    in_use: BTreeSet<u16>,
    /// Where the next search starts: ports are handed out round-robin, so a port just freed is
    /// not reused at once (a late packet for the old transport must not reach a new one).
    next: u16,
}

impl PortPool {
    /// An inclusive range; `min > max` gives an empty pool.
    pub fn new(min: u16, max: u16) -> Self {
        PortPool { min, max, in_use: BTreeSet::new(), next: min }
    }

    pub fn range(&self) -> (u16, u16) {
        (self.min, self.max)
    }

    pub fn in_use(&self) -> usize {
        self.in_use.len()
    }

    /// The next free port for which `usable` says yes (the caller tries to bind it), or `None`
    /// when every port is taken or unusable.
    pub fn allocate(&mut self, mut usable: impl FnMut(u16) -> bool) -> Option<u16> {
        if self.min > self.max {
            return None;
        }
        let size = (self.max - self.min) as u32 + 1;
        for i in 0..size {
            let port = self.min + ((self.next - self.min) as u32 + i).rem_euclid(size) as u16;
            if !self.in_use.contains(&port) && usable(port) {
                self.in_use.insert(port);
                self.next = if port == self.max { self.min } else { port + 1 };
                return Some(port);
            }
        }
        None
    }

    pub fn release(&mut self, port: u16) {
        self.in_use.remove(&port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_handed_out_round_robin_and_returned() {
        let mut pool = PortPool::new(40000, 40002);
        assert_eq!(pool.allocate(|_| true), Some(40000));
        assert_eq!(pool.allocate(|_| true), Some(40001));
        pool.release(40000);
        assert_eq!(pool.allocate(|_| true), Some(40002), "a freed port is not reused at once");
        assert_eq!(pool.allocate(|_| true), Some(40000));
        assert_eq!(pool.allocate(|_| true), None, "exhausted");
        pool.release(40001);
        assert_eq!(pool.allocate(|_| true), Some(40001));
        assert_eq!(pool.in_use(), 3);
    }

    #[test]
    fn ports_the_os_refuses_are_skipped() {
        let mut pool = PortPool::new(1, 3);
        assert_eq!(pool.allocate(|p| p != 1), Some(2));
        assert_eq!(pool.allocate(|_| false), None);
    }

    #[test]
    fn the_whole_u16_range_does_not_overflow() {
        let mut pool = PortPool::new(65534, 65535);
        assert_eq!(pool.allocate(|_| true), Some(65534));
        assert_eq!(pool.allocate(|_| true), Some(65535));
        assert_eq!(pool.allocate(|_| true), None);
        assert_eq!(PortPool::new(10, 5).allocate(|_| true), None);
    }
}
