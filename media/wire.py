"""The wire format between media processes and inference workers.

Owns the byte layout of every message that crosses ZeroMQ, both ways, and nothing else: no sockets.
Each message is a multipart ZeroMQ message of exactly two frames: frame 0 is a fixed binary
header, frame 1 the payload. That is raw little-endian int16 PCM for :class:`Audio` (none at all:
a time mark), a UTF-8 JSON object for :class:`CallStart`, :class:`Transcript`, :class:`Checkpoint`
and :class:`Heartbeat`, and an empty frame for :class:`CallEnd` and :class:`CallDone`, whose
header says it all (the receiver does not read that frame). PCM travels as its own frame so that
neither side copies it in Python.

Header (network byte order, 36 bytes): magic ``b"SB"``, version (u8), type (u8), call id (16 bytes,
a UUID), offset (u64: samples since the call started), sample rate (u32), epoch (u32).

The *epoch* numbers a call's placements on workers: 0 on its first worker, one more each time the
media side moves it (its worker died or restarted). Every message of a placement carries its epoch,
so results of a worker the call has left are recognised and dropped.

Workers also publish :class:`Heartbeat` messages (same header; the call id field carries the
worker's incarnation, which changes when the worker process restarts).
"""

from __future__ import annotations

import json
import math
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from media.errors import RemoteProtocolError

MAGIC: Final = b"SB"
VERSION: Final = 2
_HEADER = struct.Struct("!2sBB16sQII")
HEADER_SIZE: Final = _HEADER.size
# A JSON payload (control, results, heartbeats) is a few hundred bytes; anything far larger is
# foreign, and is refused before the JSON parser spends time (or recursion) on it.
MAX_JSON_BYTES: Final = 64 * 1024

# Message types: media process -> worker
T_CALL_START: Final = 1
T_AUDIO: Final = 2
T_CALL_END: Final = 3
# worker -> media process
T_TRANSCRIPT: Final = 16
T_CALL_DONE: Final = 17
T_CHECKPOINT: Final = 18
# worker -> anyone subscribed
T_HEARTBEAT: Final = 32


class WireError(RemoteProtocolError):
    """A message from a peer that is not valid wire format."""


Buffer = bytes | memoryview


def new_call_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class CallStart:
    """A call begins on this worker; results go to ``reply_to`` (a ZeroMQ endpoint).

    A call moved from another worker (``epoch`` > 0) resumes at ``resume_offset``: the audio
    before it is already transcribed, and its next utterance is numbered ``first_utterance``.
    """

    call_id: str
    sample_rate: int
    reply_to: str
    sip_call_id: str
    epoch: int = 0
    resume_offset: int = 0
    first_utterance: int = 0


@dataclass(frozen=True, slots=True)
class Audio:
    """A run of PCM (int16 LE, mono). ``offset`` counts samples since the call started, so gaps
    left by silence suppression are visible to the receiver."""

    call_id: str
    offset: int
    sample_rate: int
    pcm: Buffer
    epoch: int = 0

    @property
    def samples(self) -> int:
        return len(self.pcm) // 2


@dataclass(frozen=True, slots=True)
class CallEnd:
    """No more audio for this call; ``offset`` is the call's total length in samples."""

    call_id: str
    offset: int
    sample_rate: int
    epoch: int = 0


@dataclass(frozen=True, slots=True)
class Transcript:
    """A transcript of one utterance. ``start``/``end`` are seconds from the call's start."""

    call_id: str
    utterance: int
    final: bool
    text: str
    start: float
    end: float
    confidence: float
    speech_end_offset: int = 0  # samples: where the utterance's speech ended, for latency figures
    end_offset: int = 0  # samples: the utterance's end (a final: nothing before it is needed again)
    epoch: int = 0


@dataclass(frozen=True, slots=True)
class CallDone:
    """The worker has flushed every utterance of this call and forgotten it."""

    call_id: str
    epoch: int = 0


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Every utterance before ``next_utterance`` has been sent as a final, and no later utterance
    will use audio before ``offset``: the media side may forget that audio."""

    call_id: str
    offset: int
    next_utterance: int
    epoch: int = 0


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A worker is alive, and how loaded it is. ``incarnation`` (a UUID hex) changes when the
    worker process restarts; ``loop_age_s`` is how long ago its main loop last turned (a worker
    whose loop is stuck still heartbeats, from its own thread, but is not live)."""

    incarnation: str
    worker: int
    calls: int
    backlog_s: float  # audio waiting for the model, seconds
    busy: float  # share of the last interval spent in the model, 0-1
    loop_age_s: float


Message = CallStart | Audio | CallEnd | Transcript | CallDone | Checkpoint | Heartbeat


def _header(
    kind: int, call_id: str, offset: int = 0, sample_rate: int = 0, epoch: int = 0
) -> bytes:
    # bytes.fromhex, not uuid.UUID: a third of the cost of encoding a 20 ms frame otherwise.
    raw = bytes.fromhex(call_id)
    if len(raw) != 16:
        raise ValueError(f"call id {call_id!r} is not 32 hex digits")
    return _HEADER.pack(MAGIC, VERSION, kind, raw, offset, sample_rate, epoch)


def _json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def encode(msg: Message) -> list[Buffer]:
    """Frames for ``socket.send_multipart(frames, copy=False)``."""
    if isinstance(msg, Audio):
        return [_header(T_AUDIO, msg.call_id, msg.offset, msg.sample_rate, msg.epoch), msg.pcm]
    if isinstance(msg, CallStart):
        start = {
            "reply_to": msg.reply_to,
            "sip_call_id": msg.sip_call_id,
            "first_utterance": msg.first_utterance,
        }
        head = _header(T_CALL_START, msg.call_id, msg.resume_offset, msg.sample_rate, msg.epoch)
        return [head, _json(start)]
    if isinstance(msg, CallEnd):
        return [_header(T_CALL_END, msg.call_id, msg.offset, msg.sample_rate, msg.epoch), b""]
    if isinstance(msg, Transcript):
        body: dict[str, Any] = {
            "utterance": msg.utterance,
            "final": msg.final,
            "text": msg.text,
            "start": msg.start,
            "end": msg.end,
            "confidence": msg.confidence,
            "end_offset": msg.end_offset,
        }
        head = _header(T_TRANSCRIPT, msg.call_id, msg.speech_end_offset, 0, msg.epoch)
        return [head, _json(body)]
    if isinstance(msg, CallDone):
        return [_header(T_CALL_DONE, msg.call_id, epoch=msg.epoch), b""]
    if isinstance(msg, Checkpoint):
        head = _header(T_CHECKPOINT, msg.call_id, msg.offset, epoch=msg.epoch)
        return [head, _json({"next_utterance": msg.next_utterance})]
    if isinstance(msg, Heartbeat):
        beat = {
            "worker": msg.worker,
            "calls": msg.calls,
            "backlog_s": msg.backlog_s,
            "busy": msg.busy,
            "loop_age_s": msg.loop_age_s,
        }
        return [_header(T_HEARTBEAT, msg.incarnation), _json(beat)]
    raise TypeError(f"not a wire message: {msg!r}")


def _load(payload: Buffer, kind: int) -> dict[str, Any]:
    if len(payload) > MAX_JSON_BYTES:
        raise WireError(f"type {kind}: payload of {len(payload)} bytes (at most {MAX_JSON_BYTES})")
    try:
        obj = json.loads(bytes(payload))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # RecursionError: deeply nested arrays ("[[[[..."), which json raises instead of a
        # ValueError; uncaught, it killed the reader's loop.
        raise WireError(f"type {kind}: payload is not JSON: {str(exc)[:100]}") from exc
    if not isinstance(obj, dict):
        raise WireError(f"type {kind}: payload is not a JSON object")
    return obj


def _field(obj: dict[str, Any], key: str, typ: type | tuple[type, ...], kind: int) -> Any:
    value = obj.get(key)
    if not isinstance(value, typ) or (typ is not bool and isinstance(value, bool)):
        raise WireError(f"type {kind}: field {key!r} missing or of the wrong type")
    return value


def _count(obj: dict[str, Any], key: str, kind: int) -> int:
    value: int = _field(obj, key, int, kind)
    if value < 0:
        raise WireError(f"type {kind}: field {key!r} is negative")
    return value


def _number(obj: dict[str, Any], key: str, kind: int) -> float:
    try:
        value = float(_field(obj, key, (int, float), kind))
    except OverflowError as exc:  # an integer literal too large for a float
        raise WireError(f"type {kind}: field {key!r} out of range") from exc
    if not math.isfinite(value):  # json takes NaN and Infinity; no peer of ours sends them
        raise WireError(f"type {kind}: field {key!r} is not a finite number")
    return value


def decode(frames: Sequence[Buffer]) -> Message:
    """Parse one multipart message. Raises :class:`WireError` for anything malformed."""
    if len(frames) != 2:
        raise WireError(f"expected 2 frames, got {len(frames)}")
    head, payload = frames
    if len(head) != HEADER_SIZE:
        raise WireError(f"header is {len(head)} bytes, expected {HEADER_SIZE}")
    magic, version, kind, raw_id, offset, rate, epoch = _HEADER.unpack(head)
    if magic != MAGIC:
        raise WireError(f"bad magic {magic!r}")
    if version != VERSION:
        raise WireError(f"unsupported wire version {version} (this side speaks {VERSION})")
    call_id = raw_id.hex()
    if kind == T_AUDIO:
        if len(payload) % 2:
            raise WireError("audio payload has an odd number of bytes")
        if rate <= 0:
            raise WireError("audio without a sample rate")
        return Audio(call_id, offset, rate, payload, epoch)
    if kind == T_CALL_START:
        obj = _load(payload, kind)
        if rate <= 0:
            raise WireError("call start without a sample rate")
        return CallStart(
            call_id,
            rate,
            _field(obj, "reply_to", str, kind),
            _field(obj, "sip_call_id", str, kind),
            epoch,
            offset,
            _count(obj, "first_utterance", kind),
        )
    if kind == T_CALL_END:
        return CallEnd(call_id, offset, rate, epoch)
    if kind == T_TRANSCRIPT:
        obj = _load(payload, kind)
        return Transcript(
            call_id,
            _count(obj, "utterance", kind),
            _field(obj, "final", bool, kind),
            _field(obj, "text", str, kind),
            _number(obj, "start", kind),
            _number(obj, "end", kind),
            _number(obj, "confidence", kind),
            offset,
            _count(obj, "end_offset", kind),
            epoch,
        )
    if kind == T_CALL_DONE:
        return CallDone(call_id, epoch)
    if kind == T_CHECKPOINT:
        obj = _load(payload, kind)
        return Checkpoint(call_id, offset, _count(obj, "next_utterance", kind), epoch)
    if kind == T_HEARTBEAT:
        obj = _load(payload, kind)
        return Heartbeat(
            call_id,
            _count(obj, "worker", kind),
            _count(obj, "calls", kind),
            _number(obj, "backlog_s", kind),
            _number(obj, "busy", kind),
            _number(obj, "loop_age_s", kind),
        )
    raise WireError(f"unknown message type {kind}")
