"""The per-source call limit's keys and the Kamailio script text they give (sans-IO, plus
``kamailio -c`` on the result); tests/test_half_open.py runs it against real calls."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from sip_bridge.front import kamailio, source_limits
from sip_bridge.settings import config, loading
from sip_bridge.settings.config import Config, SipTrunk


def _sip(cfg: Config, **changes: object) -> Config:
    return dataclasses.replace(cfg, sip=dataclasses.replace(cfg.sip, **changes))  # type: ignore[arg-type]


def _no_worker_limit(cfg: Config) -> Config:
    """Workers without a call limit: the front's host limit is off (the slots are the limit)."""
    return dataclasses.replace(
        cfg, inference=dataclasses.replace(cfg.inference, calls_per_worker=0)
    )


def test_the_default_limit_is_half_the_capacity() -> None:
    cfg = loading.load(None)
    assert source_limits.capacity(cfg) == 16  # 2 workers x 8 calls (32 call slots)
    assert source_limits.default_limit(cfg) == 8
    small = dataclasses.replace(cfg, media=dataclasses.replace(cfg.media, processes=1))
    assert source_limits.capacity(small) == 4  # the slots, where they are fewer
    assert source_limits.default_limit(small) == 2
    unlimited = dataclasses.replace(
        cfg, inference=dataclasses.replace(cfg.inference, calls_per_worker=0)
    )
    assert source_limits.default_limit(unlimited) == 16  # half the 32 slots
    assert source_limits.default_limit(_sip(cfg, per_source_max_calls=0)) == 0
    assert not source_limits.enabled(_sip(_no_worker_limit(cfg), per_source_max_calls=0))
    assert source_limits.enabled(
        _sip(_no_worker_limit(cfg), per_source_max_calls=0, trunks=(SipTrunk("10.0.0.1", 3),))
    )


def test_the_host_limit_is_the_workers_capacity_where_the_slots_are_more() -> None:
    cfg = loading.load(None)
    assert source_limits.host_limit(cfg) == 16  # 2 workers x 8 calls, 32 slots
    assert source_limits.enabled(_sip(cfg, per_source_max_calls=0))  # the host limit alone
    text = source_limits.route(_sip(cfg, per_source_max_calls=0), retry_after_s=5)
    assert 'get_profile_size("admitted", "host", "$var(all)");' in text
    assert "if ($var(all) >= 16)" in text and 'update_stat("over_capacity", "+1");' in text
    assert 'set_dlg_profile("admitted", "host");' in text
    few = dataclasses.replace(cfg, media=dataclasses.replace(cfg.media, processes=2))
    assert source_limits.host_limit(few) == 0  # 8 slots: the dispatcher's count is the limit
    assert source_limits.host_limit(_no_worker_limit(cfg)) == 0
    assert '"admitted", "host", "$var(all)"' not in source_limits.route(few, retry_after_s=5)


def test_the_route_counts_by_source_and_the_most_specific_trunk_wins() -> None:
    cfg = _sip(loading.load(None), trunks=(SipTrunk("10.0.0.0/8", 0), SipTrunk("10.1.2.3", 9)))
    text = source_limits.route(cfg, retry_after_s=5)
    assert text.index('"10.1.2.3/32"') < text.index('"10.0.0.0/8"')
    assert "$var(limit) = 8;" in text and "$var(limit) = 9;" in text and "$var(limit) = 0;" in text
    assert 'get_profile_size("caller", "$si"' in text and 'set_dlg_profile("caller", "$si")' in text
    assert 'send_reply("503", "Service Unavailable")' in text and "Retry-After: 5" in text
    # 486 for a source over its limit (the host's own limit is always 503 + Retry-After)
    busy = source_limits.route(_sip(_no_worker_limit(cfg), over_limit_status=486), 5)
    assert 'send_reply("486", "Busy Here")' in busy and "Retry-After" not in busy
    off = _sip(_no_worker_limit(cfg), per_source_max_calls=0, trunks=())
    assert source_limits.route(off, 5) == ""


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("sip: {per_source_max_calls: -2}\n", "sip.per_source_max_calls"),
        ("sip: {ack_timeout_s: 0}\n", "sip.ack_timeout_s"),
        ("sip: {ack_timeout_s: 60}\n", "sip.ack_timeout_s"),
        ("sip: {over_limit_status: 404}\n", "sip.over_limit_status"),
        ("sip: {trunks: [{address: pbx.example}]}\n", "sip.trunks[0].address"),
        ("sip: {trunks: [{address: 10.0.0.1, max_calls: -1}]}\n", "sip.trunks[0].max_calls"),
    ],
)
def test_bad_keys_are_named(tmp_path: Path, yaml_text: str, key: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text)
    with pytest.raises(config.ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        loading.load(path)


@pytest.mark.skipif(shutil.which("kamailio", path="/usr/sbin:/usr/bin") is None,
                    reason="Debian package kamailio not installed")  # fmt: skip
@pytest.mark.parametrize("trunks", [(), (SipTrunk("192.0.2.0/24", 0), SipTrunk("192.0.2.9", 20))])
def test_kamailio_accepts_the_limit(tmp_path: Path, trunks: tuple[SipTrunk, ...]) -> None:
    cfg = _sip(loading.load(None), trunks=trunks)
    files = kamailio.render(cfg, tmp_path / "run")
    kamailio.check(files)
    text = files.config.read_text()
    assert 'loadmodule "dialog.so"' in text and "route(SOURCE_LIMIT);" in text
    assert f'modparam("dialog", "noack_timeout", {int(cfg.sip.ack_timeout_s) + 2})' in text
    off = kamailio.render_config(
        _sip(_no_worker_limit(cfg), per_source_max_calls=0, trunks=()), files
    )
    assert "dialog.so" not in off and "SOURCE_LIMIT" not in off
