"""The VAD speech ratio the metrics report for kinds of call audio: what the alerts'
thresholds (docker/monitoring/alerts.yml: under 2% "hears no speech", over 98% "hears only
speech") rest on.

Each kind of audio, 8 kHz as PJSIP hands it over, is played frame by frame through the
configured energy gate (``media.silence_gate``, as ``AudioSender`` does) into a real
``inference.worker.Worker`` with the real Silero VAD and Moonshine (finals only; its clock is
the call's timeline), as ``bench/vad_savings.py`` does (``bench/harness/gated_call.py``). What
the worker's VAD judged is read from the metric the alerts use,
``sip_bridge_vad_audio_seconds_total{verdict}``:

    judged s   audio the VAD judged (the gate keeps the rest from the worker)
    per s      judged seconds per second of call: the recording rule
               ``sip_bridge:vad_speech_ratio:rate5m`` needs 0.5 across a host's calls
    speech     the ratio speech / judged, the recording rule's value for this audio alone
    alert      which alert that ratio would raise, held 15 minutes

Kinds: recorded prompts (Asterisk's, the talker) with half the call silent, in digital silence
and over line noise; prompts back to back; then no talker: line noise alone (one side of a call
that only listens, over a noisy line), a loud hiss, a continuous dial tone, ringback, and DTMF.

Run from the repository root (needs ``asterisk-core-sounds-en-wav``; about a minute on 2
cores):
    .venv/bin/python -m bench.vad_ratio
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from prometheus_client import REGISTRY

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness.frames import FRAME, RATE
from bench.harness.gated_call import CallAudio, build_call, media_side, worker_settings
from bench.harness.prompt_calls import require_prompts
from inference.file_pipeline import OfflineCall
from inference.model_files import default_cache_dir, ensure_converted
from inference.moonshine import MoonshineModel
from inference.providers import choose_providers
from inference.silero import SileroVad
from media import wire
from sip_bridge.settings.loading import load
from tests.support import speech
from tests.support.rtp_pcap import join_with_silence

LOW, HIGH = 0.02, 0.98  # alerts.yml's thresholds


def tones(freqs: tuple[float, ...], dbfs: float, on_s: float, off_s: float, total_s: float,
          ) -> np.ndarray:  # fmt: skip
    """``freqs`` summed at ``dbfs`` (each), ``on_s`` on and ``off_s`` off, for ``total_s``."""
    t = np.arange(round(total_s * RATE)) / RATE
    amp = 32768.0 * 10 ** (dbfs / 20)
    signal = np.zeros_like(t)
    for f in freqs:
        signal += amp * np.sin(2 * np.pi * f * t)
    if off_s > 0:
        signal *= (t % (on_s + off_s)) < on_s
    return np.asarray(np.clip(signal, -32768, 32767), dtype=np.int16)


def noise(rms: float, total_s: float, seed: int = 2) -> np.ndarray:
    out = np.random.default_rng(seed).normal(0.0, rms, round(total_s * RATE))
    return np.clip(out, -32768, 32767).astype(np.int16)


def dtmf(total_s: float) -> np.ndarray:
    """Digits 1-9 over and over, 100 ms each with 100 ms between, at -10 dBFS per tone."""
    rows, cols = (697, 770, 852), (1209, 1336, 1477)
    digit = [tones((r, c), -10, 0.1, 0.1, 0.2) for r in rows for c in cols]
    out = np.concatenate(digit * int(total_s / (0.2 * len(digit)) + 1))
    return out[: round(total_s * RATE)]


@dataclass(frozen=True, slots=True)
class Judged:
    speech_s: float
    silence_s: float

    @property
    def judged_s(self) -> float:
        return self.speech_s + self.silence_s


def vad_seconds() -> Judged:
    def get(verdict: str) -> float:
        value = REGISTRY.get_sample_value("sip_bridge_vad_audio_seconds_total",
                                          {"verdict": verdict})  # fmt: skip
        return value or 0.0

    return Judged(get("speech"), get("silence"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=10, help="prompts per talker call")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the other kinds")
    parser.add_argument("--config", metavar="FILE", help="YAML config (default: the defaults)")
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir())
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    require_prompts()
    cfg = load(args.config)
    prompts = [p for p in speech.select(args.prompts + 10, 2.0, 8.0) if not p.text.startswith("(")]
    prompts = prompts[: args.prompts]
    pcms = [p.pcm() for p in prompts]
    s = args.seconds
    kinds = [
        build_call(prompts, 0.0),
        build_call(prompts, 184.0),
        CallAudio("prompts back to back", join_with_silence(pcms, 0.2, 0.2, 0.2), []),
        CallAudio("line noise -45 dBFS alone", noise(184.0, s), []),
        CallAudio("hiss -25 dBFS", noise(1840.0, s), []),
        CallAudio("dial tone 350+440 Hz", tones((350, 440), -13, s, 0, s), []),
        CallAudio("ringback 2 s on 4 s off", tones((440, 480), -19, 2.0, 4.0, s), []),
        CallAudio("DTMF digits", dtmf(s), []),
    ]
    files = ensure_converted(args.cache_dir)
    model = MoonshineModel(files, choose_providers("cpu"), threads=cfg.inference.threads)
    vad = SileroVad(threads=1)
    settings = worker_settings(cfg, partials=False)
    g, v = cfg.media.silence_gate, cfg.vad
    print(f"gate {g.threshold_dbfs:g} dBFS, VAD threshold {v.threshold:g}; alerts under "
          f"{LOW:.0%} and over {HIGH:.0%} (15 min)")  # fmt: skip
    print(f"{'audio':<40} {'call s':>7} {'judged s':>9} {'per s':>6} {'speech':>7}  alert")
    for call in kinds:
        label = f"prompts, half silent, {call.label}" if call.spans else call.label
        call_id = wire.new_call_id()
        media = media_side(call, cfg, call_id)
        before = vad_seconds()
        offline = OfflineCall(settings, model, vad, RATE, call_id)
        for tick in media.ticks:
            offline.tick(tick)
        offline.finish(media.frames * FRAME)
        after = vad_seconds()
        judged = Judged(after.speech_s - before.speech_s, after.silence_s - before.silence_s)
        length = len(call.pcm) / RATE
        ratio = judged.speech_s / judged.judged_s if judged.judged_s else float("nan")
        alert = ("no speech" if ratio < LOW else "only speech" if ratio > HIGH else "-") \
            if judged.judged_s else "(nothing judged)"  # fmt: skip
        print(f"{label:<40} {length:>7.1f} {judged.judged_s:>9.1f} "
              f"{judged.judged_s / length:>6.2f} {ratio:>7.1%}  {alert}")  # fmt: skip


if __name__ == "__main__":
    main()
