"""The worker's core without its sockets: real Silero VAD on recorded prompts, a fake model that
says how much audio it got, a fake clock, and ``emit`` collecting what would go out."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from inference.batching import BatchPolicy
from inference.silero import SileroVad
from inference.speech_model import Transcription
from inference.transcriber import Transcriber
from inference.worker_settings import WorkerSettings
from media import wire
from tests.support import speech
from tests.support.requirements import NEEDS_PROMPTS
from tests.support.rtp_pcap import join_with_silence

pytestmark = NEEDS_PROMPTS

RATE = 8000


class Lengths:
    """A ``SpeechModel`` whose answer is the clip's length in samples."""

    sample_rate = 16000

    def __init__(self) -> None:
        self.clips = 0

    def transcribe(
        self, clips: Sequence[np.ndarray], drafts: Sequence[Sequence[int]] | None = None
    ) -> list[Transcription]:
        self.clips += len(clips)
        return [Transcription(str(c.size), 1.0, 1) for c in clips]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run_call(core: Transcriber, clock: Clock, pcm: np.ndarray, call_id: str = "c1") -> None:
    """Feed a call in 20 ms frames on the fake clock, ticking after each, then end it."""
    core.start(wire.CallStart(call_id, RATE, "inproc://media-0", "sip-1"))
    frame = RATE // 50
    for off in range(0, len(pcm) - frame + 1, frame):
        core.audio(wire.Audio(call_id, off, RATE, pcm[off : off + frame].tobytes()))
        clock.now += 0.02
        core.run_vad()
        core.tick(clock.now)
    core.end(wire.CallEnd(call_id, len(pcm) // frame * frame, RATE))
    for _ in range(50):  # let the batcher's wait pass: each tick runs at most one batch
        clock.now += 0.05
        core.tick(clock.now)


def make(emit_ok: bool = True) -> tuple[Transcriber, Clock, list[tuple[str, wire.Message]]]:
    sent: list[tuple[str, wire.Message]] = []

    def emit(reply_to: str, call_id: str, msg: wire.Message) -> bool:
        sent.append((reply_to, msg))
        return emit_ok

    clock = Clock()
    settings = WorkerSettings("inproc://unused", BatchPolicy(max_batch=4, max_wait_ms=20),
                              partial_interval_s=0.0)  # fmt: skip
    return Transcriber(settings, Lengths(), SileroVad(), emit, clock), clock, sent


def test_finals_in_order_then_one_call_done_to_the_calls_media_process() -> None:
    prompts = speech.select(3)
    pcm = join_with_silence([p.pcm() for p in prompts], gap_s=1.2)
    core, clock, sent = make()
    run_call(core, clock, pcm)
    assert {to for to, _ in sent} == {"inproc://media-0"}
    finals = [m for _, m in sent if isinstance(m, wire.Transcript) and m.final]
    assert [m.utterance for m in finals] == list(range(len(prompts)))
    # each final holds about its prompt (16 kHz samples: twice the 8 kHz prompt, plus padding)
    for final, prompt in zip(finals, prompts, strict=True):
        assert 2 * prompt.pcm().size <= int(final.text) <= 2 * prompt.pcm().size + 2 * RATE
    done = [m for _, m in sent if isinstance(m, wire.CallDone)]
    assert len(done) == 1 and isinstance(sent[-1][1], wire.CallDone)
    assert not core.calls


def test_results_the_media_process_does_not_take_are_counted() -> None:
    pcm = join_with_silence([speech.select(1)[0].pcm()])
    core, clock, sent = make(emit_ok=False)
    run_call(core, clock, pcm)
    assert sent and core.stats.results_dropped == len(sent)
    assert not core.calls  # the call is still finished, not held forever


def test_hang_up_while_the_early_final_is_ready_gives_one_final_and_one_call_done() -> None:
    """The caller hangs up 300 ms after the last word: the early final was decoded during the
    pause, so the end promotes it at once. That used to finish the call twice (a second
    CallDone, then a KeyError that stopped the worker's loop)."""
    prompt = speech.select(1)[0]
    pcm = join_with_silence([prompt.pcm()], tail_s=0.3)
    core, clock, sent = make()
    run_call(core, clock, pcm)
    assert core.stats.early_finals_used == 1
    kinds = [type(m).__name__ + ("/final" if getattr(m, "final", False) else "") for _, m in sent]
    assert kinds.count("Transcript/final") == 1
    assert kinds.count("CallDone") == 1 and kinds[-1] == "CallDone"
