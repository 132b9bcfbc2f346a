"""SRTP with SDES keys (issue 6, point 4) through a real ``sip-bridge serve``: baresip offers
RTP/SAVP only (``mediaenc=srtp-mand``); the media process answers with its own crypto line and
the encrypted call is transcribed like any other. Plain-RTP calls are tested everywhere else
(SRTP is optional by default)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import speech
from tests.support.baresip import play_prompts
from tests.support.bridge import RunningBridge, serving
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (speech.available() and shutil.which("kamailio") and shutil.which("baresip")),
        reason="needs kamailio, baresip and asterisk-core-sounds-en-wav",
    ),
]


@pytest.fixture(scope="module")
def bridge(
    tmp_path_factory: pytest.TempPathFactory, receiver: WebhookReceiver
) -> Iterator[RunningBridge]:
    overrides = {"media": {"processes": 1}, "inference": {"workers": 1}}
    with serving(tmp_path_factory.mktemp("srtp"), overrides, receiver.url) as b:
        yield b


def test_an_srtp_only_offer_is_answered_with_srtp_and_transcribed(
    bridge: RunningBridge, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    prompts = speech.select(2, min_s=2.0, max_s=5.0, stride=37)
    uri = f"sip:transcribe@127.0.0.1:{bridge.port}"
    result = play_prompts(uri, prompts, tmp_path, mediaenc="srtp-mand")
    assert not result.timed_out and result.exit_code == 0, result.output[-3000:]
    assert receiver.wait_for(
        lambda posts: any(p.json()["type"] == "call.ended" for p in posts), timeout=30
    )
    (ended,) = [p.json() for p in receiver.posts if p.json()["type"] == "call.ended"]
    refs = " ".join(p.text for p in prompts)
    assert speech.wer([refs], [str(ended["text"])]) <= 0.3, ended["text"]
    # baresip says so once both sides' keys are in place (the answer carried our a=crypto).
    assert re.search(r"SRTP is Enabled \(cryptosuite=\w+\)", result.output), result.output[-2000:]
