"""A real Kamailio front, generated from a config, in front of sipp stand-ins for the media
processes, and sipp UACs that place calls through it as a PBX would (honouring the route set)."""

from __future__ import annotations

import dataclasses
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sip_bridge.front import kamailio
from sip_bridge.settings import checks, config, loading
from tests.support.ports import free_udp_ports

SIPP_TIMEOUT_S = 20

# --- sipp scenarios ------------------------------------------------------------------------------

_UAS_HEAD = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="media process stand-in">
  <recv request="OPTIONS" optional="true" next="options"/>
  <recv request="INVITE"/>
"""
_UAS_TAIL = """
  <label id="options"/>
  <send>
    <![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpOpt[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]>
  </send>
  <label id="done"/>
  <nop/>
</scenario>
"""
_UAS_ANSWER = """  <send>
    <![CDATA[
SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
[last_Record-Route:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Length: 0

]]>
  </send>
  <send retrans="500">
    <![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
[last_Record-Route:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Type: application/sdp
Content-Length: [len]

v=0
o=- 1 1 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000

]]>
  </send>
  <recv request="ACK"/>
  <recv request="BYE"/>
  <send next="done">
    <![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]>
  </send>
"""
# Takes the INVITE and never answers: a hung media process (the front times out after fr_timer).
_UAS_SILENT = """  <recv request="INVITE" next="done"/>
"""
_UAS_BUSY = """  <send>
    <![CDATA[
SIP/2.0 486 Busy Here
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]>
  </send>
  <recv request="ACK" next="done"/>
"""


def _invite(extra_headers: str = "") -> str:
    """The INVITE a PBX sends (``extra_headers``: more lines, each ending in a newline)."""
    marker = "Max-Forwards: 70\n"
    return _INVITE.replace(marker, marker + extra_headers, 1)


_INVITE = """  <send retrans="500">
    <![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: pbx <sip:pbx@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:pbx@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=- 1 1 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000

]]>
  </send>
  <recv response="100" optional="true"/>
"""


def uac_call(extra_headers: str = "") -> str:
    """Answered: ACK and BYE go to the Contact through the recorded route set, as a PBX must."""
    return _UAC_CALL.replace("<!--INVITE-->", _invite(extra_headers))


def uac_refused(status: int = 503, extra_headers: str = "") -> str:
    """Refused by the front with ``status`` (a 503 must carry Retry-After), and the ACK for it."""
    scenario = _UAC_REFUSED.replace("<!--INVITE-->", _invite(extra_headers))
    if status != 503:
        expected = f'<recv response="503">{_RETRY_AFTER_CHECK}'
        scenario = scenario.replace(expected, f'<recv response="{status}"/>')
    return scenario


_UAC_CALL = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="pbx call">
<!--INVITE-->
  <recv response="180" optional="true"/>
  <recv response="200" rrs="true"/>
  <send>
    <![CDATA[
ACK [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: pbx <sip:pbx@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
[routes]
Contact: <sip:pbx@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0

]]>
  </send>
  <pause/>
  <send retrans="500">
    <![CDATA[
BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: pbx <sip:pbx@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 2 BYE
[routes]
Contact: <sip:pbx@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0

]]>
  </send>
  <recv response="200"/>
</scenario>
"""
_RETRY_AFTER_CHECK = """
    <action>
      <ereg regexp="5" search_in="hdr" header="Retry-After:" check_it="true" assign_to="ra"/>
    </action>
  </recv>
  <Reference variables="ra"/>"""
_UAC_REFUSED = f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="pbx call refused">
<!--INVITE-->
  <recv response="503">{_RETRY_AFTER_CHECK}
  <send>
    <![CDATA[
ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
[last_Via:]
From: pbx <sip:pbx@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
[last_To:]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

]]>
  </send>
</scenario>
"""


# --- processes -----------------------------------------------------------------------------------


def free_udp_port(count: int = 1, host: str = "127.0.0.1") -> int:
    """A port p such that p .. p+count-1 are free on ``host``."""
    return free_udp_ports(count, host)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=3)


class Front:
    """A running Kamailio plus its sipp media-process stand-ins."""

    def __init__(
        self, tmp: Path, address: str = "127.0.0.1", changes: dict[str, Any] | None = None
    ) -> None:
        self.tmp = tmp
        self.address = address
        self.kamailio_port = free_udp_port(host=address)
        # Port base - 1 stays free too: the front's loopback socket when the trunk is elsewhere.
        self.media_base = free_udp_port(3) + 1
        base = loading.load(None)
        self.cfg = dataclasses.replace(
            base,
            # The callers here stand for the PBX: a listed trunk, no per-source limit.
            sip=dataclasses.replace(
                base.sip,
                address=address,
                port=self.kamailio_port,
                trunks=(config.SipTrunk("127.0.0.0/8"),),
            ),  # fmt: skip
            media=dataclasses.replace(
                base.media, processes=2, calls_per_process=2, sip_port_base=self.media_base
            ),
        )
        if changes:  # e.g. tenants: top-level config fields, already built
            self.cfg = checks.validate(dataclasses.replace(self.cfg, **changes), "test")
        self.files = kamailio.render(self.cfg, tmp / "kamailio")
        self.kamailio: subprocess.Popen[bytes] | None = None
        self.backends: dict[int, subprocess.Popen[bytes]] = {}
        self._uac_count = 0

    def uri(self, index: int) -> str:
        return f"sip:127.0.0.1:{self.cfg.media_sip_port(index)}"

    def start_kamailio(self) -> None:
        log = (self.tmp / "kamailio.log").open("wb")
        self.kamailio = subprocess.Popen(
            kamailio.command(self.files), stdout=log, stderr=subprocess.STDOUT
        )

    def start_backend(self, index: int, mode: str = "answer") -> None:
        """A media process stand-in that answers calls, or is "busy" (486), or "silent"."""
        body = {"answer": _UAS_ANSWER, "busy": _UAS_BUSY, "silent": _UAS_SILENT}[mode]
        scenario = self.tmp / f"uas{index}-{mode}.xml"
        scenario.write_text(_UAS_HEAD + body + _UAS_TAIL)
        port = self.cfg.media_sip_port(index)
        self.backends[index] = subprocess.Popen(
            ["sipp", "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(port)]
            + ["-mp", str(free_udp_port(2)), "-nostdin", "-trace_err"]
            + ["-error_file", str(self.tmp / f"uas{index}.err")]
            + ["-trace_msg", "-message_file", str(self.tmp / f"uas{index}.msg")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.tmp,
        )

    def received_invites(self) -> list[str]:
        """Every INVITE the media process stand-ins received, as text (from sipp's trace)."""
        found = []
        for path in sorted(self.tmp.glob("uas*.msg")):
            for block in path.read_text(errors="replace").split("\n\n"):
                start = block.find("INVITE sip:")
                if start >= 0:
                    found.append(block[start:])
        return found

    def kill_backend(self, index: int) -> None:
        proc = self.backends.pop(index)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=3)

    def uac(
        self,
        scenario: str,
        calls: int,
        hold_ms: int = 0,
        rate: int = 10,
        limit: int = 0,
        service: str = "bridge",
        source: str = "127.0.0.1",
    ) -> subprocess.Popen[bytes]:
        """Start a sipp UAC placing ``calls`` calls through the front, ``limit`` at once at most."""
        self._uac_count += 1
        path = self.tmp / f"uac{self._uac_count}.xml"
        path.write_text(scenario)
        argv = ["sipp", f"{self.address}:{self.kamailio_port}", "-sf", str(path), "-s", service]
        argv += ["-i", source, "-p", str(free_udp_port(host=source))]
        argv += ["-mp", str(free_udp_port(2, host=source))]
        argv += ["-m", str(calls), "-l", str(limit or calls), "-r", str(rate), "-d", str(hold_ms)]
        argv += ["-timeout", f"{SIPP_TIMEOUT_S}s", "-timeout_error", "-recv_timeout", "5000"]
        argv += ["-nostdin", "-trace_err", "-error_file", str(self.tmp / "uac.err")]
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.tmp,
        )

    def run_uac(
        self,
        scenario: str,
        calls: int,
        hold_ms: int = 0,
        rate: int = 10,
        limit: int = 0,
        service: str = "bridge",
        source: str = "127.0.0.1",
    ) -> int:
        proc = self.uac(scenario, calls, hold_ms, rate, limit, service, source)
        try:
            return proc.wait(timeout=SIPP_TIMEOUT_S + 5)
        finally:
            stop_process(proc)

    def request(self, method: str, max_forwards: int = 70) -> str:
        """Send one out-of-dialog request from a plain UDP socket; the final answer's code."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(2)
            port = sock.getsockname()[1]
            target = f"sip:{self.address}:{self.kamailio_port}"
            branch = f"z9hG4bK-{method}-{max_forwards}"
            message = (
                f"{method} {target} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch={branch};rport\r\n"
                f"From: <sip:probe@127.0.0.1:{port}>;tag=probe\r\n"
                f"To: <{target}>\r\n"
                f"Call-ID: probe-{method}-{max_forwards}@127.0.0.1\r\n"
                f"CSeq: 1 {method}\r\n"
                f"Max-Forwards: {max_forwards}\r\n"
                "Content-Length: 0\r\n\r\n"
            )
            sock.sendto(message.encode(), ("127.0.0.1", self.kamailio_port))
            while True:  # skip provisional replies; bounded by the socket timeout
                reply = sock.recv(65535).decode(errors="replace")
                code = reply.split(" ", 2)[1]
                if not code.startswith("1"):
                    return code

    def destinations(self) -> dict[str, kamailio.Destination]:
        return {d.uri: d for d in kamailio.destinations(self.files)}

    def wait_for(
        self, what: str, ok: Callable[[dict[str, kamailio.Destination]], bool], within_s: float
    ) -> float:
        """Poll dispatcher.list until ``ok``; return how long it took (fail after ``within_s``)."""
        start = time.monotonic()
        last: dict[str, kamailio.Destination] = {}
        while time.monotonic() - start < within_s:
            try:
                last = self.destinations()
            except kamailio.KamailioError:
                last = {}  # ctl socket not up yet
            if last and ok(last):
                return time.monotonic() - start
            time.sleep(0.05)
        pytest.fail(f"{what} not seen within {within_s} s; last: {last}\n{self.log_tail()}")

    def wait_all_active(self) -> None:
        self.wait_for(
            "both media processes active",
            lambda d: len(d) == 2 and all(x.active for x in d.values()),
            within_s=5,
        )

    def loads(self) -> dict[str, int]:
        return {uri: d.load for uri, d in self.destinations().items()}

    def log(self) -> str:
        path = self.tmp / "kamailio.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def log_tail(self) -> str:
        return "\n".join(self.log().splitlines()[-40:])

    def close(self) -> None:
        for proc in self.backends.values():
            stop_process(proc)
        if self.kamailio is not None:
            stop_process(self.kamailio)
