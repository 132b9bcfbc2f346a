"""sip_bridge.calls.dialogs: the dialog read from an INVITE and our 2xx, and the BYE built from
it."""

from __future__ import annotations

import pytest

from sip_bridge import sip_headers
from sip_bridge.calls import dialogs

INVITE = (
    "INVITE sip:transcribe@127.0.0.1:5091 SIP/2.0\r\n"
    "Record-Route: <sip:127.0.0.1:5089;r2=on;lr=on;ftag=abc>,"
    " <sip:192.0.2.10:5060;r2=on;lr=on;ftag=abc>\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5089;branch=z9hG4bK1\r\n"
    'From: "PBX" <sip:1000@pbx.example>;tag=abc\r\n'
    "To: <sip:transcribe@bridge.example>\r\n"
    "Call-ID: 42@pbx\r\n"
    "CSeq: 7 INVITE\r\n"
    "Contact: <sip:1000@198.51.100.7:5070;transport=udp>\r\n"
    "Content-Length: 0\r\n\r\n"
)
ANSWER = (
    "SIP/2.0 200 OK\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5089;branch=z9hG4bK1\r\n"
    'From: "PBX" <sip:1000@pbx.example>;tag=abc\r\n'
    "To: <sip:transcribe@bridge.example>;tag=ours-1\r\n"
    "Call-ID: 42@pbx\r\nCSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n"
)


def test_the_dialog_has_both_tags_the_target_and_the_route_set_in_order() -> None:
    d = dialogs.from_messages(INVITE, ANSWER)
    assert (d.call_id, d.local_tag, d.remote_tag) == ("42@pbx", "ours-1", "abc")
    assert d.remote_target == "sip:1000@198.51.100.7:5070;transport=udp"
    assert d.route_set == (
        "sip:127.0.0.1:5089;r2=on;lr=on;ftag=abc",
        "sip:192.0.2.10:5060;r2=on;lr=on;ftag=abc",
    )
    assert dialogs.next_hop(d) == ("127.0.0.1", 5089)  # loose routing: the first route
    assert dialogs.Dialog.from_dict(d.as_dict()) == d


def test_without_a_route_set_the_bye_goes_to_the_target() -> None:
    invite = "\r\n".join(line for line in INVITE.split("\r\n") if not line.startswith("Record"))
    d = dialogs.from_messages(invite, ANSWER)
    assert d.route_set == () and dialogs.next_hop(d) == ("198.51.100.7", 5070)


def test_the_bye_is_the_uas_side_of_the_dialog() -> None:
    d = dialogs.from_messages(INVITE, ANSWER)
    branch, raw = dialogs.bye(d, "127.0.0.1", 40000, 1_800_000_000, "Q.850;cause=41")
    text = raw.decode()
    assert text.startswith("BYE sip:1000@198.51.100.7:5070;transport=udp SIP/2.0\r\n")
    fields = sip_headers.parse_headers(text)
    assert sip_headers.value(fields, "From") == "<sip:transcribe@bridge.example>;tag=ours-1"
    assert sip_headers.value(fields, "To") == '"PBX" <sip:1000@pbx.example>;tag=abc'
    assert [v for n, v in fields if n == "Route"] == [f"<{r}>" for r in d.route_set]
    assert sip_headers.value(fields, "CSeq") == "1800000000 BYE"
    assert branch in (sip_headers.value(fields, "Via") or "")
    assert text.endswith("Content-Length: 0\r\n\r\n")
    reply = f"SIP/2.0 481 No Dialog\r\nVia: SIP/2.0/UDP 127.0.0.1:40000;branch={branch}\r\n\r\n"
    assert dialogs.response_status(reply.encode(), branch) == 481
    assert dialogs.response_status(reply.encode(), "z9hG4bKother") is None


@pytest.mark.parametrize(
    "drop",
    ["Call-ID", "Contact", "From"],
)
def test_an_invite_missing_what_a_dialog_needs_is_a_dialog_error(drop: str) -> None:
    invite = "\r\n".join(line for line in INVITE.split("\r\n") if not line.startswith(drop))
    with pytest.raises(dialogs.DialogError):
        dialogs.from_messages(invite, ANSWER)


def test_an_answer_without_our_tag_is_a_dialog_error() -> None:
    with pytest.raises(dialogs.DialogError):
        dialogs.from_messages(INVITE, ANSWER.replace(";tag=ours-1", ""))


def test_the_ack_owed_by_the_caller_is_its_side_of_the_dialog() -> None:
    d = dialogs.from_messages(INVITE, ANSWER)
    assert dialogs.invite_cseq(INVITE) == 7
    assert dialogs.invite_cseq(INVITE.replace("CSeq: 7 INVITE", "CSeq: x INVITE")) is None
    text = dialogs.ack_for_caller(d, 7, "sip:127.0.0.1:5071", "127.0.0.1", 40001).decode()
    assert text.startswith("ACK sip:127.0.0.1:5071 SIP/2.0\r\n")
    fields = sip_headers.parse_headers(text)
    assert sip_headers.value(fields, "From") == '"PBX" <sip:1000@pbx.example>;tag=abc'
    assert sip_headers.value(fields, "To") == "<sip:transcribe@bridge.example>;tag=ours-1"
    assert sip_headers.value(fields, "CSeq") == "7 ACK"  # the INVITE's number (13.2.2.4)
    assert sip_headers.value(fields, "Call-ID") == "42@pbx"
    assert "Route" not in {n for n, _ in fields}  # straight to our own PJSIP
