"""Tenant routing at the front: the Kamailio script that recognises a call's tenant, refuses
unknown callers and holds each tenant to its concurrent-call limit.

Owns the text of ``route[TENANT]`` (and the modules and parameters it needs), generated from
``tenants`` and ``unknown_tenant`` in the config. :mod:`sip_bridge.front.kamailio_script` puts it
into the front's script; nothing here runs SIP.

* Rules are tried in config order, tenant by tenant; the first match stamps the INVITE with
  ``X-Bridge-Tenant: <name>`` (:data:`sip_bridge.settings.tenants.TENANT_HEADER`; one sent by the
  caller was removed before). A call that matches nothing gets ``unknown_tenant.status`` or goes to
  ``unknown_tenant.tenant``.
* Limits count calls with the ``dialog`` module's profiles, over all media processes: the
  dialog of each admitted INVITE joins the profile ``tenant`` with its tenant's name, and leaves
  it when the call ends (BYE, a failed or cancelled INVITE, or its timeout). The count and the
  admission happen under one lock (``cfgutils``), with the transaction (and so the dialog)
  created inside it: two INVITEs at once cannot both take a tenant's last slot.
"""

from __future__ import annotations

from sip_bridge.settings.config import Config, TenantConfig, TenantMatch
from sip_bridge.settings.tenants import TENANT_HEADER
from sip_bridge.sip_headers import RETRY_AFTER_S

PROFILE = "tenant"
LIMIT_LOCK = "tenant-limits"


def modules(cfg: Config) -> list[str]:
    """The Kamailio modules the tenant route uses, beyond the front's own."""
    if not cfg.tenants:
        return []
    needed = []
    if any(rule.source for t in cfg.tenants for rule in t.match):
        needed.append("ipops")  # is_in_subnet
    if _limited(cfg):
        needed += ["dialog", "cfgutils"]  # profiles; lock/unlock
    return needed


def _limited(cfg: Config) -> list[TenantConfig]:
    return [t for t in cfg.tenants if t.max_calls > 0]


def profiles(cfg: Config) -> list[str]:
    """The dialog profiles the tenant route counts in (``source_limits.dialog_modparams``
    declares every profile of the front at once)."""
    return [PROFILE] if _limited(cfg) else []


def condition(rule: TenantMatch) -> str:
    """One rule as a Kamailio condition (every key it gives must hold)."""
    parts = []
    if rule.source:
        parts.append(f'is_in_subnet("$si", "{rule.network()}")')
    if rule.to_user:
        parts.append(f'$tU =~ "^({rule.to_user})$"')
    if rule.header:
        name, value = rule.header_name_value()
        parts.append(f'$hdr({name}) == "{value}"')
    return " && ".join(parts)


def _selection(cfg: Config) -> list[str]:
    lines = ['    $var(tenant) = "";']
    keyword = "if"
    for t in cfg.tenants:
        if not t.match:
            continue  # reachable only as unknown_tenant.tenant
        test = " || ".join(f"({condition(r)})" for r in t.match)
        lines += [f"    {keyword} ({test}) {{", f'        $var(tenant) = "{t.name}";', "    }"]
        keyword = "else if"
    u = cfg.unknown_tenant
    lines.append('    if ($var(tenant) == "") {')
    if u.tenant:
        lines.append(f'        $var(tenant) = "{u.tenant}";')
    else:
        lines += [
            '        xlog("L_NOTICE", "INVITE $ci from $si to $tU: no tenant matches, '
            f'{u.status}\\n");',
            f'        send_reply("{u.status}", "{u.reason}");',
            "        exit;",
        ]
    lines.append("    }")
    return lines


def _limit(t: TenantConfig) -> list[str]:
    if t.limit_status == 503:
        answer = [f'            append_to_reply("Retry-After: {RETRY_AFTER_S}\\r\\n");',
                  '            send_reply("503", "Service Unavailable");']  # fmt: skip
    else:
        answer = ['            send_reply("486", "Busy Here");']
    return [
        f'    if ($var(tenant) == "{t.name}") {{',
        f'        lock("{LIMIT_LOCK}");',
        f'        get_profile_size("{PROFILE}", "$var(tenant)", "$var(calls)");',
        f"        if ($var(calls) >= {t.max_calls}) {{",
        f'            unlock("{LIMIT_LOCK}");',
        '            xlog("L_NOTICE", "INVITE $ci: tenant $var(tenant) has $var(calls) calls'
        f' (max_calls), {t.limit_status}\\n");',
        *answer,
        "            exit;",
        "        }",
        "        dlg_manage();",
        f'        set_dlg_profile("{PROFILE}", "$var(tenant)");',
        "        t_newtran();  # the dialog, and so its place in the profile, exists from here",
        f'        unlock("{LIMIT_LOCK}");',
        "    }",
    ]


def route(cfg: Config) -> str:
    """``route[TENANT]``: called for each initial INVITE before it is dispatched; empty when no
    tenants are configured."""
    if not cfg.tenants:
        return ""
    lines = ["route[TENANT] {", *_selection(cfg)]
    lines.append(f'    append_hf("{TENANT_HEADER}: $var(tenant)\\r\\n");')
    lines.append('    xlog("L_INFO", "INVITE $ci from $si to $tU: tenant $var(tenant)\\n");')
    for t in _limited(cfg):
        lines += _limit(t)
    lines.append("}")
    return "\n".join(lines) + "\n"
