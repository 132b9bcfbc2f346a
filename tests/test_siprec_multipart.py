from __future__ import annotations

import pytest

from sip_bridge.siprec.multipart import MultipartError, Part, find, message_parts, parts
from tests.support.siprec_metadata import multipart_body, rfc7865

SDP = (
    "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\n"
    "m=audio 4000 RTP/AVP 0\na=sendonly\na=label:1\n"
)
METADATA = rfc7865([("alice", "Alice", "sip:alice@pbx", "1")])
RS = "application/rs-metadata+xml"


@pytest.mark.parametrize("newline", ["\r\n", "\n"])
def test_a_siprec_body_splits_into_sdp_and_metadata(newline: str) -> None:
    content_type, body = multipart_body(SDP, METADATA, newline=newline)
    found = parts(content_type, body.encode())
    assert [p.content_type for p in found] == ["application/sdp", RS]
    assert found[0].body == SDP.replace("\n", newline).encode()
    assert found[1].body == METADATA.encode()  # the line break before the delimiter is not body
    assert ("Content-Disposition", "recording-session") in found[1].headers
    assert find(found, RS) == METADATA.encode()
    assert find(found, "Application/SDP") == found[0].body
    assert find(found, "text/plain") is None


def test_a_quoted_boundary_with_special_characters() -> None:
    body = '--a;b "c"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--a;b "c"--\r\n'
    found = parts('Multipart/Mixed; charset=x; BOUNDARY="a;b \\"c\\""', body)
    assert found == (Part("text/plain", (("Content-Type", "text/plain"),), b"hello"),)


def test_preamble_epilogue_and_transport_padding_are_not_parts() -> None:
    body = (
        b"This is a preamble.\r\n--xyz\r\n"
        b"Content-Type: application/sdp\r\n\r\nv=0\r\n"
        b"--xyz  \t\r\nContent-Type: application/rs-metadata+xml\r\n\r\n<recording/>\r\n"
        b"--xyz--\r\nan epilogue\r\n--xyz\r\nContent-Type: text/evil\r\n\r\nignored\r\n"
    )
    found = parts("multipart/mixed;boundary=xyz", body)
    assert [(p.content_type, p.body) for p in found] == [
        ("application/sdp", b"v=0"),
        (RS, b"<recording/>"),
    ]


def test_a_missing_close_delimiter_takes_what_is_there() -> None:
    body = (
        "--b1\nContent-Type: application/sdp\n\nv=0\n"
        "--b1\nContent-Type: application/rs-metadata+xml\n\n<recording/>"
    )
    found = parts("multipart/mixed; boundary=b1", body)
    assert [p.content_type for p in found] == ["application/sdp", RS]
    assert found[1].body == b"<recording/>"


def test_dash_lines_inside_a_part_are_body() -> None:
    text = "--\n-- comment\n--b1x\n--b1--more\n ---b1\nend"
    body = f"--b1\r\nContent-Type: text/plain\r\n\r\n{text}\r\n--b1--\r\n"
    (only,) = parts("multipart/mixed;boundary=b1", body)
    assert only.body == text.encode()


def test_a_part_without_headers_has_no_content_type() -> None:
    (only,) = parts("multipart/mixed;boundary=b", b"--b\r\n\r\nraw\r\n--b--")
    assert only == Part("", (), b"raw")


def test_nested_multipart_is_flattened() -> None:
    inner = "--in\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n--in--"
    body = (
        "--out\r\nContent-Type: multipart/related;boundary=in\r\n\r\n"
        f"{inner}\r\n--out\r\nContent-Type: application/rs-metadata+xml\r\n\r\n<r/>\r\n--out--"
    )
    found = parts("multipart/alternative;boundary=out", body)
    assert [(p.content_type, p.body) for p in found] == [
        ("application/sdp", b"v=0"),
        (RS, b"<r/>"),
    ]


def test_a_body_that_is_not_multipart_is_one_part() -> None:
    (only,) = parts("Application/SDP; charset=utf-8", SDP)
    assert only.content_type == "application/sdp"
    assert only.body == SDP.encode()


def test_no_boundary_parameter_is_refused() -> None:
    with pytest.raises(MultipartError, match="without a boundary parameter"):
        parts("multipart/mixed", "--x\r\n\r\nbody\r\n--x--")
    with pytest.raises(MultipartError, match="boundary"):
        parts('multipart/mixed; boundary=""', "--\r\n\r\nbody")


def test_a_boundary_absent_from_the_body_is_refused() -> None:
    with pytest.raises(MultipartError, match="no part delimited by --other"):
        parts("multipart/mixed;boundary=other", "--b1\r\nContent-Type: text/plain\r\n\r\nx\r\n")


def test_non_ascii_text_survives() -> None:
    metadata = rfc7865([("p1", "Zoë Ünal", "sip:zoe@pbx", "1")])
    content_type, body = multipart_body(SDP, metadata)
    assert find(parts(content_type, body), RS) == metadata.encode()


def _invite(headers: str, body: str, newline: str) -> str:
    head = f"INVITE sip:srs@bridge SIP/2.0\nVia: SIP/2.0/UDP sbc;branch=z9hG4bK1\n{headers}"
    return (head + "\n\n" + body).replace("\n", newline)


@pytest.mark.parametrize("newline", ["\r\n", "\n"])
@pytest.mark.parametrize("name", ["Content-Type", "c", "content-type"])
def test_message_parts_finds_the_content_type_and_the_body(newline: str, name: str) -> None:
    content_type, body = multipart_body(SDP, METADATA, boundary="OSS-unique-42", newline="\n")
    msg = _invite(f"Require: siprec\n{name}: {content_type}\nContent-Length: 999", body, newline)
    found = message_parts(msg)
    assert [p.content_type for p in found] == ["application/sdp", RS]
    assert find(found, RS) == METADATA.replace("\n", newline).encode()


def test_message_parts_of_a_folded_content_type() -> None:
    body = "--f\nContent-Type: text/plain\n\nx\n--f--\n"
    msg = _invite("Content-Type: multipart/mixed;\n  boundary=f", body, "\r\n")
    assert [p.body for p in message_parts(msg)] == [b"x"]


def test_a_message_without_a_body_has_no_parts() -> None:
    assert message_parts("OPTIONS sip:srs SIP/2.0\r\nContent-Length: 0\r\n\r\n") == ()
    assert message_parts("OPTIONS sip:srs SIP/2.0\r\nContent-Length: 0\r\n") == ()
