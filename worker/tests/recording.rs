//! The recorder writes files players open: real VP8 and Opus from ffmpeg, packetised as RTP
//! (with a lost packet and a pause), recorded, then checked with ffprobe and decoded with
//! ffmpeg. Skipped, saying so, where ffmpeg is not installed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fanout_worker::testing::pli_media_ssrc;
use fanout_worker::api::{Recording, RecordingState};
use fanout_worker::engine::{EngineError, MediaEngine};
use fanout_worker::record::{RecordCodec, RecordTap, Recorder, StopAnswer};
use fanout_worker::room::{DtlsParameters, DtlsRole, ForwardingTable, ProducerId, RoomId, TransportId, TransportNetwork, TransportProtocols};
use fanout_worker::rtp::MediaKind;

/// An engine that only keeps the recorder's tap and counts its keyframe requests.
#[derive(Default)]
struct TapEngine {
    tap: Mutex<Option<RecordTap>>,
    keyframe_requests: AtomicUsize,
}

impl MediaEngine for TapEngine {
    fn open_transport(&self, _: &RoomId, _: &TransportId, _: &TransportProtocols) -> Result<TransportNetwork, EngineError> {
        Err(EngineError::ShuttingDown)
    }
    fn connect_transport(&self, _: &RoomId, _: &TransportId, _: &DtlsParameters, _: DtlsRole) -> Result<(), EngineError> {
        Ok(())
    }
    fn restart_ice(&self, _: &RoomId, _: &TransportId) -> Result<(String, String), EngineError> {
        Err(EngineError::ShuttingDown)
    }
    fn close_transport(&self, _: &RoomId, _: &TransportId) {}
    fn update_routes(&self, _: &RoomId, _: ForwardingTable) {}
    fn close_room(&self, _: &RoomId) {}
    fn set_recording_tap(&self, _: &RoomId, tap: Option<RecordTap>) {
        *self.tap.lock().unwrap() = tap;
    }
    fn request_keyframe(&self, _: &RoomId, _: &ProducerId) {
        self.keyframe_requests.fetch_add(1, Ordering::Relaxed);
    }
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("-version").output().is_ok_and(|o| o.status.success())
}

fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg").args(["-v", "error", "-y"]).args(args).output().expect("ffmpeg runs");
    assert!(out.status.success(), "ffmpeg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The frames of an IVF file (32-byte header, then 12-byte frame headers).
fn ivf_frames(path: &Path) -> Vec<Vec<u8>> {
    let data = std::fs::read(path).unwrap();
    assert_eq!(&data[..4], b"DKIF");
    let mut frames = Vec::new();
    let mut at = usize::from(u16::from_le_bytes([data[6], data[7]]));
    while at + 12 <= data.len() {
        let size = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        frames.push(data[at + 12..at + 12 + size].to_vec());
        at += 12 + size;
    }
    frames
}

/// The packets of an Ogg stream, past Opus's two header packets.
fn ogg_opus_packets(path: &Path) -> Vec<Vec<u8>> {
    let data = std::fs::read(path).unwrap();
    let mut packets = Vec::new();
    let mut current = Vec::new();
    let mut at = 0;
    while at + 27 <= data.len() {
        assert_eq!(&data[at..at + 4], b"OggS");
        let segments = usize::from(data[at + 26]);
        let table = &data[at + 27..at + 27 + segments];
        let mut body = at + 27 + segments;
        for &lacing in table {
            current.extend_from_slice(&data[body..body + usize::from(lacing)]);
            body += usize::from(lacing);
            if lacing < 255 {
                packets.push(std::mem::take(&mut current));
            }
        }
        at = body;
    }
    assert!(packets[0].starts_with(b"OpusHead") && packets[1].starts_with(b"OpusTags"));
    packets.split_off(2)
}

fn rtp(pt: u8, sequence: u16, timestamp: u32, ssrc: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, pt | if marker { 0x80 } else { 0 }];
    p.extend_from_slice(&sequence.to_be_bytes());
    p.extend_from_slice(&timestamp.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// VP8 frame as RTP (RFC 7741): a one-byte descriptor, `S` on the first packet.
fn vp8_packets(frame: &[u8], sequence: &mut u16, timestamp: u32) -> Vec<Vec<u8>> {
    let chunks: Vec<&[u8]> = frame.chunks(1000).collect();
    chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut payload = vec![if i == 0 { 0x10 } else { 0x00 }];
            payload.extend_from_slice(chunk);
            let p = rtp(96, *sequence, timestamp, 0x1111, i + 1 == chunks.len(), &payload);
            *sequence = sequence.wrapping_add(1);
            p
        })
        .collect()
}

struct Probe {
    codec: String,
    duration: f64,
    lines: String,
}

fn ffprobe(path: &Path) -> Probe {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=codec_name:format=duration,format_name", "-of", "default=nw=1"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "ffprobe {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    let lines = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |name: &str| lines.lines().find_map(|l| l.strip_prefix(&format!("{name}="))).unwrap_or_default().to_owned();
    Probe { codec: field("codec_name"), duration: field("duration").parse().unwrap_or(-1.0), lines }
}

fn frame_count(path: &Path) -> u64 {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-show_entries", "stream=nb_read_frames", "-of", "default=nw=1:nk=1"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

fn decode_errors(path: &Path) -> String {
    let out = Command::new("ffmpeg").args(["-v", "error", "-i"]).arg(path).args(["-f", "null", "-"]).output().unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fanout-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn a_recording_of_vp8_and_opus_producers_plays_in_ffmpeg_with_the_duration_sent() {
    if !have("ffmpeg") || !have("ffprobe") {
        println!("SKIPPED: ffmpeg/ffprobe not installed (apt-get install ffmpeg) - the recording file check did not run");
        return;
    }
    let work = scratch("recording-media");
    let (ivf, ogg) = (work.join("clip.ivf"), work.join("clip.ogg"));
    let encode_video = ["-f", "lavfi", "-i", "testsrc=size=320x240:rate=30", "-t", "10", "-c:v", "libvpx", "-g", "60", "-b:v", "300k", "-f", "ivf", ivf.to_str().unwrap()];
    ffmpeg(&encode_video);
    ffmpeg(&["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "10", "-c:a", "libopus", "-frame_duration", "20", "-f", "ogg", ogg.to_str().unwrap()]);
    let video = ivf_frames(&ivf);
    let audio = ogg_opus_packets(&ogg);
    assert_eq!(video.len(), 300);
    assert!(audio.len() >= 499, "{} opus packets", audio.len());

    let engine = Arc::new(TapEngine::default());
    let recordings = scratch("recordings");
    let recorder = Recorder::start(recordings.clone(), engine.clone()).unwrap();
    let room = RoomId::from("class-1");
    let (started, created) = recorder.start_recording(&room, "rec-1").unwrap();
    assert!(created && started.state == RecordingState::Recording);
    let (again, created) = recorder.start_recording(&room, "rec-1").unwrap();
    assert!(!created && again.recording_id == "rec-1", "the same id again is the same recording");
    let tap = engine.tap.lock().unwrap().clone().expect("the room is tapped");
    let (camera, microphone) = (ProducerId::from("camera"), ProducerId::from("microphone"));

    // Packets in arrival order: video at 30 fps, audio every 20 ms. The microphone is muted
    // (sends nothing) from 4 s to 6 s, its RTP clock running on as a browser's does; one
    // packet of video frame 100 is lost (frames up to the next keyframe, 120, are dropped).
    let base = Instant::now();
    let mut events: Vec<(Duration, MediaKind, Vec<u8>)> = Vec::new();
    let mut sequence = 60_000u16; // wraps during the clip
    for (i, frame) in video.iter().enumerate() {
        let packets = vp8_packets(frame, &mut sequence, 1_000u32.wrapping_add(3_000 * i as u32));
        for (n, packet) in packets.into_iter().enumerate() {
            if i == 100 && n == 0 {
                continue;
            }
            events.push((Duration::from_micros(33_333 * i as u64), MediaKind::Video, packet));
        }
    }
    for (j, packet) in audio.iter().enumerate() {
        let at = Duration::from_millis(20 * j as u64);
        if (Duration::from_secs(4)..Duration::from_secs(6)).contains(&at) {
            continue;
        }
        events.push((at, MediaKind::Audio, rtp(111, 7_000 + j as u16, 4_294_000_000u32.wrapping_add(960 * j as u32), 0x2222, j == 0, packet)));
    }
    events.sort_by_key(|(at, ..)| *at);
    let before = engine.keyframe_requests.load(Ordering::Relaxed);
    for (n, (at, kind, packet)) in events.iter().enumerate() {
        let (producer, codec) = if *kind == MediaKind::Video { (&camera, RecordCodec::Vp8) } else { (&microphone, RecordCodec::Opus) };
        tap.offer(producer, *kind, Ok(codec), packet, base + *at);
        if n % 64 == 0 {
            // The recorder's queue is bounded: a sender faster than a disk loses copies.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    // Let the thread take everything before stopping.
    std::thread::sleep(Duration::from_millis(300));
    assert!(engine.keyframe_requests.load(Ordering::Relaxed) > before, "the lost frame made the recorder ask for a keyframe");

    let stopped: Recording = match recorder.stop_recording(&room, "rec-1").unwrap() {
        StopAnswer::Pending(answer, _) => tokio::time::timeout(Duration::from_secs(10), answer).await.unwrap().unwrap(),
        StopAnswer::Done(recording) => recording,
    };
    assert_eq!(stopped.state, RecordingState::Stopped, "{stopped:?}");
    assert!(stopped.stopped_at.is_some() && stopped.error.is_none(), "{stopped:?}");
    assert_eq!(stopped.dropped_packets, 0);
    assert!(engine.tap.lock().unwrap().is_none(), "no recording left: the room is no longer tapped");
    assert_eq!(stopped.files.len(), 2, "{stopped:?}");
    for file in &stopped.files {
        let path = recordings.join(&file.path);
        assert_eq!(file.path, format!("class-1/rec-1/{}.webm", file.producer_id));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), file.bytes, "the status counts the file's bytes");
        let probe = ffprobe(&path);
        println!("ffprobe {}:\n{}", file.path, probe.lines.trim_end());
        let expected = if file.kind == MediaKind::Video { "vp8" } else { "opus" };
        assert_eq!(probe.codec, expected);
        assert!((probe.duration - 10.0).abs() < 0.5, "{}: {} s, 10 s were sent", file.path, probe.duration);
        assert!(file.duration_ms.abs_diff(10_000) < 500, "{file:?}");
        if file.kind == MediaKind::Video {
            // 300 sent, less frame 100 (lost a packet) and 101-119 (they refer to it).
            assert_eq!(frame_count(&path), 280, "{}", file.path);
        }
        let errors = decode_errors(&path);
        assert!(errors.trim().is_empty(), "ffmpeg decoding {} reported: {errors}", file.path);
    }
    // GET still answers for it after it stopped.
    assert_eq!(recorder.recording(&room, "rec-1").unwrap(), stopped);
    let _ = std::fs::remove_dir_all(&work);
    let _ = std::fs::remove_dir_all(&recordings);
}

/// The NAL units of an Annex B stream, each with the index of the access unit it belongs to
/// (a new one at each AUD, or at SPS/PPS/SEI or a first slice after a slice).
fn annex_b_access_units(path: &Path) -> Vec<Vec<Vec<u8>>> {
    let data = std::fs::read(path).unwrap();
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i..i + 3] == [0, 0, 1] {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut nals: Vec<Vec<u8>> = Vec::new();
    for (n, &start) in starts.iter().enumerate() {
        let mut end = starts.get(n + 1).map_or(data.len(), |next| next - 3);
        while end > start && data[end - 1] == 0 && starts.get(n + 1).is_some() {
            end -= 1; // a 4-byte start code's leading zero
        }
        nals.push(data[start..end].to_vec());
    }
    let mut units: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut seen_slice = false;
    for nal in nals {
        let kind = nal[0] & 0x1f;
        let first_slice = matches!(kind, 1 | 5) && nal[1] & 0x80 != 0;
        if units.is_empty() || (seen_slice && (matches!(kind, 6..=9) || first_slice)) {
            units.push(Vec::new());
            seen_slice = false;
        }
        seen_slice |= matches!(kind, 1 | 5);
        units.last_mut().unwrap().push(nal);
    }
    units
}

/// An access unit as RTP the way browsers packetise it (RFC 6184, packetization-mode 1):
/// small NAL units aggregated in a STAP-A, each larger one in FU-A pieces of 300 bytes (a small MTU, so that frames have several).
fn h264_packets(unit: &[Vec<u8>], sequence: &mut u16, timestamp: u32) -> Vec<Vec<u8>> {
    let mut payloads: Vec<Vec<u8>> = Vec::new();
    let small: Vec<&Vec<u8>> = unit.iter().filter(|n| n.len() <= 200).collect();
    if small.len() > 1 {
        let mut stap = vec![0x78];
        for nal in &small {
            stap.extend_from_slice(&(nal.len() as u16).to_be_bytes());
            stap.extend_from_slice(nal);
        }
        payloads.push(stap);
    } else if let Some(nal) = small.first() {
        payloads.push(nal.to_vec());
    }
    for nal in unit.iter().filter(|n| n.len() > 200) {
        let chunks: Vec<&[u8]> = nal[1..].chunks(300).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let mut fu = nal[0] & 0x1f;
            if i == 0 {
                fu |= 0x80;
            }
            if i + 1 == chunks.len() {
                fu |= 0x40;
            }
            let mut payload = vec![(nal[0] & 0xe0) | 28, fu];
            payload.extend_from_slice(chunk);
            payloads.push(payload);
        }
    }
    let count = payloads.len();
    payloads
        .into_iter()
        .enumerate()
        .map(|(i, payload)| {
            let p = rtp(102, *sequence, timestamp, 0x3333, i + 1 == count, &payload);
            *sequence = sequence.wrapping_add(1);
            p
        })
        .collect()
}

#[tokio::test]
async fn a_recording_of_an_h264_producer_is_an_mp4_file_that_plays_in_ffmpeg() {
    if !have("ffmpeg") || !have("ffprobe") {
        println!("SKIPPED: ffmpeg/ffprobe not installed (apt-get install ffmpeg) - the H264 recording check did not run");
        return;
    }
    let work = scratch("recording-h264-media");
    let clip = work.join("clip.h264");
    // Baseline without B-frames, a keyframe every 2 s: what a browser's encoder sends.
    ffmpeg(&["-f", "lavfi", "-i", "testsrc=size=320x240:rate=30", "-t", "10", "-pix_fmt", "yuv420p", "-c:v", "libx264", "-profile:v", "baseline", "-bf", "0", "-g", "60", "-b:v", "400k", "-f", "h264", clip.to_str().unwrap()]);
    let units = annex_b_access_units(&clip);
    assert_eq!(units.len(), 300, "one access unit per frame");
    assert!(units[0].iter().any(|n| n[0] & 0x1f == 7) && units[0].iter().any(|n| n[0] & 0x1f == 5), "the clip starts with SPS and an IDR");

    let engine = Arc::new(TapEngine::default());
    let recordings = scratch("recordings-h264");
    let recorder = Recorder::start(recordings.clone(), engine.clone()).unwrap();
    let room = RoomId::from("class-2");
    recorder.start_recording(&room, "rec-h264").unwrap();
    let tap = engine.tap.lock().unwrap().clone().expect("the room is tapped");
    let camera = ProducerId::from("h264-camera");
    let base = Instant::now();
    let mut sequence = 65_000u16; // wraps during the clip
    let mut fu_a_packets = 0;
    let (mut sent, mut lost) = (0, 0);
    for (i, unit) in units.iter().enumerate() {
        let packets = h264_packets(unit, &mut sequence, 5_000u32.wrapping_add(3_000 * i as u32));
        for (n, packet) in packets.into_iter().enumerate() {
            fu_a_packets += usize::from(packet[12] & 0x1f == 28);
            // Frame 100 loses a FU-A piece in the middle of its first big NAL unit: it and
            // the frames up to the next IDR (120) are dropped.
            if i == 100 && n == 1 {
                assert_eq!((packet[12] & 0x1f, packet[13] & 0xc0), (28, 0), "a FU-A middle");
                lost += 1;
                continue;
            }
            tap.offer(&camera, MediaKind::Video, Ok(RecordCodec::H264), &packet, base + Duration::from_micros(33_333 * i as u64));
            sent += 1;
            if sent % 64 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
    assert!(fu_a_packets > 300, "big NAL units went as FU-A ({fu_a_packets} pieces)");
    assert_eq!(lost, 1);
    std::thread::sleep(Duration::from_millis(300));
    let stopped: Recording = match recorder.stop_recording(&room, "rec-h264").unwrap() {
        StopAnswer::Pending(answer, _) => tokio::time::timeout(Duration::from_secs(10), answer).await.unwrap().unwrap(),
        StopAnswer::Done(recording) => recording,
    };
    assert_eq!(stopped.state, RecordingState::Stopped, "{stopped:?}");
    assert!(stopped.error.is_none() && stopped.dropped_packets == 0, "{stopped:?}");
    assert_eq!(stopped.files.len(), 1, "{stopped:?}");
    let file = &stopped.files[0];
    assert_eq!(file.path, "class-2/rec-h264/h264-camera.mp4");
    assert_eq!((file.codec.as_str(), file.container.as_str()), ("H264", "mp4"));
    assert!(file.start_offset_ms < 1_000, "the first frame came right after the start: {file:?}");
    let path = recordings.join(&file.path);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), file.bytes, "the status counts the file's bytes");
    let probe = ffprobe(&path);
    println!("ffprobe {}:\n{}", file.path, probe.lines.trim_end());
    assert_eq!(probe.codec, "h264");
    assert!((probe.duration - 10.0).abs() < 0.5, "{}: {} s, 10 s were sent", file.path, probe.duration);
    assert!(file.duration_ms.abs_diff(10_000) < 500, "{file:?}");
    assert_eq!(frame_count(&path), 280, "300 sent, less frame 100 and the 19 after it that refer to it");
    let errors = decode_errors(&path);
    assert!(errors.trim().is_empty(), "ffmpeg decoding {} reported: {errors}", file.path);
    let _ = std::fs::remove_dir_all(&work);
    let _ = std::fs::remove_dir_all(&recordings);
}

/// A producer of a codec the recorder cannot write (the router hands it on with no payload)
/// is named in the status, once, and the room's other producers are recorded as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_of_a_codec_the_recorder_refuses_is_named_and_the_others_are_recorded() {
    let engine = Arc::new(TapEngine::default());
    let recordings = scratch("recordings-refused");
    let recorder = Recorder::start(recordings.clone(), engine.clone()).unwrap();
    let room = RoomId::from("class-3");
    recorder.start_recording(&room, "rec-mixed").unwrap();
    let tap = engine.tap.lock().unwrap().clone().expect("the room is tapped");
    let (screen, mic) = (ProducerId::from("av1-screen"), ProducerId::from("mic"));
    let base = Instant::now();
    for i in 0..100u16 {
        let at = base + Duration::from_millis(20 * u64::from(i));
        tap.offer(&screen, MediaKind::Video, Err("video/AV1".into()), &[], at);
        tap.offer(&mic, MediaKind::Audio, Ok(RecordCodec::Opus), &rtp(111, i, 960 * u32::from(i), OPUS_SSRC, true, &[0xfc, 0xff, 0xfe]), at);
    }
    std::thread::sleep(Duration::from_millis(300));
    let stopped: Recording = match recorder.stop_recording(&room, "rec-mixed").unwrap() {
        StopAnswer::Pending(answer, _) => tokio::time::timeout(Duration::from_secs(10), answer).await.unwrap().unwrap(),
        StopAnswer::Done(recording) => recording,
    };
    assert_eq!(stopped.state, RecordingState::Stopped, "{stopped:?}");
    let error = stopped.error.as_ref().expect("the refused producer is named");
    assert_eq!(error.code, "RECORDING_CODEC_UNSUPPORTED");
    assert!(error.message.contains("av1-screen") && error.message.contains("video/AV1"), "{}", error.message);
    let files: Vec<&str> = stopped.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(files, ["class-3/rec-mixed/mic.webm"], "only the microphone has a file");
    let _ = std::fs::remove_dir_all(&recordings);
}

const VP8_SSRC: u32 = 2471283948;
const OPUS_SSRC: u32 = 1129421238;

/// Through a real worker: a browser-like peer publishes over ICE, DTLS and SRTP, the REST API
/// starts the recording, the recorder's keyframe request reaches the publisher as a PLI, and
/// the stopped recording's files play.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_records_a_publisher_over_its_real_transport_and_asks_it_for_a_keyframe() {
    use fanout_worker::api::{JoinRequest, ProduceRequest};
    use fanout_worker::client::WorkerClient;
    use fanout_worker::media::peer::TestPeer;
    use fanout_worker::room::{Direction, PeerId};
    use fanout_worker::server::{start, WorkerConfig};
    use fanout_worker::testing::{chrome_opus_parameters, chrome_vp8_parameters};

    if !have("ffmpeg") || !have("ffprobe") {
        println!("SKIPPED: ffmpeg/ffprobe not installed (apt-get install ffmpeg) - the recording file check did not run");
        return;
    }
    let work = scratch("recording-e2e-media");
    let (ivf, ogg) = (work.join("clip.ivf"), work.join("clip.ogg"));
    ffmpeg(&["-f", "lavfi", "-i", "testsrc=size=320x240:rate=30", "-t", "3", "-c:v", "libvpx", "-g", "30", "-b:v", "300k", "-f", "ivf", ivf.to_str().unwrap()]);
    ffmpeg(&["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "3", "-c:a", "libopus", "-frame_duration", "20", "-f", "ogg", ogg.to_str().unwrap()]);
    let (video, audio) = (ivf_frames(&ivf), ogg_opus_packets(&ogg));

    let recordings = scratch("recording-e2e");
    let mut config = WorkerConfig::loopback((47300, 47319));
    config.limits.recording_dir = Some(recordings.clone());
    let worker = start(config).await.expect("worker starts");
    let client = WorkerClient::new(None, Duration::from_secs(5));
    let endpoint = worker.endpoint();
    let room = "lesson";
    let alice = PeerId::from("alice");
    client.join(&endpoint, room, &JoinRequest::new("alice")).await.unwrap();
    let send = client.create_transport(&endpoint, room, &alice, Direction::Send).await.unwrap();
    let mut peer = TestPeer::for_transport(&send).await.unwrap();
    client.connect_transport(&endpoint, room, &send.id, &peer.dtls_parameters()).await.unwrap();
    peer.connect(Duration::from_secs(3)).await.unwrap();
    let produce = |kind, rtp_parameters| ProduceRequest {
        peer_id: alice.clone(),
        transport_id: send.id.clone(),
        kind,
        rtp_parameters,
        app_data: Default::default(),
        paused: false,
    };
    let camera = client.produce(&endpoint, room, &produce(MediaKind::Video, chrome_vp8_parameters())).await.unwrap().id;
    client.produce(&endpoint, room, &produce(MediaKind::Audio, chrome_opus_parameters())).await.unwrap();

    let started = client.start_recording(&endpoint, room, "e2e").await.unwrap();
    assert_eq!(started.state, RecordingState::Recording);
    // The recording starts mid-stream: an interframe, which cannot start a file.
    let mut sequence = 100u16;
    for packet in vp8_packets(&video[1], &mut sequence, 3_000) {
        peer.send_rtp(&rtp_with_ssrc(packet, VP8_SSRC)).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match peer.recv(left).await.unwrap() {
            Some((true, packet)) if pli_media_ssrc(&packet) == Some(VP8_SSRC) => break,
            Some(_) => {}
            None => panic!("the recorder's keyframe request did not reach the publisher"),
        }
    }
    // Now the clip from its keyframe, in real time.
    let start = tokio::time::Instant::now();
    let (mut v, mut a) = (0, 0);
    while v < video.len() || a < audio.len() {
        let video_at = Duration::from_micros(33_333 * v as u64);
        let audio_at = Duration::from_millis(20 * a as u64);
        if v < video.len() && (a >= audio.len() || video_at <= audio_at) {
            tokio::time::sleep_until(start + video_at).await;
            for packet in vp8_packets(&video[v], &mut sequence, 6_000 + 3_000 * v as u32) {
                peer.send_rtp(&rtp_with_ssrc(packet, VP8_SSRC)).await.unwrap();
            }
            v += 1;
        } else {
            tokio::time::sleep_until(start + audio_at).await;
            peer.send_rtp(&rtp(111, a as u16, 960 * a as u32, OPUS_SSRC, a == 0, &audio[a])).await.unwrap();
            a += 1;
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped = client.stop_recording(&endpoint, room, "e2e").await.unwrap();
    assert_eq!(stopped.state, RecordingState::Stopped, "{stopped:?}");
    assert_eq!(stopped.files.len(), 2, "{stopped:?}");
    for file in &stopped.files {
        let path = recordings.join(&file.path);
        let probe = ffprobe(&path);
        println!("ffprobe {} (through the worker):\n{}", file.path, probe.lines.trim_end());
        let expected = if file.producer_id == camera { "vp8" } else { "opus" };
        assert_eq!(probe.codec, expected);
        assert!((probe.duration - 3.0).abs() < 0.5, "{}: {} s, 3 s were sent", file.path, probe.duration);
        let errors = decode_errors(&path);
        assert!(errors.trim().is_empty(), "ffmpeg decoding {} reported: {errors}", file.path);
    }
    worker.shutdown().await;
    let _ = std::fs::remove_dir_all(&work);
    let _ = std::fs::remove_dir_all(&recordings);
}

fn rtp_with_ssrc(mut packet: Vec<u8>, ssrc: u32) -> Vec<u8> {
    packet[8..12].copy_from_slice(&ssrc.to_be_bytes());
    packet
}
