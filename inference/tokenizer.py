"""Moonshine's token table (``tokenizer.bin``): token ids in, text out.

The file is a sequence of records ``[length][bytes]``, one per token id in order; a length of 128 or
more is a two-byte little-endian base-128 varint. Ids 3-258 are SentencePiece byte-fallback tokens
holding one raw byte each, so decoding joins bytes first and decodes UTF-8 once. ``▁`` marks a
space.

This module owns that file format and detokenisation only. It never runs a model and never encodes
text (the bridge has no use for it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

UNKNOWN_ID = 0
START_ID = 1
END_ID = 2
SPECIAL_IDS = frozenset({UNKNOWN_ID, START_ID, END_ID})
_SPACE_MARK = "\u2581".encode()  # ▁


class TokenizerFileError(ValueError):
    """``tokenizer.bin`` is truncated or not in the expected format."""


@dataclass(frozen=True, slots=True)
class Tokenizer:
    pieces: tuple[bytes, ...]

    @classmethod
    def load(cls, path: Path) -> Tokenizer:
        return cls.parse(path.read_bytes(), source=str(path))

    @classmethod
    def parse(cls, data: bytes, source: str = "<bytes>") -> Tokenizer:
        pieces: list[bytes] = []
        offset = 0
        while offset < len(data):
            length = data[offset]
            offset += 1
            if length >= 0x80:
                if offset >= len(data):
                    raise TokenizerFileError(f"{source}: record {len(pieces)} has a cut-off length")
                length = (length & 0x7F) | (data[offset] << 7)
                offset += 1
            if offset + length > len(data):
                raise TokenizerFileError(
                    f"{source}: record {len(pieces)} needs {length} bytes at offset {offset}, "
                    f"the file has {len(data) - offset}"
                )
            pieces.append(data[offset : offset + length])
            offset += length
        if len(pieces) <= END_ID:
            raise TokenizerFileError(f"{source}: only {len(pieces)} records, not a token table")
        return cls(tuple(pieces))

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def decode(self, ids: Iterable[int]) -> str:
        """Text for ``ids``; special tokens and ids outside the table (the model's logits have
        padding ids above it) are skipped. Leading and trailing spaces are stripped."""
        size = len(self.pieces)
        joined = b"".join(self.pieces[i] for i in ids if 0 <= i < size and i not in SPECIAL_IDS)
        text = joined.replace(_SPACE_MARK, b" ").decode("utf-8", errors="replace")
        return text.strip()
