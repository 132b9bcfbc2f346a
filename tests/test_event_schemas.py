"""The event schemas (``sip_bridge/delivery/schemas/v1`` and ``v2``) as a contract: each is a
valid, strict draft 2020-12 schema; v2 keeps everything v1 says and only adds; every event
:class:`CallEvents` makes passes its version's schema, edge cases and SIPREC sessions included;
and wrong events fail, so the schemas really constrain. (Events the bridge really sends are
checked by ``tests/support/webhook_receiver.py`` in every integration test.)"""

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
from sip_bridge.delivery.events import (
    CONVERSATION_UPDATED,
    CallEvents,
    CallInfo,
    Conversation,
    Event,
)
from tests.support.event_schemas import (
    EVENT_TYPES,
    EVENT_TYPES_BY_VERSION,
    STREAM_KINDS,
    VERSIONS,
    EventSchemaError,
    load_schema,
    problems,
    validate,
    version_of,
)

CALL = "8b71f2c4e0a94d6f9c3b5a7e1d2f4c6a"
ENVELOPE = {
    "v1": ("type", "call_id", "sip_call_id", "seq"),
    "v2": ("type", "call_id", "sip_call_id", "seq", "version", "conversation"),
}
SCHEMAS = [(v, t) for v in VERSIONS for t in EVENT_TYPES_BY_VERSION[v]]


@dataclasses.dataclass(frozen=True, slots=True)
class Who:
    """A speaker as the SIPREC metadata or a tagged leg gives it (a ``Person``)."""

    participant_id: str | None
    name: str | None
    aor: str | None


ALICE = Who("p1", "Alice", "sip:alice@atlanta.example")
BOB = Who("p2", "Bob", "sip:bob@biloxi.example")
SESSION = Conversation("rs-1@src", "siprec", ("hVpd7YQg",), ("cs-77@pbx",), "complete")


def info(**changes: Any) -> CallInfo:
    base = CallInfo(
        CALL, "a84b4c76e66710@pbx", "<sip:alice@pbx>", "<sip:transcribe@bridge>", "PCMU/8000",
        8000, "bridge1/media0", (("X-Customer-Id", "42"),),
    )  # fmt: skip
    return dataclasses.replace(base, **changes)


def number(version: str) -> int:
    return int(version.removeprefix("v"))


def events_of(version: str, **changes: Any) -> CallEvents:
    return CallEvents(info(**changes), started_at=1795602326.8784, version=number(version))


def decoded(events: list[Event | None]) -> list[dict[str, Any]]:
    """The bodies of the events made (``None``: none was, as in v1 for a SIPREC partial)."""
    return [event.as_dict() for event in events if event is not None]


def a_whole_call(call: CallEvents) -> list[dict[str, Any]]:
    """Every event type of v1, as one ordinary call makes them."""
    return decoded([
        call.started(),
        call.dtmf("5", 3.42, None, "rfc4733"),
        call.transcript(Transcript(CALL, 0, False, "please enter", 0.6, 1.8, 0.71)),
        call.transcript(Transcript(CALL, 0, True, "please enter your password", 0.6, 4.0, 0.897)),
        call.dtmf("#", 5.0, 250, "sip-info"),
        call.transcript(Transcript(CALL, 1, True, "", 5.2, 5.5, 0.0)),  # heard no words
        call.ended_event("200 Normal call clearing", 13.7),
    ])  # fmt: skip


def a_siprec_session(call: CallEvents) -> list[dict[str, Any]]:
    """A recording session of two streams (96: Alice, 97: Bob) in which Bob leaves, as
    version 2 makes it; stream 97's audio began 1.5 s after the answer."""
    call.conversation = SESSION
    streams = (("96", ALICE), ("97", BOB))
    return decoded([
        call.started(streams, (ALICE, BOB)),
        call.transcript(Transcript(CALL, 0, False, "hel", 0.2, 0.9, 0.5), "96", ALICE),
        call.transcript(Transcript(CALL, 0, True, "hello bob", 0.2, 1.2, 0.93), "96", ALICE),
        call.transcript(Transcript(CALL, 0, False, "hi", 0.0, 0.4, 0.6), "97", BOB, 1.5),
        call.updated(SESSION, (("96", ALICE), ("97", None)), (ALICE,)),
        call.transcript(Transcript(CALL, 0, True, "hi alice", 0.0, 0.7, 0.88), "97", None, 1.5),
        call.dtmf("1", 2.5, None, "rfc4733"),
        call.transcript(Transcript(CALL, 1, True, "bye", 2.4, 2.9, 0.9), "96", ALICE),
        call.ended_event("200 OK", 3.0, (ALICE,)),
    ])  # fmt: skip


def a_tagged_leg(call: CallEvents, speaker: Who) -> list[dict[str, Any]]:
    """One leg of a conversation a PBX tagged (X-Transcribe-Conversation/-Speaker)."""
    call.conversation = Conversation("conf-4711", "legs")
    return decoded([
        call.started((), (speaker,)),
        call.transcript(Transcript(CALL, 0, False, "one", 0.3, 0.8, 0.4), None, speaker),
        call.transcript(Transcript(CALL, 0, True, "one moment", 0.3, 1.4, 0.9), None, speaker),
        call.dtmf("9", 2.0, None, "sip-info"),
        call.ended_event("200 OK", 4.0, (speaker,)),
    ])  # fmt: skip


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


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if "$ref" in node:
            yield node["$ref"]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def without_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: without_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [without_descriptions(v) for v in node]
    return node


# -- the schemas themselves -------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_each_folder_holds_one_schema_per_event_type_and_nothing_else(version: str) -> None:
    folder = files("sip_bridge.delivery") / "schemas" / version
    names = {entry.name for entry in folder.iterdir()}
    assert names - {"stream"} == {f"{t}.json" for t in EVENT_TYPES_BY_VERSION[version]}
    # The captions stream's own messages: in v1 since its release, in v2 once it has them.
    assert "stream" in names or version != "v1"
    if "stream" in names:
        stream = {entry.name for entry in (folder / "stream").iterdir()}
        assert stream == {f"{kind}.json" for kind in STREAM_KINDS}


def test_every_version_is_shipped_and_each_adds_to_the_one_before() -> None:
    folders = {e.name for e in (files("sip_bridge.delivery") / "schemas").iterdir() if e.is_dir()}
    assert folders == set(VERSIONS)
    assert set(EVENT_TYPES_BY_VERSION["v1"]) < set(EVENT_TYPES_BY_VERSION["v2"])
    assert set(EVENT_TYPES_BY_VERSION["v2"]) - set(EVENT_TYPES_BY_VERSION["v1"]) == {
        CONVERSATION_UPDATED
    }
    assert EVENT_TYPES_BY_VERSION[VERSIONS[-1]] == EVENT_TYPES


@pytest.mark.parametrize(("version", "event_type"), SCHEMAS)
def test_each_schema_is_a_valid_strict_draft_2020_12_schema(version: str, event_type: str) -> None:
    schema = load_schema(event_type, version)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://sip-bridge.dev/schemas/{version}/{event_type}.json"
    assert schema["title"] == f"{event_type} ({version})" and schema["description"]
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
    # Self-contained: a $ref only points into the file's own $defs, and every one is used.
    defs = schema.get("$defs", {})
    used = {ref.removeprefix("#/$defs/") for ref in refs(schema)}
    assert all(ref.startswith("#/$defs/") for ref in refs(schema))
    assert used == set(defs)
    for name, node in defs.items():
        assert node["type"] == "object" and node["description"], name


@pytest.mark.parametrize("event_type", EVENT_TYPES_BY_VERSION["v1"])
def test_v2_keeps_everything_v1_says_and_only_adds(event_type: str) -> None:
    """v2 was copied from v1, then changed: any v1 field is still there with the same
    constraints (wording aside), and still required; objects only gain fields."""

    def extends(old: Any, new: Any, where: str) -> None:
        if isinstance(old, dict):
            assert isinstance(new, dict), where
            for key, value in old.items():
                if key in ("description", "title", "$id"):
                    continue
                assert key in new, f"{where}/{key} is gone"
                if key == "required":
                    assert set(value) <= set(new[key]), where
                elif key == "properties":
                    for name, prop in value.items():
                        assert name in new[key], f"{where}/{name} is gone"
                        extends(prop, new[key][name], f"{where}/{name}")
                else:
                    extends(value, new[key], f"{where}/{key}")
        else:
            assert old == new, where

    extends(load_schema(event_type, "v1"), load_schema(event_type, "v2"), event_type)


STREAM_SCHEMAS = [
    (v, kind)
    for v in VERSIONS
    if (files("sip_bridge.delivery") / "schemas" / v / "stream").is_dir()
    for kind in STREAM_KINDS
]


@pytest.mark.parametrize(("version", "kind"), STREAM_SCHEMAS)
def test_each_stream_schema_is_valid_and_strict(version: str, kind: str) -> None:
    path = files("sip_bridge.delivery") / "schemas" / version / "stream" / f"{kind}.json"
    schema = json.loads(path.read_text())
    Draft202012Validator.check_schema(schema)
    assert schema["$id"] == f"https://sip-bridge.dev/schemas/{version}/stream/{kind}.json"
    assert schema["title"] and schema["description"]
    for where, node in schema_nodes(schema):
        assert node["additionalProperties"] is False, where
        assert sorted(node["required"]) == sorted(node["properties"]), where
        for name, prop in node["properties"].items():
            assert prop.get("description"), f"{where}/{name} has no description"


@pytest.mark.parametrize("version", VERSIONS)
def test_the_envelope_is_the_same_in_every_schema(version: str) -> None:
    """Each file is self-contained (no cross-file $ref), so the shared fields are copied:
    they must not drift apart."""
    envelope = ENVELOPE[version]
    envelopes = []
    for event_type in EVENT_TYPES_BY_VERSION[version]:
        props = copy.deepcopy(load_schema(event_type, version)["properties"])
        assert list(props)[: len(envelope)] == list(envelope)
        props["type"].pop("const")
        envelopes.append({name: props[name] for name in envelope})
    assert all(e == envelopes[0] for e in envelopes)
    partial = load_schema("transcript.partial", version)["properties"]
    final = load_schema("transcript.final", version)["properties"]
    assert list(partial) == list(final)
    for name in ("utterance", "start", "confidence"):
        assert partial[name] == final[name], name


def test_v2s_shared_definitions_are_the_same_wherever_they_are_copied() -> None:
    defs: dict[str, list[Any]] = {}
    for event_type in EVENT_TYPES_BY_VERSION["v2"]:
        for name, node in load_schema(event_type, "v2").get("$defs", {}).items():
            defs.setdefault(name, []).append(node)
    assert set(defs) == {"conversation", "speaker"}
    for name, copies in defs.items():
        assert all(c == copies[0] for c in copies), name
    started = load_schema("call.started", "v2")["properties"]
    updated = load_schema(CONVERSATION_UPDATED, "v2")["properties"]
    final = load_schema("transcript.final", "v2")["properties"]
    ended = load_schema("call.ended", "v2")["properties"]
    said = ended["utterances"]["items"]["properties"]
    assert without_descriptions(started["streams"]) == without_descriptions(updated["streams"])
    for field in ("stream", "speaker"):
        assert load_schema("transcript.partial", "v2")["properties"][field] == final[field]
        assert without_descriptions(said[field]) == without_descriptions(final[field]), field
    for props in (started, updated, ended):
        assert props["participants"]["items"] == {"$ref": "#/$defs/speaker"}


# -- what CallEvents makes passes -------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_a_whole_call_validates(version: str) -> None:
    events = a_whole_call(events_of(version))
    assert [e["type"] for e in events] == [
        "call.started", "dtmf", "transcript.partial", "transcript.final", "dtmf",
        "transcript.final", "call.ended",
    ]  # fmt: skip
    for event in events:
        assert version_of(event) == version
        validate(event)
        validate(event, version)


def test_an_ordinary_call_in_v2_names_no_conversation_stream_or_speaker() -> None:
    events = a_whole_call(events_of("v2"))
    assert all(e["version"] == 2 and e["conversation"] is None for e in events)
    assert events[0]["participants"] == [] and events[0]["streams"] == []
    assert all(e["stream"] is None and e["speaker"] is None for e in events[2:4])
    assert events[-1]["participants"] == []
    assert all(u["stream"] is None and u["speaker"] is None for u in events[-1]["utterances"])


def test_a_whole_siprec_session_validates() -> None:
    events = a_siprec_session(events_of("v2", sip_call_id="rs-1@src"))
    assert [e["type"] for e in events] == [
        "call.started", "transcript.partial", "transcript.final", "transcript.partial",
        "conversation.updated", "transcript.final", "dtmf", "transcript.final", "call.ended",
    ]  # fmt: skip
    for event in events:
        validate(event)
    finals = [e for e in events if e["type"] == "transcript.final"]
    # Utterances count per stream: two finals numbered 0, on different streams.
    assert [(f["stream"], f["utterance"]) for f in finals] == [("96", 0), ("97", 0), ("96", 1)]
    ended = events[-1]
    assert [(u["stream"], u["utterance"]) for u in ended["utterances"]] == [
        ("96", 0), ("97", 0), ("96", 1)
    ]  # fmt: skip
    assert ended["text"] == "hello bob hi alice bye"


@pytest.mark.parametrize("metadata", ["none", "invalid"])
def test_a_siprec_session_without_readable_metadata_validates(metadata: str) -> None:
    """No metadata yet, or none that could be read: streams by label, nobody named."""
    call = events_of("v2", sip_call_id="rs-2@src")
    call.conversation = Conversation("rs-2@src", "siprec", metadata=metadata)
    events = decoded([
        call.started((("96", None), ("97", None))),
        call.transcript(Transcript(CALL, 0, True, "hello", 0.2, 1.2, 0.9), "96"),
        call.transcript(Transcript(CALL, 0, False, "hi", 0.0, 0.4, 0.6), "97", None, 0.25),
        call.ended_event("200 OK", 3.0),
    ])  # fmt: skip
    for event in events:
        validate(event)
    assert events[0]["conversation"]["session_ids"] == []


@pytest.mark.parametrize(
    "speaker", [Who(None, "Agent 7", None), Who(None, None, None)], ids=["named", "unnamed"]
)
def test_a_tagged_leg_validates(speaker: Who) -> None:
    events = a_tagged_leg(events_of("v2"), speaker)
    for event in events:
        validate(event)
    assert events[0]["conversation"] == {
        "id": "conf-4711", "kind": "legs", "session_ids": [], "call_ids": [], "metadata": "none",
    }  # fmt: skip
    final = events[2]
    assert final["stream"] is None
    assert final["speaker"] == {"participant_id": None, "name": speaker.name, "aor": None}


def test_a_siprec_session_under_v1_validates_against_v1() -> None:
    """v1 has no speakers: a session of several streams gets its finals only."""
    events = a_siprec_session(events_of("v1", sip_call_id="rs-1@src"))
    assert [e["type"] for e in events] == [
        "call.started", "transcript.final", "transcript.final", "dtmf", "transcript.final",
        "call.ended",
    ]  # fmt: skip
    for event in events:
        assert version_of(event) == "v1"
        validate(event)


@pytest.mark.parametrize("version", VERSIONS)
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
def test_call_started_validates_for_every_kind_of_call(
    changes: dict[str, Any], version: str
) -> None:
    validate(events_of(version, **changes).started().as_dict(), version)


@pytest.mark.parametrize("version", VERSIONS)
def test_call_started_validates_with_as_many_and_as_long_headers_as_the_bridge_passes_on(
    version: str,
) -> None:
    # A hostile INVITE: more X- headers than we pass on, long and repeated values, compact forms.
    lines = [f"X-H{i}: {'v' * 600}" for i in range(40)] + ["x-h0: again", "X-Empty:"]
    invite = "INVITE sip:t@us SIP/2.0\r\n" + "\r\n".join(lines) + "\r\n\r\n"
    picked = sip_headers.select(sip_headers.parse_headers(invite), ["x-*"])
    assert len(picked) == sip_headers.MAX_HEADERS
    event = events_of(version, headers=tuple(picked.items())).started().as_dict()
    validate(event, version)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("digit", list("0123456789*#ABCD"))
def test_every_dtmf_key_validates(digit: str, version: str) -> None:
    event = events_of(version).dtmf(digit, 0.0, 100, "rfc4733")
    assert event is not None
    validate(event.as_dict(), version)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("duration_ms", [None, 1, 250, 65534])
def test_dtmf_validates_with_or_without_a_duration(duration_ms: int | None, version: str) -> None:
    event = events_of(version).dtmf("7", 1.5, duration_ms, "sip-info")
    assert event is not None
    validate(event.as_dict(), version)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    "reason",
    [
        "200 Normal call clearing", "487 Request Terminated", "rtp timeout", "max duration",
        "media error", "shutdown", "hangup", "hangup; worker did not answer",
    ],
)  # fmt: skip
def test_call_ended_validates_with_no_utterances_for_every_reason(
    reason: str, version: str
) -> None:
    event = events_of(version).ended_event(reason, 0.0).as_dict()
    assert event["utterances"] == [] and event["text"] == ""
    validate(event, version)


@pytest.mark.parametrize("version", VERSIONS)
def test_transcripts_validate_at_the_edges(version: str) -> None:
    call = events_of(version)
    for t in (
        Transcript(CALL, 0, False, "", 0.0, 0.0, 0.0),
        Transcript(CALL, 0, True, "¿Qué tal? — 日本語", 0.0, 0.02, 1.0),
        Transcript(CALL, 7, True, "x" * 5000, 3599.9996, 3600.0, 0.99951),
    ):
        event = call.transcript(t)
        assert event is not None
        validate(event.as_dict(), version)


def test_v2_speakers_and_streams_validate_at_the_edges() -> None:
    call = events_of("v2", sip_call_id="rs-3@src")
    session = Conversation("rs-3@src", "siprec", ("a", "b"), (), "complete")
    call.conversation = session
    odd = Who("urn:uuid:0f5a3e2c", "Zoë 日本語 " + "n" * 300, "tel:+15551234567")
    labels = [("1", odd), ("main-audio_2", Who("p9", None, None))]
    events = decoded([
        call.started(tuple(labels), (odd,)),
        call.updated(session, (), ()),  # everyone left
        call.transcript(Transcript(CALL, 0, True, "", 0.0, 0.0, 0.0), "1", odd, 3599.0),
        call.ended_event("200 OK", 3600.0),
    ])  # fmt: skip
    for event in events:
        validate(event)


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


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("event_type", "what", "spoil"), WRONG, ids=[w[1] for w in WRONG])
def test_a_wrong_event_fails(event_type: str, what: str, spoil: Any, version: str) -> None:
    event = next(e for e in a_whole_call(events_of(version)) if e["type"] == event_type)
    validate(event)
    spoil(event)
    assert problems(event) is not None, what
    with pytest.raises(EventSchemaError):
        validate(event)


def _conversation(**changes: Any) -> Any:
    return lambda e: e["conversation"].update(changes)


WRONG_V2: list[tuple[str, str, Any]] = [
    ("call.started", "version missing", _drop("version")),
    ("call.started", "version 3", lambda e: e.update(version=3)),
    ("call.started", "version a string", lambda e: e.update(version="2")),
    ("call.started", "version true", lambda e: e.update(version=True)),
    ("call.started", "conversation missing", _drop("conversation")),
    ("call.started", "conversation kind unknown", _conversation(kind="conference")),
    ("call.started", "conversation metadata unknown", _conversation(metadata="partial")),
    ("call.started", "conversation id empty", _conversation(id="")),
    ("call.started", "conversation session_ids a string", _conversation(session_ids="hVpd7YQg")),
    ("call.started", "conversation call_ids with null", _conversation(call_ids=[None])),
    ("call.started", "conversation without call_ids", lambda e: e["conversation"].pop(
        "call_ids")),
    ("call.started", "conversation with an extra key", _conversation(state="active")),
    ("call.started", "conversation a string", lambda e: e.update(conversation="rs-1@src")),
    ("call.started", "participants missing", _drop("participants")),
    ("call.started", "participants null", lambda e: e.update(participants=None)),
    ("call.started", "a participant null", lambda e: e["participants"].append(None)),
    ("call.started", "a participant missing aor", lambda e: e["participants"][0].pop("aor")),
    ("call.started", "a participant with a role", lambda e: e["participants"][0].update(
        role="agent")),
    ("call.started", "streams missing", _drop("streams")),
    ("call.started", "a stream a number", lambda e: e["streams"][0].update(stream=96)),
    ("call.started", "a stream label empty", lambda e: e["streams"][0].update(stream="")),
    ("call.started", "a stream without speaker", lambda e: e["streams"][0].pop("speaker")),
    ("call.started", "a stream's speaker missing name", lambda e: e["streams"][0]["speaker"].pop(
        "name")),
    ("transcript.partial", "stream an empty string", lambda e: e.update(stream="")),
    ("transcript.partial", "speaker missing", _drop("speaker")),
    ("transcript.final", "stream not a string", lambda e: e.update(stream=96)),
    ("transcript.final", "stream missing", _drop("stream")),
    ("transcript.final", "speaker missing participant_id", lambda e: e["speaker"].pop(
        "participant_id")),
    ("transcript.final", "speaker a string", lambda e: e.update(speaker="Alice")),
    ("transcript.final", "speaker name empty", lambda e: e["speaker"].update(name="")),
    ("transcript.final", "speaker aor a number", lambda e: e["speaker"].update(aor=42)),
    ("conversation.updated", "participants missing", _drop("participants")),
    ("conversation.updated", "a stream's speaker a list", lambda e: e["streams"][1].update(
        speaker=[])),
    ("conversation.updated", "an utterance", lambda e: e.update(utterance=0)),
    ("conversation.updated", "version 1", lambda e: e.update(version=1)),
    ("dtmf", "a speaker", lambda e: e.update(speaker=None)),
    ("dtmf", "a stream", lambda e: e.update(stream="96")),
    ("call.ended", "participants missing", _drop("participants")),
    ("call.ended", "an utterance without stream", lambda e: e["utterances"][0].pop("stream")),
    ("call.ended", "an utterance's speaker missing aor", lambda e: e["utterances"][0][
        "speaker"].pop("aor")),
    ("call.ended", "an utterance's speaker not null nor an object", lambda e: e["utterances"][0]
        .update(speaker="p1")),
]  # fmt: skip


@pytest.mark.parametrize(("event_type", "what", "spoil"), WRONG_V2, ids=[w[1] for w in WRONG_V2])
def test_a_wrong_v2_event_fails(event_type: str, what: str, spoil: Any) -> None:
    session = a_siprec_session(events_of("v2", sip_call_id="rs-1@src"))
    event = next(e for e in session if e["type"] == event_type)
    validate(event)
    spoil(event)
    assert problems(event) is not None, what
    with pytest.raises(EventSchemaError):
        validate(event)


def test_a_problem_inside_a_nullable_object_names_the_field_not_the_null_branch() -> None:
    final = next(e for e in a_siprec_session(events_of("v2")) if e["type"] == "transcript.final")
    final["speaker"]["aor"] = 42
    final["conversation"]["kind"] = "conference"
    assert problems(final) == (
        "transcript.final (v2): conversation/kind: 'conference' is not one of ['siprec', 'legs'];"
        " speaker/aor: 42 is not of type 'string', 'null'"
    )


@pytest.mark.parametrize("event_type", EVENT_TYPES_BY_VERSION["v1"])
def test_a_v1_event_fails_the_v2_schema_and_a_v2_event_the_v1_schema(event_type: str) -> None:
    v1 = next(e for e in a_whole_call(events_of("v1")) if e["type"] == event_type)
    v2 = next(e for e in a_whole_call(events_of("v2")) if e["type"] == event_type)
    assert problems(v1, "v1") is None and problems(v2, "v2") is None
    assert problems(v1, "v2") is not None
    assert problems(v2, "v1") is not None
    # Neither passes for the other by losing or gaining the version field alone.
    assert problems({k: v for k, v in v2.items() if k != "version"}) is not None
    assert problems({**v1, "version": 2}) is not None


def test_conversation_updated_has_no_v1_schema() -> None:
    updated = next(
        e for e in a_siprec_session(events_of("v2")) if e["type"] == "conversation.updated"
    )
    assert problems(updated) is None
    assert problems(updated, "v1") == "no schema for type 'conversation.updated'"


@pytest.mark.parametrize(
    ("version", "picked"),
    [(None, "v1"), (2, "v2"), (1, "v1"), (3, None), (0, None), ("2", None), (True, None),
     (2.0, None)],
)  # fmt: skip
def test_an_events_version_field_picks_its_schema(version: object, picked: str | None) -> None:
    event: dict[str, Any] = (
        {"type": "dtmf"} if version is None else {"type": "dtmf", "version": version}
    )
    assert version_of(event) == picked
    if picked is None:
        assert problems(event) == f"no schema for version {version!r}"


@pytest.mark.parametrize("version", VERSIONS)
def test_an_event_under_another_types_schema_fails(version: str) -> None:
    events = {e["type"]: e for e in a_whole_call(events_of(version))}
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
    # The samples show what a release sends by default: the latest version, every type of it.
    assert {e["type"] for e in samples} == set(EVENT_TYPES)
    for event in samples:
        assert version_of(event) == VERSIONS[-1], event["type"]
        validate(event)
