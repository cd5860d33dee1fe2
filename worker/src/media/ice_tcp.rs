//! ICE-TCP's pure parts: RFC 4571 framing, the bounded send queue of a connection, and which
//! transport a new connection is for (RFC 6544 passive candidates).
//!
//! Over TCP every STUN, DTLS and SRTP datagram travels as a frame: a 16-bit big-endian length,
//! then that many bytes (RFC 4571 section 2). A read may end inside a frame or hold several,
//! so [`FrameDecoder`] keeps what is left over between reads; its buffer never holds more than
//! one unfinished frame and one read, because a length past [`MAX_FRAME`] is refused before
//! anything is kept for it.
//!
//! All transports share one listening port per worker, so a new connection says which
//! transport it is for the way a UDP datagram does inside a transport: its first frame must
//! be a STUN Binding request whose USERNAME starts with the transport's ufrag
//! ([`local_ufrag`]). The transport then checks MESSAGE-INTEGRITY as for UDP.
//!
//! A reader that stops reading fills its connection's [`SendQueue`]; past its limit frames
//! are dropped whole (and counted), so a stalled peer costs bounded memory and never makes
//! the media thread wait.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::time::Duration;

use rtc::stun::attributes::ATTR_USERNAME;
use rtc::stun::message::{Message, BINDING_REQUEST};
use rtc::stun::textattrs::TextAttribute;

/// Largest frame accepted from a peer. Browsers frame the datagrams they would send over
/// UDP, which stay under the path MTU (DTLS fragments its flights to it); the UDP sockets
/// read at most 2,048 bytes, so twice that is generous.
pub const MAX_FRAME: usize = 4096;

/// Bytes a connection may have waiting to be written before frames are dropped: about
/// 200 ms of a 4 Mbit/s video subscription, more than a healthy TCP path ever queues here
/// (the kernel's send buffer comes first).
pub const SEND_QUEUE_LIMIT: usize = 128 * 1024;

/// The limits of the ICE-TCP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpLimits {
    /// Connections open at once, identified or not; one more is closed at once.
    pub max_connections: usize,
    /// Connections that have not yet sent their first frame; one more is closed at once.
    pub max_pending: usize,
    /// Connections one transport may hold (a browser opens one per candidate pair).
    pub per_transport: usize,
    /// How long a connection has, from its accept, to send a STUN Binding request that its
    /// transport accepts. Past it, it is closed.
    pub first_request_timeout: Duration,
    /// [`SEND_QUEUE_LIMIT`] unless a test says otherwise.
    pub send_queue_limit: usize,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            max_connections: 4096,
            max_pending: 256,
            per_transport: 4,
            first_request_timeout: Duration::from_secs(10),
            send_queue_limit: SEND_QUEUE_LIMIT,
        }
    }
}

/// A frame longer than [`FrameDecoder`] accepts: the connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an RFC 4571 frame of {length} bytes, more than the {max} accepted")]
pub struct FrameTooLarge {
    pub length: usize,
    pub max: usize,
}

/// Cuts a TCP byte stream into RFC 4571 frames.
#[derive(Debug)]
pub struct FrameDecoder {
    buffer: Vec<u8>,
    /// Where the next frame starts in `buffer`.
    start: usize,
    max_frame: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(MAX_FRAME)
    }
}

impl FrameDecoder {
    pub fn new(max_frame: usize) -> Self {
        FrameDecoder { buffer: Vec::new(), start: 0, max_frame }
    }

    /// Adds bytes as read from the stream. Frames already returned are forgotten first.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes held that are not yet a whole frame (or not yet taken).
    pub fn buffered(&self) -> usize {
        self.buffer.len() - self.start
    }

    /// The next whole frame, if one is here. Empty frames (RFC 4571 allows them) are skipped.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameTooLarge> {
        loop {
            let rest = &self.buffer[self.start..];
            let Some(header) = rest.get(..2) else { return Ok(None) };
            let length = usize::from(u16::from_be_bytes([header[0], header[1]]));
            if length > self.max_frame {
                return Err(FrameTooLarge { length, max: self.max_frame });
            }
            if rest.len() < 2 + length {
                return Ok(None);
            }
            let begin = self.start + 2;
            self.start = begin + length;
            if length > 0 {
                return Ok(Some(&self.buffer[begin..begin + length]));
            }
        }
    }
}

/// What became of a frame handed to [`SendQueue::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// Written to the socket whole.
    Written,
    /// Partly or not written; the rest waits in the queue for the socket to be writable.
    Queued,
    /// The queue is full (the peer reads too slowly): the frame is dropped whole.
    Dropped,
    /// The connection failed (reset, closed): nothing more can be sent on it.
    Failed,
}

/// The frames waiting to be written on one connection, bounded.
///
/// Frames are written at once while nothing waits; once the socket refuses bytes, later
/// frames queue behind them in order, and only whole frames are ever dropped, so the stream
/// stays well framed for the peer.
#[derive(Debug)]
pub struct SendQueue {
    bytes: VecDeque<u8>,
    limit: usize,
    /// Frames dropped because the queue was full.
    pub dropped: u64,
}

impl SendQueue {
    pub fn new(limit: usize) -> Self {
        SendQueue { bytes: VecDeque::new(), limit, dropped: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Frames `data` and writes it with `write` (a non-blocking vectored write: bytes
    /// written, or `WouldBlock`), or queues what it did not take. A frame longer than 65,535
    /// bytes cannot be framed and is dropped.
    pub fn send(&mut self, data: &[u8], mut write: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>) -> SendOutcome {
        let Ok(length) = u16::try_from(data.len()) else {
            self.dropped += 1;
            return SendOutcome::Dropped;
        };
        let header = length.to_be_bytes();
        let mut written = 0;
        if self.bytes.is_empty() {
            loop {
                let slices = [IoSlice::new(&header[written.min(2)..]), IoSlice::new(&data[written.saturating_sub(2)..])];
                match write(&slices) {
                    Ok(0) => return SendOutcome::Failed,
                    Ok(n) => {
                        written += n;
                        if written == 2 + data.len() {
                            return SendOutcome::Written;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return SendOutcome::Failed,
                }
            }
        } else if self.bytes.len() + 2 + data.len() > self.limit {
            self.dropped += 1;
            return SendOutcome::Dropped;
        }
        // A frame begun on the wire must be finished, even past the limit: dropping its rest
        // would break the framing. At most one frame can be over the limit this way.
        if written > 0 || self.bytes.len() + 2 + data.len() <= self.limit {
            self.bytes.extend(&header[written.min(2)..]);
            self.bytes.extend(&data[written.saturating_sub(2)..]);
            SendOutcome::Queued
        } else {
            self.dropped += 1;
            SendOutcome::Dropped
        }
    }

    /// Writes queued bytes with `write` until the queue is empty or the socket would block.
    /// `Err` when the connection failed.
    pub fn flush(&mut self, mut write: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>) -> io::Result<()> {
        while !self.bytes.is_empty() {
            let (a, b) = self.bytes.as_slices();
            match write(&[IoSlice::new(a), IoSlice::new(b)]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.bytes.drain(..n.min(self.bytes.len()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // A burst's worth of memory is not kept for a connection that is idle again.
        if self.bytes.capacity() > 16 * 1024 {
            self.bytes.shrink_to(16 * 1024);
        }
        Ok(())
    }
}

/// The ufrag of the transport a connection's first frame is for: the local half of a STUN
/// Binding request's USERNAME (`ours:theirs`, RFC 8445 section 7.2.2). `None` for anything
/// else, which closes the connection: the transport itself checks the request's integrity.
pub fn local_ufrag(frame: &[u8]) -> Option<String> {
    if frame.first().is_none_or(|b| *b >= 4) {
        return None;
    }
    let mut msg = Message::new();
    msg.unmarshal_binary(frame).ok()?;
    if msg.typ != BINDING_REQUEST {
        return None;
    }
    let username = TextAttribute::get_from_as(&msg, ATTR_USERNAME).ok()?.text;
    let (ours, _) = username.split_once(':')?;
    (!ours.is_empty()).then(|| ours.to_owned())
}

/// Frames `data` (for tests and the test client; the worker writes through [`SendQueue`]).
pub fn frame(data: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(2 + data.len());
    framed.extend_from_slice(&(data.len() as u16).to_be_bytes());
    framed.extend_from_slice(data);
    framed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::ice::binding_request;

    fn frames(decoder: &mut FrameDecoder) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(f) = decoder.next_frame().unwrap() {
            out.push(f.to_vec());
        }
        out
    }

    #[test]
    fn a_frame_split_across_reads_comes_out_once_whole() {
        let wire = frame(b"hello, world");
        let mut decoder = FrameDecoder::default();
        // Every split point, the length header's middle included.
        for cut in 0..wire.len() {
            decoder.extend(&wire[..cut]);
            assert_eq!(frames(&mut decoder), Vec::<Vec<u8>>::new(), "cut at {cut}");
            decoder.extend(&wire[cut..]);
            assert_eq!(frames(&mut decoder), vec![b"hello, world".to_vec()], "cut at {cut}");
            assert_eq!(decoder.buffered(), 0);
        }
        // One byte per read.
        for byte in &wire[..wire.len() - 1] {
            decoder.extend(std::slice::from_ref(byte));
            assert!(decoder.next_frame().unwrap().is_none());
        }
        decoder.extend(&wire[wire.len() - 1..]);
        assert_eq!(frames(&mut decoder), vec![b"hello, world".to_vec()]);
    }

    #[test]
    fn coalesced_frames_in_one_read_come_out_in_order() {
        let mut wire = frame(b"one");
        wire.extend(frame(b""));
        wire.extend(frame(&[7; 1200]));
        wire.extend(frame(b"three"));
        let half = frame(b"fourth");
        wire.extend(&half[..3]);
        let mut decoder = FrameDecoder::default();
        decoder.extend(&wire);
        assert_eq!(frames(&mut decoder), vec![b"one".to_vec(), vec![7; 1200], b"three".to_vec()], "the empty frame is skipped");
        assert_eq!(decoder.buffered(), 3, "the unfinished fourth waits");
        decoder.extend(&half[3..]);
        assert_eq!(frames(&mut decoder), vec![b"fourth".to_vec()]);
    }

    #[test]
    fn an_oversize_frame_is_refused_before_its_bytes_are_kept() {
        let mut decoder = FrameDecoder::new(100);
        decoder.extend(&frame(&[1; 100]));
        assert_eq!(frames(&mut decoder), vec![vec![1; 100]]);
        // Only the header has arrived: refused already.
        decoder.extend(&101u16.to_be_bytes());
        assert_eq!(decoder.next_frame(), Err(FrameTooLarge { length: 101, max: 100 }));
        let mut decoder = FrameDecoder::default();
        decoder.extend(&u16::MAX.to_be_bytes());
        assert_eq!(decoder.next_frame().unwrap_err().length, 65_535);
    }

    /// A socket that takes `room` bytes, then blocks.
    struct Socket {
        written: Vec<u8>,
        room: usize,
        fail: bool,
    }

    impl Socket {
        fn new(room: usize) -> Self {
            Socket { written: Vec::new(), room, fail: false }
        }

        fn write(&mut self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
            if self.fail {
                return Err(io::ErrorKind::ConnectionReset.into());
            }
            let mut n = 0;
            for slice in slices {
                let take = slice.len().min(self.room - n);
                self.written.extend_from_slice(&slice[..take]);
                n += take;
            }
            self.room -= n;
            if n == 0 && slices.iter().any(|s| !s.is_empty()) {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        }
    }

    #[test]
    fn a_writable_socket_takes_frames_at_once() {
        let mut socket = Socket::new(1000);
        let mut queue = SendQueue::new(100);
        assert_eq!(queue.send(b"abc", |s| socket.write(s)), SendOutcome::Written);
        assert_eq!(queue.send(b"de", |s| socket.write(s)), SendOutcome::Written);
        assert_eq!(socket.written, [frame(b"abc"), frame(b"de")].concat());
        assert!(queue.is_empty());
    }

    #[test]
    fn a_stalled_reader_queues_up_to_the_limit_then_drops_whole_frames() {
        // The socket takes 3 bytes: the header and one byte of the first frame.
        let mut socket = Socket::new(3);
        let mut queue = SendQueue::new(20);
        assert_eq!(queue.send(&[1; 10], |s| socket.write(s)), SendOutcome::Queued);
        assert_eq!(queue.len(), 9);
        assert_eq!(queue.send(&[2; 9], |s| socket.write(s)), SendOutcome::Queued, "9 + 11 fits in 20");
        assert_eq!(queue.send(&[3; 1], |s| socket.write(s)), SendOutcome::Dropped);
        assert_eq!(queue.dropped, 1);
        assert_eq!(queue.len(), 20, "never past the limit");
        // The reader wakes up: everything queued goes, framed as it was sent.
        socket.room = 1000;
        queue.flush(|s| socket.write(s)).unwrap();
        assert!(queue.is_empty());
        let mut decoder = FrameDecoder::default();
        decoder.extend(&socket.written);
        assert_eq!(frames(&mut decoder), vec![vec![1; 10], vec![2; 9]]);
        assert_eq!(queue.send(&[4; 1], |s| socket.write(s)), SendOutcome::Written, "sent at once again");
    }

    #[test]
    fn a_frame_begun_on_the_wire_is_finished_and_a_broken_socket_fails() {
        let mut socket = Socket::new(1);
        let mut queue = SendQueue::new(4);
        // One header byte written: the rest (11 bytes) is queued past the limit of 4, since
        // dropping it would leave the peer's stream mid-frame.
        assert_eq!(queue.send(&[9; 10], |s| socket.write(s)), SendOutcome::Queued);
        assert_eq!(queue.len(), 11);
        assert_eq!(queue.send(&[1], |s| socket.write(s)), SendOutcome::Dropped);
        socket.fail = true;
        assert!(queue.flush(|s| socket.write(s)).is_err());
        let mut fresh = SendQueue::new(4);
        assert_eq!(fresh.send(&[1], |s| socket.write(s)), SendOutcome::Failed);
    }

    #[test]
    fn the_first_frame_names_its_transport_by_the_local_ufrag() {
        let provider = rtc::crypto::default_provider().unwrap();
        let request = binding_request("srvufrag", "browser", "a-password-of-some-length", true, provider.crypto());
        assert_eq!(local_ufrag(&request).as_deref(), Some("srvufrag"));
        // Anything but a Binding request with a USERNAME names nothing.
        assert_eq!(local_ufrag(b"\x16\xfe\xfd not stun"), None);
        assert_eq!(local_ufrag(&[0, 1, 0, 0]), None);
        let mut response = Message::new();
        response.build(&[Box::new(rtc::stun::message::BINDING_SUCCESS), Box::new(rtc::stun::message::TransactionId::new())]).unwrap();
        assert_eq!(local_ufrag(&response.raw), None);
        let no_colon = crate::media::ice::BindingRequest { username: Some("justone".into()), ..crate::media::ice::BindingRequest::browser("x", "y", "pw-pw-pw-pw-pw-pw-pw-pw", true) };
        assert_eq!(local_ufrag(&no_colon.build(provider.crypto())), None);
    }
}
