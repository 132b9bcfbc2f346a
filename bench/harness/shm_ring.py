"""A single-producer single-consumer ring of audio messages in shared memory, one process at
each end: the transport bench's alternative to ZeroMQ.

Fixed 384-byte slots (u32 length, the wire header, PCM), a write counter the producer publishes
after the slot is written and a read counter the consumer publishes after it has copied the
slots out, so a slot is never reused under the reader. The counters are aligned 8-byte stores
through a ``memoryview``; on x86-64 (TSO) stores are seen in program order, which is what makes
"write the slot, then publish the counter" safe without a fence. On a weakly ordered CPU (ARM)
the ring would need real release/acquire atomics.
"""

from __future__ import annotations

import struct
from multiprocessing.shared_memory import SharedMemory
from typing import Final

from media import wire

_LEN = struct.Struct("<I")
_HEAD_IX: Final = 0  # u64 index of the write counter (byte 0)
_TAIL_IX: Final = 8  # u64 index of the read counter (byte 64: its own cache line)
_SLOTS_AT: Final = 128
SLOT: Final = 384  # u32 length + wire header + payload; a multiple of 64 (cache lines)
_PAYLOAD_AT: Final = 4 + wire.HEADER_SIZE
MAX_PAYLOAD: Final = SLOT - _PAYLOAD_AT


class Ring:
    """One producer and one consumer, each in its own process, over one shared-memory block.

    ``head`` counts slots written, ``tail`` slots read; only the producer stores ``head`` and only
    the consumer stores ``tail``. The producer fills a slot, then publishes ``head``; the consumer
    reads ``head``, copies the slots below it out, then publishes ``tail``.
    """

    def __init__(self, shm: SharedMemory, slots: int) -> None:
        if slots <= 0 or slots & (slots - 1):
            raise ValueError(f"slots must be a power of two, got {slots}")
        if shm.size < self.size(slots):
            raise ValueError(f"shared memory of {shm.size} bytes is too small for {slots} slots")
        if shm.buf is None:
            raise ValueError("shared memory already closed")
        self._shm = shm
        self._buf: memoryview = shm.buf
        self._counters = self._buf[:_SLOTS_AT].cast("Q")
        self._slots = slots
        self._mask = slots - 1
        self._head = self._counters[_HEAD_IX]
        self._tail = self._counters[_TAIL_IX]

    @staticmethod
    def size(slots: int) -> int:
        return _SLOTS_AT + slots * SLOT

    def put(self, header: wire.Buffer, payload: wire.Buffer) -> bool:
        """Write one message; False (nothing written) while the ring is full."""
        head = self._head
        if head - self._tail >= self._slots:
            self._tail = self._counters[_TAIL_IX]  # only reread when it looks full
            if head - self._tail >= self._slots:
                return False
        n = len(payload)
        if n > MAX_PAYLOAD:
            raise ValueError(f"payload of {n} bytes does not fit a {SLOT}-byte slot")
        at = _SLOTS_AT + (head & self._mask) * SLOT
        buf = self._buf
        _LEN.pack_into(buf, at, n)
        buf[at + 4 : at + _PAYLOAD_AT] = header
        buf[at + _PAYLOAD_AT : at + _PAYLOAD_AT + n] = payload
        self._head = head + 1
        self._counters[_HEAD_IX] = head + 1  # publish only after the slot is complete
        return True

    def take(self, limit: int) -> tuple[bytes, int]:
        """Copy up to ``limit`` ready slots out and free them: ``(bytes, count)``."""
        tail = self._tail
        n = min(self._counters[_HEAD_IX] - tail, limit)
        if n <= 0:
            return b"", 0
        start = tail & self._mask
        first = min(n, self._slots - start)
        at = _SLOTS_AT + start * SLOT
        data = bytes(self._buf[at : at + first * SLOT])
        if first < n:  # wrapped around
            data += bytes(self._buf[_SLOTS_AT : _SLOTS_AT + (n - first) * SLOT])
        self._tail = tail + n
        self._counters[_TAIL_IX] = tail + n  # the slots are ours no more
        return data, n

    def close(self) -> None:
        self._counters.release()
        self._shm.close()


def ring_messages(data: bytes, count: int) -> list[tuple[memoryview, memoryview]]:
    """The ``[header, payload]`` frames of ``count`` slots copied out by :meth:`Ring.take`."""
    view = memoryview(data)
    out = []
    for i in range(count):
        at = i * SLOT
        (n,) = _LEN.unpack_from(view, at)
        out.append((view[at + 4 : at + _PAYLOAD_AT], view[at + _PAYLOAD_AT : at + _PAYLOAD_AT + n]))
    return out
