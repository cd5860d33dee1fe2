#!/usr/bin/env python3
"""Writes the seed inputs of signalling's fuzz targets (jwt, payload, packet): tokens and
payloads as real clients send them. Standard library only. Run from signalling/fuzz:
python3 seeds/signalling.py"""
import base64, hashlib, hmac, json, os, time

SECRET = b"fuzz-secret-of-reasonable-length"  # as in fuzz_targets/jwt.rs and packet.rs
FAR = 4_000_000_000  # 2096: seeds stay valid


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def dump(value):
    return json.dumps(value, separators=(",", ":"))


def hs256(claims, header=None):
    header = header or {"alg": "HS256", "typ": "JWT"}
    message = f"{b64(dump(header).encode())}.{b64(dump(claims).encode())}"
    signature = hmac.new(SECRET, message.encode(), hashlib.sha256).digest()
    return f"{message}.{b64(signature)}"


def write(target, name, data):
    os.makedirs(f"corpus/{target}", exist_ok=True)
    with open(f"corpus/{target}/seed-{name}", "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


claims = {"sub": "u-1", "email": "ada@example.com", "name": "Ada", "role": "teacher", "exp": FAR}
token = hs256(claims)

# jwt: the mode byte's bits 0-1 pick the verifier, 2-3 the input kind, 4-7 the forgery.
write("jwt", "raw-hs256", b"\x00" + token.encode())
write("jwt", "raw-hs256-rooms", b"\x00" + hs256(dict(claims, rooms=["maths-101"], nbf=0, iat=0)).encode())
write("jwt", "raw-aud-iss", b"\x03" + hs256(dict(claims, aud="fanout", iss="https://app.example")).encode())
relative = {"sub": "u-1", "role": "student", "exp": "$NOW+3600", "nbf": "$NOW-60", "iat": "$NOW"}
for key in range(4):
    for forgery in range(8):
        mode = key | (3 << 2) | (forgery << 4)
        write("jwt", f"signed-key{key}-forgery{forgery}", bytes([mode]) + b"\xff" + dump(relative).encode())
write("jwt", "signed-expired-in-leeway", bytes([0 | 3 << 2]) + b"\xff" + dump({"sub": "u", "exp": "$NOW-25"}).encode())
write("jwt", "signed-expired", bytes([1 | 3 << 2]) + b"\xff" + dump({"sub": "u", "exp": "$NOW-3600"}).encode())
write("jwt", "signed-not-yet", bytes([2 | 3 << 2]) + b"\xff" + dump({"sub": "u", "exp": "$NOW+60", "nbf": "$NOW+3600"}).encode())
write("jwt", "signed-huge-exp", bytes([0 | 1 << 2]) + b"\xff" + dump({"sub": "u", "exp": 10**19}).encode())
write("jwt", "signed-header-kid", bytes([2 | 1 << 2]) + dump({"alg": "ES256", "typ": "JWT", "kid": "k1"}).encode()
      + b"\xff" + dump(dict(claims)).encode())
write("jwt", "find-token", b"\x08" + dump({"token": token}).encode() + b"\xff" + f"Bearer {token}".encode()
      + b"\xff" + f"EIO=4&transport=websocket&token={token.replace('.', '%2E')}".encode())

# payload: every request's payload, as the web client sends it.
vp8 = {"mid": "1", "codecs": [
    {"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000, "parameters": {},
     "rtcpFeedback": [{"type": "nack", "parameter": ""}, {"type": "nack", "parameter": "pli"}]},
    {"mimeType": "video/rtx", "payloadType": 97, "clockRate": 90000, "parameters": {"apt": 96}, "rtcpFeedback": []}],
    "headerExtensions": [{"uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "id": 9, "encrypt": False, "parameters": {}}],
    "encodings": [{"ssrc": 2471283948, "rtx": {"ssrc": 1389617367}, "dtx": False}],
    "rtcp": {"cname": "c3Zz2dV6Ua0iMNlx", "reducedSize": True}}
caps = {"codecs": [
    {"mimeType": "audio/opus", "kind": "audio", "preferredPayloadType": 100, "clockRate": 48000, "channels": 2,
     "parameters": {"minptime": 10, "useinbandfec": 1}, "rtcpFeedback": []},
    {"mimeType": "video/VP8", "kind": "video", "preferredPayloadType": 101, "clockRate": 90000, "parameters": {},
     "rtcpFeedback": [{"type": "nack", "parameter": "pli"}]}],
    "headerExtensions": [{"kind": "video", "uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "preferredId": 1,
                          "preferredEncrypt": False, "direction": "sendrecv"}]}
dtls = {"role": "client", "fingerprints": [{"algorithm": "sha-256", "value": ":".join(["AB"] * 32)}]}
payloads = {
    "join-room": {"roomId": "maths-101", "isProducer": True, "roomName": "Maths", "userId": "ignored"},
    "leave-room": {"roomId": "maths-101"},
    "webrtc-offer": {"roomId": "maths-101", "targetId": "Zk1Ad3X0aBcDeFgH", "sdp": {"type": "offer", "sdp": "v=0\r\n"}},
    "ice-candidate": {"targetId": "Zk1Ad3X0aBcDeFgH", "candidate": {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"}},
    "create-transport": {"roomId": "maths-101", "direction": "send"},
    "connect-transport": {"transportId": "t-1", "dtlsParameters": dtls},
    "restart-ice": {"transportId": "t-1"},
    "produce": {"transportId": "t-1", "kind": "video", "rtpParameters": vp8, "appData": {"source": "camera"}, "paused": False},
    "consume": {"producerId": "p-1", "rtpCapabilities": caps, "transportId": "t-2", "paused": True},
    "pause-producer": {"producerId": "p-1"},
    "close-consumer": {"roomId": "maths-101", "consumerId": "c-1"},
}
for event, payload in payloads.items():
    write("payload", event, dump(payload))
    write("packet", f"event-{event}", "42" + dump([event, payload]))
write("payload", "nested", "[" * 200 + "]" * 200)

# packet: Engine.IO message packets carrying Socket.IO packets.
write("packet", "connect", "40" + dump({"token": token}))
write("packet", "connect-namespace", "40/admin," + dump({"token": "Bearer " + token}))
write("packet", "event-with-ack", "4217" + dump(["create-transport", {"direction": "recv"}]))
write("packet", "binary-event", b"451-" + dump(["produce", {"kind": "video", "rtpParameters": vp8,
                                                            "appData": {"thumb": {"_placeholder": True, "num": 0}}}]).encode()
      + b"\xff\x01\x02\x03")
write("packet", "binary-two", b"452-17" + dump(["join-room", {"roomId": {"_placeholder": True, "num": 1},
                                                              "x": {"_placeholder": True, "num": 0}}]).encode()
      + b"\xffab\xffmaths")
write("packet", "disconnect", "41")
write("packet", "ping", "2")

# socketio: polling bodies (0x1E between packets, 0xFF between requests) of a whole call.
def ev(ack, event, payload):
    return f"42{ack}" + dump([event, payload])


call = [
    ev(1, "join-room", {"roomId": "maths-101"}),
    ev(2, "create-transport", {"direction": "send"}) + "\x1e" + ev(3, "create-transport", {"direction": "recv"}),
    ev(4, "connect-transport", {"transportId": "transport-1", "dtlsParameters": dtls}),
    ev(5, "produce", {"transportId": "transport-1", "kind": "video", "rtpParameters": vp8}),
    ev(6, "consume", {"producerId": "producer-3", "rtpCapabilities": caps, "transportId": "transport-2"}),
    ev(7, "get-room-info", {}) + "\x1e" + ev(8, "pause-producer", {"producerId": "producer-3"}),
    ev(9, "restart-ice", {"transportId": "transport-2"}) + "\x1e" + ev(10, "close-producer", {"producerId": "producer-3"}),
    ev(11, "leave-room", {}),
]
write("socketio", "call", b"\xff".join(body.encode() for body in call))
write("socketio", "burst", "\x1e".join(ev(i, "get-participants", {}) for i in range(120)))
write("socketio", "relay", ev(1, "join-room", {"roomId": "r"}) + "\x1e" + ev(2, "webrtc-offer", {"targetId": "nobody", "sdp": "v=0"}))
write("socketio", "binary", "451-3" + dump(["produce", {"kind": "video", "rtpParameters": {"_placeholder": True, "num": 0}}]) + "\x1eb" + base64.b64encode(b"\x01\x02").decode())
write("socketio", "unknown-and-bad", "42[\"no-such-event\",{}]\x1e4299[\"leave-room\",[1,2]]\x1e42[broken")
