//! Test fixtures shared by the worker's unit tests, its integration tests and signalling's
//! tests: the parameters Chrome's mediasoup-client really sends, and a room wired up with a
//! producer and a consumer. Not part of the API.

use serde_json::json;

use crate::room::{
    ConsumeOptions, ConsumerId, Direction, DtlsFingerprint, DtlsParameters, DtlsRole, IceProtocol, ListenAddress, PeerId,
    PeerInfo, ProduceOptions, RoomId, Rooms, SequentialIds, TransportId, TransportNetwork,
};
use crate::rtp::header_extension_uri as uri;
use crate::rtp::{MediaKind, RtpCapabilities, RtpParameters};

/// Chrome's VP8 camera producer with RTX, as mediasoup-client's `produce` event gives it.
pub fn chrome_vp8_parameters() -> RtpParameters {
    serde_json::from_value(json!({
        "mid": "1",
        "codecs": [
            {
                "mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000,
                "parameters": {},
                "rtcpFeedback": [
                    {"type": "goog-remb", "parameter": ""},
                    {"type": "transport-cc", "parameter": ""},
                    {"type": "ccm", "parameter": "fir"},
                    {"type": "nack", "parameter": ""},
                    {"type": "nack", "parameter": "pli"}
                ]
            },
            {
                "mimeType": "video/rtx", "payloadType": 97, "clockRate": 90000,
                "parameters": {"apt": 96}, "rtcpFeedback": []
            }
        ],
        "headerExtensions": [
            {"uri": uri::MID, "id": 9, "encrypt": false, "parameters": {}},
            {"uri": uri::ABS_SEND_TIME, "id": 2, "encrypt": false, "parameters": {}},
            {"uri": uri::TRANSPORT_WIDE_CC, "id": 3, "encrypt": false, "parameters": {}},
            {"uri": uri::VIDEO_ORIENTATION, "id": 13, "encrypt": false, "parameters": {}},
            {"uri": uri::TOFFSET, "id": 14, "encrypt": false, "parameters": {}}
        ],
        "encodings": [{"ssrc": 2471283948u32, "rtx": {"ssrc": 1389617367}, "dtx": false}],
        "rtcp": {"cname": "c3Zz2dV6Ua0iMNlx", "reducedSize": true}
    }))
    .expect("the VP8 fixture is valid RtpParameters")
}

/// Chrome's VP8 camera with three simulcast encodings, as stock mediasoup-client sends
/// `produce({encodings: [3]})`: encodings named by RID (`r0` lowest) with no SSRCs, the RID
/// and repaired-RID extensions negotiated (ids 10 and 11).
pub fn chrome_vp8_simulcast_parameters() -> RtpParameters {
    let mut parameters = chrome_vp8_parameters();
    parameters.header_extensions.extend(
        serde_json::from_value::<Vec<crate::rtp::RtpHeaderExtensionParameters>>(json!([
            {"uri": uri::RID, "id": 10, "encrypt": false, "parameters": {}},
            {"uri": uri::REPAIRED_RID, "id": 11, "encrypt": false, "parameters": {}}
        ]))
        .expect("extensions parse"),
    );
    parameters.encodings = serde_json::from_value(json!([
        {"rid": "r0", "scalabilityMode": "L1T3", "scaleResolutionDownBy": 4.0, "maxBitrate": 150000},
        {"rid": "r1", "scalabilityMode": "L1T3", "scaleResolutionDownBy": 2.0, "maxBitrate": 500000},
        {"rid": "r2", "scalabilityMode": "L1T3", "scaleResolutionDownBy": 1.0, "maxBitrate": 1500000}
    ]))
    .expect("encodings parse");
    parameters
}

/// Chrome's Opus microphone producer.
pub fn chrome_opus_parameters() -> RtpParameters {
    serde_json::from_value(json!({
        "mid": "0",
        "codecs": [{
            "mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000, "channels": 2,
            "parameters": {"minptime": 10, "useinbandfec": 1},
            "rtcpFeedback": [{"type": "transport-cc", "parameter": ""}]
        }],
        "headerExtensions": [
            {"uri": uri::MID, "id": 9, "encrypt": false, "parameters": {}},
            {"uri": uri::ABS_SEND_TIME, "id": 2, "encrypt": false, "parameters": {}},
            {"uri": uri::TRANSPORT_WIDE_CC, "id": 3, "encrypt": false, "parameters": {}},
            {"uri": uri::SSRC_AUDIO_LEVEL, "id": 1, "encrypt": false, "parameters": {}}
        ],
        "encodings": [{"ssrc": 1129421238, "dtx": false}],
        "rtcp": {"cname": "c3Zz2dV6Ua0iMNlx", "reducedSize": true}
    }))
    .expect("the Opus fixture is valid RtpParameters")
}

/// Chrome's `device.rtpCapabilities` after loading a room with the default codecs (router
/// payload types and extension ids).
pub fn chrome_device_capabilities() -> RtpCapabilities {
    let video_feedback = json!([
        {"type": "goog-remb", "parameter": ""},
        {"type": "transport-cc", "parameter": ""},
        {"type": "ccm", "parameter": "fir"},
        {"type": "nack", "parameter": ""},
        {"type": "nack", "parameter": "pli"}
    ]);
    let extension = |kind: &str, uri: &str, id: u8| {
        json!({"kind": kind, "uri": uri, "preferredId": id, "preferredEncrypt": false,
               "direction": "sendrecv"})
    };
    serde_json::from_value(json!({
        "codecs": [
            {"mimeType": "audio/opus", "kind": "audio", "preferredPayloadType": 100,
             "clockRate": 48000, "channels": 2, "parameters": {"minptime": 10, "useinbandfec": 1},
             "rtcpFeedback": [{"type": "transport-cc", "parameter": ""}]},
            {"mimeType": "video/VP8", "kind": "video", "preferredPayloadType": 101,
             "clockRate": 90000, "parameters": {}, "rtcpFeedback": video_feedback},
            {"mimeType": "video/rtx", "kind": "video", "preferredPayloadType": 102,
             "clockRate": 90000, "parameters": {"apt": 101}, "rtcpFeedback": []},
            {"mimeType": "video/VP9", "kind": "video", "preferredPayloadType": 103,
             "clockRate": 90000, "parameters": {"profile-id": 0}, "rtcpFeedback": video_feedback},
            {"mimeType": "video/rtx", "kind": "video", "preferredPayloadType": 104,
             "clockRate": 90000, "parameters": {"apt": 103}, "rtcpFeedback": []}
        ],
        "headerExtensions": [
            extension("audio", uri::MID, 1),
            extension("video", uri::MID, 1),
            extension("audio", uri::ABS_SEND_TIME, 4),
            extension("video", uri::ABS_SEND_TIME, 4),
            extension("video", uri::TRANSPORT_WIDE_CC, 5),
            extension("audio", uri::SSRC_AUDIO_LEVEL, 10),
            extension("video", uri::VIDEO_ORIENTATION, 11),
            extension("video", uri::TOFFSET, 12)
        ]
    }))
    .expect("the device fixture is valid RtpCapabilities")
}

/// The DTLS parameters Chrome's mediasoup-client sends in `connect` (role `client`).
pub fn chrome_dtls_parameters() -> DtlsParameters {
    DtlsParameters {
        role: DtlsRole::Client,
        fingerprints: vec![DtlsFingerprint {
            algorithm: "sha-256".to_owned(),
            value: (0..32u8)
                .map(|byte| format!("{:02X}", byte.wrapping_mul(7)))
                .collect::<Vec<_>>()
                .join(":"),
        }],
    }
}

/// Network parameters as a media plane would hand them out.
pub fn network(port: u16) -> TransportNetwork {
    TransportNetwork {
        ice_username_fragment: format!("ufrag{port}"),
        ice_password: format!("password-for-port-{port}"),
        addresses: vec![ListenAddress { ip: [127, 0, 0, 1].into(), port, protocol: IceProtocol::Udp }],
        fingerprints: vec![DtlsFingerprint { algorithm: "sha-256".into(), value: ["AB"; 32].join(":") }],
    }
}

/// A room where `alice` publishes Chrome's VP8 camera and `bob` consumes it.
pub struct VideoCall {
    pub rooms: Rooms,
    pub room: RoomId,
    pub alice_send: TransportId,
    pub bob_recv: TransportId,
    pub consumer: ConsumerId,
}

pub fn video_call() -> VideoCall {
    video_call_with(chrome_vp8_parameters())
}

/// [`video_call`] with other producer parameters (simulcast, SVC, another codec).
pub fn video_call_with(rtp_parameters: RtpParameters) -> VideoCall {
    video_call_consuming_with(rtp_parameters, chrome_device_capabilities())
}

/// [`video_call_with`], Bob consuming with `rtp_capabilities` (a codec Chrome's fixture lacks).
pub fn video_call_consuming_with(rtp_parameters: RtpParameters, rtp_capabilities: RtpCapabilities) -> VideoCall {
    let mut rooms = Rooms::new(SequentialIds::new());
    let room = RoomId::from("maths-101");
    rooms.ensure_room(&room, &[]).expect("room opens");
    let (alice, bob) = (PeerId::from("alice"), PeerId::from("bob"));
    for peer in [&alice, &bob] {
        rooms.join(&room, peer, PeerInfo::default()).expect("peer joins");
    }
    let alice_send = rooms.create_transport(&room, &alice, Direction::Send, network(40000)).expect("send transport").id;
    let bob_recv = rooms.create_transport(&room, &bob, Direction::Recv, network(40001)).expect("recv transport").id;
    let producer = rooms
        .produce(&room, &alice, ProduceOptions {
            transport_id: alice_send.clone(),
            kind: MediaKind::Video,
            rtp_parameters,
            app_data: Default::default(),
            paused: false,
        })
        .expect("produce")
        .id;
    let consumer = rooms
        .consume(&room, &bob, ConsumeOptions {
            transport_id: bob_recv.clone(),
            producer_id: producer.clone(),
            rtp_capabilities,
            paused: false,
        })
        .expect("consume")
        .id;
    VideoCall { rooms, room, alice_send, bob_recv, consumer }
}

/// The media SSRC of the first PLI (RTCP payload-specific feedback, FMT 1) in a compound
/// RTCP packet, if it has one: what a test peer checks when it waits to be asked for a
/// keyframe.
pub fn pli_media_ssrc(compound: &[u8]) -> Option<u32> {
    let mut rest = compound;
    while rest.len() >= 12 {
        let len = (u16::from_be_bytes([rest[2], rest[3]]) as usize + 1) * 4;
        if rest[1] == 206 && rest[0] & 0x1f == 1 {
            return Some(u32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]));
        }
        rest = rest.get(len..)?;
    }
    None
}
