"""The corpus of malformed SIP requests and SDP offers: systematic mutations of a valid INVITE,
OPTIONS and BYE (see ``sip_fuzz`` for what a case is and how it is sent). Test support only.

A table more than code: each part adds the cases of one class of bad input, each with the answer
RFC 3261 (or RFC 3264, RFC 4475) requires. Deterministic: the only randomness has a fixed seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from tests.support.sip_fuzz import (
    BAD_REQUEST,
    CRLF,
    LENIENT,
    NO_ANSWER_ACK,
    NO_ANSWER_NOT_SIP,
    NO_ANSWER_RESPONSE,
    NO_ANSWER_VIA,
    NOT_ACCEPTABLE,
    OFFER_OK_OR_488,
    UNKNOWN_METHOD,
    VALID_SDP,
    Case,
    Expect,
    Request,
    answer,
    base,
    bye,
    invite,
    options,
)


def _sdp(*lines: str) -> str:
    return "".join(line + CRLF for line in lines)


def _offer(
    media: str = "m=audio 40000 RTP/AVP 0",
    *attrs: str,
    c: str = "c=IN IP4 127.0.0.1",
    head: tuple[str, ...] | None = None,
) -> str:
    top = head if head is not None else ("v=0", "o=fuzz 1 1 IN IP4 127.0.0.1", "s=-", c, "t=0 0")
    return _sdp(*top, media, *attrs)


class _Corpus:
    def __init__(self) -> None:
        self.cases: list[Case] = []
        self._n = 0

    def next_n(self) -> int:
        self._n += 1
        return self._n

    def add(self, name: str, kind: str, data: bytes, expect: Expect, method: str) -> None:
        if any(c.name == name for c in self.cases):
            raise ValueError(f"duplicate case name {name}")
        self.cases.append(Case(name, kind, data, expect, method))

    def req(
        self,
        name: str,
        kind: str,
        build: Callable[..., Request],
        expect: Expect,
        mutate: Callable[..., Request | bytes] | None = None,
    ) -> None:
        n = self.next_n()
        req = build(n)
        out = mutate(req) if mutate is not None else req
        data = out if isinstance(out, bytes) else out.encode()
        self.add(name, kind, data, expect, req.method)


def _truncations(c: _Corpus) -> None:
    """Cut anywhere: before the end of the request line the start line is not SIP; after the
    Via, the request is malformed (400); inside the body, Content-Length is too large (400)."""
    for label, build in (("invite", invite), ("options", options), ("bye", bye)):
        full = build(0).encode()
        head_end = full.index(b"\r\n\r\n")
        first_line = full.index(b"\r\n")
        via_end = full.index(b"\r\n", first_line + 2)
        cuts = sorted(
            {
                1,
                7,
                first_line - 4,
                first_line,
                via_end - 10,
                via_end + 2,
                head_end - 5,
                head_end,
                head_end + 2,
            }
        )
        if label == "invite":
            cuts += [head_end + 4 + k for k in (1, 20, 60)]
        for cut in cuts:
            n = c.next_n()
            data = build(n).encode()
            data = data[: cut + (len(data) - len(full))] if cut > head_end else data[:cut]
            if cut <= first_line:
                expect = NO_ANSWER_NOT_SIP
            elif cut < via_end:
                expect = NO_ANSWER_VIA  # the top Via is cut: nowhere to answer
            elif label == "bye" and cut >= head_end:
                expect = BAD_REQUEST | answer(481, 404, 405, rule="a BYE, no dialog: 481 (§15.1.2)")
            else:
                expect = BAD_REQUEST
            c.add(f"truncated-{label}-at-{cut}", "truncated", data, expect, label.upper())
    # The same INVITE cut in its body, and with a header block that never ends.
    c.req(
        "truncated-no-blank-line",
        "truncated",
        invite,
        BAD_REQUEST,
        lambda r: r.encode().split(b"\r\n\r\n")[0] + b"\r\n",
    )
    c.req(
        "truncated-lf-only-no-blank",
        "truncated",
        options,
        BAD_REQUEST,
        lambda r: r.encode().split(b"\r\n\r\n")[0],
    )


def _oversized(c: _Corpus) -> None:
    big_ok = answer(400, 413, 494, 513, rule="RFC 3261 §21.4.11/§21.5.14, RFC 4475 §3.1.2.4")
    for size in (1024, 8192, 30000):
        c.req(
            f"oversized-call-id-{size}",
            "oversized",
            options,
            answer(
                200,
                400,
                413,
                513,
                rule="a long Call-ID is legal; too long for the element: 4xx/513",
            ),
            lambda r, s=size: r.set("Call-ID", "x" * s + "@h"),
        )
        c.req(
            f"oversized-header-{size}",
            "oversized",
            options,
            answer(
                200,
                400,
                413,
                494,
                513,
                rule="an unknown header is ignored (§8.2.2); too large: 4xx/513",
            ),
            lambda r, s=size: r.add("X-Junk", "y" * s),
        )
        c.req(
            f"oversized-from-display-{size}",
            "oversized",
            options,
            answer(200, 400, 513, rule="a long display name is legal; too long: 400/513"),
            lambda r, s=size: r.set("From", f'"{"d" * s}" <sip:a@b>;tag=1'),
        )
    c.req(
        "oversized-ruri",
        "oversized",
        options,
        answer(200, 400, 404, 414, 513, rule="§21.4.12: 414 Request-URI Too Long"),
        lambda r: r.encode().replace(b"sip:transcribe@", b"sip:" + b"u" * 9000 + b"@", 1),
    )
    c.req(
        "oversized-1000-headers",
        "oversized",
        options,
        answer(200, 400, 494, 513, rule="many unknown headers: ignored, or too large"),
        lambda r: [r.add(f"X-H{i}", "v") for i in range(1000)][-1],
    )
    c.req(
        "oversized-200-vias",
        "oversized",
        options,
        answer(200, 400, 483, 513, rule="a long Via list is legal; the answer goes to the top one"),
        lambda r: [
            r.add("Via", f"SIP/2.0/UDP 10.0.0.{i % 250}:5060;branch=z9hG4bK{i}") for i in range(200)
        ][-1],
    )
    c.req(
        "oversized-64k-body",
        "oversized",
        lambda n: invite(n, VALID_SDP + "a=x:" + "z" * 60000 + CRLF),
        answer(200, 400, 413, 488, 503, 513, rule="a large body: taken, or 413/513"),
    )
    dropped = Expect(frozenset(), "larger than the element's receive buffer: dropped", True)
    c.req(
        "oversized-65507-datagram",
        "oversized",
        options,
        big_ok | dropped,
        lambda r: r.add("X-Pad", "p" * (65507 - len(r.encode()) - 12)).encode()[:65507],
    )
    c.req(
        "oversized-cseq-number",
        "oversized",
        options,
        BAD_REQUEST,
        lambda r: r.set("CSeq", "99999999999999999999 OPTIONS"),
    )
    c.req(
        "oversized-max-forwards",
        "oversized",
        options,
        answer(200, 400, 483, rule="§20.22: Max-Forwards is 0-255"),
        lambda r: r.set("Max-Forwards", "99999999999"),
    )


def _content_length(c: _Corpus) -> None:
    for label, value, expect in (
        ("larger", "500", BAD_REQUEST),
        ("larger-by-one", None, BAD_REQUEST),
        ("negative", "-1", BAD_REQUEST),
        ("negative-big", "-99999", BAD_REQUEST),
        ("huge", "99999999999999999999", BAD_REQUEST),
        ("not-a-number", "abc", BAD_REQUEST),
        ("empty", " ", BAD_REQUEST),
        ("hex", "0x10", BAD_REQUEST),
        ("two-values", "10, 20", BAD_REQUEST),
        ("float", "1.5", BAD_REQUEST),
    ):

        def set_cl(r: Request, v: str | None = value) -> Request:
            r.content_length = v if v is not None else str(len(r.body) + 1)
            return r

        c.req(f"content-length-{label}-invite", "content-length", invite, expect, set_cl)
        c.req(f"content-length-{label}-options", "content-length", options, expect, set_cl)
    # Shorter than the body: the rest of the datagram is discarded (§18.3), so the offer is cut.
    c.req(
        "content-length-smaller",
        "content-length",
        invite,
        answer(400, 488, rule="§18.3: bytes past Content-Length are discarded: a cut offer"),
        lambda r: r.with_(content_length="20"),
    )
    c.req(
        "content-length-zero-with-body",
        "content-length",
        invite,
        answer(
            200,
            400,
            488,
            503,
            rule="§18.3: the body is discarded: an INVITE with no offer"
            " may be answered with an offer, or refused",
        ),
        lambda r: r.with_(content_length="0"),
    )
    c.req(
        "content-length-missing-udp",
        "content-length",
        invite,
        OFFER_OK_OR_488,
        lambda r: r.with_(content_length=""),
    )
    c.req(
        "content-length-duplicate",
        "content-length",
        invite,
        BAD_REQUEST,
        lambda r: r.add("Content-Length", "5"),
    )
    c.req(
        "content-length-compact-mismatch",
        "content-length",
        options,
        BAD_REQUEST,
        lambda r: r.add("l", "300"),
    )


def _encodings(c: _Corpus) -> None:
    mangle: list[tuple[str, Callable[[Request], Request | bytes], Expect]] = [
        ("nul-in-call-id", lambda r: r.set("Call-ID", "ab\x00cd@h"), BAD_REQUEST | LENIENT),
        ("nul-in-from", lambda r: r.set("From", "<sip:a\x00@b>;tag=1"), BAD_REQUEST | LENIENT),
        (
            "nul-after-headers",
            lambda r: r.encode().replace(b"\r\n\r\n", b"\r\n\x00\r\n\r\n"),
            BAD_REQUEST,
        ),
        (
            "nul-in-method",
            lambda r: r.encode().replace(b"OPTIONS ", b"OPT\x00IONS ", 1),
            answer(400, 405, 501, rule="a method token with NUL: not a method of ours"),
        ),
        (
            "latin1-display-name",
            lambda r: r.encode().replace(b"<sip:fuzz@", b'"\xe9t\xe9" <sip:fuzz@', 1),
            answer(200, 400, rule="non-UTF-8 in a display name: 400, or tolerated"),
        ),
        (
            "invalid-utf8-call-id",
            lambda r: r.encode().replace(b"Call-ID: fuzz", b"Call-ID: \xff\xfe", 1),
            answer(200, 400, rule="Call-ID is a word; bytes outside it: 400, or tolerated"),
        ),
        (
            "invalid-utf8-ruri",
            lambda r: r.encode().replace(b"sip:transcribe@", b"sip:\xc3\x28@", 1),
            answer(200, 400, 404, 416, rule="a user part with raw bytes: 400, or tolerated"),
        ),
        ("utf8-bom-first", lambda r: b"\xef\xbb\xbf" + r.encode(), NO_ANSWER_NOT_SIP | BAD_REQUEST),
        (
            "control-chars-in-to",
            lambda r: r.set("To", "<sip:a\x01\x02\x1b@b>"),
            BAD_REQUEST | LENIENT,
        ),
        (
            "bare-lf-lines",
            lambda r: r.encode().replace(b"\r\n", b"\n"),
            answer(200, 400, rule="§7.5: CRLF, but LF-only is commonly tolerated"),
        ),
        ("bare-cr-lines", lambda r: r.encode().replace(b"\r\n", b"\r"), NO_ANSWER_NOT_SIP),
        ("utf16-message", lambda r: r.encode().decode().encode("utf-16"), NO_ANSWER_NOT_SIP),
        (
            "high-bytes-in-header-name",
            lambda r: r.encode().replace(b"Max-Forwards", b"Max-\xff\xfe", 1),
            BAD_REQUEST | LENIENT,
        ),
        (
            "escaped-nul-in-ruri",
            lambda r: r.encode().replace(b"sip:transcribe@", b"sip:tr%00x@", 1),
            answer(200, 400, 404, rule="RFC 4475 §3.1.1.9 escnull: %00 is legal in a user part"),
        ),
        (
            "tab-in-request-line",
            lambda r: r.encode().replace(b"OPTIONS sip", b"OPTIONS\tsip", 1),
            BAD_REQUEST | LENIENT,
        ),
    ]
    for name, fn, expect in mangle:
        build = invite if name in ("nul-after-headers",) else options
        c.req(f"encoding-{name}", "encoding", build, expect, fn)
    # The SDP itself in a bad encoding.
    c.req(
        "encoding-sdp-utf16",
        "encoding",
        lambda n: _with_body(invite(n), VALID_SDP.encode("utf-16")),
        NOT_ACCEPTABLE | BAD_REQUEST,
    )
    c.req(
        "encoding-sdp-nul-bytes",
        "encoding",
        lambda n: _with_body(invite(n), VALID_SDP.encode().replace(b"\r\n", b"\x00\r\n")),
        OFFER_OK_OR_488 | BAD_REQUEST,
    )
    c.req(
        "encoding-sdp-latin1-session-name",
        "encoding",
        lambda n: _with_body(invite(n), VALID_SDP.encode().replace(b"s=-", b"s=\xe9\xe8")),
        OFFER_OK_OR_488 | BAD_REQUEST,
    )


def _with_body(req: Request, body: bytes) -> Request:
    req.body = body
    return req


def _missing_headers(c: _Corpus) -> None:
    for label, build in (("invite", invite), ("options", options), ("bye", bye)):
        for name in ("From", "To", "Call-ID", "CSeq", "Max-Forwards"):
            expect = BAD_REQUEST
            if name == "Max-Forwards":  # §8.1.1.6 SHOULD: a missing one is taken as 70
                expect = answer(
                    200,
                    400,
                    481,
                    404,
                    405,
                    488,
                    503,
                    rule="§8.1.1.6: Max-Forwards SHOULD be present; tolerated",
                )
                if label == "invite":
                    expect = OFFER_OK_OR_488 | BAD_REQUEST
            c.req(
                f"missing-{name.lower()}-{label}",
                "missing-header",
                build,
                expect,
                lambda r, h=name: r.drop(h),
            )
        c.req(
            f"missing-via-{label}", "missing-header", build, NO_ANSWER_VIA, lambda r: r.drop("Via")
        )
        c.req(
            f"missing-all-but-via-{label}",
            "missing-header",
            build,
            BAD_REQUEST,
            lambda r: r.with_(headers=r.headers[:1]),
        )
    c.req(
        "missing-content-type-with-sdp",
        "missing-header",
        invite,
        answer(400, 415, 488, 200, 503, rule="§20.15: a body needs Content-Type; 415 or taken"),
        lambda r: r.drop("Content-Type"),
    )
    c.req(
        "missing-from-tag",
        "missing-header",
        invite,
        OFFER_OK_OR_488 | BAD_REQUEST,
        lambda r: r.set("From", "<sip:fuzz@127.0.0.1>"),
    )
    c.req(
        "missing-contact-invite",
        "missing-header",
        invite,
        BAD_REQUEST | OFFER_OK_OR_488,
        lambda r: r.drop("Contact"),
    )
    c.req(
        "empty-call-id",
        "missing-header",
        options,
        BAD_REQUEST | LENIENT,
        lambda r: r.set("Call-ID", ""),
    )
    c.req("empty-cseq", "missing-header", options, BAD_REQUEST, lambda r: r.set("CSeq", ""))
    c.req(
        "empty-from", "missing-header", options, BAD_REQUEST | LENIENT, lambda r: r.set("From", "")
    )


def _methods(c: _Corpus) -> None:
    for m in (
        "FOO",
        "PUBLISH",
        "SUBSCRIBE",
        "NOTIFY",
        "REFER",
        "MESSAGE",
        "UPDATE",
        "PRACK",
        "REGISTER",
        "INFO",
        "NEWMETHOD-WITH.CHARS!%*_+`'~",
    ):
        # Out of a dialog the front takes INVITE and OPTIONS only (405 with Allow); a UA that
        # does not know a method says 501 (RFC 4475 §3.3.1 unkm, §3.1.1.5 bext01).
        c.req(
            f"method-{m.lower()[:12]}",
            "method",
            lambda n, mm=m: base(mm, n),
            answer(
                405,
                501,
                481,
                489,
                400,
                403,
                404,
                rule="§8.2.1: 405 with Allow, or 501; 481 for in-dialog-only methods",
            ),
        )
    c.req("method-lowercase-invite", "method", lambda n: base("invite", n, VALID_SDP),
          UNKNOWN_METHOD | BAD_REQUEST)  # fmt: skip  # methods are case-sensitive (§7.1)
    c.req(
        "method-cseq-mismatch",
        "method",
        options,
        answer(400, rule="RFC 4475 §3.1.2.11 mismatch01: CSeq method ≠ request method → 400"),
        lambda r: r.set("CSeq", "1 INVITE"),
    )
    c.req(
        "method-cseq-mismatch-invite",
        "method",
        invite,
        answer(400, rule="RFC 4475 mismatch"),
        lambda r: r.set("CSeq", "1 OPTIONS"),
    )
    c.req(
        "method-cseq-unknown",
        "method",
        lambda n: base("FOO", n),
        answer(400, 405, 501, rule="RFC 4475 §3.1.2.12 mismatch02"),
        lambda r: r.set("CSeq", "1 BAR"),
    )
    c.req(
        "method-cancel-no-invite",
        "method",
        lambda n: base("CANCEL", n),
        answer(481, rule="§9.2: a CANCEL matching no transaction → 481")
        | Expect(
            frozenset(),
            "the front drops it: a CANCEL may overtake its INVITE on another"
            " Kamailio child, and the caller retransmits it",
            True,
        ),
    )
    for name, build in (
        ("ack-out-of-dialog", lambda n: base("ACK", n)),
        ("ack-with-to-tag", lambda n: base("ACK", n, to_tag=True)),
        ("ack-with-sdp", lambda n: base("ACK", n, VALID_SDP)),
    ):
        c.req(f"method-{name}", "method", build, NO_ANSWER_ACK)
    c.req(
        "method-bye-no-dialog",
        "method",
        bye,
        answer(481, 404, 405, rule="§15.1.2: a BYE for no dialog → 481 (the front: 404/405)"),
    )
    c.req(
        "method-options-in-unknown-dialog",
        "method",
        lambda n: base("OPTIONS", n, to_tag=True),
        answer(481, 404, rule="§12.2.2: a request for no dialog → 481 (the front: 404)"),
    )
    c.req(
        "method-invite-unknown-dialog",
        "method",
        lambda n: base("INVITE", n, VALID_SDP, to_tag=True),
        answer(481, 404, rule="§12.2.2: a re-INVITE for no dialog → 481 (the front: 404)"),
    )
    c.req(
        "method-max-forwards-0",
        "method",
        options,
        answer(483, 200, rule="§16.3: Max-Forwards 0 → 483 at a proxy; a UAS may answer"),
        lambda r: r.set("Max-Forwards", "0"),
    )
    c.req(
        "method-max-forwards-0-invite",
        "method",
        invite,
        answer(483, 200, 488, 503, rule="§16.3: 483 at a proxy"),
        lambda r: r.set("Max-Forwards", "0"),
    )
    c.req(
        "method-sip-version-3",
        "method",
        options,
        answer(505, 400, rule="§8.2.1, RFC 4475 §3.1.2.14 badvers: 505") | BAD_REQUEST,
        lambda r: r.with_(version="SIP/3.0"),
    )
    c.req(
        "method-sip-version-1",
        "method",
        options,
        answer(505, rule="badvers") | BAD_REQUEST,
        lambda r: r.with_(version="SIP/1.0"),
    )
    c.req(
        "method-unknown-scheme",
        "method",
        options,
        answer(416, 400, 404, rule="§21.4.13, RFC 4475 §3.3.2 unkscm: 416"),
        lambda r: r.with_(ruri="nope:whatever@$TARGET$"),
    )
    c.req(
        "method-tel-uri-options",
        "method",
        options,
        answer(416, 200, 404, rule="a tel: URI: 416 where not supported"),
        lambda r: r.with_(ruri="tel:+15551234567"),
    )
    c.req(
        "method-require-unknown-ext",
        "method",
        invite,
        answer(420, 400, rule="§8.2.2.3: Require of an unknown extension → 420"),
        lambda r: r.add("Require", "nonexistent-extension"),
    )


def _vias(c: _Corpus) -> None:
    own = "SIP/2.0/UDP 127.0.0.1:$PORT$;branch=z9hG4bK-v{n};rport"
    cases: list[tuple[str, str | None, Expect]] = [
        ("garbage", "garbage", NO_ANSWER_VIA),
        ("empty", "", NO_ANSWER_VIA),
        ("no-host", "SIP/2.0/UDP ;branch=z9hG4bK1", NO_ANSWER_VIA),
        ("bad-version", "SIP/9.9/UDP 127.0.0.1:$PORT$;branch=z9hG4bK1", NO_ANSWER_VIA),
        ("bad-port", "SIP/2.0/UDP 127.0.0.1:999999;branch=z9hG4bK1", NO_ANSWER_VIA),
        (
            "unknown-transport",
            "SIP/2.0/QUIC 127.0.0.1:$PORT$;branch=z9hG4bK1",
            NO_ANSWER_VIA | answer(200, rule="answered to the source address (§18.2.2 received)"),
        ),
        ("nul-host", "SIP/2.0/UDP 127.0\x00.0.1:$PORT$;branch=z9hG4bK1", NO_ANSWER_VIA),
        ("ipv6-no-brackets", "SIP/2.0/UDP ::1:$PORT$;branch=z9hG4bK1", NO_ANSWER_VIA),
    ]
    for name, value, expect in cases:
        c.req(f"via-{name}", "via", options, expect, lambda r, v=value: r.set("Via", v or ""))
    # Odd but usable: the answer still reaches us (rport, or the sent-by is us).
    usable = answer(200, rule="§18.2.2: a usable top Via gets the answer")
    for name, value in (
        ("no-branch", "SIP/2.0/UDP 127.0.0.1:$PORT$;rport"),
        ("rfc2543-branch", "SIP/2.0/UDP 127.0.0.1:$PORT$;branch=1234;rport"),
        ("long-branch", "SIP/2.0/UDP 127.0.0.1:$PORT$;branch=z9hG4bK" + "b" * 2000 + ";rport"),
        (
            "many-params",
            "SIP/2.0/UDP 127.0.0.1:$PORT$;branch=z9hG4bKm;rport;"
            + ";".join(f"p{i}=v" for i in range(100)),
        ),
        ("lowercase", "sip/2.0/udp 127.0.0.1:$PORT$;branch=z9hG4bKlc;rport"),
        ("spaces", "SIP / 2.0 / UDP   127.0.0.1:$PORT$ ; branch=z9hG4bKsp ; rport"),
    ):
        c.req(
            f"via-{name}", "via", options, usable | BAD_REQUEST, lambda r, v=value: r.set("Via", v)
        )
    c.req(
        "via-duplicate-same-branch",
        "via",
        options,
        usable,
        lambda r: r.add("Via", r.header("Via") or "", first=True),
    )
    c.req(
        "via-two-in-one-line",
        "via",
        options,
        usable,
        lambda r: r.set("Via", own.format(n=1) + ", SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bK2"),
    )
    c.req(
        "via-second-garbage",
        "via",
        options,
        usable | BAD_REQUEST,
        lambda r: r.add("Via", "%%%garbage%%%"),
    )
    c.req(
        "via-compact-form",
        "via",
        options,
        usable,
        lambda r: r.encode().replace(b"Via: ", b"v: ", 1),
    )
    c.req(
        "via-unreachable-sent-by",
        "via",
        options,
        NO_ANSWER_VIA,
        lambda r: r.set("Via", "SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKun"),
    )


def _syntax(c: _Corpus) -> None:
    """Header syntax: folding, odd whitespace, compact forms, bad URIs, bad numbers."""
    folded = answer(200, rule="§7.3.1: folded lines are one header (RFC 4475 wsinv)")
    c.req(
        "syntax-folded-subject",
        "syntax",
        options,
        folded | BAD_REQUEST,
        lambda r: r.add("Subject", "first\r\n  second\r\n\tthird"),
    )
    c.req(
        "syntax-folded-to",
        "syntax",
        options,
        folded | BAD_REQUEST,
        lambda r: r.set("To", "\r\n <sip:transcribe@$TARGET$>"),
    )
    c.req(
        "syntax-fold-before-first-header",
        "syntax",
        options,
        BAD_REQUEST | NO_ANSWER_VIA,
        lambda r: r.encode().replace(b"\r\nVia:", b"\r\n  Via:", 1),
    )
    c.req(
        "syntax-header-no-colon",
        "syntax",
        options,
        BAD_REQUEST,
        lambda r: r.encode().replace(b"Max-Forwards: 70", b"Max-Forwards 70", 1),
    )
    c.req(
        "syntax-header-empty-name",
        "syntax",
        options,
        BAD_REQUEST | folded,
        lambda r: r.add("", "value"),
    )
    c.req(
        "syntax-space-before-colon",
        "syntax",
        options,
        folded,
        lambda r: r.encode().replace(b"Call-ID:", b"Call-ID   :", 1),
    )
    c.req(
        "syntax-compact-forms",
        "syntax",
        options,
        folded,
        lambda r: (
            r.encode()
            .replace(b"From:", b"f:")
            .replace(b"To:", b"t:")
            .replace(b"Call-ID:", b"i:")
            .replace(b"Contact:", b"m:")
        ),
    )
    c.req(
        "syntax-case-insensitive-names",
        "syntax",
        options,
        folded,
        lambda r: r.encode().replace(b"CSeq:", b"cSEQ:").replace(b"Call-ID:", b"CALL-ID:"),
    )
    for name, value in (
        ("no-number", "OPTIONS"),
        ("negative", "-1 OPTIONS"),
        ("letters", "abc OPTIONS"),
        ("three-fields", "1 OPTIONS x"),
        ("2-pow-32", "4294967296 OPTIONS"),
    ):
        c.req(
            f"syntax-cseq-{name}",
            "syntax",
            options,
            BAD_REQUEST | LENIENT,
            lambda r, v=value: r.set("CSeq", v),
        )
    for name, value in (
        ("no-angle", "sip:a@b;tag=1 junk"),
        ("unclosed", "<sip:a@b;tag=1"),
        ("not-a-uri", "<::::>;tag=1"),
        ("quote-unclosed", '"abc <sip:a@b>;tag=1'),
    ):
        c.req(
            f"syntax-from-{name}",
            "syntax",
            options,
            BAD_REQUEST | LENIENT,
            lambda r, v=value: r.set("From", v),
        )
    for name, value in (
        ("empty", ""),
        ("no-host", "sip:"),
        ("spaces", "sip:a b@c"),
        ("at-only", "sip:@"),
        ("port-garbage", "sip:a@127.0.0.1:xyz"),
    ):
        c.req(
            f"syntax-ruri-{name}",
            "syntax",
            options,
            BAD_REQUEST | answer(404, 416, rule="§21.4.13: 416 for a scheme we do not take"),
            lambda r, v=value: r.with_(ruri=v),
        )
    c.req(
        "syntax-request-line-extra-token",
        "syntax",
        options,
        NO_ANSWER_NOT_SIP | BAD_REQUEST,
        lambda r: r.with_(start_line="OPTIONS sip:a@b SIP/2.0 extra"),
    )
    c.req(
        "syntax-request-line-two-tokens",
        "syntax",
        options,
        NO_ANSWER_NOT_SIP | BAD_REQUEST,
        lambda r: r.with_(start_line="OPTIONS sip:a@b"),
    )
    c.req(
        "syntax-leading-crlf",
        "syntax",
        options,
        answer(200, rule="§7.5: leading CRLFs are ignored"),
        lambda r: b"\r\n\r\n" + r.encode(),
    )
    c.req(
        "syntax-expires-garbage",
        "syntax",
        invite,
        BAD_REQUEST | OFFER_OK_OR_488,
        lambda r: r.add("Expires", "soon"),
    )
    c.req(
        "syntax-session-expires-garbage",
        "syntax",
        invite,
        answer(400, 422, 200, 488, 503, rule="RFC 4028: an unparseable Session-Expires → 400"),
        lambda r: r.add("Session-Expires", "x;refresher=uac"),
    )
    c.req(
        "syntax-content-type-garbage",
        "syntax",
        invite,
        answer(400, 415, 488, 200, 503, rule="§21.4.16: a body we cannot read → 415"),
        lambda r: r.set("Content-Type", "/;;;"),
    )
    c.req(
        "syntax-content-type-text",
        "syntax",
        invite,
        answer(415, 400, 488, 200, 503, rule="§21.4.16: 415 Unsupported Media Type"),
        lambda r: r.set("Content-Type", "text/plain"),
    )
    c.req(
        "syntax-content-encoding-gzip",
        "syntax",
        invite,
        answer(415, 400, 488, 200, 503, rule="§20.12: unknown Content-Encoding → 415"),
        lambda r: r.add("Content-Encoding", "gzip"),
    )
    c.req(
        "syntax-multipart-garbage",
        "syntax",
        invite,
        answer(400, 415, 488, 200, 503, rule="a multipart body with no boundary"),
        lambda r: r.set("Content-Type", "multipart/mixed;boundary=zz"),
    )


def _sdps(c: _Corpus) -> None:
    refused = NOT_ACCEPTABLE | BAD_REQUEST
    offers: list[tuple[str, str, Expect]] = [
        (
            "no-m-line",
            _sdp("v=0", "o=fuzz 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0"),
            refused,
        ),
        (
            "unknown-codecs-only",
            _offer("m=audio 40000 RTP/AVP 96 97", "a=rtpmap:96 FOO/8000", "a=rtpmap:97 BAR/16000"),
            refused,
        ),
        ("g729-only", _offer("m=audio 40000 RTP/AVP 18", "a=rtpmap:18 G729/8000"), refused),
        ("opus-only", _offer("m=audio 40000 RTP/AVP 111", "a=rtpmap:111 opus/48000/2"), refused),
        (
            "telephone-event-only",
            _offer("m=audio 40000 RTP/AVP 101", "a=rtpmap:101 telephone-event/8000"),
            refused,
        ),
        ("video-only", _offer("m=video 40000 RTP/AVP 31", "a=rtpmap:31 H261/90000"), refused),
        ("port-zero", _offer("m=audio 0 RTP/AVP 0"), refused | OFFER_OK_OR_488),
        ("port-huge", _offer("m=audio 99999 RTP/AVP 0"), refused | OFFER_OK_OR_488),
        ("port-negative", _offer("m=audio -5 RTP/AVP 0"), refused),
        ("port-garbage", _offer("m=audio abc RTP/AVP 0"), refused),
        ("bad-c-address", _offer(c="c=IN IP4 999.999.999.999"), refused | OFFER_OK_OR_488),
        ("bad-c-garbage", _offer(c="c=IN IP4 not-an-ip!@#"), refused | OFFER_OK_OR_488),
        ("c-missing", _offer(c="b=AS:64"), refused),
        ("c-bad-nettype", _offer(c="c=XX IP4 127.0.0.1"), refused),
        ("c-ip6", _offer(c="c=IN IP6 ::1"), OFFER_OK_OR_488 | BAD_REQUEST),
        ("c-ip6-garbage", _offer(c="c=IN IP6 :::::zz"), refused | OFFER_OK_OR_488),
        ("c-multicast", _offer(c="c=IN IP4 224.2.1.1/127"), OFFER_OK_OR_488 | BAD_REQUEST),
        ("rtpmap-garbage", _offer("m=audio 40000 RTP/AVP 0", "a=rtpmap:zz ///"), OFFER_OK_OR_488),
        (
            "rtpmap-no-rate",
            _offer("m=audio 40000 RTP/AVP 96", "a=rtpmap:96 PCMU"),
            refused | OFFER_OK_OR_488,
        ),
        (
            "rtpmap-pt-out-of-range",
            _offer("m=audio 40000 RTP/AVP 300", "a=rtpmap:300 PCMU/8000"),
            refused | OFFER_OK_OR_488,
        ),
        (
            "rtpmap-huge-rate",
            _offer("m=audio 40000 RTP/AVP 96", "a=rtpmap:96 PCMU/99999999999"),
            refused | OFFER_OK_OR_488,
        ),
        (
            "fmtp-garbage",
            _offer("m=audio 40000 RTP/AVP 0", "a=fmtp:0 " + "=;" * 200),
            OFFER_OK_OR_488,
        ),
        ("pt-list-empty", _offer("m=audio 40000 RTP/AVP"), refused),
        ("pt-list-garbage", _offer("m=audio 40000 RTP/AVP x y z"), refused),
        (
            "pt-list-500",
            _offer("m=audio 40000 RTP/AVP " + " ".join(str(i % 128) for i in range(500))),
            OFFER_OK_OR_488 | BAD_REQUEST,
        ),
        ("unknown-transport", _offer("m=audio 40000 FOO/BAR 0"), refused),
        ("srtp-required-no-crypto", _offer("m=audio 40000 RTP/SAVP 0"), refused),
        (
            "multiple-audio-m",
            _offer(
                "m=audio 40000 RTP/AVP 0",
                "a=rtpmap:0 PCMU/8000",
                "m=audio 40002 RTP/AVP 8",
                "a=rtpmap:8 PCMA/8000",
            ),
            OFFER_OK_OR_488,
        ),
        (
            "audio-and-video",
            _offer("m=audio 40000 RTP/AVP 0", "m=video 40002 RTP/AVP 31"),
            OFFER_OK_OR_488,
        ),
        (
            "twenty-m-lines",
            _offer(*[f"m=audio {40000 + 2 * i} RTP/AVP 0" for i in range(20)]),
            OFFER_OK_OR_488 | BAD_REQUEST,
        ),
        (
            "no-v-line",
            _sdp(
                "o=fuzz 1 1 IN IP4 127.0.0.1",
                "s=-",
                "c=IN IP4 127.0.0.1",
                "t=0 0",
                "m=audio 40000 RTP/AVP 0",
            ),
            refused | OFFER_OK_OR_488,
        ),
        (
            "v-1",
            _offer(
                head=("v=1", "o=fuzz 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0")
            ),
            refused | OFFER_OK_OR_488,
        ),
        (
            "no-o-line",
            _offer(head=("v=0", "s=-", "c=IN IP4 127.0.0.1", "t=0 0")),
            refused | OFFER_OK_OR_488,
        ),
        (
            "o-garbage",
            _offer(head=("v=0", "o=???", "s=-", "c=IN IP4 127.0.0.1", "t=0 0")),
            refused | OFFER_OK_OR_488,
        ),
        (
            "no-t-line",
            _offer(head=("v=0", "o=fuzz 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1")),
            refused | OFFER_OK_OR_488,
        ),
        (
            "lines-without-equals",
            _offer("m=audio 40000 RTP/AVP 0", "garbage line", "x"),
            refused | OFFER_OK_OR_488,
        ),
        (
            "unknown-line-types",
            _offer("m=audio 40000 RTP/AVP 0", "z=1", "y=2", "q=3"),
            OFFER_OK_OR_488,
        ),
        (
            "attribute-64k",
            _offer("m=audio 40000 RTP/AVP 0", "a=x:" + "q" * 60000),
            OFFER_OK_OR_488 | answer(413, 513, rule="too large"),
        ),
        (
            "one-long-line-no-crlf",
            "v=0 o=x s=- c=IN IP4 127.0.0.1 t=0 0 m=audio 1 RTP/AVP 0",
            refused,
        ),
        (
            "binary-garbage",
            bytes(random.Random(4475).randrange(256) for _ in range(400)).decode("latin-1"),
            refused,
        ),
        ("lf-only", VALID_SDP.replace("\r\n", "\n"), OFFER_OK_OR_488),
        ("sendonly", _offer("m=audio 40000 RTP/AVP 0", "a=sendonly"), OFFER_OK_OR_488),
        ("inactive", _offer("m=audio 40000 RTP/AVP 0", "a=inactive"), OFFER_OK_OR_488),
        ("ptime-zero", _offer("m=audio 40000 RTP/AVP 0", "a=ptime:0"), OFFER_OK_OR_488),
        ("ptime-huge", _offer("m=audio 40000 RTP/AVP 0", "a=ptime:99999999"), OFFER_OK_OR_488),
        (
            "bandwidth-garbage",
            _offer("m=audio 40000 RTP/AVP 0", "b=AS:-1", "b=XX:zz"),
            OFFER_OK_OR_488 | BAD_REQUEST,
        ),
        (
            "crypto-garbage",
            _offer("m=audio 40000 RTP/SAVP 0", "a=crypto:1 FOO inline:zzz"),
            refused,
        ),
        (
            "empty-body",
            "",
            answer(
                200, 400, 488, 503, rule="an INVITE with no offer: we offer in the 200, or refuse"
            ),
        ),
    ]
    for name, body, expect in offers:
        c.req(
            f"sdp-{name}",
            "sdp",
            lambda n, b=body: _with_body(invite(n), b.encode("latin-1")),
            expect,
        )


def _not_requests(c: _Corpus) -> None:
    rng = random.Random(3261)
    for i in range(6):
        data = bytes(rng.randrange(256) for _ in range(rng.choice((1, 12, 100, 1400, 8000))))
        c.add(f"not-a-request-random-{i}", "not-a-request", data, NO_ANSWER_NOT_SIP, "")
    c.add("not-a-request-empty", "not-a-request", b"", NO_ANSWER_NOT_SIP, "")
    c.add("not-a-request-crlf-keepalive", "not-a-request", b"\r\n\r\n", NO_ANSWER_NOT_SIP, "")
    c.add(
        "not-a-request-http",
        "not-a-request",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        NO_ANSWER_NOT_SIP,
        "",
    )
    c.add(
        "not-a-request-rtp",
        "not-a-request",
        b"\x80\x00\x00\x01" + bytes(168),
        NO_ANSWER_NOT_SIP,
        "",
    )
    c.add(
        "not-a-request-stun",
        "not-a-request",
        b"\x00\x01\x00\x00\x21\x12\xa4\x42" + bytes(12),
        NO_ANSWER_NOT_SIP,
        "",
    )
    for code in (200, 180, 404, 999):
        n = c.next_n()
        head = options(n).encode().split(b"\r\n", 1)[1]
        c.add(
            f"not-a-request-response-{code}",
            "not-a-request",
            f"SIP/2.0 {code} Whatever\r\n".encode() + head,
            NO_ANSWER_RESPONSE,
            "",
        )
    n = c.next_n()
    c.add(
        "not-a-request-response-garbage-status",
        "not-a-request",
        b"SIP/2.0 abc\r\n" + options(n).encode().split(b"\r\n", 1)[1],
        NO_ANSWER_RESPONSE,
        "",
    )


def corpus() -> list[Case]:
    """Every case, in a fixed order, each name unique."""
    c = _Corpus()
    for part in (
        _truncations,
        _oversized,
        _content_length,
        _encodings,
        _missing_headers,
        _methods,
        _vias,
        _syntax,
        _sdps,
        _not_requests,
    ):
        part(c)
    return c.cases
