"""SIPREC recording metadata documents (RFC 7865 and the older draft form), built for tests.

Owns: the XML an SRC (SBC or PBX) sends in ``application/rs-metadata+xml``, for the bridge's
tests and sipp scenarios: a complete document in either form, partial updates (a participant
joining or leaving, a stream taken over after a transfer), vendor extension data, and the
``multipart/mixed`` body that carries SDP and metadata together. Test support only.

A participant is ``(participant_id, name, aor, label)``: ``label`` is the SDP ``a=label`` of
the stream it sends; the stream's id is ``stream_id(label)``. Everyone receives everyone
else's stream, as in a two-party call recorded as two separate streams.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from xml.sax.saxutils import escape, quoteattr

NAMESPACE = "urn:ietf:params:xml:ns:recording:1"
DRAFT_NAMESPACE = "urn:ietf:params:xml:ns:recording"  # Acme Packet/Oracle's draft-era form
SESSION_ID = "hVpd7YQgRW2nD22h7q60JQ=="
SIP_SESSION_ID = "ab30317f1a784dc48ff824d0d3715d86;remote=47755a9de7794ba387653f2099600ef2"
GROUP_ID = "7+OTCyoxTmqmqyA/1weDAg=="
TIME = "2026-01-15T09:30:00Z"

Who = tuple[str, str | None, str | None, str]  # (participant_id, name, aor, label it sends)


def stream_id(label: str) -> str:
    return f"stream-{label}"


def _doc(body: str, datamode: str, namespace: str = NAMESPACE, tag: str = "datamode") -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<recording xmlns={quoteattr(namespace)}>\n"
        f"  <{tag}>{datamode}</{tag}>\n{body}</recording>\n"
    )


def _name_id(name: str | None, aor: str | None) -> str:
    if name is None and aor is None:
        return ""
    attr = f" aor={quoteattr(aor)}" if aor is not None else ""
    inner = f'<name xml:lang="en">{escape(name)}</name>' if name is not None else ""
    return f"<nameID{attr}>{inner}</nameID>"


def _rfc_participant(who: Who, others: Sequence[Who], session_id: str) -> str:
    pid, name, aor, label = who
    recv = "".join(f"<recv>{stream_id(o[3])}</recv>" for o in others if o[0] != pid)
    return (
        f"  <participant participant_id={quoteattr(pid)}>{_name_id(name, aor)}</participant>\n"
        f"  <stream stream_id={quoteattr(stream_id(label))} session_id={quoteattr(session_id)}>"
        f"<label>{escape(label)}</label></stream>\n"
        f"  <participantsessionassoc participant_id={quoteattr(pid)}"
        f" session_id={quoteattr(session_id)}><associate-time>{TIME}</associate-time>"
        "</participantsessionassoc>\n"
        f"  <participantstreamassoc participant_id={quoteattr(pid)}>"
        f"<send>{stream_id(label)}</send>{recv}</participantstreamassoc>\n"
    )


def rfc7865(
    participants: Sequence[Who],
    *,
    session_id: str = SESSION_ID,
    sip_session_id: str | None = SIP_SESSION_ID,
    group_id: str | None = GROUP_ID,
    datamode: str = "complete",
) -> str:
    """A document in the RFC 7865 form: ids in ``*_id`` attributes, associations as their own
    elements (``participantstreamassoc`` with ``send``/``recv``)."""
    group = (
        f"  <group group_id={quoteattr(group_id)}><associate-time>{TIME}</associate-time></group>\n"
        if group_id
        else ""
    )
    sip = f"<sipSessionID>{escape(sip_session_id)}</sipSessionID>" if sip_session_id else ""
    ref = f"<group-ref>{escape(group_id)}</group-ref>" if group_id else ""
    session = (
        f"  <session session_id={quoteattr(session_id)}>{sip}{ref}"
        f"<start-time>{TIME}</start-time></session>\n"
        f"  <sessionrecordingassoc session_id={quoteattr(session_id)}>"
        f"<associate-time>{TIME}</associate-time></sessionrecordingassoc>\n"
    )
    body = "".join(_rfc_participant(w, participants, session_id) for w in participants)
    return _doc(group + session + body, datamode)


def draft_style(
    participants: Sequence[Who],
    *,
    session_id: str = SESSION_ID,
    datamode: str = "complete",
    namespace: str = DRAFT_NAMESPACE,
    name_id: bool = True,
) -> str:
    """The older draft form (Acme Packet/Oracle, Avaya, older CUBE): ``id``/``session``
    attributes, ``send``/``recv`` straight inside ``participant``, ``dataMode`` spelled so.
    ``name_id=False`` writes ``<aor>``/``<name>`` children instead of ``<nameID>``."""
    sess = quoteattr(session_id)
    out = [f"  <session id={sess}><start-time>{TIME}</start-time></session>\n"]
    for pid, name, aor, label in participants:
        if name_id:
            who = _name_id(name, aor)
        else:
            who = (f"<aor>{escape(aor)}</aor>" if aor else "") + (
                f"<name>{escape(name)}</name>" if name else ""
            )
        recv = "".join(f"<recv>{stream_id(o[3])}</recv>" for o in participants if o[0] != pid)
        out.append(
            f"  <participant id={quoteattr(pid)} session={sess}>{who}"
            f"<send>{stream_id(label)}</send>{recv}"
            f"<associate-time>{TIME}</associate-time></participant>\n"
            f"  <stream id={quoteattr(stream_id(label))} session={sess}>"
            f"<label>{escape(label)}</label><mode>separate</mode></stream>\n"
        )
    return _doc("".join(out), datamode, namespace, tag="dataMode")


def partial_update(
    *,
    joined: Sequence[Who] = (),
    departed: Sequence[str] = (),
    reassigned: Sequence[tuple[str, str]] = (),
    ended: bool = False,
    session_id: str = SESSION_ID,
) -> str:
    """A ``partial`` RFC 7865 document: ``joined`` participants (with their stream),
    ``departed`` ones (a ``disassociate-time``), streams ``reassigned`` as
    ``(participant_id, label)`` (the new sender after a transfer), and the session ``ended``."""
    out = [_rfc_participant(w, (), session_id) for w in joined]
    for pid in departed:
        out.append(
            f"  <participantsessionassoc participant_id={quoteattr(pid)}"
            f" session_id={quoteattr(session_id)}>"
            f"<disassociate-time>{TIME}</disassociate-time></participantsessionassoc>\n"
        )
    for pid, label in reassigned:
        out.append(
            f"  <participantstreamassoc participant_id={quoteattr(pid)}>"
            f"<send>{stream_id(label)}</send></participantstreamassoc>\n"
        )
    if ended:
        out.append(
            f"  <session session_id={quoteattr(session_id)}><stop-time>{TIME}</stop-time>"
            "</session>\n"
        )
    return _doc("".join(out), "partial")


def with_vendor_extensions(document: str, *, call_id: str) -> str:
    """``document`` with vendor extension data added, as SBCs do: a Call-ID (and a UCID)
    inside the ``session``, extension data inside a ``participant``, and a root-level
    element of another namespace that reuses RFC element names (which must not count)."""
    session_ext = (
        '<extensiondata xmlns:cs="http://example.com/cube/siprec">'
        f"<cs:callData><cs:callid>{escape(call_id)}</cs:callid>"
        "<cs:ucid>00FA080019001038F725B3</cs:ucid></cs:callData></extensiondata>"
    )
    participant_ext = (
        '<apkt:extensiondata xmlns:apkt="http://example.com/sbc/extensiondata">'
        "<apkt:callingParty>true</apkt:callingParty>"
        '<apkt:header label="P-Asserted-Identity"><apkt:value>sip:x@y</apkt:value>'
        "</apkt:header></apkt:extensiondata>"
    )
    root_ext = (
        '  <gen:interaction xmlns:gen="http://example.com/genesys">'
        '<gen:participant participant_id="ghost"><gen:send>stream-ghost</gen:send>'
        "</gen:participant><gen:agentId>agent-7</gen:agentId></gen:interaction>\n"
    )
    out = re.sub(r"(<session\b[^>]*>)", lambda m: m.group(1) + session_ext, document, count=1)
    out = re.sub(r"(<participant\b[^>]*>)", lambda m: m.group(1) + participant_ext, out, count=1)
    return out.replace("</recording>", root_ext + "</recording>")


def multipart_body(
    sdp: str, metadata: str, boundary: str = "uniqueBoundary", newline: str = "\r\n"
) -> tuple[str, str]:
    """``(Content-Type value, body)`` of a SIPREC INVITE: the SDP part, then the metadata."""
    nl = newline
    sdp_text = sdp.replace("\r\n", "\n").replace("\n", nl)
    body = (
        f"--{boundary}{nl}Content-Type: application/sdp{nl}{nl}{sdp_text}{nl}"
        f"--{boundary}{nl}Content-Type: application/rs-metadata+xml{nl}"
        f"Content-Disposition: recording-session{nl}{nl}{metadata}{nl}"
        f"--{boundary}--{nl}"
    )
    return f"multipart/mixed;boundary={boundary}", body
