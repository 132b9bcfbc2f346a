"""What silence suppression and the VAD save on a call that is half silence: bytes and compute.

One call, built from recorded Asterisk prompts (8 kHz) joined by silences as long as the mean
prompt, so that the prompts fill half of it, is played once per noise variant (``--noise-rms``,
int16 RMS laid under the whole call): digital silence, a low noise floor the energy gate still
closes on, and line noise loud enough to hold the gate open. Everything runs offline, in this
process, with the product's own classes and config (``sip_bridge.settings.config`` defaults;
``--config``
reads a YAML file instead):

1. Media side: every 20 ms frame goes through ``media.silence_gate.SuppressedStream`` (the gate
   plus time marks through silence, as ``AudioSender`` uses it), and each run it returns becomes a
   ``wire.Audio`` encoded with ``media.wire.encode``. Against that: every frame sent, one message
   per frame, as without the gate.
2. Worker side: those messages go into a real ``inference.worker.Worker`` (``handle`` and
   ``step``; its sockets are in-process, its clock is the call's timeline, 20 ms per frame), which
   runs Silero VAD and the endpointer and hands utterances to Moonshine through its batcher, with
   the settings ``sip-bridge worker`` builds from the config. Run twice: finals only (partials
   off, no early finals), then as configured (partials every ``inference.partial_interval_ms``,
   early finals), partials in the loop. The clock stands still while the model runs, so partials
   come exactly at their cadence (as with a model that keeps up).
3. No VAD: the whole call, resampled as the worker does, cut into fixed windows of
   ``vad.max_utterance_s`` and transcribed one by one (batch 1, as a lone call's finals are).
   Moonshine answers nothing for most of them: it gives up on a clip that opens with more than
   about a second of silence. Its CPU is then low for want of words, so the compute table adds
   "no VAD, same words (est.)": its measured encoder time plus the VAD run's decoder time, a lower
   bound on what transcribing the call's words without VAD would cost (its decoder would attend to
   whole windows, not utterances).
4. The prompts cut exactly from the call: the model's own WER on this audio, for comparison.

Columns, compute table (one per variant):
    audio s    seconds of 16 kHz audio the model was given (partials and early finals included)
    clips      clips transcribed; model runs in brackets
    tokens     text tokens the model emitted
    model      CPU seconds of this process inside ``MoonshineModel.transcribe``
    enc        of which the encoder: the same clips re-run through the encoder alone (its own
               session, median of 3); it grows with the audio
    dec        model - enc: the decoder, which grows with the tokens (load noise lands here too)
    vad        CPU seconds inside ``SileroVad.probabilities`` (on what the gate let through)
    rest       the worker's other CPU: wire decoding, endpointing, resampling, batching
    WER        the texts joined in order, against the prompts' transcripts joined
    saved      finals with VAD against no VAD: audio, encoder CPU, and model CPU against the
               same-words estimate
Columns, wire table:
    speech     share of the call the prompts take (they include their own short pauses)
    frames     20 ms frames sent / all frames
    pcm kB     PCM bytes sent / all
    wire kB    bytes of the encoded messages (36-byte header + PCM; time marks are headers only)
               sent / one message per frame
    tcp kB     the same plus ZMTP framing (2 bytes per frame up to 255 bytes, 9 above): what the
               TCP stream carries, before TCP/IP headers
    msgs       messages sent (time marks included) / frames; marks = time marks
    saved      share of the tcp bytes the gate saves

CPU seconds (``time.process_time``, one ONNX Runtime thread) are what the figures compare: wall
time on a shared machine says little. It prints; nothing else in the project may.

Run from the repository root (needs ``asterisk-core-sounds-en-wav``; about 80 s on 2 cores,
``--quick`` about 15 s):
    .venv/bin/python -m bench.vad_savings
    .venv/bin/python -m bench.vad_savings --quick
    .venv/bin/python -m bench.vad_savings --prompts 8 --noise-rms 0,130 --no-partials --texts
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness.frames import FRAME, RATE, TICK_S
from bench.harness.gated_call import (
    CallAudio,
    MediaSide,
    build_call,
    media_side,
    worker_settings,
)
from bench.harness.offline_model import model_audio
from bench.harness.prompt_calls import require_prompts
from inference.file_pipeline import OfflineCall
from inference.model_files import ModelFiles, default_cache_dir, ensure_converted
from inference.moonshine import MIN_CLIP_SECONDS, MoonshineModel
from inference.providers import choose_providers, session_options
from inference.silero import SileroVad, VadStream
from inference.speech_model import Transcription
from inference.worker import MODEL_RATE
from media import wire
from sip_bridge.settings.config import Config
from sip_bridge.settings.loading import load
from tests.support import speech

# -- instrumented real parts ---------------------------------------------------------------------


class TimedModel:
    """``SpeechModel``: the real Moonshine model, keeping the clips and counting tokens and CPU."""

    def __init__(self, model: MoonshineModel) -> None:
        self.model = model
        self.cpu_s = 0.0
        self.runs = 0
        self.tokens = 0
        self.clips: list[np.ndarray] = []

    @property
    def sample_rate(self) -> int:
        return self.model.sample_rate

    def transcribe(
        self, clips: Sequence[np.ndarray], drafts: Sequence[Sequence[int]] | None = None
    ) -> list[Transcription]:
        started = time.process_time()
        out = self.model.transcribe(clips, drafts)
        self.cpu_s += time.process_time() - started
        self.runs += 1
        self.clips.extend(clips)
        self.tokens += sum(t.tokens for t in out)
        return out


class EncoderCost:
    """Moonshine's encoder alone, in a session of its own: what encoding some clips costs.

    The model's time splits into the encoder's, which grows with the audio, and the decoder's,
    which grows with the tokens it emits (and the audio they attend to). Re-running the encoder
    on the same clips, one by one, measures the first; the rest of the model's time is the
    second.
    """

    def __init__(self, files: ModelFiles, threads: int) -> None:
        self.session = ort.InferenceSession(
            str(files.encoder), session_options(threads), providers=["CPUExecutionProvider"]
        )

    def cpu_s(self, clips: Sequence[np.ndarray], repeats: int = 3) -> float:
        """CPU seconds to encode ``clips`` one by one: the median of ``repeats`` runs each."""
        spent = 0.0
        for clip in clips:
            if len(clip) < MIN_CLIP_SECONDS * MODEL_RATE:  # the model skips these too
                continue
            feed = {"input_values": np.asarray(clip, dtype=np.float32)[None]}
            runs = []
            for _ in range(repeats):
                started = time.process_time()
                self.session.run(None, feed)
                runs.append(time.process_time() - started)
            spent += float(np.median(runs))
        return spent


class TimedVad(SileroVad):
    """The real Silero VAD, counting the CPU time of its runs."""

    def __init__(self) -> None:
        super().__init__(threads=1)
        self.cpu_s = 0.0

    def probabilities(self, items: Sequence[tuple[VadStream, np.ndarray]]) -> list[np.ndarray]:
        started = time.process_time()
        out = super().probabilities(items)
        self.cpu_s += time.process_time() - started
        return out


# -- the call ------------------------------------------------------------------------------------


# -- the ways to transcribe it -------------------------------------------------------------------


@dataclass(slots=True)
class Compute:
    way: str
    texts: list[str]
    model: TimedModel
    vad_cpu_s: float = 0.0
    rest_cpu_s: float = 0.0
    encoder_cpu_s: float = 0.0
    utterances: int = 0
    early_used: int = 0
    early_wasted: int = 0

    @property
    def audio_s(self) -> float:
        return sum(len(c) for c in self.model.clips) / MODEL_RATE

    @property
    def decoder_cpu_s(self) -> float:
        return max(self.model.cpu_s - self.encoder_cpu_s, 0.0)


def with_vad(
    media: MediaSide, call_id: str, model: MoonshineModel, cfg: Config, partials: bool
) -> Compute:
    """Feed the media side's messages, tick by tick, into a real worker; collect its finals."""
    timed, vad = TimedModel(model), TimedVad()
    settings = worker_settings(cfg, partials)
    started = time.process_time()
    call = OfflineCall(settings, timed, vad, RATE, call_id)
    for tick in media.ticks:
        call.tick(tick)
    stats = call.worker.stats
    finals = call.finish(media.frames * FRAME)
    total = time.process_time() - started
    return Compute(
        "VAD, finals + partials" if partials else "VAD, finals only",
        [t.text for t in finals],
        timed,
        vad.cpu_s,
        total - timed.cpu_s - vad.cpu_s,
        utterances=stats.utterances,
        early_used=stats.early_finals_used,
        early_wasted=stats.early_finals_wasted,
    )


def without_vad(call: CallAudio, model: MoonshineModel, window_s: float) -> Compute:
    """The whole call in fixed windows of ``window_s``, one by one."""
    started = time.process_time()
    audio = model_audio(call.pcm)
    rest = time.process_time() - started
    timed = TimedModel(model)
    step = int(window_s * MODEL_RATE)
    texts = [timed.transcribe([audio[i : i + step]])[0].text for i in range(0, len(audio), step)]
    return Compute(f"no VAD, {window_s:g} s windows", texts, timed, rest_cpu_s=rest)


def prompts_cut(call: CallAudio, model: MoonshineModel) -> Compute:
    """Each prompt cut exactly from the call, one by one: the model's own WER on this audio."""
    timed = TimedModel(model)
    texts = [timed.transcribe([model_audio(call.pcm[a:b])])[0].text for a, b in call.spans]
    return Compute("prompts cut exactly", texts, timed)


# -- report --------------------------------------------------------------------------------------


def print_wire(rows: list[tuple[CallAudio, MediaSide]]) -> None:
    print("\nmedia -> worker, one call: sent through the energy gate / every frame (kB = 1000 B)")
    print(f"{'call':<22} {'length':>7} {'speech':>6} {'frames':>11} {'pcm kB':>13} "
          f"{'wire kB':>13} {'tcp kB':>13} {'msgs':>11} {'marks':>5} {'saved':>6}")  # fmt: skip
    for call, m in rows:
        length = m.frames * TICK_S
        print(
            f"{call.label:<22} {length:>6.1f}s {call.speech_s / length:>6.0%} "
            f"{m.frames_sent:>5}/{m.frames:<5} {m.pcm_sent / 1e3:>6.1f}/{m.pcm_bytes / 1e3:<6.1f} "
            f"{m.wire_sent / 1e3:>6.1f}/{m.wire_all / 1e3:<6.1f} "
            f"{m.tcp_sent / 1e3:>6.1f}/{m.tcp_all / 1e3:<6.1f} {m.messages:>5}/{m.frames:<5} "
            f"{m.time_marks:>5} {1 - m.tcp_sent / m.tcp_all:>6.0%}"
        )


def print_compute(
    call: CallAudio,
    media: MediaSide,
    base: Compute,
    cut: Compute,
    runs: list[Compute],
    ref: str,
) -> None:
    """``base``: no VAD; ``cut``: the prompts cut exactly; ``runs``: finals only, then partials."""
    length = media.frames * TICK_S
    print(f"\n{call.label}: {length:.1f} s call, {call.speech_s:.1f} s of prompts; gate "
          f"{media.gate_cpu_s * 1e6 / media.frames:.1f} us CPU per frame")  # fmt: skip
    print(f"  {'way':<26} {'audio s':>7} {'clips':>7} {'tokens':>6} {'model':>6} {'enc':>5} "
          f"{'dec':>5} {'vad':>5} {'rest':>5} {'WER':>6} {'audio':>6} {'enc':>5} "
          f"{'model':>5}")  # fmt: skip
    print(f"  {'':<26} {'':>7} {'(runs)':>7} {'':>6} {'------- CPU s -------':>29} "
          f"{'':>6} {'-- saved -----':>18}")  # fmt: skip
    finals = runs[0]
    # No VAD, had the model heard the same words: the whole call's encoding (measured) plus the
    # VAD run's decoding (a lower bound: there the decoder attends to whole windows).
    same_enc, same_dec = base.encoder_cpu_s, finals.decoder_cpu_s

    def row(w: Compute, name: str = "", audio_s: float = 0.0) -> str:
        if name:  # the estimate: no clips of its own
            return (
                f"  {name:<26} {audio_s:>7.1f} {'':>7} {finals.model.tokens:>6} "
                f"{same_enc + same_dec:>6.2f} {same_enc:>5.2f} {same_dec:>5.2f}"
            )
        wer = speech.wer([ref], [" ".join(w.texts)])
        clips = f"{len(w.model.clips)} ({w.model.runs})"
        return (
            f"  {w.way:<26} {w.audio_s:>7.1f} {clips:>7} {w.model.tokens:>6} "
            f"{w.model.cpu_s:>6.2f} {w.encoder_cpu_s:>5.2f} {w.decoder_cpu_s:>5.2f} "
            f"{w.vad_cpu_s:>5.2f} {w.rest_cpu_s:>5.2f} {wer:>6.1%}"
        )

    print(row(base))
    print(row(base, "no VAD, same words (est.)", base.audio_s))
    print(row(cut))
    print(
        row(finals) + f" {1 - finals.audio_s / base.audio_s:>6.0%} "
        f"{1 - finals.encoder_cpu_s / same_enc:>5.0%} "
        f"{1 - finals.model.cpu_s / (same_enc + same_dec):>5.0%}"
    )
    for w in runs[1:]:
        print(row(w))
        # every utterance ended as a final, decoded early (used) or not; the rest are partials
        partials = len(w.model.clips) - w.utterances - w.early_wasted
        print(f"  {'':<26} {partials} partials, {w.early_used} of {w.utterances} finals decoded "
              f"early, {w.early_wasted} early ones overtaken by speech; model CPU "
              f"{w.model.cpu_s / finals.model.cpu_s:.1f}x finals only")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=10, help="prompts in the call (default 10)")
    parser.add_argument(
        "--noise-rms",
        default="0,30,184",
        help="noise variants, int16 RMS under the whole call, comma-separated; 0 = digital "
        "silence, 30 = -61 dBFS (the gate closes), 184 = -45 dBFS (it stays open). "
        "Default 0,30,184",
    )
    parser.add_argument("--no-partials", action="store_true", help="skip the finals+partials run")
    parser.add_argument(
        "--quick", action="store_true", help="4 prompts, variants 0 and 184, no partials run"
    )
    parser.add_argument("--texts", action="store_true", help="print every way's texts")
    parser.add_argument("--config", metavar="FILE", help="YAML config (default: the defaults)")
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir())
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    require_prompts()
    count, levels, partials = args.prompts, args.noise_rms, not args.no_partials
    if args.quick:
        count, levels, partials = 4, "0,184", False
    noise = [float(x) for x in levels.split(",") if x.strip()]

    cfg = load(args.config)
    # select() also returns the "(4 seconds of silence)" prompt: no words to hear, skip it
    prompts = [p for p in speech.select(count + 10, 2.0, 8.0) if not p.text.startswith("(")]
    prompts = prompts[:count]
    ref = " ".join(p.text for p in prompts)
    files = ensure_converted(args.cache_dir)
    threads = cfg.inference.threads
    model = MoonshineModel(files, choose_providers("cpu"), threads=threads)
    encoder = EncoderCost(files, threads)
    warm = np.zeros(MODEL_RATE * 3, dtype=np.float32)
    model.transcribe([warm])  # first runs allocate
    encoder.cpu_s([warm])
    v, g = cfg.vad, cfg.media.silence_gate
    print(
        f"{count} prompts, Moonshine on the CPU ({threads} thread); gate {g.threshold_dbfs:g} "
        f"dBFS, hangover {g.hangover_ms} ms, preroll {g.preroll_ms} ms; VAD threshold "
        f"{v.threshold:g}, min silence {v.min_silence_ms} ms, pad {v.speech_pad_ms} ms, min "
        f"speech {v.min_speech_ms} ms, max utterance {v.max_utterance_s:g} s; partials every "
        f"{cfg.inference.partial_interval_ms} ms"
    )

    wire_rows: list[tuple[CallAudio, MediaSide]] = []
    for rms in noise:
        call = build_call(prompts, rms)
        call_id = wire.new_call_id()
        media = media_side(call, cfg, call_id)
        wire_rows.append((call, media))
        base = without_vad(call, model, v.max_utterance_s)
        cut = prompts_cut(call, model)
        runs = [with_vad(media, call_id, model, cfg, False)]
        if partials:
            runs.append(with_vad(media, call_id, model, cfg, True))
        for way in (base, cut, *runs):
            way.encoder_cpu_s = encoder.cpu_s(way.model.clips)
        print_compute(call, media, base, cut, runs, ref)
        if args.texts:
            for way in (base, cut, *runs):
                print(f"  {way.way}: {' | '.join(way.texts)}")
    print_wire(wire_rows)


if __name__ == "__main__":
    main()
