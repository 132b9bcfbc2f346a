"""Who may talk to the front: the trunk allowlist, scanner and flood drops, digest auth and TLS.

Owns the Kamailio script text that guards the front (``route[SECURITY]`` for every request,
``route[AUTH]`` for new calls), ``tls.cfg``, and the checks of the ``sip``
keys behind them. :mod:`sip_bridge.front.kamailio_script` puts these pieces into the front's script;
nothing here runs SIP.

What a stranger learns from us is the point of the order below. A request from a source off the
allowlist, from a known scanner's User-Agent or from a source over the flood limit gets no answer
at all: the port looks closed. A new call without good credentials gets 407 whatever number it
dials and whoever it claims to be (a wrong password and an unknown user are answered the same),
so the answers never tell which users or numbers exist. Our media processes' own in-dialog
requests (INFO, BYE) are never filtered. Drops are counted (Kamailio statistics, exported in
/metrics) and logged once a minute per source, so a scan cannot flood the log either.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sip_bridge.settings.config import Config, SipUser

# User-Agents of common SIP scanners (sipvicious' svmap/svwar/svcrack call themselves
# "friendly-scanner"); matched case-insensitively anywhere in the header.
SCANNER_AGENTS = (
    "friendly-scanner", "sipvicious", "sipcli", "sip-scan", "sundayddr", "iwar",
    "vaxsipuseragent", "smap", "pplsip", "sippy-scan",
)  # fmt: skip
# Kamailio statistics counting each reason a request was dropped or refused (group "script").
STATS = ("unlisted_source", "scanner", "flood", "auth_failed", "call_rate_limited")
LOG_EVERY_S = 60  # a dropped source is logged at most once per this
TCP_LIFETIME_S = 3605  # an idle TCP or TLS connection is kept this long (in-dialog requests use it)
TLS_SHARED_MEMORY_MB = 32  # OpenSSL allocates from Kamailio's shared memory
_REALM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,62}")
_HA1 = re.compile(r"[0-9a-f]{32}")


def ha1(user: SipUser, realm: str) -> str:
    """MD5("user:realm:password") in hex (RFC 2617), as Kamailio's auth checks it."""
    if user.ha1:
        return user.ha1.lower()
    return hashlib.md5(f"{user.user}:{realm}:{user.password}".encode()).hexdigest()


def stream_protos(cfg: Config) -> tuple[str, ...]:
    """The connection-oriented transports the front takes calls on (Kamailio's ``proto``
    names): ``TCP`` with ``sip.tcp``, ``TLS`` with ``sip.tls.port``. A peer on one of them is
    reached back over its own connection."""
    protos = ("TCP",) if cfg.sip.tcp else ()
    return (*protos, "TLS") if cfg.sip.tls.port else protos


def modules(cfg: Config) -> list[str]:
    """The Kamailio modules these routes use, beyond the front's own."""
    s = cfg.sip
    needed = ["statistics", "htable"]
    if s.allow:
        needed.append("ipops")
    if s.flood.requests:
        needed.append("pike")
    if s.auth.users:
        needed.append("auth")
    if s.tls.port:
        needed.append("tls")
    if stream_protos(cfg):
        needed.append("nathelper")  # Contact aliases over the TCP or TLS connection
    return needed


def modparams(cfg: Config, tls_cfg: Path) -> str:
    s = cfg.sip
    lines = [f'modparam("statistics", "variable", "{name}")' for name in STATS]
    lines.append(f'modparam("htable", "htable", "dropped=>size=8;autoexpire={LOG_EVERY_S};")')
    if s.flood.requests:
        lines += [
            f'modparam("pike", "sampling_time_unit", {s.flood.window_s})',
            f'modparam("pike", "reqs_density_per_unit", {s.flood.requests})',
            f'modparam("pike", "remove_latency", {max(4, 2 * s.flood.window_s)})',
        ]
    if s.tls.port:
        lines.append(f'modparam("tls", "config", "{tls_cfg}")')
    return "\n".join(lines) + "\n"


def globals_(cfg: Config) -> str:
    """Core settings: TCP stays off unless ``sip.tcp`` or TLS is on (TLS runs over it). Only
    the sockets named by ``listen`` are opened: TLS alone opens no plain TCP listener."""
    if not stream_protos(cfg):
        return "disable_tcp=yes\n"
    tls = "enable_tls=yes\n" if cfg.sip.tls.port else ""
    return (
        f"disable_tcp=no\n{tls}tcp_children=2\n"
        f"tcp_connection_lifetime={TCP_LIFETIME_S}\ntcp_accept_no_cl=no\n"
    )


def render_tls_cfg(cfg: Config) -> str:
    """``tls.cfg``: TLS 1.2 or newer; a client certificate is required only with ``ca_list``.
    The client section serves requests we send over a new connection (rare: in-dialog requests
    go back over the connection the call came on); a PBX's certificate is not checked there."""
    t = cfg.sip.tls
    mutual = "yes" if t.ca_list else "no"
    server = [
        "[server:default]",
        "method = TLSv1.2+",
        f"certificate = {Path(t.certificate).expanduser().resolve()}",
        f"private_key = {Path(t.private_key).expanduser().resolve()}",
        f"verify_certificate = {mutual}",
        f"require_certificate = {mutual}",
    ]
    if t.ca_list:
        server.append(f"ca_list = {Path(t.ca_list).expanduser().resolve()}")
    client = ["[client:default]", "method = TLSv1.2+", "verify_certificate = no",
              "require_certificate = no"]  # fmt: skip
    return "# Generated by sip_bridge.front.security.\n" + "\n".join([*server, "", *client]) + "\n"


def _drop(stat: str, why: str) -> str:
    return (
        f'        update_stat("{stat}", "+1");\n'
        "        if ($sht(dropped=>$si) == $null) {\n"
        "            $sht(dropped=>$si) = 1;\n"
        f'            xlog("L_NOTICE", "$rm from $si:$sp: {why}, dropped without an answer'
        f' (logged once a minute per source)\\n");\n'
        "        }\n"
        "        exit;\n"
    )


def security_route(cfg: Config, media_set: int) -> str:
    """route[SECURITY], called first for every request (``media_set``: the dispatcher set of
    the media processes, whose own requests pass)."""
    s = cfg.sip
    body = [
        "    # Our media processes' in-dialog requests (INFO, BYE) are never filtered.",
        f'    if (ds_is_from_list("{media_set}")) {{',
        "        return;",
        "    }",
    ]
    if s.allow:
        nets = ",".join(str(ipaddress.ip_network(a, strict=False)) for a in s.allow)
        body += [f'    if (!is_in_subnet("$si", "{nets}")) {{',
                 _drop("unlisted_source", "source not in sip.allow") + "    }"]  # fmt: skip
    if s.drop_scanners:
        agents = "|".join(SCANNER_AGENTS)  # plain words: nothing to escape
        body += [f'    if ($ua =~ "({agents})") {{',
                 _drop("scanner", "a SIP scanner's User-Agent") + "    }"]  # fmt: skip
    if s.flood.requests:
        body += ["    if (!pike_check_req()) {",
                 _drop("flood", "over the flood limit (sip.flood)") + "    }"]  # fmt: skip
    protos = stream_protos(cfg)
    if protos:
        names = " or ".join(protos)
        on = " || ".join(f"proto == {p}" for p in protos)
        on = f"({on})" if len(protos) > 1 else on
        body += [
            f"    # A {names} peer is reached back over its own connection: its Contact gets an"
            " alias",
            "    # (;alias=ip~port~proto) that route[WITHINDLG] turns back into that connection.",
            f'    if ({on} && is_present_hf("Contact") && !is_method("REGISTER")) {{',
            "        add_contact_alias();",
            "    }",
        ]
    return "route[SECURITY] {\n" + "\n".join(body) + "\n}\n"


def auth_route(cfg: Config) -> str:
    """route[AUTH], for new calls: 407 until good digest credentials come. Unknown users and
    wrong passwords are answered alike."""
    s = cfg.sip
    if not s.auth.users:
        return ""
    realm = s.auth.realm
    lines = ['    $var(ha1) = "";']
    keyword = "if"
    for user in s.auth.users:
        lines.append(f'    {keyword} ($au == "{user.user}") {{')
        lines.append(f'        $var(ha1) = "{ha1(user, realm)}";')
        keyword = "} else if"
    lines.append("    }")
    lines += [
        # An unknown user (or none) is challenged like a wrong password, without the auth
        # module's "empty password" error in the log.
        f'    if ($var(ha1) == "" || !pv_proxy_authenticate("{realm}", "$var(ha1)", "1")) {{',
        '        if (is_present_hf("Proxy-Authorization")) {',
        '            update_stat("auth_failed", "+1");',
        '            xlog("L_NOTICE", "INVITE $ci from $si:$sp: digest auth failed for'
        ' user \\"$au\\", challenged again\\n");',
        "        }",
        f'        proxy_challenge("{realm}", "1");',
        "        exit;",
        "    }",
        "    consume_credentials();",
    ]
    return "route[AUTH] {\n" + "\n".join(lines) + "\n}\n"


def check(cfg: Config, source: str) -> None:
    """Checks of ``sip.allow``, ``sip.auth``, ``sip.tls`` and ``sip.flood``; raises ConfigError
    naming the first bad key."""
    from sip_bridge.settings.config import ConfigError

    for key, problem in _problems(cfg):
        raise ConfigError(source, key, problem)


def _problems(cfg: Config) -> Iterator[tuple[str, str]]:
    s = cfg.sip
    for n, address in enumerate(s.allow):
        try:
            ipaddress.ip_network(address, strict=False)
        except ValueError:
            yield f"sip.allow[{n}]", f"{address!r} is not an IP address or network"
    if not _REALM.fullmatch(s.auth.realm):
        yield "sip.auth.realm", "must be 1-63 letters, digits, '.', '_' or '-'"
    seen: set[str] = set()
    for n, user in enumerate(s.auth.users):
        key = f"sip.auth.users[{n}]"
        if not _USER.fullmatch(user.user):
            yield f"{key}.user", "must be 1-63 letters, digits, '.', '_', '+' or '-'"
        if user.user in seen:
            yield f"{key}.user", f"user {user.user!r} is listed twice"
        seen.add(user.user)
        if bool(user.password) == bool(user.ha1):
            yield key, "give exactly one of password and ha1"
        if user.ha1 and not _HA1.fullmatch(user.ha1.lower()):
            yield f"{key}.ha1", "must be 32 hex digits: MD5 of 'user:realm:password'"
    t = s.tls
    if t.port:
        if not 1 <= t.port <= 65535:
            yield "sip.tls.port", f"port {t.port} is out of range"
        if t.port == s.port:
            yield "sip.tls.port", "must differ from sip.port"
        for key, path in (("certificate", t.certificate), ("private_key", t.private_key),
                          ("ca_list", t.ca_list)):  # fmt: skip
            if key != "ca_list" and not path:
                yield f"sip.tls.{key}", "needed with sip.tls.port (a PEM file)"
            elif path and not Path(path).expanduser().is_file():
                yield f"sip.tls.{key}", f"{path}: no such file"
    if s.flood.requests < 0 or s.flood.window_s < 1:
        yield "sip.flood", "requests must be 0 or more and window_s at least 1"
