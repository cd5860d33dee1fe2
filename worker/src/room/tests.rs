//! Scenarios on the room graph, one behaviour each, with the parameters Chrome's
//! mediasoup-client really sends.

use serde_json::{Value, json};

use super::*;
use crate::rtp::{MediaKind, PayloadType, RtpCapabilities, RtpParameters, Ssrc};
use crate::testing::{
    chrome_device_capabilities as chrome_device, chrome_opus_parameters as chrome_opus,
    chrome_vp8_parameters as chrome_vp8,
};

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// A device that decodes only VP9 (no VP8, no Opus).
fn vp9_only_device() -> RtpCapabilities {
    serde_json::from_value(json!({"codecs": [
        {"mimeType": "video/VP9", "kind": "video", "preferredPayloadType": 103,
         "clockRate": 90000, "parameters": {"profile-id": 0}}
    ]}))
    .expect("device fixture parses")
}

fn sha256_fingerprint() -> DtlsFingerprint {
    DtlsFingerprint {
        algorithm: "sha-256".to_owned(),
        value: (0..32)
            .map(|byte| format!("{:02X}", byte * 7 % 256))
            .collect::<Vec<_>>()
            .join(":"),
    }
}

fn network(port: u16) -> TransportNetwork {
    TransportNetwork {
        ice_username_fragment: format!("ufrag{port}"),
        ice_password: format!("password-for-{port}"),
        addresses: vec![ListenAddress {
            ip: "203.0.113.10".parse().expect("ip"),
            port,
            protocol: IceProtocol::Udp,
        }],
        fingerprints: vec![sha256_fingerprint()],
    }
}

fn room() -> RoomId {
    RoomId::from("physics-101")
}

fn peer(name: &str) -> PeerId {
    PeerId::from(name)
}

fn info(name: &str, role: &str) -> PeerInfo {
    PeerInfo {
        user_id: format!("user-{name}"),
        display_name: name.to_owned(),
        role: role.to_owned(),
        app_data: AppData::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// A small driver: each step is one request a signalling server would make.
// ---------------------------------------------------------------------------------------------

struct World {
    rooms: Rooms,
    next_port: u16,
}

impl World {
    /// An open room with default codecs and no peers.
    fn new() -> Self {
        let mut rooms = Rooms::new(SequentialIds::new());
        rooms.ensure_room(&room(), &[]).expect("room opens");
        World {
            rooms,
            next_port: 40000,
        }
    }

    fn join(&mut self, name: &str) -> JoinResponse {
        self.rooms
            .join(&room(), &peer(name), info(name, "student"))
            .expect("joins")
    }

    fn transport(&mut self, name: &str, direction: Direction) -> TransportId {
        self.next_port += 1;
        self.rooms
            .create_transport(&room(), &peer(name), direction, network(self.next_port))
            .expect("transport")
            .id
    }

    fn produce(&mut self, name: &str, transport: &TransportId, kind: MediaKind) -> ProducerId {
        let rtp_parameters = match kind {
            MediaKind::Audio => chrome_opus(),
            MediaKind::Video => chrome_vp8(),
        };
        self.rooms
            .produce(
                &room(),
                &peer(name),
                produce_options(transport, kind, rtp_parameters),
            )
            .expect("produces")
            .id
    }

    fn consume(
        &mut self,
        name: &str,
        transport: &TransportId,
        producer: &ProducerId,
        paused: bool,
    ) -> ConsumerCreated {
        self.rooms
            .consume(
                &room(),
                &peer(name),
                consume_options(transport, producer, chrome_device(), paused),
            )
            .expect("consumes")
    }

    /// The events since the last call, without their room (always the one room here).
    fn events(&mut self) -> Vec<RoomEvent> {
        self.rooms
            .drain_events()
            .into_iter()
            .map(|(room_id, event)| {
                assert_eq!(room_id, room());
                event
            })
            .collect()
    }

    fn room(&self) -> &Room {
        self.rooms.room(&room()).expect("room is open")
    }

    fn table(&self) -> ForwardingTable {
        self.rooms.forwarding_table(&room()).expect("room is open")
    }
}

fn produce_options(
    transport: &TransportId,
    kind: MediaKind,
    rtp_parameters: RtpParameters,
) -> ProduceOptions {
    ProduceOptions {
        transport_id: transport.clone(),
        kind,
        rtp_parameters,
        app_data: AppData::new(),
        paused: false,
    }
}

fn consume_options(
    transport: &TransportId,
    producer: &ProducerId,
    rtp_capabilities: RtpCapabilities,
    paused: bool,
) -> ConsumeOptions {
    ConsumeOptions {
        transport_id: transport.clone(),
        producer_id: producer.clone(),
        rtp_capabilities,
        paused,
    }
}

/// Alice sends a camera; Bob receives it. Returns (alice's send transport, bob's recv
/// transport, the producer, bob's consumer). Events so far are drained.
fn alice_sends_bob_receives(
    world: &mut World,
) -> (TransportId, TransportId, ProducerId, ConsumerCreated) {
    world.join("alice");
    world.join("bob");
    let send = world.transport("alice", Direction::Send);
    let recv = world.transport("bob", Direction::Recv);
    let producer = world.produce("alice", &send, MediaKind::Video);
    let consumer = world.consume("bob", &recv, &producer, false);
    world.events();
    (send, recv, producer, consumer)
}

fn consumer_closed(
    consumer: &ConsumerId,
    peer_id: &str,
    producer: &ProducerId,
    reason: ConsumerCloseReason,
) -> RoomEvent {
    RoomEvent::ConsumerClosed {
        consumer_id: consumer.clone(),
        peer_id: peer(peer_id),
        producer_id: producer.clone(),
        reason,
    }
}

fn transport_closed(transport: TransportId, peer_id: &str, code: TransportCloseCode) -> RoomEvent {
    RoomEvent::TransportClosed {
        transport_id: transport,
        peer_id: peer(peer_id),
        code,
        reason: code.describe().to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Rooms
// ---------------------------------------------------------------------------------------------

#[test]
fn ensure_room_returns_the_router_capabilities_and_is_idempotent() {
    let mut rooms = Rooms::new(SequentialIds::new());
    let first = rooms.ensure_room(&room(), &[]).expect("opens");
    let vp8 = first
        .codecs
        .iter()
        .find(|codec| codec.mime_type == "video/VP8")
        .expect("default codecs include VP8");
    assert_eq!(vp8.preferred_payload_type, Some(PayloadType(101)));

    let opus_only = vec![first.codecs[0].clone()];
    let again = rooms.ensure_room(&room(), &opus_only).expect("still open");
    assert_eq!(
        again, first,
        "an open room keeps the codecs it was created with"
    );
    assert_eq!(rooms.stats().rooms, 1);
}

#[test]
fn ensure_room_with_an_unsupported_codec_fails_and_opens_nothing() {
    let mut rooms = Rooms::new(SequentialIds::new());
    let codec = serde_json::from_value(json!(
        {"kind": "video", "mimeType": "video/MP4V-ES", "clockRate": 90000}
    ))
    .expect("codec parses");
    let error = rooms
        .ensure_room(&room(), &[codec])
        .expect_err("unsupported");
    assert_eq!(error.code(), "UNSUPPORTED_CODEC");
    assert_eq!(error.http_status(), 400);
    assert!(rooms.room(&room()).is_none());
}

#[test]
fn an_empty_room_id_is_refused() {
    let mut rooms = Rooms::new(SequentialIds::new());
    let error = rooms
        .ensure_room(&RoomId::from(""), &[])
        .expect_err("empty");
    assert_eq!(error.code(), "INVALID_ID");
}

// ---------------------------------------------------------------------------------------------
// Peers
// ---------------------------------------------------------------------------------------------

#[test]
fn join_returns_the_other_peers_and_their_producers() {
    let mut world = World::new();
    world.join("alice");
    let send = world.transport("alice", Direction::Send);
    let mic = world.produce("alice", &send, MediaKind::Audio);
    let camera = world.produce("alice", &send, MediaKind::Video);

    let bob = world.join("bob");

    assert_eq!(bob.rtp_capabilities, world.room().rtp_capabilities);
    let peers: Vec<&str> = bob.peers.iter().map(|p| p.peer_id.as_str()).collect();
    assert_eq!(peers, ["alice"]);
    assert_eq!(bob.peers[0].info, info("alice", "student"));
    let producers: Vec<(&ProducerId, &str, MediaKind, bool)> = bob
        .producers
        .iter()
        .map(|p| (&p.producer_id, p.peer_id.as_str(), p.kind, p.paused))
        .collect();
    assert_eq!(
        producers,
        [
            (&mic, "alice", MediaKind::Audio, false),
            (&camera, "alice", MediaKind::Video, false)
        ]
    );
}

#[test]
fn join_answers_in_mediasoup_client_json() {
    let mut world = World::new();
    world.join("alice");
    let bob = world.join("bob");
    let value = serde_json::to_value(&bob).expect("serialises");
    assert_eq!(
        value["peers"],
        json!([{"peerId": "alice", "userId": "user-alice", "displayName": "alice",
                "role": "student", "appData": {}}])
    );
    assert_eq!(value["producers"], json!([]));
    assert!(value["rtpCapabilities"]["codecs"].is_array());
}

#[test]
fn join_emits_peer_joined() {
    let mut world = World::new();
    world.join("alice");
    assert_eq!(
        world.events(),
        [RoomEvent::PeerJoined(PeerSummary {
            peer_id: peer("alice"),
            info: info("alice", "student"),
        })]
    );
}

#[test]
fn joining_twice_with_the_same_peer_id_fails() {
    let mut world = World::new();
    world.join("alice");
    world.events();
    let error = world
        .rooms
        .join(&room(), &peer("alice"), info("alice", "teacher"))
        .expect_err("already joined");
    assert_eq!(error.code(), "PEER_ALREADY_JOINED");
    assert_eq!(error.http_status(), 409);
    assert_eq!(
        world
            .room()
            .peer(&peer("alice"))
            .expect("still there")
            .info
            .role,
        "student"
    );
    assert!(world.events().is_empty());
}

#[test]
fn joining_a_room_that_is_not_open_fails() {
    let mut rooms = Rooms::new(SequentialIds::new());
    let error = rooms
        .join(&room(), &peer("alice"), PeerInfo::default())
        .expect_err("no room");
    assert_eq!(error.code(), "ROOM_NOT_FOUND");
    assert_eq!(error.http_status(), 404);
    assert!(
        error
            .to_string()
            .contains("room \"physics-101\" is not open")
            && error.to_string().contains("PUT /v1/rooms/{room}"),
        "{error}"
    );
}

#[test]
fn leaving_twice_fails_with_peer_not_found() {
    let mut world = World::new();
    world.join("alice");
    world.rooms.leave(&room(), &peer("alice")).expect("leaves");
    let error = world
        .rooms
        .leave(&room(), &peer("alice"))
        .expect_err("gone");
    assert_eq!(error.code(), "PEER_NOT_FOUND");
}

// ---------------------------------------------------------------------------------------------
// Transports
// ---------------------------------------------------------------------------------------------

#[test]
fn create_transport_answers_in_mediasoup_client_json() {
    let mut world = World::new();
    world.join("alice");
    let created = world
        .rooms
        .create_transport(&room(), &peer("alice"), Direction::Send, network(40001))
        .expect("transport");
    let fingerprint = sha256_fingerprint();
    assert_eq!(
        serde_json::to_value(&created).expect("serialises"),
        json!({
            "id": "transport-1",
            "iceParameters": {
                "usernameFragment": "ufrag40001",
                "password": "password-for-40001",
                "iceLite": true
            },
            "iceCandidates": [{
                "foundation": "udpcandidate",
                "priority": 2130706431u32,
                "address": "203.0.113.10",
                "ip": "203.0.113.10",
                "protocol": "udp",
                "port": 40001,
                "type": "host"
            }],
            "dtlsParameters": {
                "role": "auto",
                "fingerprints": [{"algorithm": "sha-256", "value": fingerprint.value}]
            }
        })
    );
}

#[test]
fn creating_a_transport_for_a_peer_not_in_the_room_fails() {
    let mut world = World::new();
    let error = world
        .rooms
        .create_transport(&room(), &peer("mallory"), Direction::Send, network(1))
        .expect_err("not joined");
    assert_eq!(error.code(), "PEER_NOT_FOUND");
    assert_eq!(world.rooms.stats().transports, 0);
}

/// What a media plane that refuses to open a transport answers, for the `*_with` variants.
#[derive(Debug, PartialEq)]
enum OpenRefused {
    NoPort,
    Room(RoomError),
}

impl From<RoomError> for OpenRefused {
    fn from(error: RoomError) -> Self {
        OpenRefused::Room(error)
    }
}

#[test]
fn create_transport_with_hands_the_new_id_to_the_media_plane() {
    let mut world = World::new();
    world.join("alice");
    let mut asked_for = None;
    let created = world
        .rooms
        .create_transport_with(&room(), &peer("alice"), Direction::Recv, |id| {
            asked_for = Some(id.clone());
            Ok::<_, RoomError>(network(40007))
        })
        .expect("transport");
    assert_eq!(asked_for, Some(created.id.clone()));
    assert_eq!(created.ice_candidates[0].port, 40007);
    assert!(world.room().transport(&created.id).is_some());
}

#[test]
fn create_transport_with_a_failing_open_creates_nothing_and_emits_nothing() {
    let mut world = World::new();
    world.join("alice");
    world.events();
    let before = world.rooms.snapshot();
    let error = world
        .rooms
        .create_transport_with(&room(), &peer("alice"), Direction::Send, |_| {
            Err(OpenRefused::NoPort)
        })
        .expect_err("no port");
    assert_eq!(error, OpenRefused::NoPort);
    assert_eq!(world.rooms.snapshot(), before);
    assert!(world.events().is_empty());
    assert_eq!(world.rooms.stats().transports, 0);
}

#[test]
fn create_transport_with_checks_the_peer_before_asking_the_media_plane() {
    let mut world = World::new();
    let mut opened = false;
    let error = world
        .rooms
        .create_transport_with(&room(), &peer("mallory"), Direction::Send, |_| {
            opened = true;
            Ok::<_, OpenRefused>(network(1))
        })
        .expect_err("not joined");
    assert!(matches!(
        error,
        OpenRefused::Room(RoomError::PeerNotFound { .. })
    ));
    assert!(
        !opened,
        "the media plane must not open a port for a refused request"
    );
}

#[test]
fn connect_transport_with_a_failing_media_plane_leaves_the_transport_unconnected() {
    let mut world = World::new();
    world.join("alice");
    let send = world.transport("alice", Direction::Send);
    let before = world.rooms.snapshot();
    let dtls = DtlsParameters {
        role: DtlsRole::Client,
        fingerprints: vec![sha256_fingerprint()],
    };
    let error = world
        .rooms
        .connect_transport_with(&room(), &send, &dtls, |remote, role| {
            assert_eq!(role, DtlsRole::Server);
            assert_eq!(remote.fingerprints, vec![sha256_fingerprint()]);
            Err(OpenRefused::NoPort)
        })
        .expect_err("refused");
    assert_eq!(error, OpenRefused::NoPort);
    assert_eq!(world.rooms.snapshot(), before);
    // The client may try again: the failed attempt did not count as a connect.
    world
        .rooms
        .connect_transport(&room(), &send, &dtls)
        .expect("connects after the failure");
}

#[test]
fn restart_ice_with_a_failing_media_plane_keeps_the_old_credentials() {
    let mut world = World::new();
    world.join("alice");
    let send = world.transport("alice", Direction::Send);
    let before = world.rooms.snapshot();
    let error = world
        .rooms
        .restart_ice_with(&room(), &send, || Err(OpenRefused::NoPort))
        .expect_err("refused");
    assert_eq!(error, OpenRefused::NoPort);
    assert_eq!(world.rooms.snapshot(), before);
}

#[test]
fn connect_makes_the_worker_dtls_server_when_the_client_is_client() {
    let mut world = World::new();
    world.join("alice");
    let send = world.transport("alice", Direction::Send);
    let role = world
        .rooms
        .connect_transport(
            &room(),
            &send,
            &DtlsParameters {
                role: DtlsRole::Client,
                fingerprints: vec![sha256_fingerprint()],
            },
        )
        .expect("connects");
    assert_eq!(role, DtlsRole::Server);
    let connection = world.room().transport(&send).and_then(|t| t.dtls.clone());
    assert_eq!(
        connection.map(|c| (c.local_role, c.remote.fingerprints)),
        Some((DtlsRole::Server, vec![sha256_fingerprint()]))
    );
}

#[test]
fn a_second_connect_fails_with_transport_already_connected() {
    let mut world = World::new();
    world.join("alice");
    let send = world.transport("alice", Direction::Send);
    let dtls = DtlsParameters {
        role: DtlsRole::Client,
        fingerprints: vec![sha256_fingerprint()],
    };
    world
        .rooms
        .connect_transport(&room(), &send, &dtls)
        .expect("first connect");
    let before = world.rooms.snapshot();
    let error = world
        .rooms
        .connect_transport(
            &room(),
            &send,
            &DtlsParameters {
                role: DtlsRole::Server,
                ..dtls
            },
        )
        .expect_err("second connect");
    assert_eq!(error.code(), "TRANSPORT_ALREADY_CONNECTED");
    assert_eq!(error.http_status(), 409);
    assert_eq!(world.rooms.snapshot(), before);
}

#[test]
fn connect_with_an_unsupported_fingerprint_fails_and_leaves_the_transport_unconnected() {
    let mut world = World::new();
    world.join("alice");
    let send = world.transport("alice", Direction::Send);
    let error = world
        .rooms
        .connect_transport(
            &room(),
            &send,
            &DtlsParameters {
                role: DtlsRole::Client,
                fingerprints: vec![DtlsFingerprint {
                    algorithm: "md5".to_owned(),
                    value: "AB:CD".to_owned(),
                }],
            },
        )
        .expect_err("md5");
    assert_eq!(error.code(), "INVALID_DTLS_PARAMETERS");
    assert_eq!(error.http_status(), 400);
    assert_eq!(
        world.room().transport(&send).map(|t| t.dtls.is_none()),
        Some(true)
    );
}

#[test]
fn connecting_an_unknown_transport_fails() {
    let mut world = World::new();
    let error = world
        .rooms
        .connect_transport(
            &room(),
            &TransportId::from("transport-404"),
            &DtlsParameters {
                role: DtlsRole::Client,
                fingerprints: vec![sha256_fingerprint()],
            },
        )
        .expect_err("unknown");
    assert_eq!(error.code(), "TRANSPORT_NOT_FOUND");
}

#[test]
fn restart_ice_replaces_the_credentials() {
    let mut world = World::new();
    world.join("alice");
    let send = world.transport("alice", Direction::Send);
    let ice = world
        .rooms
        .restart_ice(
            &room(),
            &send,
            "newufrag".to_owned(),
            "newpassword".to_owned(),
        )
        .expect("restarts");
    assert_eq!(
        serde_json::to_value(&ice).expect("serialises"),
        json!({"usernameFragment": "newufrag", "password": "newpassword", "iceLite": true})
    );
    assert_eq!(
        world.room().transport(&send).map(|t| &t.ice_parameters),
        Some(&ice)
    );
}

// ---------------------------------------------------------------------------------------------
// Producers
// ---------------------------------------------------------------------------------------------

#[test]
fn produce_emits_new_producer_with_its_app_data() {
    let mut world = World::new();
    world.join("alice");
    let send = world.transport("alice", Direction::Send);
    world.events();
    let mut app_data = AppData::new();
    app_data.insert("source".to_owned(), json!("webcam"));
    let created = world
        .rooms
        .produce(
            &room(),
            &peer("alice"),
            ProduceOptions {
                app_data: app_data.clone(),
                ..produce_options(&send, MediaKind::Video, chrome_vp8())
            },
        )
        .expect("produces");
    assert_eq!(
        world.events(),
        [RoomEvent::NewProducer {
            producer_id: created.id.clone(),
            peer_id: peer("alice"),
            kind: MediaKind::Video,
            app_data,
        }]
    );
    assert_eq!(
        serde_json::to_value(&created).expect("serialises"),
        json!({"id": "producer-2"})
    );
}

#[test]
fn produce_maps_the_producer_onto_router_payload_types_and_a_fresh_ssrc() {
    let mut world = World::new();
    world.join("alice");
    let send = world.transport("alice", Direction::Send);
    let camera = world.produce("alice", &send, MediaKind::Video);
    let producer = world.room().producer(&camera).expect("producer").clone();
    let mapped: Vec<(u8, u8)> = producer
        .rtp_mapping
        .codecs
        .iter()
        .map(|entry| (entry.payload_type.0, entry.mapped_payload_type.0))
        .collect();
    assert_eq!(mapped, [(96, 101), (97, 102)]);
    // The first SSRC SequentialIds hands out.
    assert_eq!(
        producer.rtp_mapping.encodings[0].mapped_ssrc,
        Ssrc(1_000_000)
    );
    assert_eq!(
        producer.consumable_parameters.encodings[0].ssrc,
        Some(Ssrc(1_000_000))
    );
}

#[test]
fn produce_on_a_recv_transport_fails_with_direction_mismatch() {
    let mut world = World::new();
    world.join("alice");
    let recv = world.transport("alice", Direction::Recv);
    world.events();
    let error = world
        .rooms
        .produce(
            &room(),
            &peer("alice"),
            produce_options(&recv, MediaKind::Video, chrome_vp8()),
        )
        .expect_err("recv transport");
    assert_eq!(error.code(), "TRANSPORT_DIRECTION_MISMATCH");
    assert_eq!(error.http_status(), 400);
    assert!(
        error.to_string().contains("needs a send transport"),
        "{error}"
    );
    assert_eq!(world.rooms.stats().producers, 0);
    assert!(world.events().is_empty());
}

#[test]
fn produce_on_another_peers_transport_fails_as_not_found() {
    let mut world = World::new();
    world.join("alice");
    world.join("bob");
    let alices = world.transport("alice", Direction::Send);
    let error = world
        .rooms
        .produce(
            &room(),
            &peer("bob"),
            produce_options(&alices, MediaKind::Video, chrome_vp8()),
        )
        .expect_err("not bob's");
    assert_eq!(error.code(), "TRANSPORT_NOT_FOUND");
}

#[test]
fn produce_with_a_kind_that_does_not_match_the_codecs_fails_and_draws_no_id() {
    let mut world = World::new();
    world.join("alice");
    let send = world.transport("alice", Direction::Send);
    let error = world
        .rooms
        .produce(
            &room(),
            &peer("alice"),
            produce_options(&send, MediaKind::Audio, chrome_vp8()),
        )
        .expect_err("VP8 is not audio");
    assert_eq!(error.code(), "INVALID_RTP_PARAMETERS");
    // The refused request took nothing from the generator: the next producer gets the next
    // id and the first SSRC.
    let camera = world.produce("alice", &send, MediaKind::Video);
    assert_eq!(camera.as_str(), "producer-2");
    let producer = world.room().producer(&camera).expect("producer");
    assert_eq!(
        producer.rtp_mapping.encodings[0].mapped_ssrc,
        Ssrc(1_000_000)
    );
}

#[test]
fn produce_reusing_an_ssrc_on_the_same_transport_fails() {
    let mut world = World::new();
    world.join("alice");
    let send = world.transport("alice", Direction::Send);
    world.produce("alice", &send, MediaKind::Video);
    let mut again = chrome_vp8();
    again.mid = Some("2".to_owned());
    let error = world
        .rooms
        .produce(
            &room(),
            &peer("alice"),
            produce_options(&send, MediaKind::Video, again),
        )
        .expect_err("same SSRC");
    assert_eq!(error.code(), "INVALID_RTP_PARAMETERS");
    assert!(error.to_string().contains("SSRC 2471283948"), "{error}");
}

#[test]
fn produce_with_an_unsupported_codec_fails_with_the_rtp_code() {
    let mut world = World::new();
    world.join("alice");
    let send = world.transport("alice", Direction::Send);
    let mut av1 = chrome_vp8();
    av1.codecs[0].mime_type = "video/AV1".to_owned();
    let error = world
        .rooms
        .produce(
            &room(),
            &peer("alice"),
            produce_options(&send, MediaKind::Video, av1),
        )
        .expect_err("AV1 is not enabled");
    assert_eq!(error.code(), "UNSUPPORTED_CODEC");
    assert_eq!(error.http_status(), 400);
}

#[test]
fn pausing_a_producer_marks_its_consumers_and_emits_once() {
    let mut world = World::new();
    let (_, _, camera, consumer) = alice_sends_bob_receives(&mut world);
    world
        .rooms
        .pause_producer(&room(), &camera)
        .expect("pauses");
    world
        .rooms
        .pause_producer(&room(), &camera)
        .expect("already paused is fine");
    assert_eq!(
        world.events(),
        [RoomEvent::ProducerPaused {
            producer_id: camera.clone(),
            peer_id: peer("alice"),
        }]
    );
    let bobs = world.room().consumer(&consumer.id).expect("consumer stays");
    assert!(bobs.producer_paused && !bobs.paused);

    world
        .rooms
        .resume_producer(&room(), &camera)
        .expect("resumes");
    assert_eq!(
        world.events(),
        [RoomEvent::ProducerResumed {
            producer_id: camera.clone(),
            peer_id: peer("alice"),
        }]
    );
    assert!(
        world
            .room()
            .consumer(&consumer.id)
            .is_some_and(Consumer::is_active)
    );
}

#[test]
fn a_consumer_of_a_paused_producer_is_created_with_producer_paused() {
    let mut world = World::new();
    world.join("alice");
    world.join("bob");
    let send = world.transport("alice", Direction::Send);
    let recv = world.transport("bob", Direction::Recv);
    let camera = world.produce("alice", &send, MediaKind::Video);
    world
        .rooms
        .pause_producer(&room(), &camera)
        .expect("pauses");
    let consumer = world.consume("bob", &recv, &camera, false);
    assert!(consumer.producer_paused);
}

// ---------------------------------------------------------------------------------------------
// Consumers
// ---------------------------------------------------------------------------------------------

#[test]
fn consuming_video_gets_a_fresh_ssrc_and_rtx_one_above_it() {
    let mut world = World::new();
    let (_, _, camera, consumer) = alice_sends_bob_receives(&mut world);
    // SSRC 1 000 000 went to the producer's mapping; the consumer gets the next one.
    let encoding = &consumer.rtp_parameters.encodings[0];
    assert_eq!(encoding.ssrc, Some(Ssrc(1_001_000)));
    assert_eq!(encoding.rtx.map(|rtx| rtx.ssrc), Some(Ssrc(1_001_001)));
    assert_eq!(consumer.producer_id, camera);
    assert_eq!(consumer.kind, MediaKind::Video);
    assert_eq!(consumer.r#type, ConsumerType::Simple);
    assert!(!consumer.producer_paused);
    let payload_types: Vec<u8> = consumer
        .rtp_parameters
        .codecs
        .iter()
        .map(|codec| codec.payload_type.0)
        .collect();
    assert_eq!(payload_types, [101, 102]);
}

#[test]
fn consume_answers_in_mediasoup_client_json() {
    let mut world = World::new();
    let (_, _, camera, consumer) = alice_sends_bob_receives(&mut world);
    let value = serde_json::to_value(&consumer).expect("serialises");
    assert_eq!(value["id"], json!(consumer.id.as_str()));
    assert_eq!(value["producerId"], json!(camera.as_str()));
    assert_eq!(value["kind"], json!("video"));
    assert_eq!(value["type"], json!("simple"));
    assert_eq!(value["producerPaused"], json!(false));
    assert_eq!(value["rtpParameters"]["mid"], json!("0"));
    assert_eq!(
        value["rtpParameters"]["encodings"],
        json!([{"ssrc": 1_001_000, "rtx": {"ssrc": 1_001_001}}])
    );
}

#[test]
fn consumers_on_one_transport_get_consecutive_mids() {
    let mut world = World::new();
    world.join("alice");
    world.join("bob");
    let send = world.transport("alice", Direction::Send);
    let recv = world.transport("bob", Direction::Recv);
    let mic = world.produce("alice", &send, MediaKind::Audio);
    let camera = world.produce("alice", &send, MediaKind::Video);
    let first = world.consume("bob", &recv, &mic, false);
    let second = world.consume("bob", &recv, &camera, false);
    assert_eq!(first.rtp_parameters.mid.as_deref(), Some("0"));
    assert_eq!(second.rtp_parameters.mid.as_deref(), Some("1"));
}

#[test]
fn consuming_audio_has_no_rtx() {
    let mut world = World::new();
    world.join("alice");
    world.join("bob");
    let send = world.transport("alice", Direction::Send);
    let recv = world.transport("bob", Direction::Recv);
    let mic = world.produce("alice", &send, MediaKind::Audio);
    let consumer = world.consume("bob", &recv, &mic, false);
    assert_eq!(consumer.kind, MediaKind::Audio);
    assert_eq!(consumer.rtp_parameters.codecs[0].mime_type, "audio/opus");
    assert_eq!(consumer.rtp_parameters.encodings[0].rtx, None);
}

#[test]
fn consuming_with_incapable_capabilities_fails_with_cannot_consume_and_changes_nothing() {
    let mut world = World::new();
    world.join("alice");
    world.join("bob");
    let send = world.transport("alice", Direction::Send);
    let recv = world.transport("bob", Direction::Recv);
    let camera = world.produce("alice", &send, MediaKind::Video);
    world.events();
    let before = world.rooms.snapshot();
    let error = world
        .rooms
        .consume(
            &room(),
            &peer("bob"),
            consume_options(&recv, &camera, vp9_only_device(), false),
        )
        .expect_err("VP9 only");
    assert_eq!(error.code(), "CANNOT_CONSUME");
    assert_eq!(error.http_status(), 400);
    assert_eq!(world.rooms.snapshot(), before);
    assert!(world.events().is_empty());
    // Nothing was drawn either: the next consumer gets the SSRC the refused one would have.
    let consumer = world.consume("bob", &recv, &camera, false);
    assert_eq!(
        consumer.rtp_parameters.encodings[0].ssrc,
        Some(Ssrc(1_001_000))
    );
    assert_eq!(consumer.rtp_parameters.mid.as_deref(), Some("0"));
}

#[test]
fn consume_on_a_send_transport_fails_with_direction_mismatch() {
    let mut world = World::new();
    let (send, _, camera, _) = alice_sends_bob_receives(&mut world);
    let error = world
        .rooms
        .consume(
            &room(),
            &peer("alice"),
            consume_options(&send, &camera, chrome_device(), false),
        )
        .expect_err("send transport");
    assert_eq!(error.code(), "TRANSPORT_DIRECTION_MISMATCH");
    assert!(
        error.to_string().contains("needs a recv transport"),
        "{error}"
    );
}

#[test]
fn consuming_an_unknown_producer_fails_with_producer_not_found() {
    let mut world = World::new();
    world.join("bob");
    let recv = world.transport("bob", Direction::Recv);
    let error = world
        .rooms
        .consume(
            &room(),
            &peer("bob"),
            consume_options(
                &recv,
                &ProducerId::from("producer-404"),
                chrome_device(),
                false,
            ),
        )
        .expect_err("unknown producer");
    assert_eq!(error.code(), "PRODUCER_NOT_FOUND");
    assert_eq!(error.http_status(), 404);
}

#[test]
fn a_peer_may_consume_its_own_producer() {
    let mut world = World::new();
    world.join("alice");
    let send = world.transport("alice", Direction::Send);
    let recv = world.transport("alice", Direction::Recv);
    let camera = world.produce("alice", &send, MediaKind::Video);
    let consumer = world.consume("alice", &recv, &camera, false);
    assert_eq!(consumer.producer_id, camera);
}

#[test]
fn a_consumer_created_paused_stays_paused_until_resumed() {
    let mut world = World::new();
    world.join("alice");
    world.join("bob");
    let send = world.transport("alice", Direction::Send);
    let recv = world.transport("bob", Direction::Recv);
    let camera = world.produce("alice", &send, MediaKind::Video);
    let consumer = world.consume("bob", &recv, &camera, true);
    let is_paused = |world: &World| world.room().consumer(&consumer.id).map(|c| c.paused);

    // A producer pause and resume does not resume it.
    world
        .rooms
        .pause_producer(&room(), &camera)
        .expect("pauses");
    world
        .rooms
        .resume_producer(&room(), &camera)
        .expect("resumes");
    assert_eq!(is_paused(&world), Some(true));

    world
        .rooms
        .resume_consumer(&room(), &consumer.id)
        .expect("resumes");
    assert_eq!(is_paused(&world), Some(false));
    world
        .rooms
        .pause_consumer(&room(), &consumer.id)
        .expect("pauses");
    assert_eq!(is_paused(&world), Some(true));
}

#[test]
fn pausing_an_unknown_consumer_fails_with_consumer_not_found() {
    let mut world = World::new();
    let error = world
        .rooms
        .pause_consumer(&room(), &ConsumerId::from("consumer-404"))
        .expect_err("unknown");
    assert_eq!(error.code(), "CONSUMER_NOT_FOUND");
}

// ---------------------------------------------------------------------------------------------
// Closures
// ---------------------------------------------------------------------------------------------

#[test]
fn closing_a_producer_closes_its_consumers_with_events() {
    let mut world = World::new();
    let (_, bobs_recv, camera, bobs) = alice_sends_bob_receives(&mut world);
    world.join("carol");
    let carols_recv = world.transport("carol", Direction::Recv);
    let carols = world.consume("carol", &carols_recv, &camera, false);
    world.events();

    world
        .rooms
        .close_producer(&room(), &camera)
        .expect("closes");

    assert_eq!(
        world.events(),
        [
            consumer_closed(
                &bobs.id,
                "bob",
                &camera,
                ConsumerCloseReason::ProducerClosed
            ),
            consumer_closed(
                &carols.id,
                "carol",
                &camera,
                ConsumerCloseReason::ProducerClosed
            ),
            RoomEvent::ProducerClosed {
                producer_id: camera.clone(),
                peer_id: peer("alice"),
            },
        ]
    );
    assert!(world.room().consumers().is_empty());
    assert!(
        world.room().transport(&bobs_recv).is_some(),
        "transports stay open"
    );
}

#[test]
fn closing_a_consumer_emits_consumer_closed_as_requested() {
    let mut world = World::new();
    let (_, _, camera, bobs) = alice_sends_bob_receives(&mut world);
    world
        .rooms
        .close_consumer(&room(), &bobs.id)
        .expect("closes");
    assert_eq!(
        world.events(),
        [consumer_closed(
            &bobs.id,
            "bob",
            &camera,
            ConsumerCloseReason::Requested
        )]
    );
    assert!(
        world.room().producer(&camera).is_some(),
        "the producer stays"
    );
}

#[test]
fn closing_a_transport_closes_its_consumers_then_its_producers() {
    let mut world = World::new();
    world.join("alice");
    world.join("bob");
    let alices_send = world.transport("alice", Direction::Send);
    let alices_recv = world.transport("alice", Direction::Recv);
    let bobs_send = world.transport("bob", Direction::Send);
    let bobs_recv = world.transport("bob", Direction::Recv);
    let alices_camera = world.produce("alice", &alices_send, MediaKind::Video);
    let bobs_camera = world.produce("bob", &bobs_send, MediaKind::Video);
    let alice_sees_bob = world.consume("alice", &alices_recv, &bobs_camera, false);
    let bob_sees_alice = world.consume("bob", &bobs_recv, &alices_camera, false);
    world.events();

    world
        .rooms
        .close_transport(&room(), &alices_send)
        .expect("closes");
    assert_eq!(
        world.events(),
        [
            consumer_closed(
                &bob_sees_alice.id,
                "bob",
                &alices_camera,
                ConsumerCloseReason::ProducerClosed
            ),
            RoomEvent::ProducerClosed {
                producer_id: alices_camera.clone(),
                peer_id: peer("alice"),
            },
            transport_closed(alices_send.clone(), "alice", TransportCloseCode::Requested),
        ]
    );

    world
        .rooms
        .close_transport(&room(), &alices_recv)
        .expect("closes");
    assert_eq!(
        world.events(),
        [
            consumer_closed(
                &alice_sees_bob.id,
                "alice",
                &bobs_camera,
                ConsumerCloseReason::TransportClosed
            ),
            transport_closed(alices_recv.clone(), "alice", TransportCloseCode::Requested),
        ]
    );
    assert!(
        world.room().peer(&peer("alice")).is_some(),
        "the peer stays"
    );
}

#[test]
fn leaving_closes_transports_producers_and_consumers_and_emits_peer_left_last() {
    let mut world = World::new();
    world.join("alice");
    world.join("bob");
    let alices_send = world.transport("alice", Direction::Send);
    let alices_recv = world.transport("alice", Direction::Recv);
    let bobs_send = world.transport("bob", Direction::Send);
    let bobs_recv = world.transport("bob", Direction::Recv);
    let alices_mic = world.produce("alice", &alices_send, MediaKind::Audio);
    let bobs_camera = world.produce("bob", &bobs_send, MediaKind::Video);
    let alice_sees_bob = world.consume("alice", &alices_recv, &bobs_camera, false);
    let bob_hears_alice = world.consume("bob", &bobs_recv, &alices_mic, false);
    world.events();

    world.rooms.leave(&room(), &peer("alice")).expect("leaves");

    assert_eq!(
        world.events(),
        [
            consumer_closed(
                &bob_hears_alice.id,
                "bob",
                &alices_mic,
                ConsumerCloseReason::ProducerClosed
            ),
            RoomEvent::ProducerClosed {
                producer_id: alices_mic.clone(),
                peer_id: peer("alice"),
            },
            transport_closed(alices_send.clone(), "alice", TransportCloseCode::PeerLeft),
            consumer_closed(
                &alice_sees_bob.id,
                "alice",
                &bobs_camera,
                ConsumerCloseReason::TransportClosed
            ),
            transport_closed(alices_recv.clone(), "alice", TransportCloseCode::PeerLeft),
            RoomEvent::PeerLeft {
                peer_id: peer("alice"),
            },
        ]
    );
    let room = world.room();
    assert!(room.peer(&peer("alice")).is_none());
    let transports: Vec<&TransportId> = room.transports().iter().map(|t| &t.id).collect();
    assert_eq!(transports, [&bobs_send, &bobs_recv]);
    let producers: Vec<&ProducerId> = room.producers().iter().map(|p| &p.id).collect();
    assert_eq!(producers, [&bobs_camera]);
    assert!(room.consumers().is_empty());
}

#[test]
fn closing_a_room_cascades_through_every_peer_and_emits_room_closed_last() {
    let mut world = World::new();
    let (send, recv, camera, consumer) = alice_sends_bob_receives(&mut world);

    world.rooms.close_room(&room()).expect("closes");

    assert_eq!(
        world.events(),
        [
            consumer_closed(
                &consumer.id,
                "bob",
                &camera,
                ConsumerCloseReason::ProducerClosed
            ),
            RoomEvent::ProducerClosed {
                producer_id: camera.clone(),
                peer_id: peer("alice"),
            },
            transport_closed(send.clone(), "alice", TransportCloseCode::RoomClosed),
            RoomEvent::PeerLeft {
                peer_id: peer("alice"),
            },
            transport_closed(recv.clone(), "bob", TransportCloseCode::RoomClosed),
            RoomEvent::PeerLeft {
                peer_id: peer("bob"),
            },
            RoomEvent::RoomClosed { room_id: room() },
        ]
    );
    assert!(world.rooms.room(&room()).is_none());
    assert_eq!(world.rooms.stats(), crate::api::WorkerStats::default());
    let error = world.rooms.close_room(&room()).expect_err("already closed");
    assert_eq!(error.code(), "ROOM_NOT_FOUND");
}

#[test]
fn stats_count_every_object_and_follow_a_cascade() {
    let mut world = World::new();
    world.join("alice");
    world.join("bob");
    world.join("carol");
    let alices_send = world.transport("alice", Direction::Send);
    let bobs_recv = world.transport("bob", Direction::Recv);
    let carols_recv = world.transport("carol", Direction::Recv);
    let mic = world.produce("alice", &alices_send, MediaKind::Audio);
    let camera = world.produce("alice", &alices_send, MediaKind::Video);
    for (name, recv) in [("bob", &bobs_recv), ("carol", &carols_recv)] {
        world.consume(name, recv, &mic, false);
        world.consume(name, recv, &camera, false);
    }
    let mut other = Rooms::new(SequentialIds::new());
    other
        .ensure_room(&RoomId::from("empty"), &[])
        .expect("opens");
    world
        .rooms
        .ensure_room(&RoomId::from("empty"), &[])
        .expect("opens");

    let stats = world.rooms.stats();
    assert_eq!(
        (
            stats.rooms,
            stats.peers,
            stats.transports,
            stats.producers,
            stats.consumers
        ),
        (2, 3, 3, 2, 4)
    );

    world.rooms.leave(&room(), &peer("alice")).expect("leaves");
    let stats = world.rooms.stats();
    assert_eq!(
        (
            stats.rooms,
            stats.peers,
            stats.transports,
            stats.producers,
            stats.consumers
        ),
        (2, 2, 2, 0, 0)
    );
    assert_eq!((stats.recv_bitrate, stats.send_bitrate), (0, 0));
}

// ---------------------------------------------------------------------------------------------
// Refused requests change nothing
// ---------------------------------------------------------------------------------------------

#[test]
fn refused_requests_leave_every_object_and_the_outbox_untouched() {
    let mut world = World::new();
    let (send, recv, camera, consumer) = alice_sends_bob_receives(&mut world);
    let before = world.rooms.snapshot();
    let stranger = peer("mallory");
    let unknown_transport = TransportId::from("transport-404");

    let refusals: Vec<RoomError> = vec![
        world
            .rooms
            .join(&room(), &peer("alice"), PeerInfo::default())
            .expect_err("joined"),
        world
            .rooms
            .join(&RoomId::from("nowhere"), &stranger, PeerInfo::default())
            .expect_err("no room"),
        world
            .rooms
            .leave(&room(), &stranger)
            .expect_err("not joined"),
        world
            .rooms
            .create_transport(&room(), &stranger, Direction::Send, network(1))
            .expect_err("not joined"),
        world
            .rooms
            .connect_transport(
                &room(),
                &unknown_transport,
                &DtlsParameters {
                    role: DtlsRole::Client,
                    fingerprints: vec![sha256_fingerprint()],
                },
            )
            .expect_err("unknown transport"),
        world
            .rooms
            .connect_transport(
                &room(),
                &send,
                &DtlsParameters {
                    role: DtlsRole::Client,
                    fingerprints: Vec::new(),
                },
            )
            .expect_err("no fingerprint"),
        world
            .rooms
            .produce(
                &room(),
                &peer("alice"),
                produce_options(&recv, MediaKind::Video, chrome_vp8()),
            )
            .expect_err("bob's transport"),
        world
            .rooms
            .produce(
                &room(),
                &peer("bob"),
                produce_options(&recv, MediaKind::Video, chrome_vp8()),
            )
            .expect_err("recv transport"),
        world
            .rooms
            .produce(
                &room(),
                &peer("alice"),
                produce_options(&send, MediaKind::Video, chrome_vp8()),
            )
            .expect_err("SSRC taken"),
        world
            .rooms
            .consume(
                &room(),
                &peer("bob"),
                consume_options(&recv, &camera, vp9_only_device(), false),
            )
            .expect_err("cannot consume"),
        world
            .rooms
            .consume(
                &room(),
                &peer("bob"),
                consume_options(
                    &recv,
                    &ProducerId::from("producer-404"),
                    chrome_device(),
                    false,
                ),
            )
            .expect_err("no producer"),
        world
            .rooms
            .consume(
                &room(),
                &peer("alice"),
                consume_options(&send, &camera, chrome_device(), false),
            )
            .expect_err("send transport"),
        world
            .rooms
            .pause_producer(&room(), &ProducerId::from("producer-404"))
            .expect_err("no producer"),
        world
            .rooms
            .close_producer(&room(), &ProducerId::from("producer-404"))
            .expect_err("no producer"),
        world
            .rooms
            .resume_consumer(&room(), &ConsumerId::from("consumer-404"))
            .expect_err("no consumer"),
        world
            .rooms
            .close_consumer(&room(), &ConsumerId::from("consumer-404"))
            .expect_err("no consumer"),
        world
            .rooms
            .close_transport(&room(), &unknown_transport)
            .expect_err("no transport"),
        world
            .rooms
            .restart_ice(&room(), &unknown_transport, String::new(), String::new())
            .expect_err("no transport"),
    ];

    assert_eq!(refusals.len(), 18);
    assert_eq!(world.rooms.snapshot(), before);
    assert!(world.events().is_empty());
    assert!(world.room().consumer(&consumer.id).is_some());
}

#[test]
fn each_error_has_a_stable_code_and_a_fitting_status() {
    let r = room();
    let cases: Vec<(RoomError, &str, u16)> = vec![
        (RoomError::RoomNotFound(r.clone()), "ROOM_NOT_FOUND", 404),
        (
            RoomError::PeerNotFound {
                room: r.clone(),
                peer: peer("p"),
            },
            "PEER_NOT_FOUND",
            404,
        ),
        (
            RoomError::PeerAlreadyJoined {
                room: r.clone(),
                peer: peer("p"),
            },
            "PEER_ALREADY_JOINED",
            409,
        ),
        (
            RoomError::TransportNotFound {
                room: r.clone(),
                transport: "t".into(),
            },
            "TRANSPORT_NOT_FOUND",
            404,
        ),
        (
            RoomError::TransportAlreadyConnected("t".into()),
            "TRANSPORT_ALREADY_CONNECTED",
            409,
        ),
        (
            RoomError::TransportDirectionMismatch {
                transport: "t".into(),
                actual: Direction::Recv,
                needed: Direction::Send,
                action: "producing",
            },
            "TRANSPORT_DIRECTION_MISMATCH",
            400,
        ),
        (
            RoomError::ProducerNotFound {
                room: r.clone(),
                producer: "p".into(),
            },
            "PRODUCER_NOT_FOUND",
            404,
        ),
        (
            RoomError::ConsumerNotFound {
                room: r.clone(),
                consumer: "c".into(),
            },
            "CONSUMER_NOT_FOUND",
            404,
        ),
        (
            RoomError::InvalidDtlsParameters(String::new()),
            "INVALID_DTLS_PARAMETERS",
            400,
        ),
        (RoomError::InvalidId(String::new()), "INVALID_ID", 400),
        (RoomError::TooManyTransports { peer: peer("p"), limit: 1 }, "TOO_MANY_TRANSPORTS", 409),
        (RoomError::TooManyProducers { peer: peer("p"), limit: 1 }, "TOO_MANY_PRODUCERS", 409),
        (RoomError::TooManyConsumers { peer: peer("p"), limit: 1 }, "TOO_MANY_CONSUMERS", 409),
        (RoomError::AppDataTooLarge { size: 2, limit: 1 }, "APP_DATA_TOO_LARGE", 413),
        (RoomError::PeerInfoTooLarge { size: 2, limit: 1 }, "PEER_INFO_TOO_LARGE", 413),
        (RoomError::RoomFull { room: room(), limit: 1 }, "ROOM_FULL", 409),
        (
            crate::rtp::RtpError::CannotConsume(String::new()).into(),
            "CANNOT_CONSUME",
            400,
        ),
    ];
    for (error, code, status) in cases {
        assert_eq!(
            (error.code(), error.http_status()),
            (code, status),
            "{error}"
        );
    }
}

#[test]
fn an_error_becomes_the_rest_error_body() {
    let error = RoomError::RoomNotFound(room());
    assert_eq!(
        serde_json::to_value(error.to_response()).expect("serialises"),
        json!({"error": {"code": "ROOM_NOT_FOUND", "message": error.to_string()}})
    );
}

// ---------------------------------------------------------------------------------------------
// Events on the wire
// ---------------------------------------------------------------------------------------------

#[test]
fn events_serialise_as_camel_case_objects_tagged_by_type() {
    let event = consumer_closed(
        &ConsumerId::from("consumer-9"),
        "bob",
        &ProducerId::from("producer-3"),
        ConsumerCloseReason::ProducerClosed,
    );
    assert_eq!(
        serde_json::to_value(&event).expect("serialises"),
        json!({"type": "consumerClosed", "consumerId": "consumer-9", "peerId": "bob",
               "producerId": "producer-3", "reason": "producerClosed"})
    );
    let joined = RoomEvent::PeerJoined(PeerSummary {
        peer_id: peer("alice"),
        info: info("alice", "teacher"),
    });
    let value: Value = serde_json::to_value(&joined).expect("serialises");
    assert_eq!(
        value,
        json!({"type": "peerJoined", "peerId": "alice", "userId": "user-alice",
               "displayName": "alice", "role": "teacher", "appData": {}})
    );
    assert_eq!(
        serde_json::from_value::<RoomEvent>(value).ok(),
        Some(joined)
    );
}

// ---------------------------------------------------------------------------------------------
// Forwarding
// ---------------------------------------------------------------------------------------------

const CHROME_VP8_SSRC: Ssrc = Ssrc(2471283948);
const CHROME_RTX_SSRC: Ssrc = Ssrc(1389617367);

#[test]
fn forwarding_sends_a_producer_packet_to_each_consumer_with_its_ssrc_and_payload_type() {
    let mut world = World::new();
    let (send, bobs_recv, camera, bobs) = alice_sends_bob_receives(&mut world);
    world.join("carol");
    let carols_recv = world.transport("carol", Direction::Recv);
    let carols = world.consume("carol", &carols_recv, &camera, false);

    let forwards = world
        .table()
        .forward(&send, CHROME_VP8_SSRC, PayloadType(96));

    assert_eq!(
        forwards,
        [
            Forward {
                consumer_id: bobs.id.clone(),
                transport_id: bobs_recv,
                ssrc: Ssrc(1_001_000),
                payload_type: PayloadType(101),
            },
            Forward {
                consumer_id: carols.id.clone(),
                transport_id: carols_recv,
                ssrc: Ssrc(1_002_000),
                payload_type: PayloadType(101),
            },
        ]
    );
}

#[test]
fn forwarding_sends_rtx_to_the_consumers_rtx_ssrc() {
    let mut world = World::new();
    let (send, bobs_recv, _, bobs) = alice_sends_bob_receives(&mut world);
    let forwards = world
        .table()
        .forward(&send, CHROME_RTX_SSRC, PayloadType(97));
    assert_eq!(
        forwards,
        [Forward {
            consumer_id: bobs.id.clone(),
            transport_id: bobs_recv,
            ssrc: Ssrc(1_001_001),
            payload_type: PayloadType(102),
        }]
    );
}

#[test]
fn forwarding_drops_packets_for_paused_consumers() {
    let mut world = World::new();
    let (send, _, camera, bobs) = alice_sends_bob_receives(&mut world);
    world.join("carol");
    let carols_recv = world.transport("carol", Direction::Recv);
    let carols = world.consume("carol", &carols_recv, &camera, true);
    world
        .rooms
        .pause_consumer(&room(), &bobs.id)
        .expect("pauses");

    let table = world.table();
    assert!(
        table
            .forward(&send, CHROME_VP8_SSRC, PayloadType(96))
            .is_empty()
    );
    let stream = table.stream(&send, CHROME_VP8_SSRC).expect("known stream");
    let paused: Vec<(&ConsumerId, bool)> = stream
        .targets
        .iter()
        .map(|t| (&t.consumer_id, t.paused))
        .collect();
    assert_eq!(paused, [(&bobs.id, true), (&carols.id, true)]);

    world
        .rooms
        .resume_consumer(&room(), &carols.id)
        .expect("resumes");
    let forwards = world
        .table()
        .forward(&send, CHROME_VP8_SSRC, PayloadType(96));
    let receivers: Vec<&ConsumerId> = forwards.iter().map(|f| &f.consumer_id).collect();
    assert_eq!(receivers, [&carols.id]);
}

#[test]
fn forwarding_drops_everything_while_the_producer_is_paused() {
    let mut world = World::new();
    let (send, _, camera, _) = alice_sends_bob_receives(&mut world);
    world
        .rooms
        .pause_producer(&room(), &camera)
        .expect("pauses");
    assert!(
        world
            .table()
            .forward(&send, CHROME_VP8_SSRC, PayloadType(96))
            .is_empty()
    );
    world
        .rooms
        .resume_producer(&room(), &camera)
        .expect("resumes");
    assert_eq!(
        world
            .table()
            .forward(&send, CHROME_VP8_SSRC, PayloadType(96))
            .len(),
        1
    );
}

#[test]
fn forwarding_drops_unknown_streams_and_unmapped_payload_types() {
    let mut world = World::new();
    let (send, recv, _, _) = alice_sends_bob_receives(&mut world);
    let table = world.table();
    assert!(
        table
            .forward(&send, Ssrc(12345), PayloadType(96))
            .is_empty()
    );
    assert!(
        table
            .forward(&recv, CHROME_VP8_SSRC, PayloadType(96))
            .is_empty(),
        "wrong transport"
    );
    assert!(
        table
            .forward(&send, CHROME_VP8_SSRC, PayloadType(111))
            .is_empty(),
        "not a VP8 payload type"
    );
    assert!(
        table
            .forward(&send, CHROME_VP8_SSRC, PayloadType(97))
            .is_empty(),
        "RTX payload type on the media SSRC"
    );
}

#[test]
fn forwarding_rewrites_header_extension_ids_and_sets_the_consumers_mid() {
    let mut world = World::new();
    let (send, _, _, _) = alice_sends_bob_receives(&mut world);
    let table = world.table();
    let target = &table.stream(&send, CHROME_VP8_SSRC).expect("known").targets[0];
    // Chrome's ids (mid 9, abs-send-time 2, transport-wide 3, video-orientation 13, toffset
    // 14) become the router's (1, 4, 5, 11, 12).
    assert_eq!(
        target
            .header_extension_ids
            .iter()
            .map(|(from, to)| (*from, *to))
            .collect::<Vec<_>>(),
        [(2, 4), (3, 5), (9, 1), (13, 11), (14, 12)]
    );
    assert_eq!(target.mid.as_deref(), Some("0"));
}

#[test]
fn forwarding_table_is_rebuilt_the_same_and_forgets_closed_consumers() {
    let mut world = World::new();
    let (send, _, camera, bobs) = alice_sends_bob_receives(&mut world);
    assert_eq!(world.table(), world.table());
    world
        .rooms
        .close_consumer(&room(), &bobs.id)
        .expect("closes");
    let table = world.table();
    let stream = table
        .stream(&send, CHROME_VP8_SSRC)
        .expect("the producer remains");
    assert_eq!(stream.producer_id, camera);
    assert!(stream.targets.is_empty());
    world
        .rooms
        .close_producer(&room(), &camera)
        .expect("closes");
    assert_eq!(world.table().streams().count(), 0);
}

#[test]
fn every_simulcast_encoding_lists_the_consumers_and_the_media_plane_picks_one() {
    let mut world = World::new();
    world.join("alice");
    world.join("bob");
    let send = world.transport("alice", Direction::Send);
    let recv = world.transport("bob", Direction::Recv);
    let mut simulcast = chrome_vp8();
    simulcast.encodings = serde_json::from_value(json!([
        {"ssrc": 111, "rtx": {"ssrc": 112}, "scalabilityMode": "L1T3"},
        {"ssrc": 221, "rtx": {"ssrc": 222}, "scalabilityMode": "L1T3"},
        {"ssrc": 331, "rtx": {"ssrc": 332}, "scalabilityMode": "L1T3"}
    ]))
    .expect("encodings parse");
    let camera = world
        .rooms
        .produce(
            &room(),
            &peer("alice"),
            produce_options(&send, MediaKind::Video, simulcast),
        )
        .expect("produces")
        .id;
    let consumer = world.consume("bob", &recv, &camera, false);
    assert_eq!(consumer.r#type, ConsumerType::Simulcast);

    let table = world.table();
    assert_eq!(table.forward(&send, Ssrc(111), PayloadType(96)).len(), 1);
    assert_eq!(table.forward(&send, Ssrc(221), PayloadType(96)).len(), 1);
    let stream = table.stream(&send, Ssrc(221)).expect("known");
    assert_eq!((stream.spatial_layers, stream.temporal_layers, stream.consumer_type), (3, 3, ConsumerType::Simulcast));
    assert_eq!(
        table
            .stream(&send, Ssrc(332))
            .map(|s| (s.encoding_index, s.rtx)),
        Some((2, true))
    );
}

// ---------------------------------------------------------------------------------------------
// Quotas: what one peer may hold, and what a room lists
// ---------------------------------------------------------------------------------------------

/// A world whose rooms enforce `quotas`.
fn world_with(quotas: Quotas) -> World {
    let mut rooms = Rooms::with_quotas(SequentialIds::new(), quotas);
    rooms.ensure_room(&room(), &[]).expect("room opens");
    World {
        rooms,
        next_port: 40000,
    }
}

/// Audio parameters with their own SSRC and mid, so that many fit on one transport.
fn nth_opus(n: u32) -> RtpParameters {
    let mut parameters = chrome_opus();
    parameters.mid = Some(format!("q{n}"));
    parameters.encodings[0].ssrc = Some(Ssrc(7_000_000 + n));
    parameters
}

fn produce_nth(world: &mut World, name: &str, transport: &TransportId, n: u32, app_data: AppData) -> Result<ProducerCreated, RoomError> {
    let options = ProduceOptions {
        app_data,
        ..produce_options(transport, MediaKind::Audio, nth_opus(n))
    };
    world.rooms.produce(&room(), &peer(name), options)
}

#[test]
fn a_peer_at_its_transport_quota_is_refused_with_a_code_and_the_other_peer_is_not() {
    let mut world = world_with(Quotas {
        transports_per_peer: 3,
        ..Quotas::default()
    });
    world.join("mallory");
    world.join("alice");
    for _ in 0..3 {
        world.transport("mallory", Direction::Send);
    }
    let before = world.rooms.snapshot();
    let error = world
        .rooms
        .create_transport(&room(), &peer("mallory"), Direction::Recv, network(1))
        .expect_err("over quota");
    assert_eq!((error.code(), error.http_status()), ("TOO_MANY_TRANSPORTS", 409));
    assert!(error.to_string().contains("3 transports") && error.to_string().contains("close-transport"), "{error}");
    assert_eq!(world.rooms.snapshot(), before, "a refusal changes nothing");
    // Alice has her own quota, untouched by mallory's.
    for _ in 0..3 {
        world.transport("alice", Direction::Recv);
    }
    // Closing one makes room again.
    let mallorys = world.rooms.room(&room()).unwrap().transports()[0].id.clone();
    world.rooms.close_transport(&room(), &mallorys).expect("closes");
    world.transport("mallory", Direction::Send);
}

#[test]
fn a_peer_at_its_producer_quota_is_refused_and_the_other_peer_still_produces() {
    let mut world = world_with(Quotas {
        producers_per_peer: 4,
        ..Quotas::default()
    });
    world.join("mallory");
    world.join("alice");
    let mallorys = world.transport("mallory", Direction::Send);
    for n in 0..4 {
        produce_nth(&mut world, "mallory", &mallorys, n, AppData::new()).expect("within quota");
    }
    world.rooms.drain_events();
    let before = world.rooms.snapshot();
    let error = produce_nth(&mut world, "mallory", &mallorys, 4, AppData::new()).expect_err("over quota");
    assert_eq!((error.code(), error.http_status()), ("TOO_MANY_PRODUCERS", 409));
    assert!(error.to_string().contains("close-producer"), "{error}");
    assert_eq!(world.rooms.snapshot(), before);
    assert!(world.rooms.drain_events().is_empty(), "no newProducer for a refused request");
    // A second transport does not open a second quota.
    let another = world.transport("mallory", Direction::Send);
    assert_eq!(produce_nth(&mut world, "mallory", &another, 5, AppData::new()).expect_err("per peer").code(), "TOO_MANY_PRODUCERS");
    let alices = world.transport("alice", Direction::Send);
    produce_nth(&mut world, "alice", &alices, 9, AppData::new()).expect("alice is not affected");
}

#[test]
fn a_peer_at_its_consumer_quota_is_refused_and_the_other_peer_still_consumes() {
    let mut world = world_with(Quotas {
        consumers_per_peer: 2,
        ..Quotas::default()
    });
    let (_, bobs_recv, producer, _) = alice_sends_bob_receives(&mut world);
    world.consume("bob", &bobs_recv, &producer, false);
    let error = world
        .rooms
        .consume(&room(), &peer("bob"), consume_options(&bobs_recv, &producer, chrome_device(), false))
        .expect_err("over quota");
    assert_eq!((error.code(), error.http_status()), ("TOO_MANY_CONSUMERS", 409));
    assert!(error.to_string().contains("close-consumer"), "{error}");
    world.join("carol");
    let carols = world.transport("carol", Direction::Recv);
    world.consume("carol", &carols, &producer, false);
}

#[test]
fn app_data_and_peer_info_past_their_size_are_refused_with_their_sizes() {
    let mut world = world_with(Quotas {
        app_data_bytes: 100,
        peer_info_bytes: 200,
        ..Quotas::default()
    });
    world.join("alice");
    let transport = world.transport("alice", Direction::Send);
    let mut app_data = AppData::new();
    app_data.insert("label".to_owned(), json!("x".repeat(100)));
    let error = produce_nth(&mut world, "alice", &transport, 0, app_data).expect_err("too large");
    assert_eq!((error.code(), error.http_status()), ("APP_DATA_TOO_LARGE", 413));
    assert!(error.to_string().contains("112 bytes") && error.to_string().contains("100 allowed"), "{error}");
    let mut small = AppData::new();
    small.insert("source".to_owned(), json!("screen"));
    produce_nth(&mut world, "alice", &transport, 1, small).expect("a short label fits");

    let mut big = info("bob", "student");
    big.display_name = "b".repeat(300);
    let error = world.rooms.join(&room(), &peer("bob"), big).expect_err("too large");
    assert_eq!((error.code(), error.http_status()), ("PEER_INFO_TOO_LARGE", 413));
    assert!(world.rooms.room(&room()).unwrap().peer(&peer("bob")).is_none());
}

#[test]
fn a_room_whose_listing_would_pass_its_bound_refuses_joins_and_producers_but_lists_what_it_has() {
    let mut world = world_with(Quotas {
        room_listing_bytes: 4096,
        ..Quotas::default()
    });
    let mut joined = 0;
    let error = loop {
        match world.rooms.join(&room(), &peer(&format!("p{joined}")), info("someone", "student")) {
            Ok(_) => joined += 1,
            Err(error) => break error,
        }
        assert!(joined < 100, "the bound never held");
    };
    assert_eq!((error.code(), error.http_status()), ("ROOM_FULL", 409));
    assert!(error.to_string().contains("4096 bytes"), "{error}");
    let answer = world.rooms.join(&room(), &peer("late"), info("x", "y")).expect_err("still full");
    assert_eq!(answer.code(), "ROOM_FULL");
    // A leave makes room; what a joiner is sent stays within the bound.
    world.rooms.leave(&room(), &peer("p0")).expect("leaves");
    let answer = world.rooms.join(&room(), &peer("late"), info("x", "y")).expect("joins");
    let size = serde_json::to_vec(&(answer.peers, answer.producers)).unwrap().len();
    assert!(size <= 4096 + 5, "{size} bytes listed"); // + the pair's brackets and comma
}

#[test]
fn the_listing_of_a_room_with_peers_at_their_quotas_stays_bounded() {
    // The case: 200 producers with 50 KB appData each. Refused at the quotas, and
    // every joiner's answer stays small.
    let quotas = Quotas::default();
    let mut world = world_with(quotas);
    world.join("mallory");
    let transport = world.transport("mallory", Direction::Send);
    let mut refused = Vec::new();
    for n in 0..200 {
        let mut app_data = AppData::new();
        app_data.insert("blob".to_owned(), json!("z".repeat(50_000)));
        if let Err(error) = produce_nth(&mut world, "mallory", &transport, n, app_data) {
            refused.push(error.code());
        }
        let mut small = AppData::new();
        small.insert("blob".to_owned(), json!("z".repeat(quotas.app_data_bytes - 20)));
        if let Err(error) = produce_nth(&mut world, "mallory", &transport, 1000 + n, small) {
            refused.push(error.code());
        }
    }
    assert!(refused.iter().take(200).all(|code| *code == "APP_DATA_TOO_LARGE" || *code == "TOO_MANY_PRODUCERS"));
    assert_eq!(world.rooms.room(&room()).unwrap().producers().len(), quotas.producers_per_peer);
    let answer = world.join("alice");
    let size = serde_json::to_vec(&answer).unwrap().len();
    println!("join answer after 400 hostile produce requests: {size} bytes");
    assert!(size < 64 * 1024, "{size}");
}

// ---------------------------------------------------------------------------------------------
// Rooms emptied of peers close after their empty timeout
// ---------------------------------------------------------------------------------------------

#[test]
fn an_empty_room_closes_after_the_timeout_and_not_before() {
    let start = std::time::Instant::now();
    let at = |seconds: u64| start + std::time::Duration::from_secs(seconds);
    let mut rooms = Rooms::with_quotas(
        SequentialIds::new(),
        Quotas {
            empty_room_timeout: std::time::Duration::from_secs(60),
            ..Quotas::default()
        },
    );
    rooms.ensure_room(&room(), &[]).expect("opens");
    rooms.join(&room(), &peer("alice"), info("alice", "student")).expect("joins");
    assert!(rooms.close_empty_rooms(at(0)).is_empty());
    assert!(rooms.close_empty_rooms(at(500)).is_empty(), "a room with a peer stays");
    rooms.leave(&room(), &peer("alice")).expect("leaves");
    rooms.drain_events();
    assert!(rooms.close_empty_rooms(at(501)).is_empty(), "first seen empty");
    assert!(rooms.close_empty_rooms(at(560)).is_empty(), "59 s empty");
    assert_eq!(rooms.close_empty_rooms(at(561)), vec![room()]);
    assert!(rooms.room(&room()).is_none());
    assert_eq!(rooms.drain_events(), vec![(room(), RoomEvent::RoomClosed { room_id: room() })]);
}

#[test]
fn a_join_or_ensure_room_in_between_starts_the_empty_time_afresh() {
    let start = std::time::Instant::now();
    let at = |seconds: u64| start + std::time::Duration::from_secs(seconds);
    let mut rooms = Rooms::new(SequentialIds::new());
    let timeout = rooms.quotas().empty_room_timeout.as_secs();
    rooms.ensure_room(&room(), &[]).expect("opens");
    assert!(rooms.close_empty_rooms(at(0)).is_empty());
    // A peer came and went between two sweeps.
    rooms.join(&room(), &peer("alice"), info("alice", "student")).expect("joins");
    rooms.leave(&room(), &peer("alice")).expect("leaves");
    assert!(rooms.close_empty_rooms(at(timeout)).is_empty(), "the visit restarted it");
    // signalling's PUT before a join restarts it too.
    rooms.ensure_room(&room(), &[]).expect("still open");
    assert!(rooms.close_empty_rooms(at(2 * timeout - 1)).is_empty());
    assert!(rooms.close_empty_rooms(at(3 * timeout)).contains(&room()));
}

#[test]
fn a_rooms_own_empty_timeout_overrides_the_workers() {
    let start = std::time::Instant::now();
    let at = |seconds: u64| start + std::time::Duration::from_secs(seconds);
    let mut rooms = Rooms::new(SequentialIds::new());
    let short = RoomId::from("short");
    let long = RoomId::from("long");
    rooms.ensure_room_with(&short, &[], Some(std::time::Duration::from_secs(5))).expect("opens");
    rooms.ensure_room_with(&long, &[], Some(std::time::Duration::from_secs(3600))).expect("opens");
    // A later PUT without a timeout keeps the room's own.
    rooms.ensure_room_with(&long, &[], None).expect("open");
    rooms.ensure_room(&room(), &[]).expect("opens");
    assert!(rooms.close_empty_rooms(at(0)).is_empty());
    assert_eq!(rooms.close_empty_rooms(at(5)), vec![short]);
    let default = rooms.quotas().empty_room_timeout.as_secs();
    assert_eq!(rooms.close_empty_rooms(at(default)), vec![room()]);
    assert!(rooms.close_empty_rooms(at(3599)).is_empty());
    assert_eq!(rooms.close_empty_rooms(at(3600)), vec![long]);
}

#[test]
fn three_hundred_rooms_visited_by_one_participant_leave_nothing_after_the_timeout() {
    let start = std::time::Instant::now();
    let mut rooms = Rooms::new(SequentialIds::new());
    let timeout = rooms.quotas().empty_room_timeout;
    for n in 0..300 {
        let now = start + std::time::Duration::from_secs(n);
        let name = RoomId::from(format!("room-{n}").as_str());
        rooms.ensure_room(&name, &[]).expect("opens");
        rooms.join(&name, &peer("visitor"), info("v", "student")).expect("joins");
        rooms.leave(&name, &peer("visitor")).expect("leaves");
        rooms.close_empty_rooms(now);
    }
    let last_visit = start + std::time::Duration::from_secs(299);
    rooms.close_empty_rooms(last_visit + timeout);
    assert_eq!(rooms.rooms().count(), 0);
}

#[test]
fn encodings_signalled_by_rid_wait_unbound_until_the_media_plane_binds_their_ssrcs() {
    use crate::room::Binding;
    let mut world = World::new();
    world.join("alice");
    world.join("bob");
    let send = world.transport("alice", Direction::Send);
    let recv = world.transport("bob", Direction::Recv);
    let camera = world
        .rooms
        .produce(
            &room(),
            &peer("alice"),
            produce_options(&send, MediaKind::Video, crate::testing::chrome_vp8_simulcast_parameters()),
        )
        .expect("produces")
        .id;
    world.consume("bob", &recv, &camera, false);
    let mut table = world.table();
    assert_eq!(table.streams().count(), 0, "no SSRC is known yet");
    let rids: Vec<(Option<&str>, Option<u8>, Option<u8>)> = table
        .unbound()
        .iter()
        .map(|u| (u.rid.as_deref(), u.rid_extension_id, u.repaired_rid_extension_id))
        .collect();
    assert_eq!(rids, [(Some("r0"), Some(10), Some(11)), (Some("r1"), Some(10), Some(11)), (Some("r2"), Some(10), Some(11))]);
    assert!(table.unbound().iter().all(|u| u.mid.as_deref() == Some("1") && u.mid_extension_id == Some(9)));

    let binding = |encoding_index, rtx, ssrc| Binding { transport_id: send.clone(), producer_id: camera.clone(), encoding_index, rtx, ssrc: Ssrc(ssrc) };
    assert!(!table.bind(&binding(0, true, 800)), "RTX before its media has nothing to repair");
    assert!(table.bind(&binding(0, false, 500)));
    assert!(table.bind(&binding(0, false, 500)), "binding again is a no-op");
    assert!(!table.bind(&binding(1, false, 500)), "an SSRC is one stream");
    assert!(table.bind(&binding(0, true, 800)));
    assert_eq!(table.forward(&send, Ssrc(500), PayloadType(96)).len(), 1);
    assert_eq!(table.stream(&send, Ssrc(800)).and_then(|s| s.repairs), Some(Ssrc(500)));
    // An encoder restart: the encoding moves to a new SSRC and its RTX repairs that one.
    assert!(table.bind(&binding(0, false, 600)));
    assert!(table.stream(&send, Ssrc(500)).is_none());
    assert_eq!(table.stream(&send, Ssrc(800)).and_then(|s| s.repairs), Some(Ssrc(600)));
    assert!(!table.bind(&Binding { producer_id: ProducerId::from("nobody"), ..binding(0, false, 700) }));
}

#[test]
fn a_producer_without_a_cname_gets_its_transports_so_consumers_can_be_set_up_and_synced() {
    let mut world = World::new();
    world.join("alice");
    world.join("bob");
    let send = world.transport("alice", Direction::Send);
    let recv = world.transport("bob", Direction::Recv);
    let microphone = world.produce("alice", &send, MediaKind::Audio);
    // Chrome's simulcast offer has no SSRC lines, so mediasoup-client finds no CNAME.
    let mut camera = crate::testing::chrome_vp8_simulcast_parameters();
    camera.rtcp.cname = Some(String::new());
    let camera = world
        .rooms
        .produce(&room(), &peer("alice"), produce_options(&send, MediaKind::Video, camera))
        .expect("produces")
        .id;
    let video = world.consume("bob", &recv, &camera, false);
    let audio = world.consume("bob", &recv, &microphone, false);
    let cname = video.rtp_parameters.rtcp.cname.clone();
    assert!(cname.as_deref().is_some_and(|c| !c.is_empty()), "{cname:?}");
    assert_eq!(cname, audio.rtp_parameters.rtcp.cname, "one CNAME per sending transport: lip sync");
}

// ---------------------------------------------------------------------------------------------
// Data channels
// ---------------------------------------------------------------------------------------------

mod data_channels {
    use super::*;

    fn caps() -> SctpCapabilities {
        SctpCapabilities { num_streams: NumSctpStreams { os: 1024, mis: 1024 } }
    }

    fn sctp_transport(world: &mut World, name: &str, direction: Direction) -> TransportId {
        let id = world.transport(name, direction);
        world.rooms.enable_sctp(&room(), &id, &caps(), SctpParameters::default()).expect("SCTP enabled");
        id
    }

    fn stream(stream_id: u16, ordered: Option<bool>, max_retransmits: Option<u16>) -> SctpStreamParameters {
        SctpStreamParameters { stream_id, ordered, max_packet_life_time: None, max_retransmits }
    }

    fn produce_data(world: &mut World, name: &str, transport: &TransportId, parameters: SctpStreamParameters) -> Result<DataProducerId, RoomError> {
        let options = ProduceDataOptions {
            transport_id: transport.clone(),
            sctp_stream_parameters: parameters,
            label: "chat".into(),
            protocol: "".into(),
            app_data: AppData::new(),
        };
        world.rooms.produce_data(&room(), &peer(name), options).map(|created| created.id)
    }

    fn consume_data(world: &mut World, name: &str, transport: &TransportId, id: &DataProducerId) -> Result<DataConsumerCreated, RoomError> {
        let options = ConsumeDataOptions {
            transport_id: transport.clone(),
            data_producer_id: id.clone(),
            ordered: None,
            max_packet_life_time: None,
            max_retransmits: None,
        };
        world.rooms.consume_data(&room(), &peer(name), options)
    }

    /// Ada produces data on stream 0; bob and cy each have a recv transport with SCTP.
    fn classroom() -> (World, TransportId, DataProducerId, TransportId, TransportId) {
        let mut world = World::new();
        for name in ["ada", "bob", "cy"] {
            world.join(name);
        }
        let send = sctp_transport(&mut world, "ada", Direction::Send);
        let bob = sctp_transport(&mut world, "bob", Direction::Recv);
        let cy = sctp_transport(&mut world, "cy", Direction::Recv);
        let producer = produce_data(&mut world, "ada", &send, stream(0, None, None)).expect("produces data");
        world.events();
        (world, send, producer, bob, cy)
    }

    #[test]
    fn a_transport_with_sctp_answers_mediasoups_sctp_parameters_and_one_without_refuses_data() {
        let mut world = World::new();
        world.join("ada");
        let plain = world.transport("ada", Direction::Send);
        assert_eq!(world.rooms.room(&room()).unwrap().transport(&plain).unwrap().created().sctp_parameters, None);
        let refused = produce_data(&mut world, "ada", &plain, stream(0, None, None)).unwrap_err();
        assert_eq!(refused.code(), "SCTP_NOT_ENABLED");
        let with_sctp = sctp_transport(&mut world, "ada", Direction::Send);
        let created = world.rooms.room(&room()).unwrap().transport(&with_sctp).unwrap().created();
        assert_eq!(created.sctp_parameters, Some(SctpParameters { port: 5000, os: 1024, mis: 1024, max_message_size: 262_144 }));
    }

    #[test]
    fn a_new_data_producer_is_announced_and_listed_to_joiners() {
        let (mut world, _, producer, _, _) = classroom();
        let join = world.join("dan");
        assert_eq!(join.data_producers.len(), 1);
        assert_eq!(join.data_producers[0].data_producer_id, producer);
        assert_eq!(join.data_producers[0].label, "chat");
        let mut fresh = World::new();
        fresh.join("ada");
        let send = sctp_transport(&mut fresh, "ada", Direction::Send);
        let id = produce_data(&mut fresh, "ada", &send, stream(7, Some(false), Some(0))).unwrap();
        assert!(fresh.events().iter().any(|e| matches!(e, RoomEvent::NewDataProducer { data_producer_id, .. } if *data_producer_id == id)));
        let stored = fresh.rooms.room(&room()).unwrap().data_producer(&id).unwrap().sctp_stream_parameters;
        assert_eq!(stored, stream(7, Some(false), Some(0)));
    }

    #[test]
    fn data_producers_refuse_a_taken_stream_bad_parameters_and_recv_transports() {
        let (mut world, send, producer, bob, _) = classroom();
        let taken = produce_data(&mut world, "ada", &send, stream(0, None, None)).unwrap_err();
        assert_eq!(taken, RoomError::SctpStreamIdInUse { transport: send.clone(), stream_id: 0, data_producer: producer });
        let bad = produce_data(&mut world, "ada", &send, stream(1, Some(true), Some(3))).unwrap_err();
        assert_eq!(bad.code(), "INVALID_SCTP_STREAM_PARAMETERS");
        let out_of_range = produce_data(&mut world, "ada", &send, stream(1024, None, None)).unwrap_err();
        assert_eq!(out_of_range.code(), "INVALID_SCTP_STREAM_PARAMETERS");
        let wrong_way = produce_data(&mut world, "bob", &bob, stream(1, None, None)).unwrap_err();
        assert_eq!(wrong_way.code(), "TRANSPORT_DIRECTION_MISMATCH");
        assert!(world.events().is_empty(), "a refused request emits nothing");
    }

    #[test]
    fn each_data_consumer_gets_the_next_free_stream_of_its_transport_and_the_producers_delivery() {
        let (mut world, send, unordered_src, bob, cy) = classroom();
        let second = produce_data(&mut world, "ada", &send, stream(5, Some(false), Some(0))).unwrap();
        let first_at_bob = consume_data(&mut world, "bob", &bob, &unordered_src).unwrap();
        let second_at_bob = consume_data(&mut world, "bob", &bob, &second).unwrap();
        let at_cy = consume_data(&mut world, "cy", &cy, &second).unwrap();
        assert_eq!(first_at_bob.sctp_stream_parameters, stream(0, Some(true), None));
        assert_eq!(second_at_bob.sctp_stream_parameters, stream(1, Some(false), Some(0)), "the producer's delivery, bob's next stream");
        assert_eq!(at_cy.sctp_stream_parameters.stream_id, 0, "streams are per transport");
        assert_eq!((at_cy.label.as_str(), at_cy.data_producer_id.clone()), ("chat", second.clone()));
        // A closed consumer's stream is reused only after the others.
        world.rooms.close_data_consumer(&room(), &first_at_bob.id).unwrap();
        let third = consume_data(&mut world, "bob", &bob, &unordered_src).unwrap();
        assert_eq!(third.sctp_stream_parameters.stream_id, 2);
        // The routes follow: each producer's stream to its consumers' streams.
        let table = world.rooms.forwarding_table(&room()).unwrap();
        let route = table.data_route(&send, 5).expect("a route for stream 5");
        let targets: Vec<(TransportId, u16)> = route.targets.iter().map(|t| (t.transport_id.clone(), t.stream_id)).collect();
        assert_eq!(targets, vec![(bob.clone(), 1), (cy.clone(), 0)]);
        assert!(route.targets.iter().all(|t| !t.ordered && t.max_retransmits == Some(0)));
    }

    #[test]
    fn a_transports_streams_run_out_with_a_clear_error() {
        let (mut world, _, producer, _, _) = classroom();
        let small = world.transport("bob", Direction::Recv);
        let two = SctpParameters { os: 2, ..SctpParameters::default() };
        world.rooms.enable_sctp(&room(), &small, &caps(), two).unwrap();
        consume_data(&mut world, "bob", &small, &producer).unwrap();
        consume_data(&mut world, "bob", &small, &producer).unwrap();
        let full = consume_data(&mut world, "bob", &small, &producer).unwrap_err();
        assert_eq!(full, RoomError::NoSctpStreamIdAvailable { transport: small, streams: 2 });
        assert_eq!(full.http_status(), 409);
    }

    #[test]
    fn closing_a_data_producer_closes_its_consumers_first() {
        let (mut world, _, producer, bob, cy) = classroom();
        let at_bob = consume_data(&mut world, "bob", &bob, &producer).unwrap();
        let at_cy = consume_data(&mut world, "cy", &cy, &producer).unwrap();
        world.rooms.close_data_producer(&room(), &producer).unwrap();
        let events = world.events();
        assert_eq!(
            events,
            vec![
                RoomEvent::DataConsumerClosed { data_consumer_id: at_bob.id, peer_id: peer("bob"), data_producer_id: producer.clone(), reason: ConsumerCloseReason::ProducerClosed },
                RoomEvent::DataConsumerClosed { data_consumer_id: at_cy.id, peer_id: peer("cy"), data_producer_id: producer.clone(), reason: ConsumerCloseReason::ProducerClosed },
                RoomEvent::DataProducerClosed { data_producer_id: producer.clone(), peer_id: peer("ada") },
            ]
        );
        assert_eq!(world.rooms.close_data_producer(&room(), &producer).unwrap_err().code(), "DATA_PRODUCER_NOT_FOUND");
        assert_eq!(consume_data(&mut world, "bob", &bob, &producer).unwrap_err().code(), "DATA_PRODUCER_NOT_FOUND");
        assert!(world.rooms.forwarding_table(&room()).unwrap().data_routes().next().is_none());
    }

    #[test]
    fn closing_a_transport_or_leaving_closes_data_consumers_and_producers_on_it() {
        let (mut world, send, producer, bob, _) = classroom();
        let at_bob = consume_data(&mut world, "bob", &bob, &producer).unwrap();
        world.rooms.close_transport(&room(), &bob).unwrap();
        let events = world.events();
        assert!(matches!(&events[0], RoomEvent::DataConsumerClosed { data_consumer_id, reason: ConsumerCloseReason::TransportClosed, .. } if *data_consumer_id == at_bob.id), "{events:?}");
        assert!(matches!(events.last(), Some(RoomEvent::TransportClosed { .. })));
        world.rooms.leave(&room(), &peer("ada")).unwrap();
        let events = world.events();
        let closed_producer = events.iter().position(|e| matches!(e, RoomEvent::DataProducerClosed { data_producer_id, .. } if *data_producer_id == producer));
        let closed_transport = events.iter().position(|e| matches!(e, RoomEvent::TransportClosed { transport_id, .. } if *transport_id == send));
        assert!(closed_producer.is_some() && closed_producer < closed_transport, "{events:?}");
    }
}
