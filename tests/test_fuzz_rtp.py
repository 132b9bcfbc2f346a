"""Garbage RTP into a live call (tests/support/rtp_fuzz.py): a media process (PJSUA2, on its own,
the test playing the worker) answers a call from a bare UDP caller, which sends a recorded
prompt as PCMU RTP to the port of the media process's 200 OK SDP, with garbage in the middle
(and at the RTCP port) and the rest of the prompt from a new SSRC. The call survives, the audio
after the garbage still reaches the worker, the call ends cleanly (``call.ended``) and the next
call is served by the same process."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from media import wire
from tests.support import rtp_fuzz, speech
from tests.support.lone_media import LoneMedia, lone_media
from tests.support.rtp_fuzz import Caller
from tests.support.rtp_pcap import join_with_silence, rtp_packets

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (speech.available() and shutil.which("sipp")),
        reason="needs asterisk-core-sounds-en-wav",
    ),
]


def audio_of(messages: list[wire.Message], length: int) -> np.ndarray:
    out = np.zeros(length, np.int16)
    for m in messages:
        if isinstance(m, wire.Audio) and m.samples and m.offset < length:
            end = min(m.offset + m.samples, length)
            out[m.offset : end] = np.frombuffer(bytes(m.pcm), "<i2")[: end - m.offset]
    return out


def best_correlation(ref: np.ndarray, got: np.ndarray, max_lag: int = 8000) -> float:
    a = ref.astype(np.float64)
    b = np.pad(got.astype(np.float64), (0, len(a) + max_lag))[: len(a) + max_lag]
    lag = int(np.argmax(np.correlate(b, a, "valid")))
    y = b[lag : lag + len(a)]
    return float((a * y).sum() / np.sqrt((a * a).sum() * (y * y).sum() + 1e-9))


def call_messages(m: LoneMedia, sip_call_id: str) -> list[wire.Message]:
    ids = [
        c
        for c, v in m.worker.messages.items()
        if any(isinstance(x, wire.CallStart) and x.sip_call_id == sip_call_id for x in v)
    ]
    return m.worker.messages[ids[0]] if ids else []


def test_garbage_rtp_does_not_break_the_call_or_the_process(tmp_path: Path) -> None:
    (prompt,) = speech.select(1, min_s=3.0, max_s=6.0, stride=11)
    pcm = join_with_silence([prompt.pcm()], lead_s=0.5, tail_s=1.0)
    half = (len(pcm) // 2) // 160 * 160
    first = rtp_packets(pcm[:half], ssrc=0x1111, first_seq=100, first_timestamp=8000)
    # The rest comes from another source (RFC 3550 §8.2: a new SSRC, new sequence and clock).
    second = rtp_packets(pcm[half:], ssrc=0x2222, first_seq=50000, first_timestamp=900_000)
    junk = rtp_fuzz.garbage(seq=100 + len(first), ts=8000 + half, ssrc=0x1111)
    assert len(junk) >= 50
    with lone_media(tmp_path) as m:
        caller = Caller(m.port)
        try:
            caller.invite()
            at = caller.play(first, time.monotonic())
            rtcp = (caller.media[0], caller.media[1] + 1)
            for _, datagram in junk:  # all at once, between two packets of speech
                caller.rtp.sendto(datagram, caller.media)
                caller.rtp.sendto(datagram, rtcp)
            caller.play(second, at)
            time.sleep(0.3)  # the jitter buffer's last 200 ms of speech, then hang up
            assert caller.bye() == 200
        finally:
            caller.close()
        m.worker.wait_for(
            lambda msgs: any(isinstance(x, wire.CallEnd) for x in call_messages(m, caller.call_id)),
            15,
        )
        got = audio_of(call_messages(m, caller.call_id), len(pcm) + 8000)
        # The second half of the prompt, sent after the garbage from a new SSRC, reached the
        # worker intact (the jitter buffer shifts it by 100-200 ms).
        tail = pcm[half + 800 : len(pcm) - 8000]
        corr = best_correlation(tail, got[half:])
        assert corr > 0.9, corr
        assert m.rx.wait_for(
            lambda posts: any(
                p.json()["type"] == "call.ended" and p.json()["sip_call_id"] == caller.call_id
                for p in posts
            ),
            15,
        ), m.log_text()[-3000:]
        # The same process takes the next call.
        nxt = Caller(m.port)
        try:
            nxt.invite()
            assert nxt.bye() == 200
        finally:
            nxt.close()
        m.worker.wait_for(lambda msgs: bool(call_messages(m, nxt.call_id)), 10)
