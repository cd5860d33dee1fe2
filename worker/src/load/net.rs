//! Socket helpers for the load program: big buffers, batched receive (`recvmmsg`), and the
//! kernel's count of datagrams a socket dropped because its buffer was full.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

/// Asks for a receive buffer of `bytes` (forced past `rmem_max` when running as root).
pub fn set_receive_buffer(socket: &UdpSocket, bytes: usize) {
    let fd = socket.as_raw_fd();
    let value = bytes as libc::c_int;
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: setsockopt reads `len` bytes from `value`, which lives across the call.
    unsafe {
        let ptr = &value as *const libc::c_int as *const libc::c_void;
        if libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, ptr, len) != 0 {
            libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, ptr, len);
        }
    }
}

/// Lets the kernel hand this socket coalesced datagrams (`UDP_GRO`): a segmented send
/// arrives whole, with its segment size, and [`BatchReceiver`] cuts it up.
///
/// Why the subscribers' socket does this: on loopback the receiving side's kernel work runs
/// on the sending core, inside the sender's system call. Without it the kernel would cut each
/// of the worker's segmented sends back into datagrams there and queue them one by one,
/// charging the worker's core with the subscribers' receive path. Across a network that
/// work happens on the subscribers' machines (and the cutting in a NIC that offloads UDP
/// segmentation).
pub fn accept_coalesced(socket: &UdpSocket) -> std::io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads an int from `on`, which lives across the call.
    let done = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_UDP,
            libc::UDP_GRO,
            &on as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if done == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// Datagrams the kernel dropped for this socket (full receive buffer), from /proc/net/udp.
pub fn socket_drops(socket: &UdpSocket) -> Option<u64> {
    let port = socket.local_addr().ok()?.port();
    let table = std::fs::read_to_string("/proc/net/udp").ok()?;
    parse_udp_drops(&table, port)
}

/// The `drops` column of the row whose local port is `port`.
pub fn parse_udp_drops(table: &str, port: u16) -> Option<u64> {
    let wanted = format!(":{port:04X}");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1)?.ends_with(&wanted)).then(|| fields.last()?.parse().ok())?
    })
}

/// Receives up to `BATCH` datagrams per system call.
pub struct BatchReceiver {
    buffers: Vec<Vec<u8>>,
    lengths: Vec<usize>,
    sources: Vec<libc::sockaddr_in>,
    /// Per datagram: room for the `UDP_GRO` control message, and the segment size it gave.
    controls: Vec<[u64; 4]>,
    segment_sizes: Vec<usize>,
}

pub const BATCH: usize = 64;

/// A coalesced datagram is at most an IP datagram's payload.
const BUFFER: usize = 65_536;

impl Default for BatchReceiver {
    fn default() -> Self {
        BatchReceiver {
            buffers: vec![vec![0; BUFFER]; BATCH],
            lengths: vec![0; BATCH],
            sources: vec![unsafe_zeroed_sockaddr(); BATCH],
            controls: vec![[0; 4]; BATCH],
            segment_sizes: vec![0; BATCH],
        }
    }
}

fn unsafe_zeroed_sockaddr() -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain data; all zeroes is a valid value.
    unsafe { std::mem::zeroed() }
}

impl BatchReceiver {
    /// Waits (up to the socket's read timeout) for at least one datagram and takes what is
    /// queued, up to [`BATCH`]. IPv4 sockets only.
    pub fn receive(&mut self, socket: &UdpSocket) -> std::io::Result<usize> {
        self.receive_with(socket, libc::MSG_WAITFORONE)
    }

    /// Takes what is queued, up to [`BATCH`], without waiting: 0 when nothing is.
    pub fn poll(&mut self, socket: &UdpSocket) -> std::io::Result<usize> {
        match self.receive_with(socket, libc::MSG_DONTWAIT) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(0),
            other => other,
        }
    }

    fn receive_with(&mut self, socket: &UdpSocket, flags: libc::c_int) -> std::io::Result<usize> {
        let mut iovecs: Vec<libc::iovec> = self
            .buffers
            .iter_mut()
            .map(|b| libc::iovec { iov_base: b.as_mut_ptr() as *mut libc::c_void, iov_len: b.len() })
            .collect();
        // SAFETY: mmsghdr is plain data; every pointer set below points into buffers owned by
        // self (or the local iovecs) that outlive the call.
        let mut messages: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
        for (i, m) in messages.iter_mut().enumerate() {
            m.msg_hdr.msg_iov = &mut iovecs[i];
            m.msg_hdr.msg_iovlen = 1;
            m.msg_hdr.msg_name = &mut self.sources[i] as *mut libc::sockaddr_in as *mut libc::c_void;
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            m.msg_hdr.msg_control = self.controls[i].as_mut_ptr() as *mut libc::c_void;
            m.msg_hdr.msg_controllen = std::mem::size_of_val(&self.controls[i]) as _;
        }
        // SAFETY: see above; vlen matches the array.
        let n = unsafe { libc::recvmmsg(socket.as_raw_fd(), messages.as_mut_ptr(), BATCH as libc::c_uint, flags, std::ptr::null_mut()) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        for (i, m) in messages.iter().take(n as usize).enumerate() {
            self.lengths[i] = m.msg_len as usize;
            self.segment_sizes[i] = coalesced_segment_size(&m.msg_hdr).unwrap_or(0);
        }
        Ok(n as usize)
    }

    /// The datagrams of the `i`th message of the last batch (several when the kernel
    /// coalesced them, see [`accept_coalesced`]) and the port they came from.
    pub fn get(&self, i: usize) -> (impl Iterator<Item = &[u8]>, u16) {
        let data = &self.buffers[i][..self.lengths[i]];
        let segment = match self.segment_sizes[i] {
            0 => data.len().max(1),
            size => size,
        };
        (data.chunks(segment), u16::from_be(self.sources[i].sin_port))
    }
}

/// The segment size of a coalesced datagram, from its `UDP_GRO` control message.
fn coalesced_segment_size(header: &libc::msghdr) -> Option<usize> {
    // SAFETY: the control buffer was filled by recvmmsg and its length set by it; the CMSG
    // macros walk it within msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(header);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_UDP && (*cmsg).cmsg_type == libc::UDP_GRO {
                let size = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::c_int);
                return usize::try_from(size).ok().filter(|s| *s > 0);
            }
            cmsg = libc::CMSG_NXTHDR(header, cmsg);
        }
    }
    None
}

/// A socket's local address as the peer sees it.
pub fn local(socket: &UdpSocket) -> SocketAddr {
    socket.local_addr().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn drops_are_read_from_the_socket_table() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
            \x20 10: 0100007F:4E20 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 17\n";
        assert_eq!(parse_udp_drops(table, 0x4E20), Some(17));
        assert_eq!(parse_udp_drops(table, 80), None);
    }

    #[test]
    fn a_batch_holds_every_queued_datagram_with_its_source() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..5u8 {
            sender.send_to(&[i; 10], local(&receiver)).unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
        let mut batch = BatchReceiver::default();
        let n = batch.receive(&receiver).unwrap();
        assert_eq!(n, 5);
        for i in 0..5 {
            let (mut datagrams, port) = batch.get(i);
            assert_eq!(datagrams.next(), Some(&[i as u8; 10][..]));
            assert_eq!(datagrams.next(), None);
            assert_eq!(port, local(&sender).port());
        }
        assert_eq!(socket_drops(&receiver), Some(0));
    }

    #[test]
    fn a_segmented_send_is_cut_back_into_its_datagrams() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        receiver.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        accept_coalesced(&receiver).unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let segments: Vec<u8> = [[1u8; 1000], [2; 1000]].concat().into_iter().chain([3; 300]).collect();
        let sent = crate::media::egress::send_segments(sender.as_raw_fd(), &segments, 1000, local(&receiver));
        assert_eq!(sent, crate::media::egress::BatchSent::Sent(true));
        let mut batch = BatchReceiver::default();
        let mut got = Vec::new();
        while got.len() < 3 {
            let n = batch.receive(&receiver).unwrap();
            for i in 0..n {
                got.extend(batch.get(i).0.map(|d| d.to_vec()));
            }
        }
        assert_eq!(got, vec![vec![1; 1000], vec![2; 1000], vec![3; 300]]);
    }
}
