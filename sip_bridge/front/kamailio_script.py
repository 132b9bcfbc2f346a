"""What the front runs: ``kamailio.cfg`` and ``dispatcher.list``, rendered from our :class:`Config`.

This module owns the routing policy in front of the media processes (call-load dispatch,
failover, 503 when full, OPTIONS probing, the drain switch): the script's fixed text is
``kamailio.cfg.tmpl`` beside this file, and this module works out the values of its
``@@{name}`` placeholders. The guards (:mod:`~sip_bridge.front.security`), the tenants
(:mod:`~sip_bridge.front.tenant_routing`) and the admission limits
(:mod:`~sip_bridge.front.source_limits`) write their own pieces of script; this module puts them
in place. It never writes a file, runs Kamailio or handles SIP: :mod:`sip_bridge.front.kamailio`
does the first two, and Kamailio is the proxy, we do not write one.

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

import functools
import importlib.resources
import ipaddress
import re
import string

from sip_bridge.front import security as front_security
from sip_bridge.front import source_limits, tenant_routing
from sip_bridge.front.kamailio_files import KamailioError, KamailioFiles
from sip_bridge.settings.config import Config
from sip_bridge.settings.tenants import TENANT_HEADER
from sip_bridge.sip_headers import OVER_CAPACITY_REASON, RETRY_AFTER_S, SIPREC_HEADER

TEMPLATE = "kamailio.cfg.tmpl"  # in this package
DISPATCH_SET = 1  # dispatcher set holding the media processes
CHILDREN = 2  # UDP worker processes
MAX_BODY_BYTES = 32 * 1024  # an INVITE's or UPDATE's body (SIPREC metadata is a few kB), else 413
FR_TIMER_MS = 1500  # no reply at all (also bounds each OPTIONS probe)
FR_INV_TIMER_MS = 15000  # provisional received, no final: a hung media process

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


class ScriptTemplate(string.Template):
    """A Kamailio script with ``@@{name}`` placeholders.

    ``$`` and ``{}`` are Kamailio's own (``$ci``, ``$(rm{s.toupper})``, every block) and the
    script has no ``@@``, so neither needs escaping. Only the braced form is a placeholder
    (``@@@@`` would write one ``@@``); any other ``@@`` is a mistake in the template, and
    :meth:`substitute` raises ``ValueError`` rather than pass it on to Kamailio.
    """

    delimiter = "@@"
    idpattern = r"(?!)"  # no bare @@name
    braceidpattern = r"[a-z_]+"
    flags = re.NOFLAG  # names are lower case


@functools.cache
def template() -> ScriptTemplate:
    """``kamailio.cfg.tmpl``, read once from the installed package."""
    resource = importlib.resources.files("sip_bridge.front").joinpath(TEMPLATE)
    return ScriptTemplate(resource.read_text(encoding="utf-8"))


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


def media_uri(cfg: Config, index: int) -> str:
    """Media process ``index`` as the dispatcher list names it."""
    return f"sip:127.0.0.1:{cfg.media_sip_port(index)}"


def render_dispatcher_list(cfg: Config) -> str:
    lines = ["# setid destination flags priority attrs (generated by sip_bridge.front.kamailio)"]
    for i in range(cfg.media.processes):
        uri = media_uri(cfg, i)
        attrs = f"duid=mp{i};maxload={cfg.media.calls_per_process}"
        lines.append(f"{DISPATCH_SET} {uri} 0 0 {attrs}")
    return "\n".join(lines) + "\n"


def _listen_lines(cfg: Config) -> list[str]:
    """The trunk's sockets (UDP, TCP on the same port with sip.tcp, TLS with sip.tls.port),
    advertising the public address where it differs, then the loopback socket facing the media
    processes if there is one (UDP: the media processes speak nothing else)."""
    address = ipaddress.ip_address(cfg.sip.address)
    advertise = ""
    if address.is_unspecified or cfg.public_address != cfg.sip.address:
        advertise = _uri_host(ipaddress.ip_address(cfg.public_address))

    def trunk(proto: str, port: int) -> str:
        line = f"listen={proto}:{_uri_host(address)}:{port}"
        return f"{line} advertise {advertise}:{port}" if advertise else line

    lines = [trunk("udp", cfg.sip.port)]
    if cfg.sip.tcp:
        lines.append(trunk("tcp", cfg.sip.port))
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


def _options_reply(cfg: Config) -> str:
    """route[OPTIONS] after the drain check: 200 from the front, or (sip.answer_options off)
    not answered here but by a media process (round robin, no call load), so the trunk's
    health check sees the pool."""
    if cfg.sip.answer_options:
        return '    sl_send_reply("200", "OK");'
    return (
        f'    if (!ds_select_dst("{DISPATCH_SET}", "4")) {{\n'
        f'        append_to_reply("Retry-After: {RETRY_AFTER_S}\\r\\n");\n'
        '        sl_send_reply("503", "Service Unavailable");\n'
        "        exit;\n"
        "    }\n"
        "    route(RELAY);"
    )


def _alias_back(cfg: Config) -> str:
    """route[WITHINDLG]: a request for a peer on TCP or TLS (the media processes' BYEs and
    INFOs) goes back over the peer's own connection, which route[SECURITY] wrote into its
    Contact as ``;alias=``; "" when the front takes neither."""
    protos = front_security.stream_protos(cfg)
    if not protos:
        return ""
    names = " or ".join(protos)
    return (
        '        if ($ru =~ ";alias=") {\n'
        f"            handle_ruri_alias();  # back over the peer's {names} connection\n"
        "        }\n"
    )


def script_values(cfg: Config, files: KamailioFiles) -> dict[str, object]:
    """The value of every placeholder in ``kamailio.cfg.tmpl`` for ``cfg``.

    A placeholder inside a line is a value: a number, a path, a name. One that begins a line is
    a piece of script. Where more script follows it on its template line
    (``@@{call_auth}    route(SRTP);``), its value is ``""`` or whole lines, each ending in a
    newline, so a feature that is off leaves no blank line; where it stands alone, the
    template's newline ends its last line.
    """
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
    profiles = tenant_routing.profiles(cfg) + source_limits.profiles(cfg)
    tenant_route = tenant_routing.route(cfg)
    alias_back = _alias_back(cfg)
    return {
        # globals and sockets
        "children": CHILDREN,
        "security_globals": front_security.globals_(cfg),
        "listen": "\n".join(_listen_lines(cfg)),
        # modules and their parameters
        "module_dir": files.module_dir,
        "load_modules": "\n".join(f'loadmodule "{name}.so"' for name in names),
        "ctl_socket": files.ctl_socket,
        "fr_timer_ms": FR_TIMER_MS,
        "fr_inv_timer_ms": FR_INV_TIMER_MS,
        "dispatcher_list": files.dispatcher_list,
        "ping_from": ping_from,
        "default_socket": default_socket,
        "security_modparams": front_security.modparams(cfg, files.tls_config),
        "source_limit_modparams": source_limits.modparams(cfg) if limits else "",
        "dialog_modparams": source_limits.dialog_modparams(cfg, profiles),
        # request_route: what a new call goes through
        "tenant_header": TENANT_HEADER,
        "siprec_header": SIPREC_HEADER,
        "max_body_bytes": MAX_BODY_BYTES,
        "drain_check": DRAIN_CHECK,
        "call_auth": "    route(AUTH);\n" if cfg.sip.auth.users else "",
        "call_tenant": "    route(TENANT);\n" if tenant_route else "",
        "call_source_limit": "    route(SOURCE_LIMIT);\n" if limits else "",
        "alias_back": alias_back,
        # the routes that are there only with their feature (each "" or ending in a newline)
        "tenant_route": tenant_route,
        "security_route": front_security.security_route(cfg, DISPATCH_SET),
        "auth_route": front_security.auth_route(cfg),
        "srtp_route": _srtp_check(cfg.media.srtp),
        "source_limit_route": source_limits.route(cfg, RETRY_AFTER_S),
        "options_reply": _options_reply(cfg),
        # dispatch and failover
        "dispatch_set": DISPATCH_SET,
        "retry_after_s": RETRY_AFTER_S,
        "call_rate_check": _call_rate_check(cfg),
        "over_capacity_reason": OVER_CAPACITY_REASON,
    }


def render_config(cfg: Config, files: KamailioFiles) -> str:
    """The text of ``kamailio.cfg`` for ``cfg``, naming the other files as ``files`` places them."""
    return template().substitute(script_values(cfg, files))
