"""Tests of the SIP test-client harness: G.711 and the RTP pcap writer (unit), then real sipp and
baresip calls into a PJSUA2 agent that records the audio and sends INFO back (integration)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.support import rtp_pcap, speech
from tests.support.baresip import BaresipCall
from tests.support.info_uas import InfoUas
from tests.support.sipp import SippCall, SippResult, can_play_pcap, parse_trace, uac_scenario

HAVE_PJSUA2 = importlib.util.find_spec("pjsua2") is not None
HAVE_AUDIOOP = importlib.util.find_spec("audioop") is not None

needs_sipp = pytest.mark.skipif(
    shutil.which("sipp") is None or not can_play_pcap(),
    reason="needs sipp and the right to open a raw socket (root or cap_net_raw) for pcap play",
)
needs_uas = pytest.mark.skipif(
    not HAVE_PJSUA2 or not speech.available(), reason="needs pjsua2 and the Asterisk prompts"
)
needs_baresip = pytest.mark.skipif(shutil.which("baresip") is None, reason="needs baresip")


def best_correlation(ref: np.ndarray, received: np.ndarray) -> tuple[int, float]:
    """(lag, normalised correlation) of ``ref`` inside ``received``, aligned at the best lag."""
    a = ref.astype(np.float64)
    b = received.astype(np.float64)
    n = 1 << int(np.ceil(np.log2(a.size + b.size)))
    xc = np.fft.irfft(np.fft.rfft(b, n) * np.conj(np.fft.rfft(a, n)), n)[: b.size]
    lag = int(np.argmax(xc))
    seg = b[lag : lag + a.size]
    a = a[: seg.size]
    return lag, float(seg @ a / (np.linalg.norm(seg) * np.linalg.norm(a) + 1e-9))


# ---------------------------------------------------------------------------------------------
# G.711 and the pcap writer
# ---------------------------------------------------------------------------------------------


def test_g711_known_values() -> None:
    pcm = np.array([0, 1, -1, 1000, -1000, 32767, -32768], dtype=np.int16)
    # Values from the ITU-T G.711 reference tables (as Python's audioop also gives them).
    assert rtp_pcap.ulaw_encode(pcm).tolist() == [0xFF, 0xFF, 0x7E, 0xCE, 0x4E, 0x80, 0x00]
    assert rtp_pcap.alaw_encode(pcm).tolist() == [0xD5, 0xD5, 0x55, 0xFA, 0x7A, 0xAA, 0x2A]
    assert rtp_pcap.ulaw_decode(np.array([0xFF, 0x7F, 0x80, 0x00, 0xCE])).tolist() == [
        0, 0, 32124, -32124, 988
    ]  # fmt: skip
    assert rtp_pcap.alaw_decode(np.array([0xD5, 0x55, 0xAA, 0x2A, 0xFA])).tolist() == [
        8, -8, 32256, -32256, 1008
    ]  # fmt: skip


def test_g711_round_trip() -> None:
    codes = np.arange(256, dtype=np.uint8)
    # Every code decodes to a value that encodes back to it (μ-law has two zeros: 0x7F and 0xFF).
    assert np.array_equal(rtp_pcap.alaw_encode(rtp_pcap.alaw_decode(codes)), codes)
    ulaw_back = rtp_pcap.ulaw_encode(rtp_pcap.ulaw_decode(codes))
    assert np.array_equal(ulaw_back, np.where(codes == 0x7F, 0xFF, codes))
    # And quantisation error stays within half a step of the widest segment.
    pcm = np.arange(-32768, 32768, dtype=np.int16)
    assert np.abs(rtp_pcap.ulaw_decode(rtp_pcap.ulaw_encode(pcm)) - pcm.astype(int)).max() <= 644
    assert np.abs(rtp_pcap.alaw_decode(rtp_pcap.alaw_encode(pcm)) - pcm.astype(int)).max() <= 512


@pytest.mark.skipif(not HAVE_AUDIOOP, reason="audioop left Python in 3.13")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_g711_matches_audioop_on_every_sample() -> None:
    import audioop

    pcm = np.arange(-32768, 32768, dtype=np.int16)
    raw = pcm.astype("<i2").tobytes()
    assert rtp_pcap.ulaw_encode(pcm).tobytes() == audioop.lin2ulaw(raw, 2)
    assert rtp_pcap.alaw_encode(pcm).tobytes() == audioop.lin2alaw(raw, 2)
    codes = np.arange(256, dtype=np.uint8)
    assert rtp_pcap.ulaw_decode(codes).astype("<i2").tobytes() == audioop.ulaw2lin(
        codes.tobytes(), 2
    )
    assert rtp_pcap.alaw_decode(codes).astype("<i2").tobytes() == audioop.alaw2lin(
        codes.tobytes(), 2
    )


@pytest.mark.parametrize("pt", [rtp_pcap.PT_PCMU, rtp_pcap.PT_PCMA])
def test_pcap_packets(tmp_path: Path, pt: int) -> None:
    pcm = (np.sin(np.arange(8000 + 50) * 0.3) * 8000).astype(np.int16)  # 1.00625 s
    path = tmp_path / "x.pcap"
    duration = rtp_pcap.write_rtp_pcap(path, pcm, pt, ssrc=0x01020304)
    data = path.read_bytes()
    assert struct.unpack_from("<IHHiIII", data) == (0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    packets = rtp_pcap.read_rtp_pcap(path)
    assert len(packets) == 51 and duration == pytest.approx(1.02)
    times = np.array([t for t, _ in packets])
    assert np.allclose(np.diff(times), 0.020)
    payload = b""
    seq0, ts0 = struct.unpack_from("!HI", packets[0][1], 2)
    for i, (_, rtp) in enumerate(packets):
        assert len(rtp) == 12 + 160
        v, m_pt, seq, ts, ssrc = struct.unpack_from("!BBHII", rtp)
        assert v == 0x80 and (m_pt & 0x7F) == pt and bool(m_pt & 0x80) == (i == 0)
        assert (seq, ts, ssrc) == ((seq0 + i) & 0xFFFF, ts0 + 160 * i, 0x01020304)
        payload += rtp[12:]
    decoded = rtp_pcap.decode(np.frombuffer(payload, dtype=np.uint8), pt)
    assert np.abs(decoded[: pcm.size].astype(int) - pcm).max() < 300
    pad = np.frombuffer(payload, dtype=np.uint8)[pcm.size :]
    assert (pad == rtp_pcap.silence_byte(pt)).all()  # the last packet is padded with silence
    assert np.abs(decoded[pcm.size :]).max() <= 8  # A-law has no exact zero: ±8
    # The frames are well-formed IPv4: header checksum verifies to zero.
    frame = data[24 + 16 : 24 + 16 + 14 + 20]
    assert rtp_pcap._ipv4_checksum(frame[14:]) == 0


def test_join_with_silence() -> None:
    a = np.full(800, 1000, dtype=np.int16)
    b = np.full(400, -1000, dtype=np.int16)
    out = rtp_pcap.join_with_silence([a, b], gap_s=0.5, lead_s=0.25, tail_s=0.125)
    assert out.dtype == np.int16 and out.size == 2000 + 800 + 4000 + 400 + 1000
    assert not out[:2000].any() and (out[2000:2800] == 1000).all()
    assert not out[2800:6800].any() and (out[6800:7200] == -1000).all() and not out[7200:].any()
    noisy = rtp_pcap.join_with_silence([a], 0, 1.0, 0, noise_rms=30)
    assert 20 < np.sqrt(np.mean(noisy[:8000].astype(float) ** 2)) < 40


# ---------------------------------------------------------------------------------------------
# sipp scenario and trace parsing
# ---------------------------------------------------------------------------------------------

_TRACE = (
    "----------------------------------------------- 2026-11-25 10:18:17.382709\r\n"
    "UDP message received [430] bytes :\r\n\r\n"
    "INFO sip:sipp@127.0.0.1:47334;transport=UDP SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:54745;rport;branch=z9hG4bKPj1\r\n"
    "Call-ID: abc-1@127.0.0.1\r\nCSeq: 19469 INFO\r\nContent-Type: application/json\r\n"
    'Content-Length:    25\r\n\r\n{"n": 0, "text": "hello"}'
    "\r\n-----------------------------------------------\r\n"
    "Unexpected UDP message received:\r\n\r\n"
    "INFO sip:sipp@127.0.0.1:47334;transport=UDP SIP/2.0\r\n"
    "Call-ID: abc-1@127.0.0.1\r\nCSeq: 19469 INFO\r\nContent-Length: 2\r\n\r\n{}"
    "\r\n----------------------------------------------- 2026-11-25 10:18:17.382883\r\n"
    "UDP message sent (368 bytes):\r\n\r\n"
    "SIP/2.0 200 OK\r\nCall-ID: abc-1@127.0.0.1\r\nCSeq: 19469 INFO\r\nContent-Length: 0\r\n\r\n"
)


def test_parse_trace() -> None:
    msgs = parse_trace(_TRACE)
    assert [(m.direction, m.method, m.status) for m in msgs] == [
        ("received", "INFO", None),
        ("sent", None, 200),
    ]
    assert msgs[0].body == '{"n": 0, "text": "hello"}'
    assert msgs[0].header("content-type") == "application/json"
    assert msgs[1].body == ""


def test_scenario_is_xml(tmp_path: Path) -> None:
    import xml.etree.ElementTree as ET

    root = ET.fromstring(uac_scenario("PCMA", tmp_path / "a.pcap", 3.0, 1.5))
    kinds = [(el.tag, el.get("request") or el.get("response")) for el in root]
    assert ("recv", "INFO") in kinds and kinds[0] == ("send", None)
    assert "RTP/AVP 8" in (root[0].text or "") and "PCMA/8000" in (root[0].text or "")


# ---------------------------------------------------------------------------------------------
# Real calls
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def uas_g711(tmp_path: Path) -> Iterator[InfoUas]:
    with InfoUas(tmp_path / "uas", ("PCMU", "PCMA"), rate=8000) as uas:
        yield uas


def _send_infos(uas: InfoUas, call_id: str, bodies: list[str], gap_s: float) -> None:
    for body in bodies:
        uas.send_info(call_id, body)
        time.sleep(gap_s)


def _check_sipp(result: SippResult, bodies: list[str]) -> None:
    detail = f"exit {result.exit_code}\n{result.stderr}\n{result.errors}"
    assert result.exit_code == 0 and not result.timed_out, detail
    assert result.final_status == 200 and result.bye_status == 200, detail
    assert list(result.info_bodies) == bodies, detail
    assert set(result.info_content_types) <= {"application/json"}


@pytest.mark.integration
@needs_sipp
@needs_uas
def test_sipp_call_plays_audio_and_collects_infos(tmp_path: Path, uas_g711: InfoUas) -> None:
    prompt = speech.select(1, 2.0, 4.0)[0]
    pcm = rtp_pcap.join_with_silence([prompt.pcm()], lead_s=0.3, tail_s=0.3)
    duration = rtp_pcap.write_rtp_pcap(tmp_path / "call.pcap", pcm, rtp_pcap.PT_PCMU)
    call = SippCall(
        "127.0.0.1", uas_g711.port, tmp_path / "call.pcap", "PCMU",
        audio_s=duration, linger_s=1.5, work_dir=tmp_path / "sipp",
    ).start()  # fmt: skip
    call_id = uas_g711.wait_calls(1, 10)[0]
    bodies = [json.dumps({"seq": i, "text": f"final {i}", "final": True}) for i in range(3)]
    _send_infos(uas_g711, call_id, bodies, 0.4)  # during the audio
    result = call.wait(duration + 30)

    _check_sipp(result, bodies)
    assert result.call_id == call_id == call.call_id
    assert [a.code for a in uas_g711.wait_answers(3, 5)] == [200, 200, 200]
    ended = uas_g711.wait_ended(call_id, 10)
    assert ended.codec == "PCMU" and ended.last_status == 200
    lag, corr = best_correlation(prompt.pcm(), ended.audio)
    assert corr >= 0.9, (lag, corr)


@pytest.mark.integration
@needs_sipp
@needs_uas
def test_four_concurrent_sipp_calls(tmp_path: Path, uas_g711: InfoUas) -> None:
    prompts = speech.select(4, 2.0, 4.0)
    calls: list[SippCall] = []
    expected: dict[str, list[str]] = {}
    for i, prompt in enumerate(prompts):
        codec = ("PCMU", "PCMA")[i % 2]
        pt = rtp_pcap.PT_PCMU if codec == "PCMU" else rtp_pcap.PT_PCMA
        pcm = rtp_pcap.join_with_silence([prompt.pcm()], lead_s=0.2, tail_s=0.2)
        pcap = tmp_path / f"call{i}.pcap"
        duration = rtp_pcap.write_rtp_pcap(pcap, pcm, pt)
        calls.append(
            SippCall(
                "127.0.0.1",
                uas_g711.port,
                pcap,
                codec,
                audio_s=duration,
                linger_s=1.5,
                work_dir=tmp_path / f"sipp{i}",
            )
        )
    for call in calls:
        call.start()
    call_ids = uas_g711.wait_calls(4, 15)
    assert sorted(call_ids) == sorted(c.call_id for c in calls)
    for n in range(3):  # interleaved across the calls, each call's own bodies in order
        for cid in call_ids:
            body = json.dumps({"call": cid, "seq": n})
            expected.setdefault(cid, []).append(body)
            uas_g711.send_info(cid, body)
        time.sleep(0.3)
    results = [c.wait(60) for c in calls]

    for call, prompt, result in zip(calls, prompts, results, strict=True):
        _check_sipp(result, expected[call.call_id])
        ended = uas_g711.wait_ended(call.call_id, 10)
        assert ended.codec == call.codec
        lag, corr = best_correlation(prompt.pcm(), ended.audio)
        assert corr >= 0.9, (call.codec, lag, corr)


@pytest.mark.integration
@needs_baresip
@needs_uas
def test_baresip_g722_call(tmp_path: Path) -> None:
    import soxr

    prompt = speech.select(1, 2.0, 4.0, stride=3)[0]
    ref16 = np.clip(np.round(soxr.resample(prompt.pcm().astype(np.float32), 8000, 16000)),
                    -32768, 32767).astype(np.int16)  # fmt: skip
    source = np.concatenate([np.zeros(4000, np.int16), ref16, np.zeros(8000, np.int16)])
    speech.write_wav(tmp_path / "source16k.wav", source, 16000)

    with InfoUas(tmp_path / "uas", ("G722",), rate=16000) as uas:
        call = BaresipCall(
            f"sip:transcribe@127.0.0.1:{uas.port}", tmp_path / "source16k.wav",
            duration_s=source.size / 16000 + 3.0, work_dir=tmp_path / "baresip",
        ).start()  # fmt: skip
        try:
            call_id = uas.wait_calls(1, 10)[0]
            uas.send_info(call_id, json.dumps({"text": "hello"}))
            answer = uas.wait_answers(1, 5)[0]
            ended = uas.wait_ended(call_id, source.size / 16000 + 15)
            result = call.wait(20)
        finally:
            call.kill()

    assert not result.timed_out and result.exit_code == 0, result.output[-3000:]
    assert answer.code == 488  # baresip does not take INFO
    assert ended.codec == "G722" and ended.rate == 16000
    lag, corr = best_correlation(ref16, ended.audio)
    assert corr >= 0.8, (lag, corr)


@pytest.mark.integration
@needs_sipp
@needs_uas
def test_sipp_stays_while_infos_keep_coming(tmp_path: Path, uas_g711: InfoUas) -> None:
    # 1 s of audio, linger 1.5 s: INFOs at +2.0 s and +3.2 s (each within linger of the one
    # before) must both arrive, so the call outlives audio + linger.
    pcm = (np.sin(np.arange(8000) * 0.2) * 4000).astype(np.int16)
    duration = rtp_pcap.write_rtp_pcap(tmp_path / "short.pcap", pcm, rtp_pcap.PT_PCMA)
    call = SippCall(
        "127.0.0.1",
        uas_g711.port,
        tmp_path / "short.pcap",
        "PCMA",
        audio_s=duration,
        linger_s=1.5,
        work_dir=tmp_path / "sipp",
    ).start()
    start = time.monotonic()
    call_id = uas_g711.wait_calls(1, 10)[0]
    bodies = ['{"late": 1}', '{"late": 2}']
    time.sleep(max(0.0, start + 2.0 - time.monotonic()))
    uas_g711.send_info(call_id, bodies[0])
    time.sleep(max(0.0, start + 3.2 - time.monotonic()))
    uas_g711.send_info(call_id, bodies[1])
    result = call.wait(30)
    elapsed = time.monotonic() - start
    _check_sipp(result, bodies)
    assert 4.5 <= elapsed < 8.0
