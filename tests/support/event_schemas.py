"""The event schemas shipped in ``sip_bridge/delivery/schemas`` as validators, loaded once.

Tests only: the bridge itself never validates its events at run time.
"""

from __future__ import annotations

import functools
import json
from importlib.resources import files
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from sip_bridge.delivery.events import (
    CALL_ENDED,
    CALL_STARTED,
    CONVERSATION_UPDATED,
    DTMF,
    TRANSCRIPT_FINAL,
    TRANSCRIPT_PARTIAL,
)

VERSIONS = ("v1", "v2")  # every folder of event schemas shipped
LATEST = VERSIONS[-1]  # what CallEvents makes unless told version=1
EVENT_TYPES_BY_VERSION: dict[str, tuple[str, ...]] = {
    "v1": (CALL_STARTED, TRANSCRIPT_PARTIAL, TRANSCRIPT_FINAL, DTMF, CALL_ENDED),
    "v2": (CALL_STARTED, TRANSCRIPT_PARTIAL, TRANSCRIPT_FINAL, DTMF, CALL_ENDED,
           CONVERSATION_UPDATED),
}  # fmt: skip
# Every event type of any version: a version only ever adds types.
EVENT_TYPES = EVENT_TYPES_BY_VERSION[LATEST]


class EventSchemaError(AssertionError):
    """An event that breaks the contract (or has no schema at all)."""


def load_schema(event_type: str, version: str = LATEST) -> dict[str, Any]:
    path = files("sip_bridge.delivery") / "schemas" / version / f"{event_type}.json"
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema


@functools.cache
def validators(version: str = LATEST) -> dict[str, Draft202012Validator]:
    """One validator per event type of ``version``; formats are checked too."""
    out = {}
    for event_type in EVENT_TYPES_BY_VERSION[version]:
        schema = load_schema(event_type, version)
        out[event_type] = Draft202012Validator(
            schema, format_checker=Draft202012Validator.FORMAT_CHECKER
        )
    return out


def version_of(event: dict[str, Any]) -> str | None:
    """The schema folder for a decoded event: ``"version": N`` picks ``vN``, no version field
    ``v1`` (which has none); ``None`` for a version no folder holds."""
    if "version" not in event:
        return "v1"
    number = event["version"]
    if type(number) is not int or f"v{number}" not in VERSIONS:
        return None
    return f"v{number}"


def problems(event: object, version: str | None = None) -> str | None:
    """Why ``event`` (a decoded JSON body) breaks its type's schema; ``None`` if it does not.
    The schema's version is the event's own (see :func:`version_of`) unless ``version`` is
    given."""
    if not isinstance(event, dict):
        return f"not a JSON object: {event!r}"
    if version is None:
        version = version_of(event)
        if version is None:
            return f"no schema for version {event['version']!r}"
    event_type = event.get("type")
    validator = validators(version).get(event_type) if isinstance(event_type, str) else None
    if validator is None:
        return f"no schema for type {event_type!r}"
    found = [
        f"{'/'.join(str(p) for p in error.absolute_path) or '(top)'}: {error.message}"
        for error in map(_root_cause, validator.iter_errors(event))
    ]
    return f"{event_type} ({version}): {'; '.join(sorted(found))}" if found else None


def _root_cause(error: ValidationError) -> ValidationError:
    """For "not valid under any of the given schemas" (a nullable object: ``anyOf`` of a
    ``$defs`` object and null), the error of the branch that nearly matched."""
    while error.context:
        # The null branch only ever says "not of type 'null'": the other says what is wrong.
        near = [e for e in error.context if e.validator_value != "null"] or error.context
        found = best_match(near)
        if found is None:
            break
        error = found
    return error


def validate(event: object, version: str | None = None) -> None:
    """Raise :class:`EventSchemaError` if ``event`` breaks its type's schema."""
    problem = problems(event, version)
    if problem is not None:
        raise EventSchemaError(f"{problem}\nevent: {json.dumps(event, ensure_ascii=False)}")


STREAM_KINDS = ("snapshot", "call", "call.lost")
STREAM_VERSION = "v2"  # the captions stream's own messages: with speakers and conversations


@functools.cache
def stream_validators(version: str = STREAM_VERSION) -> dict[str, Draft202012Validator]:
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
