"""G.711 codecs and RTP-in-pcap files for sipp's ``play_pcap_audio``.

Owns: μ-law / A-law encoding and decoding (ITU-T G.711, bit-exact with the classic Sun reference
code and with Python's old ``audioop``), writing a classic libpcap file of one RTP stream
(Ethernet / IPv4 / UDP / RTP, one packet per 20 ms, packet times 20 ms apart so sipp paces them in
real time), and the network's faults made on the packet list before it is written: jitter with
reordering, loss, and a sender clock that runs fast or slow. Test support only: it never touches a
socket and needs no library beyond numpy.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

RATE = 8000
PTIME_MS = 20
SAMPLES_PER_PACKET = RATE * PTIME_MS // 1000  # 160
PT_PCMU = 0
PT_PCMA = 8

# Segment end points, as in the reference code: μ-law works on 14-bit, A-law on 13-bit magnitudes.
_ULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)
_ULAW_BIAS = 0x21  # 0x84 >> 2
_ULAW_CLIP = 8159

# Addresses written into the pcap. sipp rewrites them when it plays the file (it sends from
# -mp to the port of the answer's SDP), so they only need to be consistent.
_SRC_MAC = bytes.fromhex("020000000001")
_DST_MAC = bytes.fromhex("020000000002")
_SRC_IP = bytes([127, 0, 0, 1])
_DST_IP = bytes([127, 0, 0, 1])
_SRC_PORT = 6000
_DST_PORT = 6002


def _as_int32(pcm: np.ndarray) -> np.ndarray:
    pcm = np.asarray(pcm)
    if pcm.dtype != np.int16:
        raise TypeError(f"expected int16 samples, got {pcm.dtype}")
    return pcm.astype(np.int32)


def ulaw_encode(pcm: np.ndarray) -> np.ndarray:
    """int16 samples → μ-law bytes (uint8)."""
    v = _as_int32(pcm) >> 2  # arithmetic shift, like the reference: -1 stays -1
    negative = v < 0
    mag = np.minimum(np.where(negative, -v, v), _ULAW_CLIP) + _ULAW_BIAS
    seg = np.searchsorted(_ULAW_SEG_END, mag, side="left").astype(np.int32)
    code = (np.minimum(seg, 7) << 4) | ((mag >> (np.minimum(seg, 7) + 1)) & 0x0F)
    code = np.where(seg >= 8, 0x7F, code)  # full scale: the clip lands just past the last segment
    return (code ^ np.where(negative, 0x7F, 0xFF)).astype(np.uint8)


def ulaw_decode(code: np.ndarray) -> np.ndarray:
    """μ-law bytes → int16 samples."""
    u = ~np.asarray(code, dtype=np.uint8).astype(np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)


def alaw_encode(pcm: np.ndarray) -> np.ndarray:
    """int16 samples → A-law bytes (uint8)."""
    v = _as_int32(pcm) >> 3
    negative = v < 0
    mag = np.where(negative, -v - 1, v)
    seg = np.searchsorted(_ALAW_SEG_END, mag, side="left").astype(np.int32)
    shift = np.where(seg < 2, 1, seg)
    code = (np.minimum(seg, 7) << 4) | ((mag >> shift) & 0x0F)
    code = np.where(seg >= 8, 0x7F, code)
    return (code ^ np.where(negative, 0x55, 0xD5)).astype(np.uint8)


def alaw_decode(code: np.ndarray) -> np.ndarray:
    """A-law bytes → int16 samples."""
    a = np.asarray(code, dtype=np.uint8).astype(np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & 0x80, t, -t).astype(np.int16)


def encode(pcm: np.ndarray, payload_type: int) -> np.ndarray:
    if payload_type == PT_PCMU:
        return ulaw_encode(pcm)
    if payload_type == PT_PCMA:
        return alaw_encode(pcm)
    raise ValueError(f"unsupported payload type {payload_type} (0 = PCMU, 8 = PCMA)")


def decode(payload: np.ndarray, payload_type: int) -> np.ndarray:
    if payload_type == PT_PCMU:
        return ulaw_decode(payload)
    if payload_type == PT_PCMA:
        return alaw_decode(payload)
    raise ValueError(f"unsupported payload type {payload_type} (0 = PCMU, 8 = PCMA)")


def silence_byte(payload_type: int) -> int:
    """The code of a zero sample (0xFF for μ-law, 0xD5 for A-law): pads the last packet."""
    return int(encode(np.zeros(1, dtype=np.int16), payload_type)[0])


def join_with_silence(
    pcms: list[np.ndarray],
    gap_s: float = 1.0,
    lead_s: float = 0.5,
    tail_s: float = 0.5,
    *,
    noise_rms: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """Prompts one after another with silence between (and before, and after), int16 at 8 kHz.

    Silence is digital zero unless ``noise_rms`` (in int16 units, e.g. 30 ≈ -61 dBFS) asks for
    a deterministic low-level Gaussian noise floor laid under the whole signal.
    """
    if min(gap_s, lead_s, tail_s) < 0:
        raise ValueError("silences must be ≥ 0 s")
    parts: list[np.ndarray] = [np.zeros(round(lead_s * RATE), dtype=np.int16)]
    for i, pcm in enumerate(pcms):
        if i:
            parts.append(np.zeros(round(gap_s * RATE), dtype=np.int16))
        parts.append(np.asarray(pcm, dtype=np.int16))
    parts.append(np.zeros(round(tail_s * RATE), dtype=np.int16))
    out = np.concatenate(parts)
    if noise_rms > 0:
        noise = np.random.default_rng(seed).normal(0.0, noise_rms, out.size)
        out = np.clip(out.astype(np.float64) + noise, -32768, 32767).astype(np.int16)
    return out


def rtp_packets(
    pcm_8k: np.ndarray,
    payload_type: int = PT_PCMU,
    *,
    ssrc: int = 0x5EED1234,
    first_seq: int = 1000,
    first_timestamp: int = 160_000,
) -> list[bytes]:
    """RTP packets (header + G.711 payload) of 20 ms each; the last one is padded with silence."""
    payload = encode(pcm_8k, payload_type)
    count = -(-payload.size // SAMPLES_PER_PACKET)
    padded = np.full(count * SAMPLES_PER_PACKET, silence_byte(payload_type), dtype=np.uint8)
    padded[: payload.size] = payload
    packets = []
    for i in range(count):
        marker = 0x80 if i == 0 else 0  # first packet of a talk spurt
        header = struct.pack(
            "!BBHII",
            0x80,  # version 2, no padding, no extension, no CSRC
            marker | payload_type,
            (first_seq + i) & 0xFFFF,
            (first_timestamp + i * SAMPLES_PER_PACKET) & 0xFFFFFFFF,
            ssrc,
        )
        chunk = padded[i * SAMPLES_PER_PACKET : (i + 1) * SAMPLES_PER_PACKET]
        packets.append(header + chunk.tobytes())
    return packets


TimedPacket = tuple[float, bytes]  # (send time in seconds from the stream's start, RTP packet)


def paced(packets: Sequence[bytes], ptime_s: float = PTIME_MS / 1000) -> list[TimedPacket]:
    """The packets as a steady sender sends them: one every ``ptime_s``."""
    return [(i * ptime_s, rtp) for i, rtp in enumerate(packets)]


def jittered(packets: Sequence[TimedPacket], max_jitter_s: float, seed: int) -> list[TimedPacket]:
    """Each packet held back by its own random delay, uniform in [0, ``max_jitter_s``], then put
    in the order they now leave.

    Two packets whose delays differ by more than their spacing swap: with 80 ms on 20 ms packets,
    about 28 % of neighbours. sipp sends a pcap in file order, so the result is sorted by time
    (stably: equal times keep their order).
    """
    if max_jitter_s < 0:
        raise ValueError(f"jitter must be >= 0 s, not {max_jitter_s}")
    delays = np.random.default_rng(seed).uniform(0.0, max_jitter_s, len(packets))
    held = [(t + float(d), rtp) for (t, rtp), d in zip(packets, delays, strict=True)]
    return sorted(held, key=lambda packet: packet[0])


def lossy(packets: Sequence[TimedPacket], rate: float, seed: int) -> list[TimedPacket]:
    """The packets less ``round(rate * len(packets))`` of them, picked at random (independent
    losses, not bursts); the rest keep their times and order."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"loss rate must be in [0, 1), not {rate}")
    count = round(rate * len(packets))
    dropped = set(np.random.default_rng(seed).choice(len(packets), count, replace=False).tolist())
    return [packet for i, packet in enumerate(packets) if i not in dropped]


def drifted(packets: Sequence[TimedPacket], clock_error: float) -> list[TimedPacket]:
    """The packets as sent by a sender whose clock runs ``clock_error`` fast (+0.005: 0.5 % fast)
    or slow (negative).

    Its 20 ms are 20 / 1.005 ms of real time, so a fast sender sends 0.5 % more audio per second
    than the receiver plays. Send times scale; the RTP timestamps, which count the sender's own
    samples, do not change.
    """
    if clock_error <= -1.0:
        raise ValueError(f"clock error must be > -1, not {clock_error}")
    return [(t / (1.0 + clock_error), rtp) for t, rtp in packets]


def rtp_sequence(packet: bytes) -> int:
    """The RTP sequence number of a packet from :func:`rtp_packets`."""
    return int(struct.unpack_from("!H", packet, 2)[0])


def rtp_timestamp(packet: bytes) -> int:
    """The RTP timestamp of a packet from :func:`rtp_packets`."""
    return int(struct.unpack_from("!I", packet, 4)[0])


def _ipv4_checksum(header: bytes) -> int:
    words = struct.unpack(f"!{len(header) // 2}H", header)
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return int(~total & 0xFFFF)


def _frame(udp_payload: bytes, ident: int) -> bytes:
    udp_len = 8 + len(udp_payload)
    udp = struct.pack("!HHHH", _SRC_PORT, _DST_PORT, udp_len, 0) + udp_payload  # checksum 0: none
    ip_wo_sum = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0xB8, 20 + udp_len, ident & 0xFFFF, 0x4000, 64, 17, 0,
        _SRC_IP, _DST_IP,
    )  # fmt: skip
    ip = ip_wo_sum[:10] + struct.pack("!H", _ipv4_checksum(ip_wo_sum)) + ip_wo_sum[12:]
    return _DST_MAC + _SRC_MAC + b"\x08\x00" + ip + udp


def write_packets_pcap(
    path: Path | str, packets: Sequence[TimedPacket], *, start_time: float = 1_700_000_000.0
) -> None:
    """Write RTP packets, each with its send time (seconds from the start), in a libpcap file.

    sipp sends them in file order, pacing by these times: out-of-order times or packets make
    jitter and reordering, missing packets make loss.
    """
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))  # 1 = Ethernet
    start_us = round(start_time * 1_000_000)
    for i, (t, rtp) in enumerate(packets):
        frame = _frame(rtp, i)
        t_us = start_us + round(t * 1_000_000)
        out += struct.pack("<IIII", t_us // 1_000_000, t_us % 1_000_000, len(frame), len(frame))
        out += frame
    Path(path).write_bytes(bytes(out))


def write_rtp_pcap(
    path: Path | str,
    pcm_8k: np.ndarray,
    payload_type: int = PT_PCMU,
    *,
    ssrc: int = 0x5EED1234,
    start_time: float = 1_700_000_000.0,
) -> float:
    """Write ``pcm_8k`` (int16, 8 kHz) as a G.711 RTP stream in a libpcap file, one packet
    every 20 ms.

    Returns the stream's duration in seconds (whole 20 ms packets).
    """
    packets = rtp_packets(pcm_8k, payload_type, ssrc=ssrc)
    timed = [(i * PTIME_MS / 1000, rtp) for i, rtp in enumerate(packets)]
    write_packets_pcap(path, timed, start_time=start_time)
    return len(packets) * PTIME_MS / 1000


def read_rtp_pcap(path: Path | str) -> list[tuple[float, bytes]]:
    """(seconds since the first packet, RTP packet) pairs of a file from :func:`write_rtp_pcap`."""
    data = Path(path).read_bytes()
    if len(data) < 24 or struct.unpack_from("<I", data)[0] != 0xA1B2C3D4:
        raise ValueError(f"{path}: not a little-endian classic pcap file")
    pos, out, first_us = 24, [], None
    while pos + 16 <= len(data):
        sec, usec, incl, _orig = struct.unpack_from("<IIII", data, pos)
        frame = data[pos + 16 : pos + 16 + incl]
        if len(frame) != incl:
            raise ValueError(f"{path}: truncated packet at byte {pos}")
        t_us = sec * 1_000_000 + usec
        first_us = t_us if first_us is None else first_us
        out.append(((t_us - first_us) / 1e6, frame[14 + 20 + 8 :]))
        pos += 16 + incl
    return out
