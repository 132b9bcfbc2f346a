"""The event schemas shipped in ``sip_bridge/delivery/schemas`` as validators, loaded once.

Tests only: the bridge itself never validates its events at run time.
"""

from __future__ import annotations

import functools
import json
from importlib.resources import files
from typing import Any

from jsonschema import Draft202012Validator

from sip_bridge.delivery.events import (
    CALL_ENDED,
    CALL_STARTED,
    DTMF,
    TRANSCRIPT_FINAL,
    TRANSCRIPT_PARTIAL,
)

VERSION = "v1"
EVENT_TYPES = (CALL_STARTED, TRANSCRIPT_PARTIAL, TRANSCRIPT_FINAL, DTMF, CALL_ENDED)


class EventSchemaError(AssertionError):
    """An event that breaks the contract (or has no schema at all)."""


def load_schema(event_type: str, version: str = VERSION) -> dict[str, Any]:
    path = files("sip_bridge.delivery") / "schemas" / version / f"{event_type}.json"
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema


@functools.cache
def validators(version: str = VERSION) -> dict[str, Draft202012Validator]:
    """One validator per event type; formats are checked too."""
    out = {}
    for event_type in EVENT_TYPES:
        schema = load_schema(event_type, version)
        out[event_type] = Draft202012Validator(
            schema, format_checker=Draft202012Validator.FORMAT_CHECKER
        )
    return out


def problems(event: object) -> str | None:
    """Why ``event`` (a decoded JSON body) breaks its type's schema; ``None`` if it does not."""
    if not isinstance(event, dict):
        return f"not a JSON object: {event!r}"
    event_type = event.get("type")
    validator = validators().get(event_type) if isinstance(event_type, str) else None
    if validator is None:
        return f"no schema for type {event_type!r}"
    found = [
        f"{'/'.join(str(p) for p in error.absolute_path) or '(top)'}: {error.message}"
        for error in validator.iter_errors(event)
    ]
    return f"{event_type}: {'; '.join(sorted(found))}" if found else None


def validate(event: object) -> None:
    """Raise :class:`EventSchemaError` if ``event`` breaks its type's schema."""
    problem = problems(event)
    if problem is not None:
        raise EventSchemaError(f"{problem}\nevent: {json.dumps(event, ensure_ascii=False)}")


STREAM_KINDS = ("snapshot", "call", "call.lost")


@functools.cache
def stream_validators(version: str = VERSION) -> dict[str, Draft202012Validator]:
    out = {}
    for kind in STREAM_KINDS:
        path = files("sip_bridge.delivery") / "schemas" / version / "stream" / f"{kind}.json"
        schema = json.loads(path.read_text(encoding="utf-8"))
        out[kind] = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    return out


def stream_problems(kind: str, data: object) -> str | None:
    """Why one message of the captions stream (``event: kind``, ``data`` decoded) breaks the
    contract; ``None`` if it does not. Events are checked against their own schemas."""
    if kind in EVENT_TYPES:
        if not isinstance(data, dict) or data.get("type") != kind:
            return f"event: {kind} with data of another type: {data!r}"
        return problems(data)
    validator = stream_validators().get(kind)
    if validator is None:
        return f"no schema for stream message {kind!r}"
    found = [
        f"{'/'.join(str(p) for p in error.absolute_path) or '(top)'}: {error.message}"
        for error in validator.iter_errors(data)
    ]
    return f"{kind}: {'; '.join(sorted(found))}" if found else None
