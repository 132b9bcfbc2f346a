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
