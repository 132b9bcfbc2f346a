"""What an INVITE opens (sans-IO part): the refusals an SRC's INVITE can get before PJSIP
answers it, read from the INVITE's text as PJSUA hands it over."""

from __future__ import annotations

import pytest

from sip_bridge import sip_headers
from sip_bridge.calls.conversations import MAX_SIPREC_STREAMS, refusal
from tests.support import siprec_metadata as md


def invite(content_type: str, body: str, extra: str = "") -> str:
    return (
        "INVITE sip:srs@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n"
        "From: <sip:src@127.0.0.1>;tag=1\r\nTo: <sip:srs@127.0.0.1>\r\nCall-ID: rs-1@src\r\n"
        f"CSeq: 1 INVITE\r\nContact: <sip:src@127.0.0.1:5070>;+sip.src\r\n{extra}"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n{body}"
    )


def sdp(streams: int) -> str:
    lines = ["v=0", "o=SRC 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0"]
    for n in range(streams):
        lines += [f"m=audio {40000 + 2 * n} RTP/AVP 0", f"a=label:{n}", "a=sendonly"]
    return "\r\n".join(lines) + "\r\n"


def refused(msg: str) -> tuple[int, str] | None:
    r = refusal("c" * 32, sip_headers.parse_headers(msg), msg)
    return None if r is None else (r.status, r.warning)


@pytest.mark.parametrize("streams", [1, 2, MAX_SIPREC_STREAMS])
def test_a_recording_session_a_call_can_hold_is_taken(streams: int) -> None:
    people = [(f"p{n}", f"P {n}", f"sip:p{n}@x.example", str(n)) for n in range(streams)]
    assert refused(invite(*md.multipart_body(sdp(streams), md.rfc7865(people)))) is None


def test_more_streams_than_a_call_holds_get_488_saying_how_many() -> None:
    got = refused(invite(*md.multipart_body(sdp(MAX_SIPREC_STREAMS + 1), md.rfc7865([]))))
    assert got is not None and got[0] == 488
    assert f'"{MAX_SIPREC_STREAMS + 1} audio streams offered' in got[1]


def test_an_ordinary_call_of_many_streams_is_left_to_pjsip() -> None:
    plain = invite("application/sdp", sdp(6)).replace(";+sip.src", "")
    assert refused(plain) is None


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/mixed", "--x\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n--x--\r\n"),
        ("multipart/mixed;boundary=nowhere", "--elsewhere\r\n\r\nhi\r\n"),
    ],
    ids=["no-boundary", "boundary-not-in-body"],
)
def test_a_multipart_body_that_does_not_split_gets_400_with_the_reason(
    content_type: str, body: str
) -> None:
    got = refused(invite(content_type, body))
    assert got is not None and got[0] == 400
    assert got[1].startswith('399 sip-bridge "') and got[1].endswith('"') and len(got[1]) > 20
