//! The subscribers' ICE-TCP connections: one per subscriber, to the worker's TCP port (or to
//! the relay), every datagram an RFC 4571 frame ([`crate::media::ice_tcp`]). The receiving
//! thread learns which connections have bytes from an epoll set it polls without waiting (a
//! receiver asleep in the kernel would be woken by the sender's core, see
//! [`crate::load::receiver`]).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use crate::media::ice_tcp::{FrameDecoder, FrameTooLarge};

/// How long a control frame (STUN, DTLS, RTCP) may wait for room in a full socket.
const WRITE_PATIENCE: Duration = Duration::from_millis(50);

/// One subscriber's connection and what it has read of a frame so far.
pub struct Connection {
    pub stream: TcpStream,
    decoder: FrameDecoder,
}

impl Connection {
    /// Connects to `to` (non-blocking from then on, no Nagle delay: media is latency-bound,
    /// and the worker's end sets the same).
    pub fn connect(to: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
        Connection::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> std::io::Result<Self> {
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        Ok(Connection { stream, decoder: FrameDecoder::default() })
    }

    /// Frames and writes one datagram of the subscriber's own (STUN, DTLS, RTCP). These are
    /// small and rare, so a socket that is briefly full is waited for; past
    /// [`WRITE_PATIENCE`] the datagram is lost, as it could be over UDP.
    pub fn send(&mut self, datagram: &[u8]) -> bool {
        let framed = crate::media::ice_tcp::frame(datagram);
        let deadline = Instant::now() + WRITE_PATIENCE;
        let mut written = 0;
        while written < framed.len() {
            match self.stream.write(&framed[written..]) {
                Ok(0) => return false,
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => std::thread::yield_now(),
                Err(_) => return false,
            }
        }
        true
    }

    /// Reads what the socket holds and hands each whole frame to `on_frame`. `Err` when the
    /// connection ended or broke, or sent a frame too large to be a datagram.
    pub fn read_frames(&mut self, buffer: &mut [u8], mut on_frame: impl FnMut(&[u8])) -> std::io::Result<()> {
        loop {
            match self.stream.read(buffer) {
                Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    self.decoder.extend(&buffer[..n]);
                    loop {
                        match self.decoder.next_frame() {
                            Ok(Some(frame)) => on_frame(frame),
                            Ok(None) => break,
                            Err(FrameTooLarge { length, .. }) => {
                                return Err(std::io::Error::new(ErrorKind::InvalidData, format!("a frame of {length} bytes")));
                            }
                        }
                    }
                    if n < buffer.len() {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// `count` connected pairs over loopback: (the relay's end, the subscriber's end).
pub fn connected_pairs(count: usize) -> std::io::Result<Vec<(TcpStream, Connection)>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let to = listener.local_addr()?;
    (0..count)
        .map(|_| {
            let client = Connection::connect(to)?;
            let (server, _) = listener.accept()?;
            server.set_nodelay(true)?;
            server.set_nonblocking(true)?;
            Ok((server, client))
        })
        .collect()
}

/// An epoll set of connections, each registered for reading under its index.
pub struct Readiness {
    epoll: RawFd,
    events: Vec<libc::epoll_event>,
}

impl Readiness {
    pub fn new(capacity: usize) -> std::io::Result<Self> {
        // SAFETY: a plain system call; the descriptor is owned by the returned value.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epoll < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Readiness { epoll, events: vec![libc::epoll_event { events: 0, u64: 0 }; capacity.clamp(1, 1024)] })
    }

    /// Watches `stream` for bytes to read, reported as `index`.
    pub fn add(&self, stream: &TcpStream, index: usize) -> std::io::Result<()> {
        let mut event = libc::epoll_event { events: libc::EPOLLIN as u32, u64: index as u64 };
        // SAFETY: `event` lives across the call; both descriptors are open.
        let done = unsafe { libc::epoll_ctl(self.epoll, libc::EPOLL_CTL_ADD, stream.as_raw_fd(), &mut event) };
        if done == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
    }

    /// The indices of connections with bytes to read now (level-triggered: one read that
    /// leaves bytes behind is reported again). Never waits.
    pub fn ready(&mut self, out: &mut Vec<usize>) -> std::io::Result<()> {
        out.clear();
        // SAFETY: the events buffer holds `len` entries and outlives the call.
        let n = unsafe { libc::epoll_wait(self.epoll, self.events.as_mut_ptr(), self.events.len() as libc::c_int, 0) };
        if n < 0 {
            let error = std::io::Error::last_os_error();
            return if error.kind() == ErrorKind::Interrupted { Ok(()) } else { Err(error) };
        }
        out.extend(self.events[..n as usize].iter().map(|e| e.u64 as usize));
        Ok(())
    }
}

impl Drop for Readiness {
    fn drop(&mut self) {
        // SAFETY: the descriptor is ours and closed once.
        unsafe { libc::close(self.epoll) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_arrive_whole_from_the_connections_that_have_them() {
        let mut pairs = connected_pairs(3).unwrap();
        let mut readiness = Readiness::new(8).unwrap();
        for (i, (_, client)) in pairs.iter().enumerate() {
            readiness.add(&client.stream, i).unwrap();
        }
        // Two frames in one write, and a third split across two writes.
        let mut bytes = crate::media::ice_tcp::frame(b"first");
        bytes.extend(crate::media::ice_tcp::frame(b"second"));
        let third = crate::media::ice_tcp::frame(&[7; 300]);
        bytes.extend_from_slice(&third[..100]);
        pairs[1].0.write_all(&bytes).unwrap();
        let mut ready = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(2);
        while ready.is_empty() && Instant::now() < deadline {
            readiness.ready(&mut ready).unwrap();
        }
        assert_eq!(ready, [1], "only the connection written to");
        let mut buffer = [0u8; 64];
        let mut frames: Vec<Vec<u8>> = Vec::new();
        pairs[1].1.read_frames(&mut buffer, |f| frames.push(f.to_vec())).unwrap();
        assert_eq!(frames, [b"first".to_vec(), b"second".to_vec()]);
        pairs[1].0.write_all(&third[100..]).unwrap();
        while frames.len() < 3 && Instant::now() < deadline {
            pairs[1].1.read_frames(&mut buffer, |f| frames.push(f.to_vec())).unwrap();
        }
        assert_eq!(frames[2], vec![7; 300]);
        // A datagram of the subscriber's own reaches the other end framed.
        assert!(pairs[0].1.send(b"stun"));
        let mut got = [0u8; 6];
        pairs[0].0.set_nonblocking(false).unwrap();
        pairs[0].0.read_exact(&mut got).unwrap();
        assert_eq!(&got, &[0, 4, b's', b't', b'u', b'n']);
    }

    #[test]
    fn a_closed_or_oversize_connection_is_an_error_and_a_quiet_one_is_not() {
        let mut pairs = connected_pairs(3).unwrap();
        let mut buffer = [0u8; 64];
        let outcome = |connection: &mut Connection, buffer: &mut [u8]| {
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                match connection.read_frames(buffer, |_| {}) {
                    Err(e) => return Some(e.kind()),
                    Ok(()) if Instant::now() > deadline => return None,
                    Ok(()) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        };
        let (closed, mut ended) = pairs.remove(0);
        drop(closed);
        assert_eq!(outcome(&mut ended, &mut buffer), Some(ErrorKind::UnexpectedEof));
        let (mut server, mut oversize) = pairs.remove(0);
        server.write_all(&[0xff, 0xff, 0]).unwrap();
        assert_eq!(outcome(&mut oversize, &mut buffer), Some(ErrorKind::InvalidData));
        let (_open, mut quiet) = pairs.remove(0);
        assert!(quiet.read_frames(&mut buffer, |_| {}).is_ok());
    }
}
