from __future__ import annotations

from sip_bridge.siprec.metadata import Metadata, Participant, parse
from sip_bridge.siprec.speakers import SessionMetadata, Speaker
from tests.support.siprec_metadata import (
    SESSION_ID,
    SIP_SESSION_ID,
    Who,
    draft_style,
    partial_update,
    rfc7865,
    with_vendor_extensions,
)

ALICE: Who = ("alice", "Alice", "sip:alice@pbx", "1")
BOB: Who = ("bob", "Bob", "sip:bob@trunk", "2")
CAROL: Who = ("carol", "Carol", "sip:carol@pbx", "3")
NS = 'xmlns="urn:ietf:params:xml:ns:recording:1"'


def _state(*docs: str) -> SessionMetadata:
    state = SessionMetadata()
    for doc in docs:
        state.apply(parse(doc))
    return state


def _who(state: SessionMetadata, label: str) -> str | None:
    return state.speaker(label).participant_id


def _partial(body: str) -> str:
    return f"<recording {NS}><datamode>partial</datamode>{body}</recording>"


def test_before_any_metadata_nobody_is_known() -> None:
    state = SessionMetadata()
    assert not state.has_metadata
    assert state.speaker("1") == Speaker(None, None, None, "1")
    assert state.participants() == () and state.session_ids() == () and state.group_id is None


def test_each_label_names_its_sender() -> None:
    state = SessionMetadata()
    assert state.apply(parse(rfc7865([ALICE, BOB])))
    assert state.has_metadata
    assert state.speaker("1") == Speaker("alice", "Alice", "sip:alice@pbx", "1")
    assert state.speaker("2") == Speaker("bob", "Bob", "sip:bob@trunk", "2")
    assert state.speaker("7") == Speaker(None, None, None, "7")  # an unknown label
    assert state.participants() == (
        Participant("alice", "Alice", "sip:alice@pbx"),
        Participant("bob", "Bob", "sip:bob@trunk"),
    )
    assert state.streams_of("alice") == ("1",) and state.streams_of("nobody") == ()
    assert state.session_ids() == (SIP_SESSION_ID,)
    assert [s.session_id for s in state.sessions()] == [SESSION_ID]


def test_the_rfc_and_draft_forms_give_the_same_speakers() -> None:
    rfc, draft = _state(rfc7865([ALICE, BOB])), _state(draft_style([ALICE, BOB]))
    old = _state(draft_style([ALICE, BOB], name_id=False, namespace=""))
    for label in ("1", "2", "3"):
        assert rfc.speaker(label) == draft.speaker(label) == old.speaker(label)
    assert rfc.participants() == draft.participants() == old.participants()
    assert draft.speaker("2").name == "Bob"


def test_the_same_document_again_changes_nothing() -> None:
    state = _state(rfc7865([ALICE, BOB]))
    assert not state.apply(parse(rfc7865([ALICE, BOB])))
    assert not state.apply(parse(partial_update()))


def test_a_participant_joins() -> None:
    state = _state(rfc7865([ALICE, BOB]))
    assert state.apply(parse(partial_update(joined=[CAROL])))
    assert _who(state, "3") == "carol"
    assert (_who(state, "1"), _who(state, "2")) == ("alice", "bob")  # kept from before
    assert [p.participant_id for p in state.participants()] == ["alice", "bob", "carol"]


def test_a_transfer_hands_the_stream_to_the_new_participant() -> None:
    state = _state(rfc7865([ALICE, BOB]))
    transfer = partial_update(joined=[("carol", "Carol", "sip:carol@pbx", "2")], departed=["bob"])
    assert state.apply(parse(transfer))
    assert state.speaker("2") == Speaker("carol", "Carol", "sip:carol@pbx", "2")
    assert [p.participant_id for p in state.participants()] == ["alice", "carol"]


def test_a_stream_reassociated_without_a_departure() -> None:
    state = _state(rfc7865([ALICE, BOB]))
    # Bob's stream associations are restated as none, Carol now sends his stream.
    update = _partial(
        '<participantstreamassoc participant_id="bob"/>'
        '<participant participant_id="carol"><nameID aor="sip:carol@pbx"/></participant>'
        '<participantstreamassoc participant_id="carol"><send>stream-2</send>'
        "</participantstreamassoc>"
    )
    assert state.apply(parse(update))
    assert state.speaker("2") == Speaker("carol", None, "sip:carol@pbx", "2")
    assert state.streams_of("bob") == ()
    assert [p.participant_id for p in state.participants()] == ["alice", "bob", "carol"]


def test_a_departed_sender_is_no_speaker_until_reassociated() -> None:
    state = _state(rfc7865([ALICE, BOB]))
    assert state.apply(parse(partial_update(departed=["bob"])))
    assert state.speaker("2") == Speaker(None, None, None, "2")
    assert [p.participant_id for p in state.participants()] == ["alice"]
    back = _partial(
        f'<participantsessionassoc participant_id="bob" session_id="{SESSION_ID}">'
        "<associate-time>2026-01-15T10:00:00Z</associate-time></participantsessionassoc>"
    )
    assert state.apply(parse(back))
    assert _who(state, "2") == "bob"
    assert [p.participant_id for p in state.participants()] == ["alice", "bob"]


def test_a_mixed_stream_has_no_single_speaker() -> None:
    mixed = rfc7865([("alice", "Alice", None, "mix"), ("bob", "Bob", None, "mix")])
    state = _state(mixed)
    assert state.speaker("mix") == Speaker(None, None, None, "mix")
    assert state.streams_of("alice") == state.streams_of("bob") == ("mix",)
    assert state.apply(parse(partial_update(departed=["bob"])))
    assert _who(state, "mix") == "alice"  # one sender left


def test_a_complete_document_replaces_everything_but_the_order() -> None:
    state = _state(rfc7865([ALICE, BOB]), partial_update(joined=[CAROL], departed=["bob"]))
    assert state.apply(parse(rfc7865([BOB, ALICE], group_id=None, sip_session_id=None)))
    assert _who(state, "3") is None and _who(state, "2") == "bob"
    assert [p.participant_id for p in state.participants()] == ["alice", "bob"]
    assert state.group_id is None and state.session_ids() == ()


def test_a_caller_id_update_renames_a_participant() -> None:
    state = _state(rfc7865([ALICE, BOB]))
    rename = '<participant participant_id="bob"><nameID><name>Robert</name></nameID></participant>'
    assert state.apply(parse(_partial(rename)))
    assert state.speaker("2") == Speaker("bob", "Robert", None, "2")
    assert state.streams_of("bob") == ("2",)  # a participant element alone keeps its streams


def test_unknown_ids_are_kept_for_what_they_say() -> None:
    state = _state(
        _partial(
            '<stream stream_id="s1"><label>1</label></stream>'
            '<participantstreamassoc participant_id="x"><send>s1</send></participantstreamassoc>'
        )
    )
    assert state.speaker("1") == Speaker("x", None, None, "1")
    assert state.participants() == ()


def test_a_label_reused_by_a_new_session_after_the_old_one_ended() -> None:
    state = _state(rfc7865([ALICE, BOB]))
    assert not state.apply(parse(partial_update(ended=True)))  # its speakers stay as they were
    assert _who(state, "1") == "alice"  # only the ended session has label 1: still Alice
    new_leg = _partial(
        '<session session_id="cs-2"><sipSessionID>s2</sipSessionID></session>'
        '<participant participant_id="dave"/>'
        '<stream stream_id="cs2-1" session_id="cs-2"><label>1</label></stream>'
        '<participantstreamassoc participant_id="dave"><send>cs2-1</send>'
        "</participantstreamassoc>"
    )
    assert state.apply(parse(new_leg))
    assert _who(state, "1") == "dave"
    assert state.session_ids() == (SIP_SESSION_ID, "s2")


def test_ids_accumulate_over_partial_updates() -> None:
    first = with_vendor_extensions(rfc7865([ALICE, BOB]), call_id="c1@pbx")
    state = _state(first)
    assert state.call_ids() == ("c1@pbx",)
    again = _partial(
        f'<session session_id="{SESSION_ID}"><sipSessionID>other</sipSessionID>'
        '<v:x xmlns:v="urn:v"><v:call-id>c2@pbx</v:call-id></v:x></session>'
    )
    assert not state.apply(parse(again))  # speakers and participants are unchanged
    assert state.call_ids() == ("c1@pbx", "c2@pbx")
    assert state.session_ids() == (SIP_SESSION_ID, "other")
    assert state.group_id == "7+OTCyoxTmqmqyA/1weDAg=="


def test_an_empty_complete_document_still_counts_as_metadata() -> None:
    state = SessionMetadata()
    empty = Metadata(True, None, (), (), (), (), (), frozenset(), frozenset())
    assert not state.apply(empty)
    assert state.has_metadata
