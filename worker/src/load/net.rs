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
    buffers: Vec<[u8; 2048]>,
    lengths: Vec<usize>,
    sources: Vec<libc::sockaddr_in>,
}

pub const BATCH: usize = 64;

impl Default for BatchReceiver {
    fn default() -> Self {
        BatchReceiver { buffers: vec![[0; 2048]; BATCH], lengths: vec![0; BATCH], sources: vec![unsafe_zeroed_sockaddr(); BATCH] }
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
        }
        // SAFETY: see above; vlen matches the array.
        let n = unsafe {
            libc::recvmmsg(socket.as_raw_fd(), messages.as_mut_ptr(), BATCH as libc::c_uint, flags, std::ptr::null_mut())
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        for (i, m) in messages.iter().take(n as usize).enumerate() {
            self.lengths[i] = m.msg_len as usize;
        }
        Ok(n as usize)
    }

    /// The `i`th datagram of the last batch and the port it came from.
    pub fn get(&self, i: usize) -> (&[u8], u16) {
        (&self.buffers[i][..self.lengths[i]], u16::from_be(self.sources[i].sin_port))
    }
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
            let (data, port) = batch.get(i);
            assert_eq!(data, &[i as u8; 10]);
            assert_eq!(port, local(&sender).port());
        }
        assert_eq!(socket_drops(&receiver), Some(0));
    }
}
