"""Headers of a received SIP request, read from its raw text (sans-IO).

PJSUA2 hands the INVITE over as one string (``SipRxData.wholeMsg``); this module turns it into
``(name, value)`` pairs (folded lines joined, compact names expanded), picks the ones an operator
asked to pass on to consumers, and reads RFC 6086 ``Recv-Info``. No sockets, no PJSUA2.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable

# RFC 3261 §7.3.3 and later RFCs: compact header names.
_COMPACT = {
    "i": "Call-ID", "m": "Contact", "e": "Content-Encoding", "l": "Content-Length",
    "c": "Content-Type", "f": "From", "s": "Subject", "k": "Supported", "t": "To", "v": "Via",
    "o": "Event", "r": "Refer-To", "b": "Referred-By", "u": "Allow-Events", "x": "Session-Expires",
}  # fmt: skip
# The reason phrase of a media process's 503 when every worker is full or behind: the front
# reads it to answer the caller at once instead of trying the other media processes.
OVER_CAPACITY_REASON = "Transcription Capacity Reached"
# The Retry-After (seconds) of every 503 the front answers: full, drained, over a limit.
RETRY_AFTER_S = 5
# The front's stamp on an INVITE that required "siprec" (RFC 7866), which it takes off: PJSIP
# would refuse the option tag with 420. One a caller sends is removed.
SIPREC_HEADER = "X-Bridge-Siprec"
MAX_VALUE_CHARS = 512  # a copied header value is cut here
MAX_HEADERS = 32  # at most this many copied headers per call


def parse_headers(message: str) -> list[tuple[str, str]]:
    """The header fields of a SIP message, in order; the start line and the body are skipped."""
    head = message.replace("\r\n", "\n").split("\n\n", 1)[0]
    lines = head.split("\n")[1:]
    fields: list[tuple[str, str]] = []
    for line in lines:
        if line[:1] in (" ", "\t") and fields:  # a folded continuation line
            name, value = fields[-1]
            fields[-1] = (name, f"{value} {line.strip()}")
            continue
        name, sep, value = line.partition(":")
        name = name.strip()
        if not sep or not name:
            continue
        fields.append((_COMPACT.get(name.lower(), name), value.strip()))
    return fields


def select(fields: Iterable[tuple[str, str]], patterns: Iterable[str]) -> dict[str, str]:
    """The fields whose name matches one of ``patterns`` (``fnmatch``, case-insensitive).

    Names keep the case the sender used; a repeated header's values are joined with ", " (as
    RFC 3261 allows for list headers). At most :data:`MAX_HEADERS` names, values cut at
    :data:`MAX_VALUE_CHARS`: a caller cannot make our events arbitrarily large.
    """
    wanted = [p.lower() for p in patterns]
    out: dict[str, str] = {}
    seen: dict[str, str] = {}  # lower-case name -> the name as first sent
    for name, value in fields:
        low = name.lower()
        if not any(fnmatch.fnmatchcase(low, p) for p in wanted):
            continue
        if low in seen:
            key = seen[low]
            out[key] = f"{out[key]}, {value}"[:MAX_VALUE_CHARS]
        elif len(out) < MAX_HEADERS:
            seen[low] = name
            out[name] = value[:MAX_VALUE_CHARS]
    return out


def value(fields: Iterable[tuple[str, str]], name: str) -> str | None:
    """The value of the first ``name`` header (case-insensitive), or ``None``."""
    wanted = name.lower()
    return next((v for n, v in fields if n.lower() == wanted), None)


def recv_info(fields: Iterable[tuple[str, str]]) -> frozenset[str] | None:
    """The Info-Packages the sender will receive (RFC 6086 ``Recv-Info``, lower-cased); ``None``
    if it sent no ``Recv-Info`` at all (a peer that predates Info-Packages). An empty header
    means it takes none."""
    found: set[str] | None = None
    for name, value in fields:
        if name.lower() == "recv-info":
            found = found if found is not None else set()
            for item in value.split(","):
                package = item.split(";", 1)[0].strip().lower()
                if package:
                    found.add(package)
    return None if found is None else frozenset(found)
