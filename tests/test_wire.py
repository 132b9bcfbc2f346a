import contextlib
import random
import struct

import pytest

from media import wire

CALL = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    "msg",
    [
        wire.CallStart(CALL, 8000, "tcp://127.0.0.1:5701", "abc@host"),
        wire.CallStart(CALL, 16000, "tcp://127.0.0.1:5701", "abc@host", 3, 48000, 7),
        wire.Audio(CALL, 123456, 16000, b"\x01\x00\xff\x7f"),
        wire.Audio(CALL, 1, 8000, b"", 2),
        wire.CallEnd(CALL, 99, 8000),
        wire.CallEnd(CALL, 99, 8000, 5),
        wire.Transcript(CALL, 3, True, "héllo wörld", 1.5, 2.25, 0.875, 4000),
        wire.Transcript(CALL, 4, False, "", 0.0, 0.5, 0.0),
        wire.Transcript(CALL, 5, True, "x", 0.0, 0.5, 0.5, 3000, 4000, 2),
        wire.CallDone(CALL),
        wire.CallDone(CALL, 4),
        wire.Checkpoint(CALL, 16000, 3, 1),
        wire.Heartbeat(CALL, 2, 17, 1.25, 0.5, 0.01),
    ],
)
def test_round_trip(msg: wire.Message) -> None:
    frames = wire.encode(msg)
    back = wire.decode([bytes(f) for f in frames])
    if isinstance(msg, wire.Audio):
        assert isinstance(back, wire.Audio)
        assert (back.call_id, back.offset, back.sample_rate, bytes(back.pcm)) == (
            msg.call_id, msg.offset, msg.sample_rate, bytes(msg.pcm),
        )  # fmt: skip
    else:
        assert back == msg


def test_audio_header_bytes_are_stable() -> None:
    head, pcm = wire.encode(wire.Audio(CALL, 1, 8000, b"\x00\x00", 3))
    assert bytes(head) == b"SB\x02\x02" + bytes.fromhex(CALL) + struct.pack("!QII", 1, 8000, 3)
    assert pcm == b"\x00\x00"


def _header(kind: int = wire.T_AUDIO, version: int = wire.VERSION, magic: bytes = b"SB") -> bytes:
    return struct.pack("!2sBB16sQII", magic, version, kind, bytes(16), 0, 8000, 0)


@pytest.mark.parametrize(
    ("frames", "match"),
    [
        ([b"SB"], "2 frames"),
        ([b"SB\x01", b""], "header"),
        ([_header(magic=b"XX"), b""], "magic"),
        ([_header(version=9), b""], "version 9"),
        ([_header(version=1)[:32], b""], "header"),
        ([_header(kind=wire.T_CHECKPOINT), b'{"next_utterance": -1}'], "negative"),
        ([_header(kind=wire.T_HEARTBEAT), b'{"worker": 0}'], "calls"),
        ([_header(kind=99), b""], "unknown message type"),
        ([_header(), b"\x00"], "odd"),
        ([_header(kind=wire.T_CALL_START), b"not json"], "JSON"),
        ([_header(kind=wire.T_CALL_START), b"[1]"], "object"),
        ([_header(kind=wire.T_CALL_START), b'{"reply_to": 5}'], "reply_to"),
        ([_header(kind=wire.T_TRANSCRIPT), b'{"utterance": 1, "final": 1}'], "final"),
    ],
)
def test_malformed_input_raises_wire_error(frames: list[bytes], match: str) -> None:
    with pytest.raises(wire.WireError, match=match):
        wire.decode(frames)


# --- truncated and foreign input: only WireError, whatever the bytes -----------------------------

_NESTED = b"[" * 20_000 + b"]" * 20_000
_TRANSCRIPT = (
    '{{"utterance":0,"final":true,"text":"x","start":{start},"end":1,"confidence":1,'
    '"end_offset":0}}'
)


@pytest.mark.parametrize(
    ("frames", "match"),
    [
        # json raises RecursionError, not ValueError, for deep nesting: it escaped decode().
        ([_header(kind=wire.T_CHECKPOINT), _NESTED], "not JSON"),
        ([_header(kind=wire.T_HEARTBEAT), b'{"a":' * 10_000], "not JSON"),
        # float() of a 400-digit integer raises OverflowError.
        (
            [_header(kind=wire.T_TRANSCRIPT), _TRANSCRIPT.format(start="1" + "0" * 400).encode()],
            "out of range",
        ),
        ([_header(kind=wire.T_TRANSCRIPT), _TRANSCRIPT.format(start="NaN").encode()], "finite"),
        (
            [_header(kind=wire.T_TRANSCRIPT), _TRANSCRIPT.format(start="-Infinity").encode()],
            "finite",
        ),
        ([_header(kind=wire.T_TRANSCRIPT), _TRANSCRIPT.format(start="1e999").encode()], "finite"),
        ([_header(kind=wire.T_CALL_START), b" " * (wire.MAX_JSON_BYTES + 1)], "at most"),
        ([_header(kind=wire.T_CALL_START), b"\xff\xfe{}"], "not JSON"),
        (
            [_header(kind=wire.T_CALL_START), b'{"reply_to": "x", "sip_call_id": "y"}'],
            "first_utterance",
        ),
        ([_header(), b"", b""], "2 frames"),
        ([], "2 frames"),
        ([b"", b""], "header is 0 bytes"),
        ([_header() + b"\x00", b""], "header is 37 bytes"),
        ([_header(version=wire.VERSION + 1), b""], "unsupported wire version"),
        ([_header(version=0), b""], "unsupported wire version"),
        # ZMTP's own greeting, sent as a message by a confused peer.
        ([b"\xff" + bytes(8) + b"\x7f\x03\x00NULL" + bytes(16), b""], "header"),
        ([b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(9), b""], "bad magic"),
    ],
)
def test_foreign_input_raises_wire_error(frames: list[bytes], match: str) -> None:
    with pytest.raises(wire.WireError, match=match):
        wire.decode(frames)


def test_every_truncation_of_every_message_is_a_wire_error_or_a_message() -> None:
    samples: list[wire.Message] = [
        wire.CallStart(CALL, 8000, "tcp://127.0.0.1:5701", "abc@host", 1, 160, 2),
        wire.Audio(CALL, 160, 8000, b"\x01\x00" * 80),
        wire.Transcript(CALL, 3, True, "héllo", 1.5, 2.25, 0.875, 4000, 5000, 1),
        wire.Checkpoint(CALL, 16000, 3, 1),
        wire.Heartbeat(CALL, 2, 17, 1.25, 0.5, 0.01),
    ]
    for msg in samples:
        head, payload = (bytes(f) for f in wire.encode(msg))
        for cut in range(len(head)):
            with pytest.raises(wire.WireError):
                wire.decode([head[:cut], payload])
        for cut in range(len(payload)):
            with contextlib.suppress(wire.WireError):
                wire.decode([head, payload[:cut]])


def test_random_mutations_raise_only_wire_error() -> None:
    """A seeded fuzz of 3000 mutations (bit flips, byte changes, cuts, splices, random frames) of
    valid messages: decode() returns a message or raises WireError, never anything else."""
    rng = random.Random(6)
    valid = [
        [bytes(f) for f in wire.encode(m)]
        for m in (
            wire.CallStart(CALL, 16000, "tcp://127.0.0.1:5701", "abc@host"),
            wire.Audio(CALL, 1, 8000, b"\x00\x01" * 10),
            wire.Transcript(CALL, 0, False, "x", 0.0, 0.5, 0.5),
            wire.CallDone(CALL),
            wire.Checkpoint(CALL, 8000, 1),
            wire.Heartbeat(CALL, 0, 1, 0.0, 0.0, 0.0),
        )
    ]
    outcomes = {"message": 0, "refused": 0}
    for _ in range(3000):
        frames = [bytearray(f) for f in rng.choice(valid)]
        how = rng.randrange(6)
        target = frames[rng.randrange(len(frames))]
        if how == 0 and target:
            i = rng.randrange(len(target))
            target[i] ^= 1 << rng.randrange(8)
        elif how == 1 and target:
            target[rng.randrange(len(target))] = rng.randrange(256)
        elif how == 2:
            del target[rng.randrange(len(target) + 1) :]
        elif how == 3:
            target[rng.randrange(len(target) + 1) :] = rng.randbytes(rng.randrange(64))
        elif how == 4:
            frames = [bytearray(rng.randbytes(rng.randrange(80))) for _ in range(rng.randrange(4))]
        else:
            frames.append(bytearray(rng.randbytes(8)))
        try:
            wire.decode([bytes(f) for f in frames])
            outcomes["message"] += 1
        except wire.WireError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 1000 and outcomes["message"] > 100, outcomes
