"""Tenants: whose call is this, and what that tenant gets.

A tenant is recognised at the front (Kamailio, :mod:`sip_bridge.front.tenant_routing`) by the
dialled number (the To user), by a SIP header, or by the address the INVITE came from; the front
stamps the INVITE with :data:`TENANT_HEADER` (after removing any the caller sent) and enforces the
tenant's concurrent-call limit. The media process reads that header and applies the tenant's
settings (:class:`TenantPolicy`): its webhooks and their secrets, SIP INFO on or off, its model.

This module owns the checks of the tenants' part of the configuration (its dataclasses live in
:mod:`sip_bridge.settings.config` with the rest) and that policy lookup. Sans-IO: no sockets, no
SIP.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from sip_bridge.settings.config import (
    DEFAULT_MODEL,
    Config,
    ConfigError,
    TenantConfig,
    TenantMatch,
    WebhookConfig,
)

# The header the front adds to every INVITE it relays once it knows the tenant. Reserved: the
# front removes any the caller sent, and it is never copied into call.started ``headers``.
TENANT_HEADER = "X-Bridge-Tenant"

# The speech models a tenant may name, with their language. One is bundled (Moonshine base-en,
# inside the moonshine-cpp wheel) and every worker serves it. The default (DEFAULT_MODEL) is
# the schema's.
MODELS = {DEFAULT_MODEL: "en"}

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.!%*+`'~-]*")
# A To-user pattern goes verbatim into the Kamailio script (a POSIX extended regex) and into
# Python's re for the check: the characters both read the same way. No backslash, quote,
# dollar or caret (we anchor the pattern ourselves).
_USER_PATTERN = re.compile(r"[A-Za-z0-9+*#.?()\[\]|{},_-]+")
# A header value to match, or a reason phrase: plain printable text, nothing the script quotes.
_PLAIN = re.compile(r"[A-Za-z0-9 _.,:;/@+=()'!?&%-]+")


@dataclass(frozen=True, slots=True)
class TenantPolicy:
    """What the media process applies to one call of a tenant."""

    name: str  # "" when no tenants are configured
    webhook_urls: tuple[str, ...]  # the operator's webhooks (every call) and the tenant's
    sip_info: bool
    model: str


def all_webhooks(cfg: Config) -> list[WebhookConfig]:
    """Every webhook endpoint of the config, the operator's and every tenant's, once per URL
    (the checks make sure a URL has one secret)."""
    seen: dict[str, WebhookConfig] = {}
    for hook in (*cfg.webhooks, *(h for t in cfg.tenants for h in t.webhooks)):
        seen.setdefault(hook.url, hook)
    return list(seen.values())


def policy_for(cfg: Config, name: str | None) -> TenantPolicy | None:
    """The policy of a call the front stamped with tenant ``name`` (``None``: no header).

    Without tenants in the config every call gets the operator's settings. With tenants, a call
    without a known tenant gets ``None`` (the front never relays one: refuse it)."""
    everyone = tuple(h.url for h in cfg.webhooks)
    if not cfg.tenants:
        return TenantPolicy("", everyone, cfg.delivery.sip_info, DEFAULT_MODEL)
    tenant = next((t for t in cfg.tenants if t.name == name), None)
    if tenant is None:
        return None
    urls = everyone + tuple(h.url for h in tenant.webhooks if h.url not in everyone)
    info = cfg.delivery.sip_info if tenant.sip_info is None else tenant.sip_info
    return TenantPolicy(tenant.name, urls, info, tenant.model)


MIN_TOKEN_CHARS = 16


def check(cfg: Config, source: str) -> None:
    """Checks of ``tenants``, ``unknown_tenant`` and the captions tokens; raises ConfigError
    naming the first bad key."""
    for key, problem in _problems(cfg):
        raise ConfigError(source, key, problem)


def _problems(cfg: Config) -> Iterator[tuple[str, str]]:
    names: set[str] = set()
    secrets_by_url = {h.url: h.secret for h in cfg.webhooks}
    for n, t in enumerate(cfg.tenants):
        yield from _tenant_problems(t, f"tenants[{n}]", names, secrets_by_url)
        names.add(t.name)
    u = cfg.unknown_tenant
    if u.tenant and u.tenant not in names:
        yield "unknown_tenant.tenant", f"no tenant is named {u.tenant!r}"
    if not 400 <= u.status <= 699:
        yield "unknown_tenant.status", "must be a SIP failure code, 400-699"
    if not _PLAIN.fullmatch(u.reason):
        yield "unknown_tenant.reason", "must be plain printable text"
    yield from _token_problems(cfg)


def _tenant_problems(
    t: TenantConfig, key: str, names: set[str], secrets_by_url: dict[str, str]
) -> Iterator[tuple[str, str]]:
    """One tenant's problems; ``names``: the tenants before it, ``secrets_by_url``: every
    webhook URL seen so far and its secret (added to)."""
    if not _NAME.fullmatch(t.name):
        yield f"{key}.name", "must be 1-63 letters, digits, '_', '.' or '-'"
    if t.name in names:
        yield f"{key}.name", f"tenant {t.name!r} is defined twice"
    for r, rule in enumerate(t.match):
        yield from _rule_problems(rule, f"{key}.match[{r}]")
    if t.max_calls < 0:
        yield f"{key}.max_calls", "must not be negative (0 = no limit)"
    if t.limit_status not in (486, 503):
        yield f"{key}.limit_status", "must be 486 or 503"
    if t.model not in MODELS:
        available = ", ".join(f"{m} ({lang})" for m, lang in MODELS.items())
        yield f"{key}.model", f"unknown model {t.model!r}; available: {available}"
    elif t.language != MODELS[t.model]:
        yield f"{key}.language", f"model {t.model} speaks {MODELS[t.model]!r} only"
    for w, hook in enumerate(t.webhooks):
        yield from _webhook_problems(hook, f"{key}.webhooks[{w}]", secrets_by_url)


def _webhook_problems(
    hook: WebhookConfig, where: str, secrets_by_url: dict[str, str]
) -> Iterator[tuple[str, str]]:
    if not hook.url.startswith(("http://", "https://")):
        yield f"{where}.url", "must be an http:// or https:// URL"
    if not hook.secret:
        yield f"{where}.secret", "must not be empty"
    # The spool keys deliveries by URL: one URL, one secret.
    if secrets_by_url.setdefault(hook.url, hook.secret) != hook.secret:
        yield (
            f"{where}.url",
            (
                "this URL is configured elsewhere with another secret;"
                " give each its own URL (a query string will do)"
            ),
        )


def _rule_problems(rule: TenantMatch, key: str) -> Iterator[tuple[str, str]]:
    if not (rule.to_user or rule.header or rule.source):
        yield key, "give to_user, header or source (or several)"
    if rule.to_user:
        if not _USER_PATTERN.fullmatch(rule.to_user):
            yield (
                f"{key}.to_user",
                (
                    "a regex matched against the whole user, of digits, letters and"
                    " + * # . ? ( ) [ ] | { } , _ - only"
                ),
            )
        try:
            re.compile(rule.to_user)
        except re.error as exc:
            yield f"{key}.to_user", f"not a valid regex: {exc}"
    if rule.header:
        name, value = rule.header_name_value()
        if not _HEADER_NAME.fullmatch(name) or not value or not _PLAIN.fullmatch(value):
            yield f"{key}.header", "expected 'Name: value' (a header name, then plain text)"
        elif name.lower() == TENANT_HEADER.lower():
            yield f"{key}.header", f"{TENANT_HEADER} is set by the front"
    if rule.source:
        try:
            rule.network()
        except ValueError:
            yield f"{key}.source", f"{rule.source!r} is not an IP address or network"


def _token_problems(cfg: Config) -> Iterator[tuple[str, str]]:
    seen: set[str] = set()
    keyed = [("captions.tokens", tok) for tok in cfg.captions.tokens]
    for n, t in enumerate(cfg.tenants):
        keyed += [(f"tenants[{n}].captions_tokens", tok) for tok in t.captions_tokens]
    for key, tok in keyed:
        if len(tok) < MIN_TOKEN_CHARS or not tok.isascii() or not tok.isprintable() or " " in tok:
            yield (
                key,
                (
                    f"a token is {MIN_TOKEN_CHARS} or more printable ASCII characters without"
                    " spaces (e.g. from `openssl rand -hex 16`)"
                ),
            )
        if tok in seen:
            yield key, "the same token is given twice"
        seen.add(tok)
