"""Taking a call's audio out of PJSIP: the first half of the one thread boundary for audio.

:class:`CallAudioPort` receives each 20 ms frame of a call in ``onFrameReceived``, on PJSIP's
``clock`` thread with the GIL held. It only copies the PCM (fast path, ~3 µs) and puts it on the
:class:`~sip_bridge.uplink.audio_sender.AudioSender`'s queue; anything slower there would lose
frames for every call of the process. :func:`release` is how every pjsua2 object of ours is freed.
"""

from __future__ import annotations

import queue
from typing import Any

import pjsua2 as pj

from sip_bridge.calls.frame_copy import Copier
from sip_bridge.uplink.audio_sender import Item

# The sender's queue is a SimpleQueue (its put is the cheapest there is) with no bound of its
# own: past this many items (about 30 s of audio of a full wheel process) the tap drops frames
# and counts them, rather than let a stuck sender eat the host's memory.
MAX_QUEUED = 6000


class CallAudioPort(pj.AudioMediaPort):  # type: ignore[misc]
    """Taps one call's received audio. Destroy it explicitly (``destroy()``) while still held."""

    dropped = 0  # frames dropped with the queue full, by every port of the process

    def __init__(self, call_id: str, out: queue.SimpleQueue[Item], copy: Copier) -> None:
        super().__init__()
        self.call_id = call_id
        self._out = out
        self._copy = copy

    def onFrameReceived(self, frame: Any) -> None:  # noqa: N802 (PJSUA2 name)
        # PJSIP clock thread: a copy and a non-blocking put, nothing else.
        if frame.type == pj.PJMEDIA_FRAME_TYPE_AUDIO:
            if self._out.qsize() < MAX_QUEUED:
                self._out.put((self.call_id, self._copy(frame)))
            else:
                CallAudioPort.dropped += 1

    def destroy(self) -> None:
        release(self)


def release(obj: Any) -> None:
    """Delete the C++ object behind a pjsua2 proxy now, while Python still holds the proxy.

    Never leave a port, call or account to the reference count: SWIG's delete releases the GIL
    before the C++ destructor unhooks the object, and in that window PJSIP's clock thread can call
    the director (``onFrameReceived``) with a borrowed pointer to a proxy being deallocated, which
    frees it twice and corrupts the heap (reproduced: about one crash in 3,000 calls). Deleted
    explicitly, the proxy stays alive through any such call, and owns nothing afterwards, so
    whichever thread frees it later touches no pjsua2 state. Safe to call twice.
    """
    if obj is not None and obj.thisown:
        obj.__swig_destroy__(obj)
