from __future__ import annotations

from sip_bridge.sip_headers import MAX_HEADERS, MAX_VALUE_CHARS, parse_headers, recv_info, select

INVITE = (
    "INVITE sip:transcribe@bridge SIP/2.0\r\n"
    "Via: SIP/2.0/UDP pbx;branch=z9hG4bK1\r\n"
    "f: <sip:alice@pbx>;tag=1\r\n"
    "t: <sip:transcribe@bridge>\r\n"
    "i: abc@pbx\r\n"
    "X-Customer-Id: 42\r\n"
    "x-queue: sales\r\n"
    "X-Long: first part\r\n"
    "  second part\r\n"
    "X-Queue: support\r\n"
    "Recv-Info: foo, Transcript;x=1\r\n"
    "Content-Length: 10\r\n"
    "\r\n"
    "X-Body: not a header\r\n"
)


def test_headers_are_parsed_with_compact_names_and_folding() -> None:
    fields = parse_headers(INVITE)
    assert ("From", "<sip:alice@pbx>;tag=1") in fields
    assert ("Call-ID", "abc@pbx") in fields
    assert ("X-Long", "first part second part") in fields
    assert all(name != "X-Body" for name, _ in fields)


def test_select_matches_case_insensitively_and_joins_repeats() -> None:
    got = select(parse_headers(INVITE), ["X-*"])
    assert got == {
        "X-Customer-Id": "42",
        "x-queue": "sales, support",
        "X-Long": "first part second part",
    }
    assert select(parse_headers(INVITE), ["x-customer-id"]) == {"X-Customer-Id": "42"}
    assert select(parse_headers(INVITE), []) == {}


def test_select_bounds_what_a_caller_can_send() -> None:
    fields = [(f"X-H{i}", "v" * 2000) for i in range(100)]
    got = select(fields, ["X-*"])
    assert len(got) == MAX_HEADERS
    assert all(len(v) == MAX_VALUE_CHARS for v in got.values())


def test_recv_info() -> None:
    assert recv_info(parse_headers(INVITE)) == {"foo", "transcript"}
    assert recv_info([("Recv-Info", "")]) == frozenset()
    assert recv_info([("From", "x")]) is None
