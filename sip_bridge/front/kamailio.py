"""The SIP front's Kamailio: its files written, its argv, ``kamailio -c``, and ``kamcmd`` to it.

This module writes ``kamailio.cfg``, ``dispatcher.list`` and ``tls.cfg`` into a run directory
(their text comes from :mod:`sip_bridge.front.kamailio_script`), checks the script with
``kamailio -c``, builds the argv that runs Kamailio in the foreground, and asks the running front
over its ctl socket for the media processes' state and load and for its statistics, or sets a
destination's state and the drain switch. It never starts, watches or stops Kamailio itself (the
supervisor Popens :func:`command`), and it never handles SIP itself: Kamailio is the proxy, we do
not write one.

The rest of the bridge imports the front from here: the names it uses from
:mod:`~sip_bridge.front.kamailio_files` and :mod:`~sip_bridge.front.kamailio_script` are
re-exported (``__all__``).
"""

from __future__ import annotations

import ipaddress
import logging
import re
import secrets
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from sip_bridge.front import security as front_security
from sip_bridge.front.kamailio_files import (
    KamailioError,
    KamailioFiles,
    files_in,
    find_kamailio,
    find_kamcmd,
    find_module_dir,
)
from sip_bridge.front.kamailio_script import (
    DISPATCH_SET,
    media_uri,
    render_config,
    render_dispatcher_list,
)
from sip_bridge.settings.config import Config

__all__ = [
    "STATISTICS",
    "Destination",
    "KamailioError",
    "KamailioFiles",
    "check",
    "command",
    "destinations",
    "files_in",
    "find_kamailio",
    "find_module_dir",
    "media_uri",
    "parse_dispatcher_list",
    "probe",
    "probe_address",
    "render",
    "render_config",
    "render_dispatcher_list",
    "set_draining",
    "set_state",
    "statistics",
]

log = logging.getLogger(__name__)

SHARED_MEMORY_MB = 8  # -m 2 is too little for tm
PRIVATE_MEMORY_MB = 2
CHECK_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Destination:
    """One media process as Kamailio's dispatcher sees it (from ``dispatcher.list``)."""

    uri: str
    flags: str  # "AP": active and probed; "IP": inactive (failed its probe); "D": disabled
    load: int  # calls the dispatcher counts on it (alg 10)

    @property
    def active(self) -> bool:
        return self.flags.startswith("A")


def render(cfg: Config, rundir: Path) -> KamailioFiles:
    """Write ``kamailio.cfg`` and ``dispatcher.list`` (and ``tls.cfg``) for ``cfg`` into
    ``rundir``."""
    rundir.mkdir(parents=True, exist_ok=True)
    files = files_in(rundir)
    files.dispatcher_list.write_text(render_dispatcher_list(cfg))
    if cfg.sip.tls.port:
        files.tls_config.write_text(front_security.render_tls_cfg(cfg))
    else:
        files.tls_config.unlink(missing_ok=True)
    files.config.write_text(render_config(cfg, files))
    log.info(
        "kamailio config in %s: udp %s:%d, %d media processes x %d calls",
        rundir,
        cfg.sip.address,
        cfg.sip.port,
        cfg.media.processes,
        cfg.media.calls_per_process,
    )
    return files


def command(files: KamailioFiles) -> list[str]:
    """The argv that runs Kamailio in the foreground, logging to stderr."""
    shared_mb = SHARED_MEMORY_MB
    if files.tls_config.is_file():
        shared_mb = max(shared_mb, front_security.TLS_SHARED_MEMORY_MB)
    return [
        str(find_kamailio()),
        "-DD",
        "-E",
        "-f",
        str(files.config),
        "-Y",
        str(files.rundir),
        "-P",
        str(files.pidfile),
        "-m",
        str(shared_mb),
        "-M",
        str(PRIVATE_MEMORY_MB),
    ]


def check(files: KamailioFiles) -> None:
    """Run ``kamailio -c`` on the generated config; raise :class:`KamailioError` if it fails."""
    argv = [str(find_kamailio()), "-c", "-f", str(files.config), "-Y", str(files.rundir)]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=CHECK_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise KamailioError(f"kamailio -c {files.config} took over {CHECK_TIMEOUT_S} s") from exc
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()
        raise KamailioError(f"kamailio rejected {files.config}:\n{output}")
    log.debug("kamailio accepted %s", files.config)


_DEST = re.compile(r"URI:\s*(\S+).*?FLAGS:\s*(\S+).*?DLGLOAD:\s*(\d+)", re.S)


def parse_dispatcher_list(text: str) -> list[Destination]:
    """Parse ``kamcmd dispatcher.list`` output into destinations, sorted by URI."""
    found = [Destination(m[1], m[2], int(m[3])) for m in _DEST.finditer(text)]
    return sorted(found, key=lambda d: d.uri)


def destinations(files: KamailioFiles, timeout_s: float = 2.0) -> list[Destination]:
    """Ask the running Kamailio (over its ctl socket) for the media processes' state and load."""
    return parse_dispatcher_list(_kamcmd(files, ["dispatcher.list"], timeout_s))


def set_state(files: KamailioFiles, uri: str, state: str, timeout_s: float = 2.0) -> None:
    """Set a destination's dispatcher state: "ip" inactive until a probe answers (a process
    that died), "d" disabled (draining: no new calls, no probe brings it back), "ap" active."""
    _kamcmd(files, ["dispatcher.set_state", state, str(DISPATCH_SET), uri], timeout_s)


def set_draining(files: KamailioFiles, draining: bool, timeout_s: float = 2.0) -> None:
    """While draining, the front answers new INVITEs and OPTIONS with 503 and Retry-After, so a
    PBX or an upstream proxy (see dialplans/kamailio) sends calls to another host; calls in
    progress are routed as before."""
    _kamcmd(files, ["pv.shvSet", "draining", "int", "1" if draining else "0"], timeout_s)


def _kamcmd(files: KamailioFiles, args: list[str], timeout_s: float) -> str:
    argv = [str(find_kamcmd()), "-s", f"unix:{files.ctl_socket}", *args]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise KamailioError(f"kamcmd on {files.ctl_socket} took over {timeout_s} s") from exc
    if done.returncode != 0:
        raise KamailioError(f"kamcmd {' '.join(args)}: {(done.stdout + done.stderr).strip()}")
    return done.stdout


# Kamailio's statistics worth exporting (kamcmd stats.get_statistics all): what came in, what
# was refused or dropped, and the replies sent by class.
STATISTICS = (
    "core:rcv_requests", "core:drop_requests", "core:err_requests", "core:bad_msg_hdr",
    "core:bad_URIs_rcvd", "sl:1xx_replies", "sl:2xx_replies", "sl:4xx_replies", "sl:5xx_replies",
    "tmx:2xx_transactions", "tmx:4xx_transactions", "tmx:5xx_transactions",
    "dispatcher:", "script:", "tmx:active_transactions",
)  # fmt: skip


def statistics(files: KamailioFiles, timeout_s: float = 2.0) -> dict[str, int]:
    """The front's counters named in :data:`STATISTICS` (a name ending in ':' takes a group)."""
    out: dict[str, int] = {}
    for line in _kamcmd(files, ["stats.get_statistics", "all"], timeout_s).splitlines():
        name, sep, value = line.strip().strip('"').partition(" = ")
        if not sep or not any(name == s or (s.endswith(":") and name.startswith(s))
                              for s in STATISTICS):  # fmt: skip
            continue
        try:
            out[name] = int(value.strip().strip('"'))
        except ValueError:
            continue
    return out


def probe_address(cfg: Config) -> tuple[str, int]:
    """Where a local health check reaches the front: its listen address, loopback for a wildcard."""
    address = ipaddress.ip_address(cfg.sip.address)
    if address.is_unspecified:
        return ("::1" if address.version == 6 else "127.0.0.1", cfg.sip.port)
    return (str(address), cfg.sip.port)


def probe(cfg: Config, timeout: float = 0.5) -> bool:
    """Send one OPTIONS to the running front; True if any SIP response came back in ``timeout``.

    Any response counts (200 from the front, or 503 when it forwards OPTIONS to an empty pool):
    this asks whether Kamailio is up, not whether the media processes are.
    """
    host, port = probe_address(cfg)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    tag = secrets.token_hex(6)
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host if family == socket.AF_INET6 else "127.0.0.1", 0))
        local_port = sock.getsockname()[1]
        via_host = f"[{host}]" if family == socket.AF_INET6 else "127.0.0.1"
        target = f"sip:[{host}]:{port}" if family == socket.AF_INET6 else f"sip:{host}:{port}"
        request = (
            f"OPTIONS {target} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {via_host}:{local_port};branch=z9hG4bK{tag};rport\r\n"
            f"From: <sip:probe@{via_host}>;tag={tag}\r\n"
            f"To: <{target}>\r\n"
            f"Call-ID: probe-{tag}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Max-Forwards: 2\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        deadline = time.monotonic() + timeout
        try:
            sock.sendto(request.encode(), (host, port))
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                reply = sock.recv(65535)
                if reply.startswith(b"SIP/2.0 ") and f"probe-{tag}".encode() in reply:
                    return True
        except OSError:  # timeout, or ICMP port unreachable while Kamailio is not up yet
            return False
    return False
