#!/usr/bin/env python3
"""Writes the seed inputs of the stun, rtp and rtcp targets: what Chrome sends to the worker
(ICE checks as browsers make them, VP8 and RTX packets of fanout_worker::testing::video_call's
producer, RTCP feedback for its consumer). Standard library only. Run from worker/fuzz:
python3 seeds/media.py"""
import binascii, hashlib, hmac, os, struct

UFRAG, PASSWORD = "fuzzufrag", "fuzz-password-0123456789"  # as in fuzz_targets/stun.rs
PRODUCER_SSRC, PRODUCER_RTX = 2471283948, 1389617367        # chrome_vp8_parameters()
CONSUMER_SSRC = 1_001_000                                    # SequentialIds: the consumer's SSRC


def write(target, name, data):
    os.makedirs(f"corpus/{target}", exist_ok=True)
    with open(f"corpus/{target}/seed-{name}", "wb") as f:
        f.write(data)


def attribute(kind, value):
    pad = (4 - len(value) % 4) % 4
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * pad


def binding_request(priority=True, controlling=True, nominate=True, username=f"{UFRAG}:browser"):
    attrs = attribute(0x0006, username.encode())
    if priority:
        attrs += attribute(0x0024, struct.pack("!I", 1853824767))
    if controlling:
        attrs += attribute(0x802A, os.urandom(8))
    if nominate:
        attrs += attribute(0x0025, b"")
    txid = os.urandom(12)
    # MESSAGE-INTEGRITY covers the header with the length up to and including itself.
    header = lambda extra: struct.pack("!HHI", 0x0001, len(attrs) + extra, 0x2112A442) + txid
    mac = hmac.new(PASSWORD.encode(), header(24) + attrs, hashlib.sha1).digest()
    attrs += attribute(0x0008, mac)
    crc = (binascii.crc32(header(8) + attrs) ^ 0x5354554E) & 0xFFFFFFFF
    attrs += attribute(0x8028, struct.pack("!I", crc))
    return header(0) + attrs


write("stun", "chrome-check", binding_request())
write("stun", "check-no-priority", binding_request(priority=False, controlling=False, nominate=False))
write("stun", "check-wrong-user", binding_request(username="other:browser"))


def rtp(pt, seq, ts, ssrc, payload, marker=False, extensions=b""):
    first = 0x90 if extensions else 0x80
    header = struct.pack("!BBHII", first, (0x80 if marker else 0) | pt, seq, ts, ssrc)
    if extensions:
        pad = (4 - len(extensions) % 4) % 4
        extensions += b"\0" * pad
        header += struct.pack("!HH", 0xBEDE, len(extensions) // 4) + extensions
    return header + payload


mid = bytes([(9 << 4) | 0]) + b"1"                      # one-byte extension id 9 (mid), "1"
keyframe = bytes([0x90, 0x80, 0x01]) + bytes([0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0x80, 0x02, 0xE0, 0x01])
delta = bytes([0x90, 0x80, 0x02]) + bytes([0x01, 0x00, 0x00]) + b"\x55" * 40
write("rtp", "vp8-keyframe", rtp(96, 1000, 90000, PRODUCER_SSRC, keyframe, marker=True, extensions=mid))
write("rtp", "vp8-delta", rtp(96, 1001, 93000, PRODUCER_SSRC, delta, extensions=mid))
write("rtp", "rtx", rtp(97, 5, 90000, PRODUCER_RTX, struct.pack("!H", 1000) + keyframe, extensions=mid))
write("rtp", "padding-only", bytes([0xA0, 97]) + struct.pack("!HII", 6, 90000, PRODUCER_RTX) + b"\0" * 31 + b"\x20")


def rtcp(pt, count, body):
    return struct.pack("!BBH", 0x80 | count, pt, (len(body) + 4) // 4 - 1) + body


rr = rtcp(201, 1, struct.pack("!I", 1) + struct.pack("!IIIIII", CONSUMER_SSRC, 0, 1000, 0, 0, 0))
pli = rtcp(206, 1, struct.pack("!II", 1, CONSUMER_SSRC))
fir = rtcp(206, 4, struct.pack("!II", 1, 0) + struct.pack("!IBBH", CONSUMER_SSRC, 1, 0, 0))
nack = rtcp(205, 1, struct.pack("!II", 1, CONSUMER_SSRC) + struct.pack("!HH", 2, 0x0005))
remb = rtcp(206, 15, struct.pack("!II", 1, 0) + b"REMB" + bytes([1, 0x0F, 0xFF, 0xFF]) + struct.pack("!I", CONSUMER_SSRC))
sr = rtcp(200, 0, struct.pack("!IIIIII", PRODUCER_SSRC, 0xE0000000, 0, 90000, 10, 1000))
sdes = rtcp(202, 1, struct.pack("!I", PRODUCER_SSRC) + bytes([1, 16]) + b"c3Zz2dV6Ua0iMNlx" + b"\0\0")
bye = rtcp(203, 1, struct.pack("!I", PRODUCER_SSRC))
write("rtcp", "rr-pli", rr + pli)
write("rtcp", "rr-fir", rr + fir)
write("rtcp", "rr-nack", rr + nack)
write("rtcp", "rr-remb", rr + remb)
write("rtcp", "sr-sdes", sr + sdes)
write("rtcp", "sr-bye", sr + bye)
