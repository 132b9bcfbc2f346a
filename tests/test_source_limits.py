"""The per-source call limit's keys and the Kamailio script text they give (sans-IO, plus
``kamailio -c`` on the result); tests/test_half_open.py runs it against real calls."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from sip_bridge import config, kamailio, source_limits
from sip_bridge.config import Config, SipTrunk


def _sip(cfg: Config, **changes: object) -> Config:
    return dataclasses.replace(cfg, sip=dataclasses.replace(cfg.sip, **changes))  # type: ignore[arg-type]


def test_the_default_limit_is_half_the_pool() -> None:
    cfg = config.load(None)
    assert source_limits.default_limit(cfg) == 6  # 3 processes x 4 calls
    bigger = dataclasses.replace(cfg, media=dataclasses.replace(cfg.media, processes=5))
    assert source_limits.default_limit(bigger) == 10
    assert source_limits.default_limit(_sip(cfg, per_source_max_calls=0)) == 0
    assert not source_limits.enabled(_sip(cfg, per_source_max_calls=0))
    assert source_limits.enabled(
        _sip(cfg, per_source_max_calls=0, trunks=(SipTrunk("10.0.0.1", 3),))
    )


def test_the_route_counts_by_source_and_the_most_specific_trunk_wins() -> None:
    cfg = _sip(config.load(None), trunks=(SipTrunk("10.0.0.0/8", 0), SipTrunk("10.1.2.3", 8)))
    text = source_limits.route(cfg, retry_after_s=5)
    assert text.index('"10.1.2.3/32"') < text.index('"10.0.0.0/8"')
    assert "$var(limit) = 6;" in text and "$var(limit) = 8;" in text and "$var(limit) = 0;" in text
    assert 'get_profile_size("caller", "$si"' in text and 'set_dlg_profile("caller", "$si")' in text
    assert 'send_reply("503", "Service Unavailable")' in text and "Retry-After: 5" in text
    busy = source_limits.route(_sip(cfg, over_limit_status=486), retry_after_s=5)
    assert 'send_reply("486", "Busy Here")' in busy and "Retry-After" not in busy
    assert source_limits.route(_sip(cfg, per_source_max_calls=0, trunks=()), 5) == ""


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
        config.load(path)


@pytest.mark.skipif(shutil.which("kamailio", path="/usr/sbin:/usr/bin") is None,
                    reason="Debian package kamailio not installed")  # fmt: skip
@pytest.mark.parametrize("trunks", [(), (SipTrunk("192.0.2.0/24", 0), SipTrunk("192.0.2.9", 20))])
def test_kamailio_accepts_the_limit(tmp_path: Path, trunks: tuple[SipTrunk, ...]) -> None:
    cfg = _sip(config.load(None), trunks=trunks)
    files = kamailio.render(cfg, tmp_path / "run")
    kamailio.check(files)
    text = files.config.read_text()
    assert 'loadmodule "dialog.so"' in text and "route(SOURCE_LIMIT);" in text
    assert f'modparam("dialog", "noack_timeout", {int(cfg.sip.ack_timeout_s) + 2})' in text
    off = kamailio.render_config(_sip(cfg, per_source_max_calls=0, trunks=()), files)
    assert "dialog.so" not in off and "SOURCE_LIMIT" not in off
