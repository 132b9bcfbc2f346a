"""The parts of a SIP message body (RFC 2046 ``multipart/*``), read from bytes (sans-IO).

A SIPREC INVITE carries ``multipart/mixed``: an SDP part and an ``application/rs-metadata+xml``
part. This module owns splitting such a body into :class:`Part` values, forgiving what SBCs do
in the field (bare LF, a missing close delimiter, a preamble, one level of nesting). It never
interprets a part's content and never touches a socket or PJSUA2.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_COMPACT = {"c": "Content-Type", "l": "Content-Length", "e": "Content-Encoding"}
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")


class MultipartError(ValueError):
    """A peer's body that claims to be multipart cannot be split."""


@dataclass(frozen=True, slots=True)
class Part:
    content_type: str  # lower-cased media type without parameters; "" if the part named none
    headers: tuple[tuple[str, str], ...]
    body: bytes


def media_type(content_type: str) -> tuple[str, dict[str, str]]:
    """``"multipart/mixed;boundary=\\"x y\\""`` -> ``("multipart/mixed", {"boundary": "x y"})``.

    Parameter names are lower-cased; quoted values are unquoted (``\\`` escapes honoured)."""
    items: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in content_type:
        if escaped:
            current.append(ch)
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == ";" and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(ch)
    items.append("".join(current))
    params: dict[str, str] = {}
    for item in items[1:]:
        name, sep, value = item.partition("=")
        if sep and name.strip():
            params.setdefault(name.strip().lower(), value.strip())
    return items[0].strip().lower(), params


def header_fields(head: str) -> tuple[tuple[str, str], ...]:
    """Header lines (folded lines joined, compact ``c:``/``l:``/``e:`` expanded), in order."""
    fields: list[tuple[str, str]] = []
    for line in head.replace("\r\n", "\n").split("\n"):
        if line[:1] in (" ", "\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, f"{value} {line.strip()}")
            continue
        name, sep, value = line.partition(":")
        name = name.strip()
        if sep and name:
            fields.append((_COMPACT.get(name.lower(), name), value.strip()))
    return tuple(fields)


def _value(fields: Iterable[tuple[str, str]], name: str) -> str | None:
    return next((v for n, v in fields if n.lower() == name.lower()), None)


def parts(content_type: str, body: bytes | str) -> tuple[Part, ...]:
    """The parts of ``body`` sent with ``Content-Type: content_type``.

    A body that is not multipart is one part. Nested multipart parts are flattened one level.
    Raises :class:`MultipartError` for a multipart type without a boundary, or a body in which
    the boundary delimits no part.
    """
    data = body.encode("utf-8", "surrogateescape") if isinstance(body, str) else body
    kind, params = media_type(content_type)
    if not kind.startswith("multipart/"):
        return (Part(kind, (("Content-Type", content_type),) if content_type else (), data),)
    boundary = params.get("boundary", "")
    if not boundary:
        raise MultipartError(f"{kind} body without a boundary parameter: {content_type!r}")
    out: list[Part] = []
    for part in _split(data, boundary.encode("utf-8", "surrogateescape"), kind):
        if part.content_type.startswith("multipart/"):
            try:
                out.extend(parts(_value(part.headers, "Content-Type") or "", part.body))
                continue
            except MultipartError:
                pass  # keep the nested part whole: the caller may still find what it needs
        out.append(part)
    return tuple(out)


def _split(data: bytes, boundary: bytes, kind: str) -> list[Part]:
    delimiter, close = b"--" + boundary, b"--" + boundary + b"--"
    found: list[Part] = []
    current: list[bytes] | None = None  # lines of the part being read; None before the first
    for line in data.split(b"\n"):
        bare = line.rstrip(b"\r").rstrip(b" \t")  # RFC 2046 lets transport padding follow
        if bare in (delimiter, close):
            if current is not None:
                found.append(_part(current))
            current = None if bare == close else []
            if bare == close:
                break
        elif current is not None:
            current.append(line)
    else:
        if current is not None:  # no close delimiter: take what is there
            found.append(_part(current, closed=False))
    if not found:
        shown = boundary.decode("utf-8", "replace")
        raise MultipartError(f"{kind} body has no part delimited by --{shown}")
    return found


def _part(lines: list[bytes], closed: bool = True) -> Part:
    raw = b"\n".join(lines)
    if closed and raw.endswith(b"\r"):
        raw = raw[:-1]  # the CRLF before a delimiter belongs to the delimiter
    if raw.startswith((b"\r\n", b"\n")):  # no headers at all
        head, content = b"", raw[2 if raw.startswith(b"\r\n") else 1 :]
    else:
        match = _BLANK_LINE.search(raw)
        head, content = (raw[: match.start()], raw[match.end() :]) if match else (raw, b"")
    fields = header_fields(head.decode("utf-8", "replace"))
    kind, _ = media_type(_value(fields, "Content-Type") or "")
    return Part(kind, fields, content)


def message_parts(whole_msg: str) -> tuple[Part, ...]:
    """The body parts of a whole SIP message as PJSUA2 hands it over (``rdata.wholeMsg``);
    no body at all is no part."""
    match = re.search(r"\r?\n\r?\n", whole_msg)
    if match is None:
        return ()
    head, body = whole_msg[: match.start()], whole_msg[match.end() :]
    if not body:
        return ()
    fields = header_fields(head.partition("\n")[2])  # the start line is no header
    return parts(_value(fields, "Content-Type") or "", body)


def find(found: Iterable[Part], content_type: str) -> bytes | None:
    """The body of the first part of ``content_type`` (case-insensitive), or ``None``."""
    wanted = content_type.lower()
    return next((p.body for p in found if p.content_type == wanted), None)
