"""sipp scenarios built step by step, for calls that do more than play audio and hang up.

Owns: the XML of scripted call flows used by the call-lifecycle tests: an INVITE with any SDP offer
and extra headers, then in-dialog steps (play a pcap, pause, re-INVITE with another offer, INFO,
OPTIONS, BYE from us, or wait for the far end's BYE), or a CANCEL before the answer. Test support
only; :class:`tests.support.sipp.SippCall` runs the result (``scenario=``).

sipp runs with ``-aa``, so an INFO the bridge sends while the scenario sits in a pause or waits
for something else is answered 200 and traced, not treated as an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

_FROM = 'From: "sipp" <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]'
_CONTACT = "Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>"


def sdp(payloads: dict[int, str], direction: str = "sendrecv", version: int = 1) -> str:
    """An SDP offer of one audio stream: ``{payload type: "NAME/RATE"}`` in order."""
    pts = " ".join(str(pt) for pt in payloads)
    maps = "".join(f"a=rtpmap:{pt} {name}\n" for pt, name in payloads.items())
    if any(name.startswith("telephone-event") for name in payloads.values()):
        pt = next(pt for pt, name in payloads.items() if name.startswith("telephone-event"))
        maps += f"a=fmtp:{pt} 0-16\n"
    return (
        "v=0\n"
        f"o=sipp 53655765 {2353687637 + version} IN IP[local_ip_type] [local_ip]\n"
        "s=-\n"
        "c=IN IP[media_ip_type] [media_ip]\n"
        "t=0 0\n"
        f"m=audio [media_port] RTP/AVP {pts}\n"
        f"{maps}a=ptime:20\na={direction}\n"
    )


PCMU_WITH_EVENTS = {0: "PCMU/8000", 101: "telephone-event/8000"}


def _xml_safe(path: Path) -> str:
    text = str(path)
    if any(c in text for c in '"<&'):
        raise ValueError(f"path needs XML escaping: {text}")
    return text


@dataclass
class Scenario:
    """A call flow; add steps with the methods, then :meth:`render`."""

    offer: str = field(default_factory=lambda: sdp(PCMU_WITH_EVENTS))
    headers: tuple[str, ...] = ()  # extra INVITE header lines, e.g. "X-Customer: 42"
    steps: list[str] = field(default_factory=list)
    _cseq: int = 1

    def _request(self, method: str, extra: str = "", body: str = "", ctype: str = "") -> str:
        self._cseq += 1
        length = "[len]" if body else "0"
        ctype_line = f"Content-Type: {ctype}\n      " if body else ""
        return f"""<![CDATA[
      {method} [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      {_FROM}
      To:[$remote_to]
      [routes]
      Call-ID: [call_id]
      CSeq: {self._cseq} {method}
      {_CONTACT}
      Max-Forwards: 70
      {extra}{ctype_line}Content-Length: {length}

{body}
    ]]>"""

    def play(self, pcap: Path, seconds: float) -> Scenario:
        """Start playing ``pcap`` and wait ``seconds`` (its length) before the next step."""
        self.steps.append(
            f'<nop><action><exec play_pcap_audio="{_xml_safe(pcap)}"/></action></nop>\n'
            f'<pause milliseconds="{round(seconds * 1000)}"/>'
        )
        return self

    def pause(self, seconds: float) -> Scenario:
        self.steps.append(f'<pause milliseconds="{round(seconds * 1000)}"/>')
        return self

    def reinvite(self, offer: str) -> Scenario:
        """A re-INVITE with ``offer`` (e.g. hold: ``sdp(..., "sendonly", version=2)``), 200, ACK."""
        request = self._request("INVITE", body=offer, ctype="application/sdp")
        ack = self._request("ACK")
        self._cseq -= 1  # the ACK shares the re-INVITE's CSeq number
        ack = ack.replace(f"CSeq: {self._cseq + 1} ACK", f"CSeq: {self._cseq} ACK")
        self.steps.append(
            f'<send retrans="500">{request}</send>\n'
            '<recv response="100" optional="true"/>\n'
            '<recv response="200"/>\n'
            f"<send>{ack}</send>"
        )
        return self

    def info(self, body: str, ctype: str, extra: str = "") -> Scenario:
        """An INFO from the caller (e.g. ``application/dtmf-relay``), expecting 200."""
        request = self._request("INFO", extra=extra, body=body, ctype=ctype)
        self.steps.append(f'<send retrans="500">{request}</send>\n<recv response="200"/>')
        return self

    def dtmf_info(self, digit: str, duration_ms: int = 160) -> Scenario:
        return self.info(f"Signal={digit}\nDuration={duration_ms}\n", "application/dtmf-relay")

    def refuse_info(self, status: int, reason: str = "Bad Info Package") -> Scenario:
        """Wait for the far end's next INFO and refuse it with ``status``."""
        self.steps.append(
            '<recv request="INFO"/>\n'
            "<send><![CDATA[\n"
            f"      SIP/2.0 {status} {reason}\n"
            "      [last_Via:]\n      [last_From:]\n      [last_To:]\n"
            "      [last_Call-ID:]\n      [last_CSeq:]\n"
            f"      {_CONTACT}\n      Content-Length: 0\n\n    ]]></send>"
        )
        return self

    def options(self) -> Scenario:
        """An in-dialog OPTIONS, expecting 200."""
        request = self._request("OPTIONS")
        self.steps.append(f'<send retrans="500">{request}</send>\n<recv response="200"/>')
        return self

    def bye(self) -> Scenario:
        request = self._request("BYE")
        self.steps.append(f'<send retrans="500">{request}</send>\n<recv response="200"/>')
        return self

    def await_bye(self, timeout_s: float) -> Scenario:
        """Wait for the far end to hang up (up to ``timeout_s``) and answer its BYE with 200."""
        self.steps.append(
            f'<recv request="BYE" timeout="{round(timeout_s * 1000)}"/>\n'
            "<send><![CDATA[\n"
            "      SIP/2.0 200 OK\n"
            "      [last_Via:]\n      [last_From:]\n      [last_To:]\n"
            "      [last_Call-ID:]\n      [last_CSeq:]\n"
            f"      {_CONTACT}\n      Content-Length: 0\n\n    ]]></send>"
        )
        return self

    def _invite(self) -> str:
        extra = "".join(f"{h}\n      " for h in self.headers)
        return f"""<send retrans="500"><![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      {_FROM}
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      {_CONTACT}
      Max-Forwards: 70
      Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, INFO
      {extra}Content-Type: application/sdp
      Content-Length: [len]

{self.offer}
    ]]></send>"""

    def render(self) -> str:
        """The scenario: INVITE, 200 (route set recorded), ACK, then the steps in order."""
        ack = f"""<send><![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      {_FROM}
      To:[$remote_to]
      [routes]
      Call-ID: [call_id]
      CSeq: 1 ACK
      {_CONTACT}
      Max-Forwards: 70
      Content-Length: 0

    ]]></send>"""
        body = "\n".join(self.steps)
        return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="steps">
{self._invite()}
<recv response="100" optional="true"/>
<recv response="180" optional="true"/>
<recv response="183" optional="true"/>
<recv response="200" rrs="true">
  <action>
    <ereg regexp=".*" search_in="hdr" header="To:" check_it="true" assign_to="remote_to"/>
  </action>
</recv>
{ack}
{body}
</scenario>
"""

    def render_refused(self, code: int) -> str:
        """The scenario of an INVITE that must be refused with ``code``, then ACK."""
        return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="refused">
{self._invite()}
<recv response="100" optional="true"/>
<recv response="{code}"/>
<send><![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      {_FROM}
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]></send>
</scenario>
"""
