"""``sip-bridge demo``: call the running server like a PBX would and print the captions it sends
back into the call.

A PJSUA2 caller in this process: it dials the front, plays a wav file into the call (PJSIP's file
player, resampled to the codec), prints every INFO the bridge sends (``transcript.final``,
``dtmf``, partials if enabled) as it arrives, and hangs up a few seconds after the file ends. As in
the media process, every PJSUA2 call happens on this module's one thread (``threadCnt = 0``,
``libHandleEvents`` in a bounded loop); objects with callbacks are released explicitly.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pjsua2 as pj

from sip_bridge.calls.audio_tap import release

LINGER_S = 4.0  # after the file ends: the last utterance's silence wait, decode and INFO


@dataclass
class DemoResult:
    status: int = 0  # the INVITE's final answer
    captions: list[dict[str, Any]] = field(default_factory=list)
    ended: bool = False


class _Player(pj.AudioMediaPlayer):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.finished = False

    def onEof2(self) -> None:  # noqa: N802
        self.finished = True


class _Call(pj.Call):  # type: ignore[misc]
    def __init__(self, acc: Any, demo: _Demo) -> None:
        super().__init__(acc)
        self.demo = demo

    def onCallState(self, prm: Any) -> None:  # noqa: N802
        info = self.getInfo()
        if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.demo.result.ended = True
            self.demo.result.status = self.demo.result.status or info.lastStatusCode
        elif info.state == pj.PJSIP_INV_STATE_CONFIRMED:
            self.demo.result.status = 200

    def onCallMediaState(self, prm: Any) -> None:  # noqa: N802
        info = self.getInfo()
        for mi, media in enumerate(info.media):
            audio = media.type == pj.PJMEDIA_TYPE_AUDIO
            if audio and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE and self.demo.player is None:
                self.demo.start_playing(self.getAudioMedia(mi))

    def onCallTsxState(self, prm: Any) -> None:  # noqa: N802
        tsx = prm.e.body.tsxState.tsx
        if tsx.method != "INFO" or tsx.role != pj.PJSIP_ROLE_UAS:
            return
        if tsx.state != pj.PJSIP_TSX_STATE_TRYING:
            return
        whole = prm.e.body.tsxState.src.rdata.wholeMsg
        body = whole.replace("\r\n", "\n").split("\n\n", 1)[-1].strip()
        try:
            event = json.loads(body)
        except ValueError:
            return
        if isinstance(event, dict):
            self.demo.result.captions.append(event)
            self.demo.on_caption(event)


class _Demo:
    def __init__(self, wav: Path, on_caption: Callable[[dict[str, Any]], None]) -> None:
        self.wav = wav
        self.on_caption = on_caption
        self.result = DemoResult()
        self.player: _Player | None = None

    def start_playing(self, audio: Any) -> None:
        player = _Player()
        player.createPlayer(str(self.wav), pj.PJMEDIA_FILE_NO_LOOP)
        player.startTransmit(audio)
        self.player = player


@contextmanager
def _pjsip_start_up_silenced() -> Iterator[None]:
    """PJSIP prints its start-up lines (``pjlib 2.15.1 for POSIX initialized``, the endpoint
    and its modules) on stdout in ``libCreate``, before ``libInit`` can set its console level:
    send file descriptor 1 to /dev/null meanwhile, so that the demo's output is its captions."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def run(
    target: str, wav: Path, on_caption: Callable[[dict[str, Any]], None], timeout_s: float
) -> DemoResult:
    """Call ``target`` (a SIP URI), play ``wav``, collect the captions; hang up ``LINGER_S``
    after the file ends (or at ``timeout_s``)."""
    ep = pj.Endpoint()
    with _pjsip_start_up_silenced():
        ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.uaConfig.userAgent = "sip-bridge demo"
    cfg.logConfig.level = 1
    cfg.logConfig.consoleLevel = 1
    cfg.medConfig.noVad = True
    ep.libInit(cfg)
    ep.audDevManager().setNullDev()
    tcfg = pj.TransportConfig()
    tcfg.port = 0
    tcfg.boundAddress = "127.0.0.1" if "127." in target else ""
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
    ep.libStart()
    acc = pj.Account()
    acfg = pj.AccountConfig()
    acfg.idUri = "sip:demo@127.0.0.1"
    acc.create(acfg, True)
    demo = _Demo(wav, on_caption)
    call = _Call(acc, demo)
    try:
        call.makeCall(target, pj.CallOpParam(True))
        deadline = time.monotonic() + timeout_s
        hangup_at: float | None = None
        while not demo.result.ended and time.monotonic() < deadline:
            ep.libHandleEvents(20)
            if hangup_at is None and demo.player is not None and demo.player.finished:
                hangup_at = time.monotonic() + LINGER_S
            if hangup_at is not None and time.monotonic() >= hangup_at:
                call.hangup(pj.CallOpParam(True))
                hangup_at = deadline + 1  # once
        if not demo.result.ended:
            call.hangup(pj.CallOpParam(True))
            for _ in range(100):  # let the BYE go out
                ep.libHandleEvents(10)
                if demo.result.ended:
                    break
        return demo.result
    finally:
        release(demo.player)
        demo.player = None
        release(call)
        acc.shutdown()
        release(acc)
        gc.collect()
        ep.libDestroy()
