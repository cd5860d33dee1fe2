//! How forwarded copies leave a media thread: held per transport until the end of the
//! receive batch, then sent with one system call per transport (UDP GSO).
//!
//! Sending a datagram costs the kernel about as much as everything else the worker does for
//! a copy (routing, rewriting, encrypting). A video frame is several RTP packets that arrive
//! together, and every consumer gets all of them: with generic segmentation offload
//! (`UDP_SEGMENT`, Linux 4.18) the copies for one consumer go down the stack as one buffer
//! and are cut into datagrams at the bottom (by the NIC where it can), so the per-datagram
//! cost is paid once per frame instead of once per packet.
//!
//! [`SegmentBatch`] holds the rules (pure); [`send_datagram`] and [`send_segments`] are the
//! system calls, and [`send_batch`] chooses between them (the worker's and the load program's
//! relay's one way of sending a batch).

use std::net::SocketAddr;
use std::os::fd::RawFd;

/// Most segments one GSO send may carry (the kernel's `UDP_MAX_SEGMENTS`).
pub const MAX_SEGMENTS: usize = 64;

/// Most bytes one GSO send may carry: the payload of one IP datagram, rounded down.
pub const MAX_BATCH_BYTES: usize = 60 * 1024;

/// Copies for one transport, waiting to leave in one send: every segment but the last has
/// the first segment's size and the last may be shorter, which is what `UDP_SEGMENT` can
/// cut. A copy that breaks the rule, or goes elsewhere, needs the batch sent first
/// ([`SegmentBatch::admits`]).
#[derive(Debug, Default)]
pub struct SegmentBatch {
    data: Vec<u8>,
    segment: usize,
    count: usize,
    to: Option<SocketAddr>,
    /// A shorter segment ended the batch: nothing may follow it.
    ended: bool,
}

impl SegmentBatch {
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Segments held.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether a copy of `len` bytes for `to` can join the batch.
    pub fn admits(&self, len: usize, to: SocketAddr) -> bool {
        if self.count == 0 {
            return true;
        }
        self.to == Some(to) && !self.ended && len <= self.segment && self.count < MAX_SEGMENTS && self.data.len() + len <= MAX_BATCH_BYTES
    }

    /// Adds a copy if the batch admits it ([`SegmentBatch::admits`]); `false`: send the batch
    /// first, then add it to the empty one.
    #[must_use]
    pub fn push(&mut self, copy: &[u8], to: SocketAddr) -> bool {
        if !self.admits(copy.len(), to) {
            return false;
        }
        if self.count == 0 {
            self.segment = copy.len();
            self.to = Some(to);
        } else if copy.len() < self.segment {
            self.ended = true;
        }
        self.data.extend_from_slice(copy);
        self.count += 1;
        true
    }

    /// Where the batch goes, the segment size, and the segments back to back.
    pub fn contents(&self) -> Option<(SocketAddr, usize, &[u8])> {
        Some((self.to?, self.segment, &self.data))
    }

    /// Empties the batch, keeping its buffer for the next.
    pub fn clear(&mut self) {
        self.data.clear();
        self.count = 0;
        self.to = None;
        self.ended = false;
    }

    /// Gives back a buffer grown by a burst (a keyframe) once the batch is empty, so an idle
    /// transport does not hold it.
    pub fn shrink(&mut self, keep: usize) {
        if self.count == 0 && self.data.capacity() > keep {
            self.data = Vec::with_capacity(keep);
        }
    }
}

/// A socket address as the kernel takes it.
fn raw_address(to: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data, all zeroes is valid; the casts below write the
    // family's own struct into storage large enough for any.
    unsafe {
        let mut storage: libc::sockaddr_storage = std::mem::zeroed();
        let len = match to {
            SocketAddr::V4(a) => {
                let sin = &mut *(&mut storage as *mut libc::sockaddr_storage as *mut libc::sockaddr_in);
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = a.port().to_be();
                sin.sin_addr = libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) };
                std::mem::size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                let sin6 = &mut *(&mut storage as *mut libc::sockaddr_storage as *mut libc::sockaddr_in6);
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = a.port().to_be();
                sin6.sin6_addr = libc::in6_addr { s6_addr: a.ip().octets() };
                sin6.sin6_flowinfo = a.flowinfo();
                sin6.sin6_scope_id = a.scope_id();
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        (storage, len as libc::socklen_t)
    }
}

/// Sends one datagram without waiting: a full socket buffer drops it, as a congested network
/// would. A direct `sendto` on the non-blocking socket, skipping tokio's readiness
/// bookkeeping, which costs as much as the rest of the copy's user-space work.
pub fn send_datagram(fd: RawFd, data: &[u8], to: SocketAddr) -> bool {
    let (address, address_len) = raw_address(to);
    // SAFETY: `data` is a valid slice, the address outlives the call, and `fd` is an open
    // socket (the caller's transport holds it).
    let sent = unsafe {
        libc::sendto(
            fd,
            data.as_ptr() as *const libc::c_void,
            data.len(),
            libc::MSG_DONTWAIT,
            &address as *const libc::sockaddr_storage as *const libc::sockaddr,
            address_len,
        )
    };
    sent >= 0
}

/// What became of a batch handed to [`send_segments`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSent {
    /// All its datagrams left (or were dropped together by a full socket buffer: `false`).
    Sent(bool),
    /// The kernel or the route cannot segment (old kernel, a device without checksum
    /// offload, a path MTU smaller than a segment): send the segments one by one.
    Unsupported,
}

/// Sends `segments` (back to back, each `segment` bytes but the last) to `to` in one
/// `sendmsg` with `UDP_SEGMENT`.
pub fn send_segments(fd: RawFd, segments: &[u8], segment: usize, to: SocketAddr) -> BatchSent {
    let (address, address_len) = raw_address(to);
    let mut iov = libc::iovec { iov_base: segments.as_ptr() as *mut libc::c_void, iov_len: segments.len() };
    // Room for one control message carrying a u16, aligned as cmsghdr needs.
    let mut control = [0u64; 4];
    // SAFETY: msghdr and cmsghdr are plain data; every pointer set here (address, iov, control)
    // points to locals that outlive the call, and the control buffer is large enough for
    // CMSG_SPACE(2) (checked by the assertion).
    let sent = unsafe {
        let space = libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) as usize;
        assert!(space <= std::mem::size_of_val(&control));
        let mut message: libc::msghdr = std::mem::zeroed();
        message.msg_name = &address as *const libc::sockaddr_storage as *mut libc::c_void;
        message.msg_namelen = address_len;
        message.msg_iov = &mut iov;
        message.msg_iovlen = 1;
        message.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        message.msg_controllen = space as _;
        let header = libc::CMSG_FIRSTHDR(&message);
        (*header).cmsg_level = libc::SOL_UDP;
        (*header).cmsg_type = libc::UDP_SEGMENT;
        (*header).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(header) as *mut u16, segment as u16);
        libc::sendmsg(fd, &message, libc::MSG_DONTWAIT)
    };
    if sent >= 0 {
        return BatchSent::Sent(true);
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::ENOBUFS) => BatchSent::Sent(false),
        _ => BatchSent::Unsupported,
    }
}

/// Sends a batch: one segmented send, or one datagram per copy for a single copy or where
/// segmentation was refused. The first refusal clears `segmentation`, so the caller does not
/// try again. Returns the datagrams sent.
pub fn send_batch(fd: RawFd, batch: &SegmentBatch, segmentation: &mut bool) -> u64 {
    let Some((to, segment, data)) = batch.contents() else { return 0 };
    let segments = batch.len() as u64;
    if segments > 1 && *segmentation {
        match send_segments(fd, data, segment, to) {
            BatchSent::Sent(true) => return segments,
            BatchSent::Sent(false) => return 0,
            BatchSent::Unsupported => {
                tracing::warn!(%to, "the kernel refused a segmented (GSO) send: sending one datagram per packet from now on");
                *segmentation = false;
            }
        }
    }
    data.chunks(segment.max(1)).filter(|datagram| send_datagram(fd, datagram, to)).count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn to(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn equal_copies_to_one_address_share_a_batch() {
        let mut batch = SegmentBatch::default();
        for _ in 0..3 {
            assert!(batch.admits(1200, to(1)));
            assert!(batch.push(&[7; 1200], to(1)));
        }
        let (address, segment, data) = batch.contents().unwrap();
        assert_eq!((address, segment, data.len(), batch.len()), (to(1), 1200, 3600, 3));
    }

    #[test]
    fn a_shorter_copy_ends_the_batch_and_a_longer_one_cannot_join() {
        let mut batch = SegmentBatch::default();
        assert!(batch.push(&[1; 1200], to(1)));
        assert!(!batch.admits(1201, to(1)), "longer than the segment size");
        assert!(batch.admits(300, to(1)));
        assert!(batch.push(&[2; 300], to(1)));
        assert!(!batch.admits(300, to(1)), "nothing follows a shorter last segment");
        assert!(!batch.admits(1200, to(1)));
        assert!(!batch.push(&[3; 300], to(1)), "refused, and left as it was");
        assert_eq!(batch.len(), 2);
    }

    #[test]
    fn another_address_or_a_full_batch_is_not_admitted() {
        let mut batch = SegmentBatch::default();
        assert!(batch.push(&[1; 1000], to(1)));
        assert!(!batch.admits(1000, to(2)));
        for _ in 1..(MAX_BATCH_BYTES / 1000) {
            assert!(batch.push(&[1; 1000], to(1)));
        }
        assert!(!batch.admits(1000, to(1)), "{} bytes held", batch.contents().unwrap().2.len());
        let mut small = SegmentBatch::default();
        for _ in 0..MAX_SEGMENTS {
            assert!(small.push(&[1; 10], to(1)));
        }
        assert!(!small.admits(10, to(1)));
    }

    #[test]
    fn a_cleared_batch_starts_over_with_any_size_and_address() {
        let mut batch = SegmentBatch::default();
        assert!(batch.push(&[1; 100], to(1)));
        assert!(batch.push(&[1; 50], to(1)));
        batch.clear();
        assert!(batch.is_empty() && batch.contents().is_none());
        assert!(batch.admits(1400, to(2)));
        assert!(batch.push(&[1; 1400], to(2)));
        assert_eq!(batch.contents().unwrap().1, 1400);
    }

    #[test]
    fn an_empty_batch_gives_back_a_grown_buffer() {
        let mut batch = SegmentBatch::default();
        for _ in 0..12 {
            assert!(batch.push(&[1; 1200], to(1)));
        }
        batch.shrink(4096);
        assert!(batch.data.capacity() >= 12 * 1200, "not while it holds segments");
        batch.clear();
        batch.shrink(4096);
        assert!(batch.data.capacity() <= 4096);
    }

    #[test]
    fn one_segmented_send_arrives_as_separate_datagrams() {
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        let mut batch = SegmentBatch::default();
        for (i, len) in [(1u8, 1000), (2, 1000), (3, 400)] {
            assert!(batch.push(&vec![i; len], receiver.local_addr().unwrap()));
        }
        let (address, segment, data) = batch.contents().unwrap();
        // Linux has had UDP GSO since 4.18 (2018); the engine falls back to one datagram per
        // copy without it, but the machines we run on have it.
        assert_eq!(send_segments(sender.as_raw_fd(), data, segment, address), BatchSent::Sent(true));
        let mut buf = [0u8; 2048];
        for (i, len) in [(1u8, 1000), (2, 1000), (3, 400)] {
            let (n, from) = receiver.recv_from(&mut buf).unwrap();
            assert_eq!(from, sender.local_addr().unwrap());
            assert_eq!(n, len);
            assert!(buf[..n].iter().all(|b| *b == i), "datagram {i} intact");
        }
    }

    #[test]
    fn a_batch_is_sent_whole_and_counted() {
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        let mut segmentation = true;
        let mut batch = SegmentBatch::default();
        assert_eq!(send_batch(sender.as_raw_fd(), &batch, &mut segmentation), 0, "nothing to send");
        for len in [500, 500, 100] {
            assert!(batch.push(&vec![1; len], receiver.local_addr().unwrap()));
        }
        assert_eq!(send_batch(sender.as_raw_fd(), &batch, &mut segmentation), 3);
        assert!(segmentation);
        let mut buf = [0u8; 2048];
        let lengths: Vec<usize> = (0..3).map(|_| receiver.recv(&mut buf).unwrap()).collect();
        assert_eq!(lengths, vec![500, 500, 100]);
    }

    #[test]
    fn a_single_datagram_is_sent_to_its_address() {
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        assert!(send_datagram(sender.as_raw_fd(), b"hello", receiver.local_addr().unwrap()));
        let mut buf = [0u8; 16];
        let (n, _) = receiver.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
    }
}
