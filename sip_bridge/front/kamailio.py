"""The SIP front: Kamailio's config and dispatcher list, generated from our :class:`Config`.

This module owns the text of ``kamailio.cfg`` and ``dispatcher.list`` (the routing policy in front
of the media processes: call-load dispatch, failover, 503 when full, OPTIONS probing), checking it
with ``kamailio -c`` and the argv that runs Kamailio in the foreground. It never starts, watches or
stops Kamailio itself (the supervisor Popens :func:`command`), and it never handles SIP itself:
Kamailio is the proxy, we do not write one.

Routing facts this script relies on (measured, see docs/architecture.md, "Kamailio routing
facts"):

* Dispatcher alg 10 counts load per Call-ID; the count is released only where the script calls
  ``ds_load_update()`` as a BYE passes, or ``ds_load_unset()`` in the failure route (also for a
  cancelled INVITE: a CANCEL that crosses the 200 leaves a call that lives until its BYE). So
  every initial INVITE is record-routed, or BYEs would bypass the front and load would leak.
* ``ds_next_dst()`` with no destination left drops the current one, after which ``ds_load_unset()``
  silently does nothing: the failure route checks that a next destination exists first.
* ``tm``'s ``fr_timer`` also bounds the OPTIONS probes, so it is short (1.5 s): a dead media
  process is marked inactive about two seconds after it stops answering.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from sip_bridge.front import security as front_security
from sip_bridge.front import source_limits, tenant_routing
from sip_bridge.settings.config import Config
from sip_bridge.settings.tenants import TENANT_HEADER
from sip_bridge.sip_headers import OVER_CAPACITY_REASON

log = logging.getLogger(__name__)

DISPATCH_SET = 1  # dispatcher set holding the media processes
SHARED_MEMORY_MB = 8  # -m 2 is too little for tm
PRIVATE_MEMORY_MB = 2
CHILDREN = 2  # UDP worker processes
RETRY_AFTER_S = 5  # advertised with our 503s
FR_TIMER_MS = 1500  # no reply at all (also bounds each OPTIONS probe)
FR_INV_TIMER_MS = 15000  # provisional received, no final: a hung media process
CHECK_TIMEOUT_S = 10.0

_MODULE_DIRS = (
    "/usr/lib/x86_64-linux-gnu/kamailio/modules",
    "/usr/lib/aarch64-linux-gnu/kamailio/modules",
    "/usr/lib64/kamailio/modules",
    "/usr/lib/kamailio/modules",
    "/usr/local/lib64/kamailio/modules",
    "/usr/local/lib/kamailio/modules",
)
_MODULES = (
    "ctl",
    "tm",
    "tmx",
    "sl",
    "rr",
    "maxfwd",
    "textops",
    "siputils",
    "xlog",
    "sanity",
    "pv",
    "dispatcher",
    "kex",  # statistics over the ctl socket (stats.get_statistics), for /metrics
    "sdpops",  # the SRTP offers PJSIP would answer 406 get their 488 here
    "pipelimit",  # media.max_call_rate: new calls per second and media process
)


class KamailioError(Exception):
    """Kamailio is missing, or rejected the config we generated (our bug, not the caller's)."""


@dataclass(frozen=True, slots=True)
class KamailioFiles:
    """Where :func:`render` wrote things; everything lives under ``rundir``."""

    rundir: Path
    config: Path  # kamailio.cfg
    tls_config: Path  # tls.cfg (written only with sip.tls.port)
    dispatcher_list: Path  # dispatcher.list
    pidfile: Path  # written by kamailio -P
    ctl_socket: Path  # `kamcmd -s unix:<ctl_socket> dispatcher.list`
    module_dir: Path


@dataclass(frozen=True, slots=True)
class Destination:
    """One media process as Kamailio's dispatcher sees it (from ``dispatcher.list``)."""

    uri: str
    flags: str  # "AP": active and probed; "IP": inactive (failed its probe); "D": disabled
    load: int  # calls the dispatcher counts on it (alg 10)

    @property
    def active(self) -> bool:
        return self.flags.startswith("A")


def find_kamailio() -> Path:
    """The ``kamailio`` binary (Debian puts it in /usr/sbin, often not on a user's PATH)."""
    found = shutil.which("kamailio") or shutil.which("kamailio", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise KamailioError("kamailio not found: install the Debian package kamailio")
    return Path(found)


def find_kamcmd() -> Path:
    found = shutil.which("kamcmd") or shutil.which("kamcmd", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise KamailioError("kamcmd not found: install the Debian package kamailio")
    return Path(found)


def find_module_dir() -> Path:
    """The directory holding Kamailio's modules (``tm.so`` and friends), found at run time."""
    candidates = [Path(d) for d in _MODULE_DIRS]
    candidates += sorted(Path("/usr/lib").glob("*/kamailio/modules"))
    for directory in candidates:
        if (directory / "tm.so").is_file() and (directory / "dispatcher.so").is_file():
            return directory
    raise KamailioError(
        "Kamailio modules (tm.so, dispatcher.so) not found: install the Debian package kamailio"
    )


def internal_address(cfg: Config) -> tuple[str, int] | None:
    """The loopback socket that faces the media processes, or None if the trunk socket serves.

    The trunk socket serves when it is 127.0.0.1 itself and advertises nothing else. Otherwise the
    front also listens on 127.0.0.1, on the port just below the media processes' range, and
    Kamailio record-routes twice: the PBX sees the public address, the media processes see
    127.0.0.1 (so their BYEs and INFOs never have to hairpin through a NAT's public address).
    """
    address = ipaddress.ip_address(cfg.sip.address)
    if str(address) == "127.0.0.1" and cfg.public_address == cfg.sip.address:
        return None
    port = cfg.media.sip_port_base - 1
    if port == cfg.sip.port and address.is_unspecified:
        raise KamailioError(
            f"media.sip_port_base - 1 ({port}) is the front's loopback port and clashes with"
            " sip.port on the wildcard address: move one of them"
        )
    return ("127.0.0.1", port)


def render_dispatcher_list(cfg: Config) -> str:
    lines = ["# setid destination flags priority attrs (generated by sip_bridge.front.kamailio)"]
    for i in range(cfg.media.processes):
        uri = media_uri(cfg, i)
        attrs = f"duid=mp{i};maxload={cfg.media.calls_per_process}"
        lines.append(f"{DISPATCH_SET} {uri} 0 0 {attrs}")
    return "\n".join(lines) + "\n"


def _listen_lines(cfg: Config) -> list[str]:
    """The trunk's sockets (UDP, and TLS with sip.tls.port), advertising the public address
    where it differs, then the loopback socket facing the media processes if there is one."""
    address = ipaddress.ip_address(cfg.sip.address)
    advertise = ""
    if address.is_unspecified or cfg.public_address != cfg.sip.address:
        advertise = _uri_host(ipaddress.ip_address(cfg.public_address))

    def trunk(proto: str, port: int) -> str:
        line = f"listen={proto}:{_uri_host(address)}:{port}"
        return f"{line} advertise {advertise}:{port}" if advertise else line

    lines = [trunk("udp", cfg.sip.port)]
    if cfg.sip.tls.port:
        lines.append(trunk("tls", cfg.sip.tls.port))
    internal = internal_address(cfg)
    if internal is not None:
        lines.append(f"listen=udp:{internal[0]}:{internal[1]}")
    return lines


def _uri_host(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return f"[{address}]" if address.version == 6 else str(address)


# SDES suites PJSIP's libsrtp takes, with a base64 key||salt (RFC 4568, 6188, 7714).
_CRYPTO = (
    "a=crypto:[0-9]+ +(AES_CM_128_HMAC_SHA1_(80|32)|AES_(192|256)_CM_HMAC_SHA1_(80|32)|"
    "AEAD_AES_(128|256)_GCM) +inline:[A-Za-z0-9+/]{36,}"
)


def _srtp_check(mode: str) -> str:
    """route[SRTP]: an audio offer PJSIP cannot take for want of SRTP (or of plain RTP) gets
    488 Not Acceptable Here with a Warning here; PJSIP itself would answer 406."""
    refuse = (
        'append_to_reply("Warning: 399 sip-bridge \\"{why}\\"\\r\\n");\n'
        '        send_reply("488", "Not Acceptable Here");\n        exit;'
    )
    savp = 'sdp_with_transport("RTP/SAVP") || sdp_with_transport("RTP/SAVPF")'
    lines = ["route[SRTP] {", '    if (!has_body("application/sdp")) {', "        return;", "    }"]
    if mode == "off":
        lines += [
            f'    if (({savp}) && !sdp_with_transport("RTP/AVP")) {{',
            "        " + refuse.format(why="SRTP offered; media.srtp is off"),
            "    }",
        ]
    else:
        lines += [
            f'    if (({savp}) && !sdp_with_transport("RTP/AVP") && !search_body("{_CRYPTO}")) {{',
            "        " + refuse.format(why="RTP/SAVP without a usable a=crypto line"),
            "    }",
        ]
    if mode == "mandatory":
        lines += [
            f"    if (!({savp})) {{",
            "        " + refuse.format(why="SRTP required (media.srtp: mandatory)"),
            "    }",
        ]
    return "\n".join([*lines, "}"]) + "\n"


def _call_rate_check(cfg: Config) -> str:
    """media.max_call_rate: a media process that took its share of new calls this second is
    passed over for the next one (the same look-before-moving as the failure route); with none
    left, 503 + Retry-After."""
    rate = cfg.media.max_call_rate
    if not rate:
        return ""
    return f"""    while (!pl_check("$du", "TAILDROP", "{rate}")) {{
        if ($xavp(_dsdst_[1]=>uri) == $null || !ds_next_dst()) {{
            xlog("L_WARN", "INVITE $ci: every media process over {rate} new calls/s, 503\\n");
            ds_load_unset();
            update_stat("call_rate_limited", "+1");
            append_to_reply("Retry-After: {RETRY_AFTER_S}\\r\\n");
            send_reply("503", "Service Unavailable");
            exit;
        }}
    }}
"""


DRAIN_CHECK = f"""    if ($shv(draining) == 1) {{
        append_to_reply("Retry-After: {RETRY_AFTER_S}\\r\\n");
        send_reply("503", "Draining");
        exit;
    }}"""


def render_config(cfg: Config, files: KamailioFiles) -> str:
    internal = internal_address(cfg)
    ping_from = "sip:front@127.0.0.1"
    default_socket = ""
    if internal is not None:
        sock = f"udp:{internal[0]}:{internal[1]}"
        ping_from = f"sip:front@{internal[0]}:{internal[1]}"
        default_socket = f'modparam("dispatcher", "ds_default_socket", "{sock}")\n'
    limits = source_limits.enabled(cfg)
    names = dict.fromkeys((*_MODULES, *tenant_routing.modules(cfg), *front_security.modules(cfg),
                           *(source_limits.modules(cfg) if limits else ())))  # fmt: skip
    modules = "\n".join(f'loadmodule "{name}.so"' for name in names)
    profiles = tenant_routing.profiles(cfg) + source_limits.profiles(cfg)
    dialog_params = source_limits.dialog_modparams(cfg, profiles)
    tenant_route = tenant_routing.route(cfg)
    use_tenants = "    route(TENANT);\n" if tenant_route else ""
    alias_back = (
        '        if ($ru =~ ";alias=") {\n            handle_ruri_alias();  # back over the'
        " peer's TLS connection\n        }\n"
        if cfg.sip.tls.port
        else ""
    )
    auth_call = "    route(AUTH);\n" if cfg.sip.auth.users else ""
    listens = "\n".join(_listen_lines(cfg))
    if cfg.sip.answer_options:
        options_body = '    sl_send_reply("200", "OK");'
    else:
        # Not answered at the front: a media process answers (round robin, no call load), so
        # the trunk's health check sees the pool.
        options_body = (
            f'    if (!ds_select_dst("{DISPATCH_SET}", "4")) {{\n'
            f'        append_to_reply("Retry-After: {RETRY_AFTER_S}\\r\\n");\n'
            '        sl_send_reply("503", "Service Unavailable");\n'
            "        exit;\n"
            "    }\n"
            "    route(RELAY);"
        )
    return f"""#!KAMAILIO
# Generated by sip_bridge.front.kamailio from the sip-bridge config: edit that, not this file.

debug=2
log_stderror=yes
children={CHILDREN}
{front_security.globals_(cfg)}auto_aliases=no
server_header="Server: sip-bridge front"
user_agent_header="User-Agent: sip-bridge front"
{listens}

mpath="{files.module_dir}/"
{modules}

modparam("ctl", "binrpc", "unix:{files.ctl_socket}")
# 1 while the host drains (set over the ctl socket by `serve`): new calls and OPTIONS get 503.
modparam("pv", "shvset", "draining=i:0")

modparam("tm", "fr_timer", {FR_TIMER_MS})
modparam("tm", "fr_inv_timer", {FR_INV_TIMER_MS})
# After a failover, the answer comes from the latest branch only, not an earlier 486.
modparam("tm", "failure_reply_mode", 3)

modparam("rr", "enable_full_lr", 1)
modparam("rr", "append_fromtag", 1)

modparam("dispatcher", "list_file", "{files.dispatcher_list}")
# Flag 2: keep the other destinations in the xavp, so ds_next_dst() can fail over.
modparam("dispatcher", "flags", 2)
modparam("dispatcher", "xavp_dst", "_dsdst_")
modparam("dispatcher", "xavp_ctx", "_dsctx_")
modparam("dispatcher", "ds_hash_size", 9)
# A call whose 2xx never came is forgotten after a minute; a confirmed call whose BYE never
# passed us, after 12 hours.
modparam("dispatcher", "ds_hash_initexpire", 60)
modparam("dispatcher", "ds_hash_expire", 43200)
modparam("dispatcher", "ds_hash_check_interval", 10)
modparam("dispatcher", "ds_ping_method", "OPTIONS")
modparam("dispatcher", "ds_ping_from", "{ping_from}")
modparam("dispatcher", "ds_ping_interval", 1)
modparam("dispatcher", "ds_probing_mode", 1)
modparam("dispatcher", "ds_probing_threshold", 1)
modparam("dispatcher", "ds_inactive_threshold", 1)
# A media process at its call limit still answers OPTIONS (200, or 486 from some stacks): alive.
modparam("dispatcher", "ds_ping_reply_codes", "class=2;code=486")
# media.max_call_rate counts new calls per second (pl_check's limit is per timer interval).
modparam("pipelimit", "timer_interval", 1)
{default_socket}{front_security.modparams(cfg, files.tls_config)}
{source_limits.modparams(cfg) if limits else ""}{dialog_params}
request_route {{
    route(SECURITY);
    route(REQINIT);

    if (is_method("CANCEL")) {{
        # The call's load is released when the INVITE fails (487, failure route), not here: a
        # CANCEL can cross the media process's 200, and that call then lives until its BYE.
        if (t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}

    if (!is_method("ACK")) {{
        if (t_precheck_trans()) {{
            t_check_trans();
            exit;
        }}
        t_check_trans();
    }}

    if (has_totag()) {{
        route(WITHINDLG);
        exit;
    }}

    if (is_method("OPTIONS")) {{
        route(OPTIONS);
        exit;
    }}

    if (is_method("ACK")) {{
        # An ACK for a negative reply we relayed statefully; anything else is stray.
        if (t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}

    if (!is_method("INVITE")) {{
        xlog("L_NOTICE", "$rm $ci from $si:$sp: only calls are taken here, 405\\n");
        append_to_reply("Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, INFO\\r\\n");
        sl_send_reply("405", "Method Not Allowed");
        exit;
    }}

    # We are the last proxy before the media processes: a preloaded route set means nothing here.
    if (is_present_hf("Route")) {{
        remove_hf("Route");
    }}
    # Only the front says whose call this is.
    remove_hf("{TENANT_HEADER}");
{DRAIN_CHECK}
{auth_call}    route(SRTP);
{use_tenants}    record_route();
{"    route(SOURCE_LIMIT);" + chr(10) if limits else ""}    route(DISPATCH);
}}

route[REQINIT] {{
    # Methods are case-sensitive (RFC 3261 §7.1): "invite" is no INVITE, and an unknown method
    # gets 501. is_method() and PJSIP both ignore case, and tm matched no 200 to an "invite":
    # it retransmitted it, and the media process took a second call that no one would ever ACK.
    if ($rm != $(rm{{s.toupper}})) {{
        xlog("L_NOTICE", "$rm $ci from $si:$sp: method not in upper case, 501\\n");
        sl_send_reply("501", "Not Implemented");
        exit;
    }}
    if (!mf_process_maxfwd_header("10")) {{
        xlog("L_NOTICE", "$rm $ci from $si:$sp: too many hops\\n");
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (!sanity_check()) {{
        xlog("L_NOTICE", "$rm $ci from $si:$sp: malformed, dropped\\n");
        exit;
    }}
}}

route[WITHINDLG] {{
    if (loose_route()) {{
        if (is_method("BYE")) {{
            xlog("L_INFO", "BYE $ci: releasing its media process\\n");
            ds_load_update();
        }}
        if (is_method("OPTIONS")) {{
            t_on_failure("INDIALOG_OPTIONS");
        }}
{alias_back}        route(RELAY);
        exit;
    }}
    if (is_method("ACK")) {{
        if (t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    xlog("L_NOTICE", "$rm $ci from $si:$sp: in-dialog without our route, 404\\n");
    sl_send_reply("404", "Not Here");
}}

{tenant_route}
{front_security.security_route(cfg, DISPATCH_SET)}
{front_security.auth_route(cfg)}
{_srtp_check(cfg.media.srtp)}
{source_limits.route(cfg, RETRY_AFTER_S)}
route[OPTIONS] {{
{DRAIN_CHECK}
{options_body}
}}

route[DISPATCH] {{
    if (!ds_select_dst("{DISPATCH_SET}", "10")) {{
        xlog("L_WARN", "INVITE $ci: every media process is full or down, 503\\n");
        append_to_reply("Retry-After: {RETRY_AFTER_S}\\r\\n");
        send_reply("503", "Service Unavailable");  # stateful if route[TENANT] made the transaction
        exit;
    }}
{_call_rate_check(cfg)}    xlog("L_INFO", "INVITE $ci: to $du\\n");
    t_on_failure("DISPATCH_FAILED");
    t_on_reply("DISPATCH_REPLY");
    route(RELAY);
}}

route[RELAY] {{
    if (!t_relay()) {{
        if (is_method("INVITE") && !has_totag()) {{
            ds_load_unset();  # no branch went out: no failure route will release the call
        }}
        if (is_method("INVITE") && t_is_canceled()) {{
            # A CANCEL handled on another child got here first; tm has answered 487.
            xlog("L_INFO", "INVITE $ci: cancelled before it was relayed\\n");
            exit;
        }}
        xlog("L_ERR", "$rm $ci: relay to $du failed\\n");
        sl_reply_error();
    }}
    exit;
}}

onreply_route[DISPATCH_REPLY] {{
    if (is_method("INVITE") && status =~ "^2[0-9][0-9]$") {{
        # Confirms the call in dispatcher's table (else it expires after ds_hash_initexpire).
        ds_load_update();
    }}
}}

# PJSIP has no handler for OPTIONS inside a dialog and answers 500 "Unhandled by dialog usages";
# it answers 481 when the dialog is gone. So a 500 proves the call is alive: say 200.
failure_route[INDIALOG_OPTIONS] {{
    if (t_check_status("500")) {{
        t_reply("200", "OK");
    }}
}}

failure_route[DISPATCH_FAILED] {{
    if (t_is_canceled()) {{
        xlog("L_INFO", "INVITE $ci: cancelled, releasing its media process\\n");
        ds_load_unset();
        exit;
    }}
    if (t_check_status("486|408|5[0-9][0-9]") || (t_branch_timeout() && !t_branch_replied())) {{
        # ds_next_dst() with nothing left drops the current entry and ds_load_unset() then does
        # nothing, leaking a call's worth of load: look before moving. Workers at capacity are
        # every media process's workers: no other process would take the call.
        if ($T_reply_reason != "{OVER_CAPACITY_REASON}" && $xavp(_dsdst_[1]=>uri) != $null) {{
            if (ds_next_dst()) {{
                xlog("L_WARN", "INVITE $ci: $T_reply_code from a media process, trying $du\\n");
                t_on_failure("DISPATCH_FAILED");
                t_on_reply("DISPATCH_REPLY");
                route(RELAY);
            }}
        }}
        if ($T_reply_reason == "{OVER_CAPACITY_REASON}") {{
            xlog("L_INFO", "INVITE $ci: the workers are at capacity, 503\\n");
        }} else {{
            xlog("L_WARN", "INVITE $ci: $T_reply_code and no media process left, 503\\n");
        }}
        ds_load_unset();
        append_to_reply("Retry-After: {RETRY_AFTER_S}\\r\\n");
        t_reply("503", "Service Unavailable");
        exit;
    }}
    xlog("L_INFO", "INVITE $ci: $T_reply_code from the media process, passed on\\n");
    ds_load_unset();
}}
"""


def files_in(rundir: Path) -> KamailioFiles:
    """Where the front's files are (or go) under ``rundir``."""
    return KamailioFiles(
        rundir=rundir,
        config=rundir / "kamailio.cfg",
        tls_config=rundir / "tls.cfg",
        dispatcher_list=rundir / "dispatcher.list",
        pidfile=rundir / "kamailio.pid",
        ctl_socket=rundir / "kamailio_ctl",
        module_dir=find_module_dir(),
    )


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


def media_uri(cfg: Config, index: int) -> str:
    """Media process ``index`` as the dispatcher list names it."""
    return f"sip:127.0.0.1:{cfg.media_sip_port(index)}"


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
