"""What the integration tests need on the host, each need written once with its reason: a test
module lists in its ``pytestmark`` the ones it needs, and skips where the host lacks one (in CI
a missing one fails the run instead: tests/conftest.py). A need only one module has stays in
that module."""

from __future__ import annotations

import shutil

import pytest

from tests.support import speech
from tests.support.sipp import can_play_pcap

# ``sip-bridge serve`` (its front is Kamailio) called by sipp playing the recorded prompts.
NEEDS_KAMAILIO_SIPP_AND_PROMPTS = pytest.mark.skipif(
    not (speech.available() and shutil.which("kamailio") and shutil.which("sipp")),
    reason="needs kamailio, sipp and asterisk-core-sounds-en-wav",
)
# sipp plays a pcap's RTP through a raw socket.
NEEDS_PCAP_PLAYBACK = pytest.mark.skipif(
    not can_play_pcap(), reason="sipp needs CAP_NET_RAW to play pcap audio"
)
# One media process on its own, called straight by sipp playing the recorded prompts.
NEEDS_SIPP_PCAP_AND_PROMPTS = pytest.mark.skipif(
    not (speech.available() and shutil.which("sipp") and can_play_pcap()),
    reason="needs sipp (with CAP_NET_RAW) and asterisk-core-sounds-en-wav",
)
# The recorded prompts and their transcripts only (the model, the VAD, a worker).
NEEDS_PROMPTS = pytest.mark.skipif(
    not speech.available(), reason="needs asterisk-core-sounds-en-wav"
)
