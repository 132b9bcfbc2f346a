from __future__ import annotations

import time

import pytest

from sip_bridge.siprec.metadata import (
    MAX_METADATA_BYTES,
    CommSession,
    MetadataError,
    Participant,
    Stream,
    parse,
)
from tests.support.siprec_metadata import (
    GROUP_ID,
    SESSION_ID,
    SIP_SESSION_ID,
    TIME,
    Who,
    draft_style,
    partial_update,
    rfc7865,
    stream_id,
    with_vendor_extensions,
)

CALL: list[Who] = [
    ("alice", "Alice Liddell", "sip:alice@pbx.example.com", "1"),
    ("bob", "Bob", "sip:+15550100@trunk.example.com", "2"),
]


def _one_line_error(body: bytes | str) -> str:
    with pytest.raises(MetadataError) as caught:
        parse(body)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_the_rfc_form_is_read_whole() -> None:
    md = parse(rfc7865(CALL).encode())
    assert md.complete
    assert md.group_id == GROUP_ID
    assert md.sessions == (CommSession(SESSION_ID, (SIP_SESSION_ID,), ()),)
    assert md.participants == (
        Participant("alice", "Alice Liddell", "sip:alice@pbx.example.com"),
        Participant("bob", "Bob", "sip:+15550100@trunk.example.com"),
    )
    assert md.streams == (
        Stream(stream_id("1"), "1", SESSION_ID),
        Stream(stream_id("2"), "2", SESSION_ID),
    )
    assert md.sends == (("alice", stream_id("1")), ("bob", stream_id("2")))
    assert md.receives == (("alice", stream_id("2")), ("bob", stream_id("1")))
    assert md.departed == frozenset() and md.ended_sessions == frozenset()
    assert md.associated == {"alice", "bob"}


@pytest.mark.parametrize("name_id", [True, False])
@pytest.mark.parametrize(
    "namespace", ["urn:ietf:params:xml:ns:recording", "urn:ietf:params:xml:ns:recording:1", ""]
)
def test_the_draft_form_says_the_same(name_id: bool, namespace: str) -> None:
    rfc = parse(rfc7865(CALL))
    draft = parse(draft_style(CALL, name_id=name_id, namespace=namespace))
    assert draft.complete
    assert draft.participants == rfc.participants
    assert draft.streams == rfc.streams
    assert draft.sends == rfc.sends
    assert draft.receives == rfc.receives
    assert [s.session_id for s in draft.sessions] == [SESSION_ID]


def test_datamode() -> None:
    assert not parse(rfc7865(CALL, datamode="partial")).complete
    assert not parse(rfc7865(CALL, datamode=" Partial ")).complete
    no_mode = rfc7865(CALL).replace("<datamode>complete</datamode>", "")
    assert parse(no_mode).complete


def test_a_participant_without_name_id() -> None:
    md = parse(rfc7865([("p1", None, None, "1"), ("p2", None, "sip:p2@x", "2")]))
    assert md.participants == (Participant("p1", None, None), Participant("p2", None, "sip:p2@x"))


def test_texts_are_stripped_and_empty_ids_ignored() -> None:
    doc = (
        '<recording xmlns="urn:ietf:params:xml:ns:recording:1">'
        '<participant participant_id="  p1 "><nameID aor=" sip:a@b "><name>\n  Ann \n</name>'
        "</nameID></participant>"
        '<participant participant_id="  "><nameID aor="sip:ghost@b"/></participant>'
        '<stream stream_id=""><label>9</label></stream>'
        '<stream stream_id="s1"><label> 1 </label></stream>'
        '<participantstreamassoc participant_id="p1"><send> s1 </send><send>  </send>'
        "<recv/></participantstreamassoc>"
        '<participantstreamassoc participant_id=""><send>s1</send></participantstreamassoc>'
        "</recording>"
    )
    md = parse(doc)
    assert md.participants == (Participant("p1", "Ann", "sip:a@b"),)
    assert md.streams == (Stream("s1", "1", None),)
    assert md.sends == (("p1", "s1"),) and md.receives == ()


def test_references_to_unknown_ids_are_kept() -> None:
    doc = (
        '<recording xmlns="urn:ietf:params:xml:ns:recording:1">'
        '<participantstreamassoc participant_id="nobody"><send>nowhere</send>'
        "</participantstreamassoc></recording>"
    )
    md = parse(doc)
    assert md.sends == (("nobody", "nowhere"),)
    assert md.participants == () and md.streams == ()
    assert md.stream_assocs == {"nobody"}


def test_vendor_extensions_give_the_call_id_and_nothing_else() -> None:
    plain = parse(rfc7865(CALL))
    md = parse(with_vendor_extensions(rfc7865(CALL), call_id="a84b4c76e66710@pbx.example.com"))
    assert md.sessions[0].call_ids == ("a84b4c76e66710@pbx.example.com",)
    assert md.sessions[0].sip_session_ids == (SIP_SESSION_ID,)
    # The vendor's own <participant>/<send> (another namespace) is no participant.
    assert md.participants == plain.participants
    assert md.sends == plain.sends
    draft = parse(with_vendor_extensions(draft_style(CALL), call_id="c1@sbc"))
    assert draft.sessions[0].call_ids == ("c1@sbc",)
    assert draft.participants == plain.participants


@pytest.mark.parametrize("tag", ["Call-ID", "call_id", "CallId", "callid"])
def test_call_id_element_spellings(tag: str) -> None:
    doc = (
        '<recording xmlns="urn:ietf:params:xml:ns:recording:1">'
        f'<session session_id="s1"><v:ext xmlns:v="urn:x"><v:{tag}> c@h </v:{tag}>'
        f"<v:{tag}>c@h</v:{tag}><v:{tag}/></v:ext><{tag}>d@h</{tag}></session></recording>"
    )
    assert parse(doc).sessions == (CommSession("s1", (), ("c@h", "d@h")),)


def test_departures_and_ends() -> None:
    md = parse(partial_update(departed=["bob"], ended=True))
    assert not md.complete
    assert md.departed == {"bob"}
    assert md.ended_sessions == {SESSION_ID}
    assert "bob" not in md.associated
    recording_over = (
        '<recording xmlns="urn:ietf:params:xml:ns:recording:1"><datamode>partial</datamode>'
        '<sessionrecordingassoc session_id="s9"><disassociate-time>2026-01-15T10:00:00Z'
        '</disassociate-time></sessionrecordingassoc><sessionrecordingassoc session_id="s8">'
        "<associate-time>2026-01-15T10:00:00Z</associate-time></sessionrecordingassoc>"
        "</recording>"
    )
    assert parse(recording_over).ended_sessions == {"s9"}
    # The draft form marks a departure inside <participant> itself.
    joined = f"<associate-time>{TIME}</associate-time></participant>"
    left = f"<disassociate-time>{TIME}</disassociate-time></participant>"
    assert parse(draft_style(CALL).replace(joined, left, 1)).departed == {"alice"}


def test_malformed_xml_is_refused() -> None:
    message = _one_line_error(b"<recording xmlns='urn:ietf:params:xml:ns:recording:1'><datamode>")
    assert message.startswith("metadata is not well-formed XML")
    assert _one_line_error(b"").startswith("metadata is not well-formed XML")
    assert "well-formed" in _one_line_error(b"<recording>&undefined;</recording>")


@pytest.mark.parametrize(
    ("doc", "shown"),
    [
        ("<html><body/></html>", "<html>"),
        ('<recording xmlns="urn:example:other"/>', "<{urn:example:other}recording>"),
        ('<r:recording-metadata xmlns:r="urn:ietf:params:xml:ns:recording:1"/>', "recording-"),
    ],
)
def test_a_root_other_than_recording_is_refused(doc: str, shown: str) -> None:
    message = _one_line_error(doc)
    assert shown in message and "not <recording>" in message


BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE recording [\n <!ENTITY lol "lol">\n'
    + "".join(f' <!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">\n' for i in range(1, 10)).replace(
        "&lol0;", "&lol;"
    )
    + ']>\n<recording xmlns="urn:ietf:params:xml:ns:recording:1"><datamode>&lol9;</datamode>'
    "</recording>"
)
XXE = (
    '<?xml version="1.0"?>\n<!DOCTYPE recording [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
    '<recording xmlns="urn:ietf:params:xml:ns:recording:1"><participant participant_id="p">'
    "<nameID><name>&xxe;</name></nameID></participant></recording>"
)
BARE_DOCTYPE = '<!DOCTYPE recording SYSTEM "http://attacker.example/x.dtd"><recording/>'


@pytest.mark.parametrize("doc", [BILLION_LAUGHS, XXE, BARE_DOCTYPE])
def test_doctypes_and_entities_are_refused(doc: str) -> None:
    started = time.monotonic()
    message = _one_line_error(doc.encode())
    assert time.monotonic() - started < 0.5
    assert "DOCTYPE" in message
    assert "root:" not in message  # nothing of /etc/passwd leaks into the error


def test_an_oversized_body_is_refused_before_parsing() -> None:
    filler = "<!--" + "x" * (1024 * 1024) + "-->"
    big = rfc7865(CALL).replace("</recording>", filler + "</recording>").encode()
    started = time.monotonic()
    message = _one_line_error(big)
    assert time.monotonic() - started < 0.1
    assert message == f"metadata is {len(big)} bytes, over the {MAX_METADATA_BYTES} limit"


def test_the_size_limit_is_exact() -> None:
    doc = rfc7865(CALL)
    pad = MAX_METADATA_BYTES - len(doc.encode()) - len("<!---->")
    at_limit = doc.replace("</recording>", "<!--" + "x" * pad + "--></recording>")
    assert len(at_limit.encode()) == MAX_METADATA_BYTES
    assert parse(at_limit).participants == parse(doc).participants
    assert "over the" in _one_line_error(at_limit.replace("<!--", "<!-- ", 1))
