"""Tenants in the config: what a bad one is told, and the policy a call of each one gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from sip_bridge.settings.config import ConfigError
from sip_bridge.settings.loading import load
from sip_bridge.settings.tenants import TENANT_HEADER, policy_for

GOOD = """
webhooks: [{url: "http://ops.example/all", secret: ops}]
delivery: {sip_info: true}
tenants:
  - name: acme
    match: [{source: 10.1.0.0/16}, {to_user: "5550(100|101)"}]
    max_calls: 10
    webhooks: [{url: "http://acme.example/hook", secret: a-secret}]
    sip_info: false
    captions_tokens: ["acme-token-0123456789"]
  - name: globex
    match: [{header: "X-Customer: globex", source: "2001:db8::/32"}]
captions: {tokens: ["operator-token-0123456789"]}
unknown_tenant: {tenant: globex}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_a_good_tenants_section_loads(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, GOOD))
    acme, globex = cfg.tenants
    assert acme.match[0].network().num_addresses == 65536
    assert acme.limit_status == 486 and acme.sip_info is False and globex.sip_info is None
    assert globex.match[0].header_name_value() == ("X-Customer", "globex")
    assert cfg.unknown_tenant.tenant == "globex"


def test_each_call_gets_its_tenants_webhooks_and_info_setting(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, GOOD))
    acme = policy_for(cfg, "acme")
    assert acme is not None
    assert acme.webhook_urls == ("http://ops.example/all", "http://acme.example/hook")
    assert acme.sip_info is False
    globex = policy_for(cfg, "globex")
    assert globex is not None
    assert globex.webhook_urls == ("http://ops.example/all",) and globex.sip_info is True
    # The front relays no call without a tenant it knows; a media process refuses one.
    assert policy_for(cfg, None) is None and policy_for(cfg, "initech") is None
    # No tenants: every call is the operator's.
    plain = policy_for(load(None), None)
    assert plain is not None and plain.name == "" and plain.webhook_urls == ()


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("tenants: [{name: 'a b'}]", "tenants[0].name"),
        ("tenants: [{name: a}, {name: a}]", "tenants[1].name"),
        ("tenants: [{name: a, match: [{}]}]", "tenants[0].match[0]"),
        ("tenants: [{name: a, match: [{to_user: '^555$'}]}]", "tenants[0].match[0].to_user"),
        ("tenants: [{name: a, match: [{to_user: '555('}]}]", "tenants[0].match[0].to_user"),
        ("tenants: [{name: a, match: [{header: 'X-A'}]}]", "tenants[0].match[0].header"),
        ("tenants: [{name: a, match: [{header: 'X-A: \"q\"'}]}]", "tenants[0].match[0].header"),
        (
            f"tenants: [{{name: a, match: [{{header: '{TENANT_HEADER}: a'}}]}}]",
            "tenants[0].match[0].header",
        ),  # fmt: skip
        ("tenants: [{name: a, match: [{source: 10.1.0.0/33}]}]", "tenants[0].match[0].source"),
        ("tenants: [{name: a, match: [{sauce: 10.1.0.1}]}]", "tenants[0].match[0].sauce"),
        ("tenants: [{name: a, max_calls: -1}]", "tenants[0].max_calls"),
        ("tenants: [{name: a, limit_status: 404}]", "tenants[0].limit_status"),
        ("tenants: [{name: a, model: whisper-large}]", "tenants[0].model"),
        ("tenants: [{name: a, language: de}]", "tenants[0].language"),
        ("tenants: [{name: a, sip_info: maybe}]", "tenants[0].sip_info"),
        (
            "tenants: [{name: a, webhooks: [{url: 'ftp://x', secret: s}]}]",
            "tenants[0].webhooks[0].url",
        ),  # fmt: skip
        (
            "webhooks: [{url: 'http://x', secret: s}]\n"
            "tenants: [{name: a, webhooks: [{url: 'http://x', secret: t}]}]",
            "tenants[0].webhooks[0].url",
        ),  # fmt: skip
        ("tenants: [{name: a, captions_tokens: [short]}]", "tenants[0].captions_tokens"),
        (
            "captions: {tokens: [operator-token-0123456789]}\n"
            "tenants: [{name: a, captions_tokens: [operator-token-0123456789]}]",
            "tenants[0].captions_tokens",
        ),  # fmt: skip
        ("tenants: [{name: a}]\nunknown_tenant: {tenant: b}", "unknown_tenant.tenant"),
        ("tenants: [{name: a}]\nunknown_tenant: {status: 200}", "unknown_tenant.status"),
        ("tenants: [{name: a}]\nunknown_tenant: {reason: 'bad\"quote'}", "unknown_tenant.reason"),
    ],
)
def test_a_bad_tenant_names_its_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, text))
    assert info.value.key == key, info.value


def test_the_example_tenant_in_config_example_is_valid(tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parent.parent / "config.example.yaml").read_text()
    block = text.split("\ntenants: []", 1)[1].split("\nunknown_tenant:", 1)[0]
    lines = [line[1:] for line in block.splitlines() if line.startswith("#  ")]
    cfg = load(write(tmp_path, "tenants:\n" + "\n".join(lines) + "\n"))
    (acme,) = cfg.tenants
    assert len(acme.match) == 4 and acme.webhooks[0].secret == "acme-secret"
