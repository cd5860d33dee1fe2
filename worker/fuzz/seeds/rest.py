#!/usr/bin/env python3
"""Writes the seed inputs of the rest_bodies and rest_app targets: the bodies signalling
really sends (Chrome's mediasoup-client parameters, as in fanout_worker::testing), and whole
calls through the REST API. Run from worker/fuzz: python3 seeds/rest.py"""
import json, os

MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
ABS = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
ORIENT = "urn:3gpp:video-orientation"
TOFF = "urn:ietf:params:rtp-hdrext:toffset"
LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"

vp8 = {
    "mid": "1",
    "codecs": [
        {"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000, "parameters": {},
         "rtcpFeedback": [{"type": "goog-remb", "parameter": ""}, {"type": "transport-cc", "parameter": ""},
                          {"type": "ccm", "parameter": "fir"}, {"type": "nack", "parameter": ""},
                          {"type": "nack", "parameter": "pli"}]},
        {"mimeType": "video/rtx", "payloadType": 97, "clockRate": 90000, "parameters": {"apt": 96}, "rtcpFeedback": []},
    ],
    "headerExtensions": [
        {"uri": MID, "id": 9, "encrypt": False, "parameters": {}},
        {"uri": ABS, "id": 2, "encrypt": False, "parameters": {}},
        {"uri": ORIENT, "id": 13, "encrypt": False, "parameters": {}},
        {"uri": TOFF, "id": 14, "encrypt": False, "parameters": {}},
    ],
    "encodings": [{"ssrc": 2471283948, "rtx": {"ssrc": 1389617367}, "dtx": False}],
    "rtcp": {"cname": "c3Zz2dV6Ua0iMNlx", "reducedSize": True},
}
simulcast = dict(vp8, encodings=[
    {"rid": "r0", "scalabilityMode": "L1T3", "maxBitrate": 100000},
    {"rid": "r1", "scalabilityMode": "L1T3", "maxBitrate": 300000},
    {"rid": "r2", "scalabilityMode": "L1T3", "maxBitrate": 900000},
])
opus = {
    "mid": "0",
    "codecs": [{"mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000, "channels": 2,
                "parameters": {"minptime": 10, "useinbandfec": 1},
                "rtcpFeedback": [{"type": "transport-cc", "parameter": ""}]}],
    "headerExtensions": [
        {"uri": MID, "id": 9, "encrypt": False, "parameters": {}},
        {"uri": ABS, "id": 2, "encrypt": False, "parameters": {}},
        {"uri": LEVEL, "id": 1, "encrypt": False, "parameters": {}},
    ],
    "encodings": [{"ssrc": 1129421238, "dtx": False}],
    "rtcp": {"cname": "c3Zz2dV6Ua0iMNlx", "reducedSize": True},
}
feedback = [{"type": "nack", "parameter": ""}, {"type": "nack", "parameter": "pli"}, {"type": "ccm", "parameter": "fir"}]
ext = lambda kind, uri, i: {"kind": kind, "uri": uri, "preferredId": i, "preferredEncrypt": False, "direction": "sendrecv"}
caps = {
    "codecs": [
        {"mimeType": "audio/opus", "kind": "audio", "preferredPayloadType": 100, "clockRate": 48000, "channels": 2,
         "parameters": {"minptime": 10, "useinbandfec": 1}, "rtcpFeedback": []},
        {"mimeType": "video/VP8", "kind": "video", "preferredPayloadType": 101, "clockRate": 90000,
         "parameters": {}, "rtcpFeedback": feedback},
        {"mimeType": "video/rtx", "kind": "video", "preferredPayloadType": 102, "clockRate": 90000,
         "parameters": {"apt": 101}, "rtcpFeedback": []},
        {"mimeType": "video/H264", "kind": "video", "preferredPayloadType": 103, "clockRate": 90000,
         "parameters": {"packetization-mode": 1, "profile-level-id": "42e01f", "level-asymmetry-allowed": 1},
         "rtcpFeedback": feedback},
    ],
    "headerExtensions": [ext("audio", MID, 1), ext("video", MID, 1), ext("audio", ABS, 4), ext("video", ABS, 4),
                         ext("audio", LEVEL, 10), ext("video", ORIENT, 11), ext("video", TOFF, 12)],
}
dtls = {"role": "client", "fingerprints": [{"algorithm": "sha-256", "value": ":".join(f"{(b * 7) % 256:02X}" for b in range(32))}]}
codecs = [{"kind": "audio", "mimeType": "audio/opus", "clockRate": 48000, "channels": 2},
          {"kind": "video", "mimeType": "video/VP8", "clockRate": 90000},
          {"kind": "video", "mimeType": "video/H264", "clockRate": 90000,
           "parameters": {"packetization-mode": 1, "profile-level-id": "42e01f"}}]

def dump(value):
    return json.dumps(value, separators=(",", ":"))

bodies = {
    "ensure-room": {"mediaCodecs": codecs},
    "join": {"peerId": "alice", "userId": "u-1", "displayName": "Ada", "role": "teacher", "appData": {"hand": "up"}},
    "create-transport": {"peerId": "alice", "direction": "send"},
    "connect-transport": {"dtlsParameters": dtls},
    "produce-vp8": {"peerId": "alice", "transportId": "transport-1", "kind": "video", "rtpParameters": vp8, "appData": {"source": "camera"}},
    "produce-opus": {"peerId": "alice", "transportId": "transport-1", "kind": "audio", "rtpParameters": opus},
    "consume": {"peerId": "bob", "transportId": "transport-3", "producerId": "producer-2", "rtpCapabilities": caps, "paused": True},
    # One body that reads as a producer, a consumer and a room at once reaches the whole ORTC chain.
    "produce-and-consume-vp8": {"peerId": "alice", "transportId": "transport-1", "kind": "video", "rtpParameters": vp8,
                                "producerId": "producer-2", "rtpCapabilities": caps, "mediaCodecs": codecs},
    "produce-and-consume-simulcast": {"peerId": "alice", "transportId": "transport-1", "kind": "video",
                                      "rtpParameters": simulcast, "producerId": "producer-2", "rtpCapabilities": caps},
    "produce-and-consume-opus": {"peerId": "alice", "transportId": "transport-1", "kind": "audio", "rtpParameters": opus,
                                 "producerId": "producer-2", "rtpCapabilities": caps},
}
os.makedirs("corpus/rest_bodies", exist_ok=True)
for name, body in bodies.items():
    with open(f"corpus/rest_bodies/seed-{name}", "w") as f:
        f.write(dump(body))

R = "/v1/rooms/maths"
call = [
    f"PUT {R} " + dump({"mediaCodecs": codecs}),
    f"POST {R}/peers " + dump(bodies["join"]),
    f"POST {R}/peers " + dump({"peerId": "bob", "userId": "u-2"}),
    f"POST {R}/transports " + dump({"peerId": "alice", "direction": "send"}),
    f"POST {R}/transports/transport-1/connect " + dump({"dtlsParameters": dtls}),
    f"POST {R}/producers " + dump(bodies["produce-vp8"]),
    f"POST {R}/transports " + dump({"peerId": "bob", "direction": "recv"}),
    f"POST {R}/consumers " + dump(bodies["consume"]),
    f"POST {R}/consumers/consumer-4/resume ",
    f"POST {R}/producers/producer-2/pause ",
    f"POST {R}/transports/transport-3/restart-ice ",
    f"GET {R} ",
    "GET /v1/stats ",
    "GET /metrics ",
    f"DELETE {R}/consumers/consumer-4 ",
    f"DELETE {R}/producers/producer-2 ",
    f"DELETE {R}/transports/transport-1 ",
    f"DELETE {R}/peers/alice ",
    f"DELETE {R} ",
]
simulcast_call = call[:5] + [f"POST {R}/producers " + dump(dict(bodies["produce-vp8"], rtpParameters=simulcast))] + call[6:9]
audio_call = call[:5] + [f"POST {R}/producers " + dump(bodies["produce-opus"])] + call[6:9]
os.makedirs("corpus/rest_app", exist_ok=True)
for name, lines in {"call": call, "simulcast-call": simulcast_call, "audio-call": audio_call,
                    "events": [f"PUT {R} ", f"GET {R}/events ", f"POST {R}/peers " + dump(bodies["join"])],
                    "unknown": ["GET /nowhere ", "PATCH /v1/stats ", f"POST {R}/peers not json", "GET /healthz "]}.items():
    with open(f"corpus/rest_app/seed-{name}", "w") as f:
        f.write("\n".join(lines) + "\n")
