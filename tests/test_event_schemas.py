"""The event schemas (``sip_bridge/delivery/schemas/v1``) as a contract: each is a valid, strict
draft 2020-12 schema; every event :class:`CallEvents` makes passes its schema, edge cases included;
and wrong events fail, so the schemas really constrain. (Events the bridge really sends are checked
by ``tests/support/webhook_receiver.py`` in every integration test.)"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from media.wire import Transcript
from sip_bridge import sip_headers
from sip_bridge.delivery.events import CallEvents, CallInfo
from tests.support.event_schemas import (
    EVENT_TYPES,
    STREAM_KINDS,
    VERSION,
    EventSchemaError,
    load_schema,
    problems,
    validate,
)

CALL = "8b71f2c4e0a94d6f9c3b5a7e1d2f4c6a"
ENVELOPE = ("type", "call_id", "sip_call_id", "seq")


def info(**changes: Any) -> CallInfo:
    base = CallInfo(
        CALL, "a84b4c76e66710@pbx", "<sip:alice@pbx>", "<sip:transcribe@bridge>", "PCMU/8000",
        8000, "bridge1/media0", (("X-Customer-Id", "42"),),
    )  # fmt: skip
    return dataclasses.replace(base, **changes)


def a_whole_call(call: CallEvents) -> Iterator[dict[str, Any]]:
    """Every event type, as one call makes them."""
    events = [
        call.started(),
        call.dtmf("5", 3.42, None, "rfc4733"),
        call.transcript(Transcript(CALL, 0, False, "please enter", 0.6, 1.8, 0.71)),
        call.transcript(Transcript(CALL, 0, True, "please enter your password", 0.6, 4.0, 0.897)),
        call.dtmf("#", 5.0, 250, "sip-info"),
        call.transcript(Transcript(CALL, 1, True, "", 5.2, 5.5, 0.0)),  # heard no words
        call.ended_event("200 Normal call clearing", 13.7),
    ]
    for event in events:
        assert event is not None
        yield event.as_dict()


def schema_nodes(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every subschema in ``node`` that describes a JSON object."""
    if isinstance(node, dict):
        if node.get("type") == "object":
            yield path, node
        for key, value in node.items():
            yield from schema_nodes(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from schema_nodes(value, f"{path}/{i}")


# -- the schemas themselves -------------------------------------------------------------------


def test_the_folder_holds_one_schema_per_event_type_and_nothing_else() -> None:
    folder = files("sip_bridge.delivery") / "schemas" / VERSION
    names = {entry.name for entry in folder.iterdir()}
    assert names == {f"{t}.json" for t in EVENT_TYPES} | {"stream"}
    stream = {entry.name for entry in (folder / "stream").iterdir()}
    assert stream == {f"{kind}.json" for kind in STREAM_KINDS}


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_each_schema_is_a_valid_strict_draft_2020_12_schema(event_type: str) -> None:
    schema = load_schema(event_type)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://sip-bridge.dev/schemas/{VERSION}/{event_type}.json"
    assert schema["title"] and schema["description"]
    assert schema["properties"]["type"]["const"] == event_type
    # Every object: each field described, always sent (required), and nothing else allowed.
    for where, node in schema_nodes(schema):
        props = node.get("properties")
        if props is None:  # a map (call.started headers): its values are described instead
            assert node["additionalProperties"]["description"], where
            continue
        assert node["additionalProperties"] is False, where
        assert sorted(node["required"]) == sorted(props), where
        for name, prop in props.items():
            assert prop.get("description"), f"{where}/{name} has no description"


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_each_stream_schema_is_valid_and_strict(kind: str) -> None:
    path = files("sip_bridge.delivery") / "schemas" / VERSION / "stream" / f"{kind}.json"
    schema = json.loads(path.read_text())
    Draft202012Validator.check_schema(schema)
    assert schema["$id"] == f"https://sip-bridge.dev/schemas/{VERSION}/stream/{kind}.json"
    assert schema["title"] and schema["description"]
    for where, node in schema_nodes(schema):
        assert node["additionalProperties"] is False, where
        assert sorted(node["required"]) == sorted(node["properties"]), where
        for name, prop in node["properties"].items():
            assert prop.get("description"), f"{where}/{name} has no description"


def test_the_envelope_is_the_same_in_every_schema() -> None:
    """Each file is self-contained (no cross-file $ref), so the shared fields are copied:
    they must not drift apart."""
    envelopes = []
    for event_type in EVENT_TYPES:
        props = copy.deepcopy(load_schema(event_type)["properties"])
        assert list(props)[: len(ENVELOPE)] == list(ENVELOPE)
        props["type"].pop("const")
        envelopes.append({name: props[name] for name in ENVELOPE})
    assert all(e == envelopes[0] for e in envelopes)
    partial = load_schema("transcript.partial")["properties"]
    final = load_schema("transcript.final")["properties"]
    assert list(partial) == list(final)
    for name in ("utterance", "start", "confidence"):
        assert partial[name] == final[name], name


# -- what CallEvents makes passes -------------------------------------------------------------


def test_a_whole_call_validates() -> None:
    events = list(a_whole_call(CallEvents(info(), started_at=1795602326.8784)))
    assert [e["type"] for e in events] == [
        "call.started", "dtmf", "transcript.partial", "transcript.final", "dtmf",
        "transcript.final", "call.ended",
    ]  # fmt: skip
    for event in events:
        validate(event)


@pytest.mark.parametrize(
    "changes",
    [
        {"headers": ()},
        {"codec": "G722/16000", "sample_rate": 16000},
        {"codec": "opus/48000", "sample_rate": 16000},
        {"from_uri": '"Alice Smith" <sip:+15551234567@pbx.example.com;user=phone>'},
        {"node": "ip-10-0-0-7.ec2.internal/media12"},
        {"sip_call_id": "0f5a3e2c-77b1-4f8e@[2001:db8::1]"},
    ],
)
def test_call_started_validates_for_every_kind_of_call(changes: dict[str, Any]) -> None:
    validate(CallEvents(info(**changes)).started().as_dict())


def test_call_started_validates_with_as_many_and_as_long_headers_as_the_bridge_passes_on() -> None:
    # A hostile INVITE: more X- headers than we pass on, long and repeated values, compact forms.
    lines = [f"X-H{i}: {'v' * 600}" for i in range(40)] + ["x-h0: again", "X-Empty:"]
    invite = "INVITE sip:t@us SIP/2.0\r\n" + "\r\n".join(lines) + "\r\n\r\n"
    picked = sip_headers.select(sip_headers.parse_headers(invite), ["x-*"])
    assert len(picked) == sip_headers.MAX_HEADERS
    event = CallEvents(info(headers=tuple(picked.items()))).started().as_dict()
    validate(event)


@pytest.mark.parametrize("digit", list("0123456789*#ABCD"))
def test_every_dtmf_key_validates(digit: str) -> None:
    event = CallEvents(info()).dtmf(digit, 0.0, 100, "rfc4733")
    assert event is not None
    validate(event.as_dict())


@pytest.mark.parametrize("duration_ms", [None, 1, 250, 65534])
def test_dtmf_validates_with_or_without_a_duration(duration_ms: int | None) -> None:
    event = CallEvents(info()).dtmf("7", 1.5, duration_ms, "sip-info")
    assert event is not None
    validate(event.as_dict())


@pytest.mark.parametrize(
    "reason",
    [
        "200 Normal call clearing", "487 Request Terminated", "rtp timeout", "max duration",
        "media error", "shutdown", "hangup", "hangup; worker did not answer",
    ],
)  # fmt: skip
def test_call_ended_validates_with_no_utterances_for_every_reason(reason: str) -> None:
    event = CallEvents(info()).ended_event(reason, 0.0).as_dict()
    assert event["utterances"] == [] and event["text"] == ""
    validate(event)


def test_transcripts_validate_at_the_edges() -> None:
    call = CallEvents(info())
    for t in (
        Transcript(CALL, 0, False, "", 0.0, 0.0, 0.0),
        Transcript(CALL, 0, True, "¿Qué tal? — 日本語", 0.0, 0.02, 1.0),
        Transcript(CALL, 7, True, "x" * 5000, 3599.9996, 3600.0, 0.99951),
    ):
        event = call.transcript(t)
        assert event is not None
        validate(event.as_dict())


# -- wrong events fail ------------------------------------------------------------------------


def _drop(field: str) -> Any:
    return lambda e: e.pop(field)


WRONG: list[tuple[str, str, Any]] = [
    ("call.started", "a missing field", _drop("headers")),
    ("call.started", "an extra field", lambda e: e.update(language="en")),
    ("call.started", "call_id upper case", lambda e: e.update(call_id=CALL.upper())),
    ("call.started", "call_id a UUID with dashes", lambda e: e.update(
        call_id="8b71f2c4-e0a9-4d6f-9c3b-5a7e1d2f4c6a")),
    ("call.started", "seq 0", lambda e: e.update(seq=0)),
    ("call.started", "seq a string", lambda e: e.update(seq="1")),
    ("call.started", "an empty sip_call_id", lambda e: e.update(sip_call_id="")),
    ("call.started", "a codec without rate", lambda e: e.update(codec="PCMU")),
    ("call.started", "a sample rate of 48000", lambda e: e.update(sample_rate=48000)),
    ("call.started", "a header value not a string", lambda e: e["headers"].update({"X-N": 42})),
    ("call.started", "a header value too long", lambda e: e["headers"].update({"X-L": "v" * 513})),
    ("call.started", "a header name with a space", lambda e: e["headers"].update({"X A": "1"})),
    ("call.started", "headers a list", lambda e: e.update(headers=[["X-A", "1"]])),
    ("transcript.partial", "confidence above 1", lambda e: e.update(confidence=1.2)),
    ("transcript.partial", "text null", lambda e: e.update(text=None)),
    ("transcript.final", "a negative start", lambda e: e.update(start=-0.02)),
    ("transcript.final", "a missing confidence", _drop("confidence")),
    ("transcript.final", "a final flag", lambda e: e.update(final=True)),
    ("dtmf", "digit E", lambda e: e.update(digit="E")),
    ("dtmf", "digit lower case", lambda e: e.update(digit="a")),
    ("dtmf", "two digits", lambda e: e.update(digit="12")),
    ("dtmf", "method inband", lambda e: e.update(method="inband")),
    ("dtmf", "duration_ms left out", _drop("duration_ms")),
    ("dtmf", "duration_ms 0", lambda e: e.update(duration_ms=0)),
    ("dtmf", "duration_ms fractional", lambda e: e.update(duration_ms=12.5)),
    ("call.ended", "an empty reason", lambda e: e.update(reason="")),
    ("call.ended", "an utterance with a confidence", lambda e: e["utterances"][0].update(
        confidence=0.9)),
    ("call.ended", "an utterance without text", lambda e: e["utterances"][0].pop("text")),
    ("call.ended", "utterances null", lambda e: e.update(utterances=None)),
]  # fmt: skip


@pytest.mark.parametrize(("event_type", "what", "spoil"), WRONG, ids=[w[1] for w in WRONG])
def test_a_wrong_event_fails(event_type: str, what: str, spoil: Any) -> None:
    event = next(e for e in a_whole_call(CallEvents(info())) if e["type"] == event_type)
    validate(event)
    spoil(event)
    assert problems(event) is not None, what
    with pytest.raises(EventSchemaError):
        validate(event)


def test_an_event_under_another_types_schema_fails() -> None:
    events = {e["type"]: e for e in a_whole_call(CallEvents(info()))}
    dtmf = events["dtmf"]
    assert problems({**dtmf, "type": "transcript.final"}) is not None
    assert problems({**dtmf, "type": "call.paused"}) == "no schema for type 'call.paused'"


# -- the README's samples ---------------------------------------------------------------------


def test_the_readmes_sample_of_each_event_follows_its_schema() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("\n## Events\n", 1)[1].split("\n## ", 1)[0]
    samples = [
        json.loads(line)
        for block in re.findall(r"```json\n(.*?)```", section, re.S)
        for line in block.splitlines()
        if line.strip()
    ]
    assert sorted(e["type"] for e in samples) == sorted(EVENT_TYPES)
    for event in samples:
        validate(event)
