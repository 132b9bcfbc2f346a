"""What a worker does with its calls, without its sockets: audio in, utterances cut, decoded, out.

:class:`Transcriber` owns every call a worker holds: its Silero VAD stream and
:class:`~media.endpointing.Endpointer`, the finals queued in the
:class:`~inference.batching.Batcher`, the partials the
:class:`~inference.partial_scheduler.PartialScheduler` picks (run on the
:class:`~inference.partial_runner.PartialRunner`'s thread), early finals and turn ends. The
ZeroMQ loop around it (:mod:`inference.worker`) decodes wire messages and hands them to
:meth:`~Transcriber.start`, :meth:`~Transcriber.audio` and :meth:`~Transcriber.end`, calls
:meth:`~Transcriber.tick` once a turn, and sends whatever it passes to ``emit``: every result to
the media process named in its call's ``CallStart``. Every call gets exactly one ``CallDone``,
after its last final.

Failover support: every result carries the call's *epoch* (its placement number); a call moved
here from a dead worker starts at the ``CallStart``'s resume offset and utterance number; finals
carry their end offset and, between utterances, :class:`~media.wire.Checkpoint` messages tell the
media side which audio it no longer needs to keep for a replay.

No sockets, no threads of its own but the partial runner's, time from the ``clock`` it is given.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import soxr

from inference import metrics
from inference.batching import Batcher, Request
from inference.call_state import CallState, EarlyFinal, Job
from inference.partial_runner import PartialRunner
from inference.partial_scheduler import Growing, PartialPolicy, PartialScheduler
from inference.silero import SileroVad, window_size
from inference.speech_model import (
    DraftedStreams,
    SpeechModel,
    StreamingSpeechModel,
    StreamStep,
    Transcription,
)
from inference.worker_settings import WorkerSettings, WorkerStats
from media import wire
from media.endpointing import Endpointer, UtteranceEnded

log = logging.getLogger(__name__)

MODEL_RATE = 16000

# A result for the media process at ``reply_to``, about ``call``; False: it was not taken.
Emit = Callable[[str, str, wire.Message], bool]


class Transcriber:
    def __init__(
        self,
        settings: WorkerSettings,
        model: SpeechModel | StreamingSpeechModel,
        vad: SileroVad,
        emit: Emit,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``model`` decodes every utterance as a stream: an offline ``SpeechModel`` is wrapped
        in ``DraftedStreams``. ``emit`` takes each result as it is made."""
        self.settings = settings
        self.model: StreamingSpeechModel = (
            model if isinstance(model, StreamingSpeechModel) else DraftedStreams(model)
        )
        self.vad = vad
        self.clock = clock
        self._emit = emit
        self.batcher = Batcher(settings.policy)
        self.calls: dict[str, CallState] = {}
        self.stats = WorkerStats()
        self._next_idle_check = 0.0
        self.scheduler = PartialScheduler(
            PartialPolicy(
                min_interval_s=settings.partial_interval_s,
                min_new_audio_s=settings.partial_min_new_s,
                max_batch=settings.policy.max_batch,
                cpu_share=settings.partial_cpu_share,
            )
        )
        # Read by the heartbeat thread (a plain attribute read is atomic in CPython).
        self.model_seconds_total = 0.0
        self._partials: PartialRunner | None = None
        if settings.partial_interval_s > 0 and settings.partial_nice is not None:
            self._partials = PartialRunner(self.model, settings.partial_nice)

    def tick(self, now: float) -> None:
        """One turn, after the loop handed over what it received and ran :meth:`run_vad`:
        idle calls, checkpoints, turn ends, early finals, and at most one batch of finals,
        else partials."""
        if now >= self._next_idle_check:
            self._next_idle_check = now + 1.0
            self.expire_idle_calls(now)
            self.send_checkpoints()
            self._sync_metrics()
        self._collect_partials()
        self.end_turns()
        self.speculate(now)
        coming = self._final_imminent()
        batch = self.batcher.next_batch(now, nothing_coming=not coming)
        if batch:
            _observe(batch, now)
            self.run_batch(batch)
        else:
            self.schedule_partials(now)

    def next_due(self, now: float) -> float | None:
        """When the next batch or the partial budget's wait is due (None: nothing is)."""
        due = self.batcher.deadline()
        partials_due = self.scheduler.next_start()
        if partials_due > now:  # the budget's wait ends then (a past one is no reason to wake)
            due = partials_due if due is None else min(due, partials_due)
        return due

    def close(self) -> None:
        if self._partials is not None:
            self._partials.stop()

    def _send(self, call: CallState, msg: wire.Message) -> None:
        if not self._emit(call.reply_to, call.call_id, msg):
            self.stats.results_dropped += 1
            log.error("call %s: media process not reading results; %s dropped", call.call_id,
                      type(msg).__name__)  # fmt: skip

    # -- calls in -----------------------------------------------------------------------------

    def start(self, msg: wire.CallStart) -> None:
        if msg.sample_rate not in (8000, 16000):
            log.warning("call %s: unsupported sample rate %d", msg.call_id, msg.sample_rate)
            self.stats.bad_messages += 1
            return
        old = self.calls.get(msg.call_id)
        if old is not None:
            if msg.epoch <= old.epoch:
                log.warning("call %s: started twice (epoch %d); keeping epoch %d",
                            msg.call_id, msg.epoch, old.epoch)  # fmt: skip
                return
            # It left this worker (declared dead while stalled) and came back: start afresh.
            log.info("call %s: placed here again (epoch %d -> %d)", msg.call_id, old.epoch,
                     msg.epoch)  # fmt: skip
            self._forget(old)
        offset = msg.resume_offset
        self.calls[msg.call_id] = CallState(
            msg.call_id,
            msg.sample_rate,
            msg.reply_to,
            self.vad.new_stream(msg.sample_rate),
            Endpointer(
                msg.sample_rate,
                self.settings.endpointing,
                start_offset=offset,
                first_index=msg.first_utterance,
            ),  # fmt: skip
            window_size(msg.sample_rate),
            epoch=msg.epoch,
            pending_offset=offset,
            next_offset=offset,
            last_seen=self.clock(),
            next_final=msg.first_utterance,
            checkpoint=offset,
        )
        if msg.epoch:
            self.stats.resumed_calls += 1
            log.info(
                "call %s: resumed here (sip %s, %d Hz, epoch %d) at %.2f s, utterance %d",
                msg.call_id, msg.sip_call_id, msg.sample_rate, msg.epoch,
                offset / msg.sample_rate, msg.first_utterance,
            )  # fmt: skip
        else:
            log.info("call %s: started (sip %s, %d Hz)", msg.call_id, msg.sip_call_id,
                     msg.sample_rate)  # fmt: skip

    def _forget(self, call: CallState) -> None:
        """Drop a call's state without results (its queued work is skipped when it runs)."""
        del self.calls[call.call_id]
        self.batcher.discard(lambda r: isinstance(r.payload, Job) and r.payload.owner is call)

    def audio(self, msg: wire.Audio) -> None:
        call = self.calls.get(msg.call_id)
        if call is None or call.ending:
            self.stats.unknown_call += 1
            return
        if msg.epoch != call.epoch:
            self.stats.stale_messages += 1
            return
        if msg.sample_rate != call.sample_rate:
            self.stats.bad_messages += 1
            return
        call.last_seen = self.clock()
        if msg.offset < call.next_offset:  # overlapping or repeated audio: keep what is new
            skip = call.next_offset - msg.offset
            if skip >= msg.samples:
                return
            pcm = np.frombuffer(msg.pcm, dtype="<i2")[skip:]
            offset = call.next_offset
        else:
            pcm = np.frombuffer(msg.pcm, dtype="<i2")
            offset = msg.offset
        if offset > call.next_offset:  # suppressed silence: VAD what came before, then the gap
            self._vad_one(call)
            call.vad.reset()
            self._on_events(call, call.endpointer.gap(offset))
        if len(pcm) == 0:  # a time mark: the call got this far in silence
            call.next_offset = offset
            return
        if not call.pending:
            call.pending_offset = offset
        call.pending.append(pcm)
        call.next_offset = offset + len(pcm)

    def end(self, msg: wire.CallEnd) -> None:
        call = self.calls.get(msg.call_id)
        if call is None:
            self.stats.unknown_call += 1
            return
        if msg.epoch != call.epoch:
            self.stats.stale_messages += 1
            return
        self._finish_call(call)

    def _finish_call(self, call: CallState) -> None:
        self._vad_one(call)
        call.ending = True
        self._on_events(call, call.endpointer.flush())
        self._maybe_done(call)

    @staticmethod
    def _take(call: CallState) -> np.ndarray | None:
        if not call.pending:
            return None
        pcm = call.pending[0] if len(call.pending) == 1 else np.concatenate(call.pending)
        call.pending = []
        return pcm

    def _feed(self, call: CallState, pcm: np.ndarray, probs: np.ndarray) -> None:
        verdicts = probs.tolist()
        speech = sum(p >= call.endpointer.settings.threshold for p in verdicts)
        seconds = call.window / call.sample_rate
        if speech:
            metrics.VAD_AUDIO_SECONDS.labels("speech").inc(speech * seconds)
        if len(verdicts) > speech:
            metrics.VAD_AUDIO_SECONDS.labels("silence").inc((len(verdicts) - speech) * seconds)
        events = call.endpointer.push(pcm, call.pending_offset, verdicts, call.window)
        call.pending_offset += len(pcm)
        self._on_events(call, events)

    def _vad_one(self, call: CallState) -> None:
        """VAD this one call's pending audio now (before a gap or the end)."""
        pcm = self._take(call)
        if pcm is not None:
            (probs,) = self.vad.probabilities([(call.vad, pcm)])
            self._feed(call, pcm, probs)

    def run_vad(self) -> None:
        """One batched VAD pass over every call's pending audio."""
        items: list[tuple[CallState, np.ndarray]] = []
        for call in self.calls.values():
            if not call.ending and call.vad.pending_windows(sum(map(len, call.pending))):
                pcm = self._take(call)
                if pcm is not None:
                    items.append((call, pcm))
        if not items:
            return
        probs = self.vad.probabilities([(c.vad, pcm) for c, pcm in items])
        for (call, pcm), p in zip(items, probs, strict=True):
            self._feed(call, pcm, p)

    def _on_events(self, call: CallState, events: list[Any]) -> None:
        for event in events:
            if isinstance(event, UtteranceEnded):
                self.stats.utterances += 1
                metrics.UTTERANCES.labels(event.reason).inc()
                if self._promote(call, event):
                    continue
                audio = self._model_audio(event.audio, call.sample_rate)
                job = Job(
                    call, call.call_id, event.index, event.start_sample, event.end_sample,
                    event.speech_end_sample, True, audio, state=self._stream(call, event.index),
                )  # fmt: skip
                call.outstanding += 1
                key = (call.call_id, event.index)
                self.batcher.add(Request(key, len(audio), self.clock(), True, job))

    @staticmethod
    def _model_audio(pcm: np.ndarray, rate: int) -> np.ndarray:
        audio = pcm.astype(np.float32) / 32768.0
        if rate != MODEL_RATE:
            audio = soxr.resample(audio, rate, MODEL_RATE).astype(np.float32, copy=False)
        return audio

    def speculate(self, now: float) -> None:
        """Start decoding a pausing utterance's final before the pause has lasted long enough
        to end it.

        Once the end padding after the speech has been heard, the endpointer knows exactly which
        audio the final will hold if the pause lasts (``provisional_end``). Decoding it now, with
        a final's priority, hides the model's time inside the ``min_silence_ms`` wait: when the
        utterance ends there, its final is ready or nearly so. If speech resumes instead, the
        decoding is not wasted entirely: it goes out as a partial.
        """
        if not self.settings.early_finals:
            return
        for call in self.calls.values():
            if call.ending:
                continue
            guess = call.endpointer.provisional_end()
            spec = call.spec
            if spec is not None and not spec.promoted:
                if guess is not None and (spec.index, spec.start, spec.end) == guess[:3]:
                    continue
                self._drop_spec(call)
            if guess is None or call.spec is not None:
                continue
            index, start, end, speech_end = guess
            call.spec = EarlyFinal(index, start, end)
            audio = self._model_audio(call.endpointer.audio_until(end), call.sample_rate)
            job = Job(call, call.call_id, index, start, end, speech_end, False, audio, True,
                       self._stream(call, index))  # fmt: skip
            key = (call.call_id, index, "early")
            self.batcher.add(Request(key, len(audio), now, True, job))

    def _drop_spec(self, call: CallState) -> None:
        spec = call.spec
        if spec is None:
            return
        call.spec = None
        self.stats.early_finals_wasted += 1
        self.batcher.discard(
            lambda r: isinstance(r.payload, Job) and r.payload.owner is call
            and r.payload.speculative
        )  # fmt: skip

    def _promote(self, call: CallState, event: UtteranceEnded) -> bool:
        """The utterance ended where its early final was cut: that decoding is its final."""
        spec = call.spec
        if spec is None or spec.promoted:
            return False
        if (spec.index, spec.start, spec.end) != (event.index, event.start_sample,
                                                  event.end_sample):  # fmt: skip
            self._drop_spec(call)
            return False
        self.stats.early_finals_used += 1
        call.outstanding += 1
        if spec.result is None:
            spec.promoted = True  # it is queued: its result will be the final
        else:
            call.spec = None
            self._final_ready(call, spec.result)
        return True

    def _final_ready(self, call: CallState, msg: wire.Transcript) -> None:
        call.outstanding -= 1
        call.held[msg.utterance] = msg
        self._release_finals(call)
        self._maybe_done(call)

    def _stream(self, call: CallState, index: int) -> Any:
        """Utterance ``index``'s stream state, opened on first use."""
        if call.stream_index != index:
            call.stream_index, call.stream = index, self.model.open_stream()
            call.captioned, call.last_partial_at = 0, None
        return call.stream

    def end_turns(self) -> None:
        """Finals whose early decoding says the turn is over go out now, not after
        ``min_silence_ms`` (see ``turn_taking``)."""
        for call in list(self.calls.values()):
            spec = call.spec
            if call.ending or spec is None or spec.promoted or spec.result is None:
                continue
            pause_ms = call.endpointer.pause_samples * 1000 / call.sample_rate
            if self.settings.turn.turn_over(spec.result.text, pause_ms):
                events = call.endpointer.end_turn()
                if events:
                    self.stats.turns_ended_early += 1
                    self._on_events(call, events)

    def schedule_partials(self, now: float) -> None:
        """Start the partials the scheduler picks, if the partial thread is free.

        Candidates are the open utterances that are not pausing (a pausing one's early final is
        near, and is sent as its partial meanwhile). Without the partial thread
        (``partial_nice`` None) they run here, in the loop, only while no final waits.
        """
        runner = self._partials
        if not self.scheduler.policy.enabled or (runner is not None and runner.busy):
            return
        if runner is None and self.batcher.finals_waiting:
            return  # in the loop, a partial would delay the finals
        growing: list[Growing] = []
        current: dict[str, tuple[int, np.ndarray]] = {}
        for call in self.calls.values():
            if call.ending or call.endpointer.pausing:
                continue
            utterance = call.endpointer.current_utterance()
            if utterance is None:
                continue
            current[call.call_id] = utterance
            index = call.endpointer.next_index - 1
            self._stream(call, index)
            rate = call.sample_rate
            growing.append(Growing(call.call_id, len(utterance[1]) / rate, call.captioned / rate,
                                   call.last_partial_at))  # fmt: skip
        jobs: list[Job] = []
        for call_id in self.scheduler.choose(growing, now):
            call = self.calls[str(call_id)]
            start, pcm = current[call.call_id]
            end = start + len(pcm)
            audio = self._model_audio(pcm, call.sample_rate)
            jobs.append(Job(call, call.call_id, call.stream_index, start, end, end, False,
                             audio, state=call.stream))  # fmt: skip
            call.captioned, call.last_partial_at = len(pcm), now
        if not jobs:
            return
        metrics.BATCH_SIZE.labels("partial").observe(len(jobs))
        steps = [StreamStep(j.state, j.audio) for j in jobs]
        if runner is not None:
            runner.submit(jobs, steps)
            return
        t0 = time.perf_counter()
        results = self.model.step(steps)
        spent = time.perf_counter() - t0
        self.scheduler.ran(spent, self.clock())
        self._deliver(jobs, results, spent)

    def run_batch(self, batch: list[Request]) -> None:
        jobs = [r.payload for r in batch if isinstance(r.payload, Job)]
        t0 = time.perf_counter()
        results = self.model.step([StreamStep(j.state, j.audio, final=True) for j in jobs])
        self._deliver(jobs, results, time.perf_counter() - t0)

    def _collect_partials(self) -> None:
        runner = self._partials
        done = runner.poll() if runner is not None else None
        if done is not None:
            self.scheduler.ran(done.seconds, self.clock())
            self._deliver(done.token, done.results, done.seconds)

    def _deliver(
        self, jobs: list[Job], results: list[tuple[Transcription, Any]], spent: float
    ) -> None:
        self.stats.batches += 1
        self.stats.batch_items += len(jobs)
        self.stats.model_seconds += spent
        metrics.MODEL_SECONDS.labels(_kind(any(j.final or j.speculative for j in jobs))).inc(spent)
        self.model_seconds_total += spent  # read by the heartbeat thread
        self.stats.audio_seconds += sum(len(j.audio) for j in jobs) / MODEL_RATE
        log.debug("batch of %d (%d finals) in %.0f ms", len(jobs), sum(j.final for j in jobs),
                  spent * 1000)  # fmt: skip
        for job, (result, state) in zip(jobs, results, strict=True):
            call = self.calls.get(job.call_id)
            if call is None or call is not job.owner:
                continue
            if not job.final and call.stream_index == job.utterance:
                call.stream = state  # the next decoding of this utterance starts from it
            rate = call.sample_rate
            msg = wire.Transcript(
                job.call_id, job.utterance, job.final, result.text.strip(),
                job.start / rate, job.end / rate, result.confidence, job.speech_end,
                job.end if job.final else 0, call.epoch,
            )  # fmt: skip
            if job.speculative:
                self._early_final_done(call, job, msg)
            elif job.final:
                self._final_ready(call, msg)
            elif self._partial_useful(job):
                self.stats.partials += 1
                if msg.text:
                    self._send(call, msg)
            else:
                self.stats.partials_dropped += 1

    def _early_final_done(self, call: CallState, job: Job, msg: wire.Transcript) -> None:
        spec = call.spec
        if spec is None or (spec.index, spec.start, spec.end) != (job.utterance, job.start,
                                                                  job.end):  # fmt: skip
            return  # superseded while it ran
        final = dataclasses.replace(msg, final=True, end_offset=job.end)
        if spec.promoted:
            call.spec = None
            self._final_ready(call, final)
            return
        spec.result = final
        # Until the pause decides, it is also the freshest partial of the utterance.
        if msg.text and not call.ending and job.utterance >= call.next_final:
            self.stats.partials += 1
            self._send(call, msg)
        self.end_turns()

    def _release_finals(self, call: CallState) -> None:
        while call.next_final in call.held:
            msg = call.held.pop(call.next_final)
            call.next_final += 1
            call.checkpoint = max(call.checkpoint, msg.end_offset)
            self._send(call, msg)
            log.info("call %s: utterance %d final %.2f-%.2f s: %r", call.call_id,
                     msg.utterance, msg.start, msg.end, msg.text)  # fmt: skip

    def _maybe_done(self, call: CallState) -> None:
        if self.calls.get(call.call_id) is not call:
            return  # done already: its end promoted an early final that was ready (see end)
        if call.ending and call.outstanding == 0:
            for index in sorted(call.held):  # only if an index was skipped: never hold forever
                call.next_final = index
                self._release_finals(call)
            self._send(call, wire.CallDone(call.call_id, call.epoch))
            del self.calls[call.call_id]
            log.info("call %s: done", call.call_id)

    def send_checkpoints(self) -> None:
        """Between utterances, with every final sent, tell each call's media side how much of its
        audio no later utterance can need (it keeps that audio to replay to another worker)."""
        interval = self.settings.checkpoint_interval_s
        for call in self.calls.values():
            ep = call.endpointer
            if call.ending or call.outstanding or call.held or ep.in_utterance:
                continue
            offset = ep.safe_offset
            if offset - call.checkpoint < interval * call.sample_rate:
                continue
            call.checkpoint = offset
            self._send(call, wire.Checkpoint(call.call_id, offset, ep.next_index, call.epoch))

    def expire_idle_calls(self, now: float) -> None:
        limit = self.settings.call_idle_timeout_s
        for call in list(self.calls.values()):
            if not call.ending and now - call.last_seen > limit:
                self.stats.expired_calls += 1
                log.warning("call %s: nothing received for %.0f s; ending it", call.call_id, limit)
                self._finish_call(call)

    def _sync_metrics(self) -> None:
        st = self.stats
        for reason, total in (
            ("bad_message", st.bad_messages), ("stale_message", st.stale_messages),
            ("unknown_call", st.unknown_call), ("partial_too_late", st.partials_dropped),
            ("results_not_read", st.results_dropped), ("bad_reply_to", st.bad_reply_to),
        ):  # fmt: skip
            metrics.sync_counter(metrics.WORKER_DROPS, reason, total)

    def _partial_useful(self, job: Job) -> bool:
        """Is a partial's answer still worth sending? Not once its utterance has ended or
        pauses (its final is due), nor for a call that is ending or was replaced."""
        call = self.calls.get(job.call_id)
        if call is None or call is not job.owner or call.ending:
            return False
        ep = call.endpointer
        return ep.in_utterance and not ep.pausing and job.utterance == ep.next_index - 1

    def _final_imminent(self) -> bool:
        """Could another call's final (or early final) be ready within the batching wait?

        Only then is waiting for it worth the latency: a final comes only after a pause of
        ``speech_pad_ms`` (early finals) or ``min_silence_ms``, so a call that is not pausing, or
        has paused for much less than that, sends nothing to batch with in time.
        """
        s = self.settings.endpointing
        wait_ms = self.batcher.policy.max_wait_ms
        for call in self.calls.values():
            ep = call.endpointer
            if call.ending or not ep.pausing or call.spec is not None:
                continue
            due_ms = s.speech_pad_ms if self.settings.early_finals else s.min_silence_ms
            if due_ms - ep.pause_samples * 1000 / call.sample_rate <= wait_ms:
                return True
        return False

    def backlog_s(self) -> float:
        """Audio waiting for the model, in seconds (a snapshot; safe from another thread)."""
        return self.batcher.waiting_samples() / MODEL_RATE


def _kind(final: bool) -> str:
    return "final" if final else "partial"


def _observe(batch: list[Request], now: float) -> None:
    """A batch is about to run: its size and how long each clip waited for it."""
    if not batch:
        return
    metrics.BATCH_SIZE.labels(_kind(any(r.final for r in batch))).observe(len(batch))
    for r in batch:
        metrics.QUEUE_WAIT.labels(_kind(r.final)).observe(max(0.0, now - r.ready_at))
