import pjsua2 as pj

from sip_bridge.calls.frame_copy import _fast_copy, _slow_copy, make_copier


def frame_of(data: bytes, size: int | None = None) -> pj.MediaFrame:
    frame = pj.MediaFrame()
    buf = pj.ByteVector()
    for b in data:
        buf.append(b)
    frame.buf = buf
    frame.size = len(data) if size is None else size
    return frame


def test_the_fast_path_is_chosen_and_copies_exactly() -> None:
    assert make_copier() is _fast_copy  # libstdc++ layout holds for this wheel
    data = bytes(range(256)) * 2 + b"\x00\xff"
    frame = frame_of(data)
    assert _fast_copy(frame) == data == _slow_copy(frame)


def test_only_size_bytes_are_copied_and_empty_frames_are_empty() -> None:
    frame = frame_of(b"abcdef", size=4)
    assert _fast_copy(frame) == b"abcd" == _slow_copy(frame)
    assert _fast_copy(frame_of(b"", size=0)) == b""


def test_the_copy_is_independent_of_the_frame() -> None:
    frame = frame_of(b"\x01\x02\x03\x04")
    copied = _fast_copy(frame)
    frame.buf = pj.ByteVector()
    frame.size = 0
    assert copied == b"\x01\x02\x03\x04"
