"""Tokenizer: the real ``tokenizer.bin`` from the moonshine-cpp wheel, and the record format."""

from __future__ import annotations

import pytest

from inference.model_files import ModelNotInstalledError, locate_shipped
from inference.tokenizer import Tokenizer, TokenizerFileError


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    try:
        shipped = locate_shipped()
    except ModelNotInstalledError as exc:
        pytest.skip(f"model wheel not installed: {exc}")
    return Tokenizer.load(shipped.tokenizer)


def test_real_table_has_32000_tokens_with_specials_first(tokenizer: Tokenizer) -> None:
    assert tokenizer.vocab_size == 32000
    assert tokenizer.pieces[:3] == (b"<unk>", b"<s>", b"</s>")


def test_decode_known_ids_with_spaces_from_marks(tokenizer: Tokenizer) -> None:
    # "▁Press", "▁one", "▁to", "▁leave", "▁a", "▁message", "."
    ids = [5254, 697, 304, 5967, 263, 2643, 29889]
    assert tokenizer.decode(ids) == "Press one to leave a message."


def test_decode_skips_specials_and_ids_past_the_table(tokenizer: Tokenizer) -> None:
    # start, "▁Good", "-", "bye", an id only the logits have, "." , end
    assert tokenizer.decode([1, 7197, 29899, 26966, 32001, 29889, 2, 0]) == "Good-bye."


def test_decode_joins_byte_fallback_tokens_before_utf8(tokenizer: Tokenizer) -> None:
    # ids 3..258 carry single raw bytes: "é" is 0xC3 0xA9, split over two tokens
    assert tokenizer.decode([278, 3 + 0xC3, 3 + 0xA9]) == "theé"


def test_decode_of_nothing_is_empty(tokenizer: Tokenizer) -> None:
    assert tokenizer.decode([]) == ""
    assert tokenizer.decode([1, 2]) == ""


def _record(piece: bytes) -> bytes:
    length = len(piece)
    head = bytes([length]) if length < 0x80 else bytes([0x80 | (length & 0x7F), length >> 7])
    return head + piece


def test_long_records_take_a_two_byte_length() -> None:
    long_piece = "\u2581".encode() + b"x" * 300
    data = b"".join(_record(p) for p in (b"<unk>", b"<s>", b"</s>", long_piece, b"\xe2\x96\x81y"))
    table = Tokenizer.parse(data)
    assert table.vocab_size == 5
    assert table.pieces[3] == long_piece
    assert table.decode([3, 4]) == "x" * 300 + " y"


@pytest.mark.parametrize(
    "data",
    [
        _record(b"<unk>") + _record(b"<s>") + _record(b"</s>") + b"\x05ab",  # cut-off bytes
        _record(b"<unk>") + _record(b"<s>") + _record(b"</s>") + b"\x85",  # cut-off varint
        _record(b"<unk>"),  # too few records to be a table
    ],
)
def test_truncated_files_raise_a_typed_error(data: bytes) -> None:
    with pytest.raises(TokenizerFileError):
        Tokenizer.parse(data)
