"""How many calls the front admits: for the host (its workers' capacity) and per source, half-open
calls included.

The host's limit: the front counts every call it admits (dialog profile ``admitted``) and answers
an INVITE beyond the workers' capacity (``capacity()``: ``inference.calls_per_worker`` for each
worker, where that is below the call slots) with 503 + ``Retry-After`` at once, counted as
``script:over_capacity`` and logged once a minute. It is exact for a burst, where the workers'
heartbeats (every 250 ms) lag: 24 INVITEs at once over 8 media processes were all taken before
any heartbeat counted them (bench/overload.py). The media processes still refuse a call when the
heartbeats say every worker is full or behind (workers shared with other hosts, a slow model).

One sender must not be able to take every call slot: a dozen INVITEs that are answered and never
ACKed used to hold the whole pool for 32 s (RFC 3261's wait for the ACK). The front counts each
source address's calls with Kamailio's ``dialog`` module: every new INVITE it admits joins the
``caller`` profile under its source address, and leaves it when the call fails, ends (BYE) or is
never confirmed (``noack_timeout``, a little after ``sip.ack_timeout_s``, by which time the media
process has hung the half-open call up itself). A source at its limit gets
``sip.over_limit_status`` (503 with ``Retry-After``, or 486 Busy Here), counted as
``script:source_limited`` and logged once a minute per source.

``sip.per_source_max_calls``: -1 (the default) is half of the calls the bridge takes (its
workers' capacity, ``inference.calls_per_worker`` each, or the pool's call slots if fewer), rounded
up, so a stranger can take at most half, half-open calls included (they count on a worker until
they are given up); 0 is no limit; listed trunks (``sip.trunks``: an address or
network and its own ``max_calls``, 0 for none) are counted under their own limit. The one PBX of a
small site should be listed, to have the whole pool.

Owns the Kamailio script text for it and the checks of those keys; nothing here runs SIP.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sip_bridge.settings.config import Config

STATS = ("source_limited", "over_capacity")
PROFILE = "caller"
HOST_PROFILE = "admitted"  # every admitted call, under the one value "host"
LOCK = "source-limits"
LOG_EVERY_S = 60
AUTO = -1
# The front forgets a call that was answered and never ACKed this long after the media process
# was told to hang it up (its BYE, through the front, normally ends the dialog first).
NOACK_MARGIN_S = 2


# A call that outlives media.max_call_s by this without a BYE passing the front (its media
# process was killed) stops counting in the front's profiles (per source, per tenant).
DIALOG_TIMEOUT_MARGIN_S = 120
DIALOG_TIMEOUT_NO_MAX_S = 43200


def dialog_timeout(cfg: Config) -> int:
    """How long the front keeps a call's dialog (and its place in a profile) at most."""
    m = cfg.media.max_call_s
    return int(m) + DIALOG_TIMEOUT_MARGIN_S if m > 0 else DIALOG_TIMEOUT_NO_MAX_S


def pool_calls(cfg: Config) -> int:
    return cfg.media.processes * cfg.media.calls_per_process


def capacity(cfg: Config) -> int:
    """The calls this host's front admits at once: the call slots, or the workers' capacity
    (their admission limit, inference.calls_per_worker) where that is lower."""
    slots = pool_calls(cfg)
    per_worker = cfg.inference.calls_per_worker
    workers = cfg.inference.workers + len(cfg.inference.remote)
    return min(slots, workers * per_worker) if per_worker else slots


def default_limit(cfg: Config) -> int:
    """The limit of a source that is not a listed trunk (0: none)."""
    limit = cfg.sip.per_source_max_calls
    if limit == AUTO:
        return max(1, math.ceil(capacity(cfg) / 2))
    return limit


def host_limit(cfg: Config) -> int:
    """The front's limit on all its calls (0: none; the call slots are then the limit, which
    the dispatcher's load count enforces)."""
    calls = capacity(cfg)
    return calls if calls < pool_calls(cfg) else 0


def enabled(cfg: Config) -> bool:
    return (
        host_limit(cfg) > 0
        or default_limit(cfg) > 0
        or any(t.max_calls > 0 for t in cfg.sip.trunks)
    )


def modules(cfg: Config) -> list[str]:
    # ipops for is_in_subnet (trunks); dialog after rr and tm, which it hooks into.
    needed = ["dialog", "cfgutils", "htable", "statistics"]  # cfgutils: lock/unlock
    if cfg.sip.trunks:
        needed.append("ipops")
    return needed


def modparams(cfg: Config) -> str:
    noack = math.ceil(cfg.sip.ack_timeout_s) + NOACK_MARGIN_S
    lines = [f'modparam("statistics", "variable", "{name}")' for name in STATS] + [
        f'modparam("dialog", "noack_timeout", {noack})',
        f'modparam("htable", "htable", "limited=>size=8;autoexpire={LOG_EVERY_S};")',
    ]
    return "\n".join(lines) + "\n"


def dialog_modparams(cfg: Config, profiles: list[str]) -> str:
    """The ``dialog`` module's parameters, once for every route that counts calls in its
    profiles (a second ``profiles_with_value`` line would replace the first); "" for none."""
    if not profiles:
        return ""
    lines = [
        f'modparam("dialog", "profiles_with_value", "{";".join(profiles)}")',
        f'modparam("dialog", "default_timeout", {dialog_timeout(cfg)})',
        'modparam("dialog", "enable_stats", 0)',
        'modparam("cfgutils", "lock_set_size", 2)  # 4 locks; ours hash to them',
    ]
    return "\n".join(lines) + "\n"


def profiles(cfg: Config) -> list[str]:
    return [PROFILE, HOST_PROFILE] if enabled(cfg) else []


def route(cfg: Config, retry_after_s: int) -> str:
    """``route[SOURCE_LIMIT]``, for each new INVITE about to be dispatched; "" without limits."""
    if not enabled(cfg):
        return ""
    s = cfg.sip
    pick = [f"    $var(limit) = {default_limit(cfg)};"]
    # The most specific listed trunk that matches gives the limit.
    trunks = sorted(
        ((ipaddress.ip_network(t.address, strict=False), t.max_calls) for t in s.trunks),
        key=lambda t: -t[0].prefixlen,
    )
    for i, (net, limit) in enumerate(trunks):
        keyword = "if" if i == 0 else "} else if"
        pick.append(
            f'    {keyword} (is_in_subnet("$si", "{net}")) {{\n        $var(limit) = {limit};'
        )
    if trunks:
        pick.append("    }")
    status, reason = (
        (503, "Service Unavailable") if s.over_limit_status == 503 else (486, "Busy Here")
    )
    retry = (
        f'            append_to_reply("Retry-After: {retry_after_s}\\r\\n");\n'
        if status == 503
        else ""
    )
    lines = "\n".join(pick)
    warning = f"INVITE $ci from $si: at its limit of $var(limit) calls, {status} (once a minute)"
    host = host_limit(cfg)
    full = (f"INVITE $ci: the host is at its capacity of {host} calls (inference.calls_per_worker),"
            " 503 (once a minute)")  # fmt: skip
    host_check = (
        f"""    get_profile_size("{HOST_PROFILE}", "host", "$var(all)");
    if ($var(all) >= {host}) {{
        unlock("{LOCK}");
        update_stat("over_capacity", "+1");
        if ($sht(limited=>host) == $null) {{
            $sht(limited=>host) = 1;
            xlog("L_WARN", "{full}\\n");
        }}
        append_to_reply("Retry-After: {retry_after_s}\\r\\n");
        send_reply("503", "Service Unavailable");
        exit;
    }}
"""
        if host
        else ""
    )
    return f"""route[SOURCE_LIMIT] {{
{lines}
    # Counted and admitted under one lock, the transaction (so the dialog) made inside it:
    # two INVITEs at once cannot both take the host's or a source's last call.
    lock("{LOCK}");
{host_check}    if ($var(limit) > 0) {{
        get_profile_size("{PROFILE}", "$si", "$var(held)");
        if ($var(held) >= $var(limit)) {{
            unlock("{LOCK}");
            update_stat("source_limited", "+1");
            if ($sht(limited=>$si) == $null) {{
                $sht(limited=>$si) = 1;
                xlog("L_WARN", "{warning}\\n");
            }}
{retry}            send_reply("{status}", "{reason}");
            exit;
        }}
    }}
    if (!is_known_dlg()) {{
        dlg_manage();  # else route[TENANT] made it
    }}
    set_dlg_profile("{PROFILE}", "$si");
    set_dlg_profile("{HOST_PROFILE}", "host");
    if (!t_lookup_request()) {{
        t_newtran();
    }}
    unlock("{LOCK}");
}}
"""


def check(cfg: Config, source: str) -> None:
    from sip_bridge.settings.config import ConfigError

    for key, why in _problems(cfg):
        raise ConfigError(source, key, why)


def _problems(cfg: Config) -> Iterator[tuple[str, str]]:
    s = cfg.sip
    if s.per_source_max_calls < AUTO:
        yield "sip.per_source_max_calls", "must be -1 (half the capacity), 0 (no limit) or more"
    if not 0 < s.ack_timeout_s <= 32:
        yield "sip.ack_timeout_s", "must be more than 0 and at most 32 (RFC 3261's 64*T1)"
    for n, trunk in enumerate(s.trunks):
        try:
            ipaddress.ip_network(trunk.address, strict=False)
        except ValueError:
            yield f"sip.trunks[{n}].address", f"{trunk.address!r} is not an address or network"
        if trunk.max_calls < 0:
            yield f"sip.trunks[{n}].max_calls", "must be a number of calls, 0 for no limit"
