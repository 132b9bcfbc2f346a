"""RFC 4733 telephone-event packets laid into an RTP stream, for DTMF tests (test support only).

:func:`with_dtmf` takes the ``(send time, RTP packet)`` list of a G.711 stream (see
``rtp_pcap.rtp_packets`` and ``write_packets_pcap``) and replaces the audio packets during each
key press by event packets, as a phone does: same SSRC and sequence numbering, one timestamp for
the whole event, the duration growing every 20 ms, the end bit on the last packet, which is sent
three times (RFC 4733 §2.5.1.4).
"""

from __future__ import annotations

import struct

EVENT_CODES = {
    **{str(d): d for d in range(10)},
    "*": 10,
    "#": 11,
    "A": 12,
    "B": 13,
    "C": 14,
    "D": 15,
}
PT_TELEPHONE_EVENT = 101
PTIME_S = 0.02
SAMPLES_PER_PACKET = 160  # 20 ms at 8 kHz
VOLUME = 10  # -10 dBm0


def _event(header: tuple[int, int, int, int, int], marker: bool, code: int, end: bool,
           duration: int, pt: int) -> bytes:  # fmt: skip
    _, _, seq, timestamp, ssrc = header
    rtp = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq, timestamp, ssrc)
    return rtp + struct.pack("!BBH", code, (0x80 if end else 0) | VOLUME, duration)


def with_dtmf(
    packets: list[tuple[float, bytes]],
    presses: list[tuple[float, str]],
    duration_s: float = 0.16,
    pt: int = PT_TELEPHONE_EVENT,
) -> list[tuple[float, bytes]]:
    """``packets`` with a key press (``(start time, digit)``) each lasting ``duration_s``."""
    out = list(packets)
    inserted: list[tuple[int, tuple[float, bytes]]] = []
    for start, digit in presses:
        code = EVENT_CODES[digit.upper()]
        first = round(start / PTIME_S)
        count = max(1, round(duration_s / PTIME_S))
        if first + count > len(packets):
            raise ValueError(f"a press at {start} s runs past the stream's end")
        head = struct.unpack("!BBHII", packets[first][1][:12])
        timestamp = head[3]
        for k in range(count):
            t, audio = packets[first + k]
            _, _, seq, _, ssrc = struct.unpack("!BBHII", audio[:12])
            end = k == count - 1
            duration = (k + 1) * SAMPLES_PER_PACKET
            pkt = _event((0, 0, seq, timestamp, ssrc), k == 0, code, end, duration, pt)
            out[first + k] = (t, pkt)
            if end:  # the end packet goes three times, same sequence number
                inserted += [(first + k, (t, pkt)), (first + k, (t, pkt))]
    for index, item in sorted(inserted, key=lambda x: x[0], reverse=True):
        out.insert(index + 1, item)
    return out
