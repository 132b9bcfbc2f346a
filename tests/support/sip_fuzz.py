"""Malformed SIP for fuzzing: what a case is, what SIP requires of the element that receives it,
and a UDP sender that fires cases at an element and records what came back. Test support only.

Every :class:`Case` (the corpus itself: ``sip_fuzz_corpus``) is a systematic mutation of one of
three valid requests (an INVITE with a G.711 offer, an out-of-dialog OPTIONS, a BYE) and says
what RFC 3261 (and RFC 4475, the SIP torture tests; RFC 3264 for offers) requires of its
receiver (:class:`Expect`): a final answer in a set of codes, or no answer at all (a response,
an ACK, or a request whose Via cannot be used: there is no one to answer).

A case is a template: ``$PORT$`` (the sender's own UDP port, in Via and Contact) and ``$TARGET$``
(``host:port`` of the element) are filled in when it is sent, so that answers come back to the
socket that sent the case (one socket per case) and nothing else is needed to match them.
Content-Length is computed on the body, which holds no template token.
"""

from __future__ import annotations

import contextlib
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from sip_bridge.sip_headers import parse_headers

# --- what SIP requires ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Expect:
    """The final answers RFC 3261 allows for a case; ``codes`` empty: no answer at all."""

    codes: frozenset[int]
    rule: str  # where the requirement comes from, for the failure message
    silence: bool = False  # no answer at all is right (or allowed)

    def allows(self, status: int | None) -> bool:
        return self.silence if status is None else status in self.codes

    def __or__(self, other: Expect) -> Expect:
        """Either one's answers."""
        return Expect(
            self.codes | other.codes, f"{self.rule}; or {other.rule}", self.silence or other.silence
        )


def answer(*codes: int, rule: str) -> Expect:
    return Expect(frozenset(codes), rule)


NO_ANSWER_RESPONSE = Expect(
    frozenset(), "RFC 3261 §18.1.2: a response matching no transaction is dropped", True
)
NO_ANSWER_ACK = Expect(frozenset(), "RFC 3261 §17: an ACK is never answered", True)
NO_ANSWER_VIA = Expect(
    frozenset(), "RFC 3261 §18.2.2: an answer goes to the top Via; without a usable one, none", True
)
NO_ANSWER_NOT_SIP = Expect(frozenset(), "not a SIP request line: nothing to answer", True)
# RFC 3261 says a malformed request SHOULD get 400 (not MUST): both Kamailio's core parser and
# PJSIP's drop a message whose mandatory headers (From, To, Call-ID, CSeq, Content-Length) they
# cannot parse, before any script or callback sees it; the sender times out. Both are allowed.
BAD_REQUEST = Expect(
    frozenset({400}),
    "RFC 3261 §21.4.1, RFC 4475 §3.1.2: malformed → 400, or dropped unparsed",
    True,
)
# A header we do not need, malformed: §16.3 lets an element check only what it uses, so an
# OPTIONS answered by the front (which reads no From/To) may well get 200.
LENIENT = answer(200, rule="§16.3: only the headers an element needs must parse")
# A request the element accepts or refuses as a whole: an odd but valid offer is taken (2xx, then
# hung up by the sender) or refused for its media (488); 503 when the pool is full meanwhile.
OFFER_OK_OR_488 = answer(200, 488, 503, rule="RFC 3264 §6: answer the offer, or 488")
NOT_ACCEPTABLE = answer(488, rule="RFC 3261 §13.3.1.1, RFC 3264 §6: no usable media → 488")
UNKNOWN_METHOD = answer(405, 501, rule="RFC 3261 §8.2.1: unknown method → 501 (405 if known)")


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    kind: str  # the class of bad input (see KINDS)
    template: bytes
    expect: Expect
    method: str  # the request's method as sent ("" when there is none)

    def render(self, local_port: int, target: str, run: str = "00000") -> bytes:
        """The datagram; ``run`` (5 characters, the token's length) makes Call-IDs, tags and
        branches differ between sendings, so that an element that saw the corpus before does not
        take a case for a merged or repeated request (RFC 3261 §8.2.2.2)."""
        assert len(run) == len("$RUN$")
        return (
            self.template.replace(b"$PORT$", str(local_port).encode())
            .replace(b"$TARGET$", target.encode())
            .replace(b"$RUN$", run.encode())
        )


KINDS = (
    "truncated",
    "oversized",
    "content-length",
    "encoding",
    "missing-header",
    "method",
    "via",
    "syntax",
    "sdp",
    "not-a-request",
)

# --- building messages ---------------------------------------------------------------------------

CRLF = "\r\n"
VALID_SDP = (
    "v=0\r\no=fuzz 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


@dataclass(slots=True)
class Request:
    """A request under construction: ordered header lines, a body, a Content-Length rule."""

    method: str
    ruri: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    version: str = "SIP/2.0"
    content_length: str | None = None  # None: the right value; "": leave the header out
    line_end: str = CRLF
    start_line: str | None = None  # replaces "METHOD RURI VERSION" entirely

    def with_(self, **changes: object) -> Request:
        """Set fields by name (``content_length``, ``version``, ``ruri``, ``start_line``)."""
        for key, value in changes.items():
            setattr(self, key, value)
        return self

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def set(self, name: str, value: str) -> Request:
        self.headers = [(k, value if k.lower() == name.lower() else v) for k, v in self.headers]
        return self

    def drop(self, name: str) -> Request:
        self.headers = [(k, v) for k, v in self.headers if k.lower() != name.lower()]
        return self

    def add(self, name: str, value: str, first: bool = False) -> Request:
        if first:
            self.headers.insert(0, (name, value))
        else:
            self.headers.append((name, value))
        return self

    def encode(self) -> bytes:
        end = self.line_end
        start = self.start_line or f"{self.method} {self.ruri} {self.version}"
        lines = [start] + [f"{k}: {v}" for k, v in self.headers]
        if self.content_length is None:
            lines.append(f"Content-Length: {len(self.body)}")
        elif self.content_length:
            lines.append(f"Content-Length: {self.content_length}")
        return (end.join(lines) + end + end).encode("utf-8", "surrogateescape") + self.body


def base(method: str, n: int, body: str = "", to_tag: bool = False) -> Request:
    call_id = f"fuzz$RUN$-{n:04d}-{uuid.UUID(int=n).hex[:12]}@127.0.0.1"
    tag = ";tag=callee" if to_tag else ""
    headers = [
        ("Via", f"SIP/2.0/UDP 127.0.0.1:$PORT$;branch=z9hG4bK-fuzz$RUN$-{n:04d};rport"),
        ("Max-Forwards", "70"),
        ("From", f"<sip:fuzz@127.0.0.1>;tag=f$RUN${n:04d}"),
        ("To", f"<sip:transcribe@$TARGET$>{tag}"),
        ("Call-ID", call_id),
        ("CSeq", f"1 {method}"),
        ("Contact", "<sip:fuzz@127.0.0.1:$PORT$>"),
    ]
    req = Request(method, "sip:transcribe@$TARGET$", headers)
    if body:
        req.add("Content-Type", "application/sdp")
        req.body = body.encode()
    return req


def invite(n: int, sdp: str = VALID_SDP) -> Request:
    return base("INVITE", n, sdp)


def options(n: int) -> Request:
    return base("OPTIONS", n)


def bye(n: int) -> Request:
    return base("BYE", n, to_tag=True)


# --- sending -------------------------------------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    case: Case
    responses: list[str] = field(default_factory=list)  # every response received, as text
    final: int | None = None  # the first final status; None: no final answer came
    hung_up: bool = False  # a 2xx to an INVITE: we ACKed and sent BYE
    bye_status: int | None = None

    @property
    def ok(self) -> bool:
        return self.case.expect.allows(self.final)

    def describe(self) -> str:
        first = self.responses[0].split("\r\n", 1)[0] if self.responses else "no answer"
        return (
            f"{self.case.name} ({self.case.kind}): got {self.final} ({first!r}), "
            f"expected {sorted(self.case.expect.codes)}"
            f"{' or no answer' if self.case.expect.silence else ''} — {self.case.expect.rule}"
        )


def _status(msg: str) -> int | None:
    parts = msg.split(" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def _ack_and_bye(sock: socket.socket, target: tuple[str, int], answer_msg: str) -> None:
    """A 2xx to one of our INVITEs: ACK it and hang up, through its route set (§12.2.1.1)."""
    fields = parse_headers(answer_msg)
    get = {k.lower(): v for k, v in reversed(fields)}
    contact = get.get("contact", "").strip()
    if "<" in contact:
        contact = contact.split("<", 1)[1].split(">", 1)[0]
    routes = [v for k, v in fields if k.lower() == "record-route"]
    route_set = [r.strip() for line in reversed(routes) for r in reversed(line.split(","))]
    port = sock.getsockname()[1]
    for method, cseq in (("ACK", 1), ("BYE", 2)):
        msg = (
            f"{method} {contact} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{uuid.uuid4().hex[:16]};rport\r\n"
            f"From: {get.get('from', '')}\r\nTo: {get.get('to', '')}\r\n"
            f"Call-ID: {get.get('call-id', '')}\r\nCSeq: {cseq} {method}\r\n"
            + "".join(f"Route: {r}\r\n" for r in route_set)
            + "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        sock.sendto(msg.encode(), target)


def _ack_failure(
    sock: socket.socket, target: tuple[str, int], sent: bytes, answer_msg: str
) -> None:
    """ACK a non-2xx final to an INVITE (same branch, §17.1.1.3), so it is not retransmitted."""
    fields = parse_headers(answer_msg)
    get = {k.lower(): v for k, v in reversed(fields)}
    via = get.get("via")
    if via is None or "call-id" not in get or "from" not in get:
        return
    ruri = sent.split(b" ", 2)[1].decode(errors="replace") if sent.count(b" ") >= 2 else "sip:x"
    cseq = get.get("cseq", "1 INVITE").split()[0]
    msg = (
        f"ACK {ruri} SIP/2.0\r\nVia: {via.split(',')[0]}\r\nFrom: {get['from']}\r\n"
        f"To: {get.get('to', '')}\r\nCall-ID: {get['call-id']}\r\nCSeq: {cseq} ACK\r\n"
        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    sock.sendto(msg.encode(), target)


def _chunks(cases: list[Case], size: int) -> Iterator[list[Case]]:
    for i in range(0, len(cases), size):
        yield cases[i : i + size]


RATE_WINDOW_S = 1.1  # the front counts media.max_call_rate per second


def fire(
    cases: list[Case],
    host: str,
    port: int,
    batch: int = 40,
    wait_s: float = 1.5,
    accept_batch: int = 3,
    invite_wait_s: float = 4.0,
    pause_s: float = 0.0,
) -> list[Outcome]:
    """Send every case from its own socket and collect what comes back within ``wait_s`` (the
    first final answer ends a case's wait); results in the order of ``cases``.

    Cases go ``batch`` at a time, but INVITEs that may be taken (an odd but valid offer) go
    ``accept_batch`` at a time, so they do not fill the element's call slots (a media process
    holds 4); one that still meets a full element (486, 503) is sent once more on its own. A 2xx
    to an INVITE is ACKed and hung up at once; another final to an INVITE is ACKed, so nothing is
    retransmitted at us. ``pause_s``: a pause after each group, for an element that cannot take
    bursts."""
    taken = [c for c in cases if c.method.upper() == "INVITE" and 200 in c.expect.codes]
    rest = [c for c in cases if c not in taken]
    got: dict[str, Outcome] = {}
    groups = [(g, wait_s) for g in _chunks(rest, batch)]
    # A media process that drops an INVITE unparsed makes the front wait fr_timer (1.5 s) for
    # each of the two branches, then answer 503.
    groups += [(g, invite_wait_s) for g in _chunks(taken, accept_batch)]
    run = uuid.uuid4().hex[:5]
    for group, wait in groups:
        for out in _fire_group(group, (host, port), wait, run):
            got[out.case.name] = out
        time.sleep(pause_s)
    busy = (486, 503)
    again = [
        c for c in cases if got[c.name].final in busy and not c.expect.allows(got[c.name].final)
    ]
    if again:
        # The 503 may be the front's media.max_call_rate (new calls a second per process): it
        # asked us to come back later, so the resends start in the next rate window.
        time.sleep(RATE_WINDOW_S)
    for case in again:
        (got[case.name],) = _fire_group([case], (host, port), invite_wait_s, run)
    return [got[c.name] for c in cases]


def _fire_group(
    group: list[Case], target: tuple[str, int], wait_s: float, run: str
) -> list[Outcome]:
    target_text = f"{target[0]}:{target[1]}"
    socks: list[tuple[socket.socket, Outcome, bytes]] = []
    try:
        for case in group:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            data = case.render(sock.getsockname()[1], target_text, run)
            socks.append((sock, Outcome(case), data))
            with contextlib.suppress(OSError):  # too large for a datagram: nothing was sent
                sock.sendto(data, target)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            for sock, out, data in socks:
                _drain(sock, out, target, data)
            if all(o.final is not None and (not o.hung_up or o.bye_status) for _, o, _ in socks):
                break
            time.sleep(0.005)
        for sock, out, data in socks:
            _drain(sock, out, target, data)
        return [out for _, out, _ in socks]
    finally:
        for sock, _, _ in socks:
            sock.close()


def _drain(sock: socket.socket, out: Outcome, target: tuple[str, int], sent: bytes) -> None:
    while True:
        try:
            raw = sock.recv(65535)
        except (BlockingIOError, ConnectionRefusedError):
            return
        msg = raw.decode(errors="replace")
        if not msg.startswith("SIP/2.0"):
            continue
        status = _status(msg)
        cseq = next((v for k, v in parse_headers(msg) if k.lower() == "cseq"), "")
        if out.hung_up and cseq.endswith("BYE"):
            out.bye_status = status
            continue
        out.responses.append(msg)
        if status is None or status < 200 or out.final is not None:
            continue
        out.final = status
        if out.case.method.upper() == "INVITE" and cseq.endswith("INVITE"):
            if 200 <= status < 300:
                out.hung_up = True
                _ack_and_bye(sock, target, msg)
            else:
                _ack_failure(sock, target, sent, msg)
