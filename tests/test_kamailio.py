"""The Kamailio front: generated config accepted by ``kamailio -c``; routing checked with sipp.

The integration tests run a real Kamailio on a free loopback port in front of two sipp UAS
instances playing media processes (``calls_per_process=2``), and place calls with a sipp UAC that
honours the route set, as a PBX must.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from sip_bridge.front import kamailio
from sip_bridge.settings import config, loading
from sip_bridge.settings.config import Config
from tests.support.kamailio_front import (
    SIPP_TIMEOUT_S,
    Front,
    free_udp_port,
    stop_process,
    uac_call,
    uac_refused,
)

needs_kamailio = pytest.mark.skipif(
    shutil.which("kamailio", path="/usr/sbin:/usr/local/sbin:/usr/bin") is None,
    reason="Debian package kamailio not installed",
)
needs_sipp = pytest.mark.skipif(shutil.which("sipp") is None, reason="sip-tester not installed")


# --- config --------------------------------------------------------------------------------------


def _with(cfg: Config, **sip: object) -> Config:
    return dataclasses.replace(cfg, sip=dataclasses.replace(cfg.sip, **sip))  # type: ignore[arg-type]


def test_dispatcher_list_has_one_line_per_media_process() -> None:
    cfg = dataclasses.replace(
        Config(), media=dataclasses.replace(Config().media, processes=3, calls_per_process=7)
    )
    lines = kamailio.render_dispatcher_list(cfg).splitlines()[1:]
    assert lines == [
        "1 sip:127.0.0.1:5071 0 0 duid=mp0;maxload=7",
        "1 sip:127.0.0.1:5072 0 0 duid=mp1;maxload=7",
        "1 sip:127.0.0.1:5073 0 0 duid=mp2;maxload=7",
    ]


def test_wildcard_listen_advertises_and_adds_a_loopback_socket(tmp_path: Path) -> None:
    cfg = _with(Config(), address="0.0.0.0", public_address="192.0.2.10")
    text = kamailio.render(cfg, tmp_path).config.read_text()
    assert "listen=udp:0.0.0.0:5060 advertise 192.0.2.10:5060" in text
    assert "listen=udp:127.0.0.1:5070" in text
    assert 'ds_default_socket", "udp:127.0.0.1:5070"' in text


def test_parse_dispatcher_list() -> None:
    text = """{ RECORDS: { SET: { ID: 1 TARGETS: {
        DEST: { URI: sip:127.0.0.1:5072
            FLAGS: IP
            ATTRS: { BODY: duid=mp1;maxload=2 }
            RUNTIME: { DLGLOAD: 0 } }
        DEST: { URI: sip:127.0.0.1:5071
            FLAGS: AP
            RUNTIME: { DLGLOAD: 2 } } } } } }"""
    assert kamailio.parse_dispatcher_list(text) == [
        kamailio.Destination("sip:127.0.0.1:5071", "AP", 2),
        kamailio.Destination("sip:127.0.0.1:5072", "IP", 0),
    ]


@needs_kamailio
@pytest.mark.parametrize(
    "variant",
    ["defaults", "loopback", "no-options", "public-address", "many-processes", "from-yaml"],
)
def test_kamailio_accepts_generated_config(variant: str, tmp_path: Path) -> None:
    base = loading.load(None)
    if variant == "defaults":
        cfg = base
    elif variant == "loopback":
        cfg = _with(base, address="127.0.0.1", port=5999)
    elif variant == "no-options":
        cfg = _with(base, address="127.0.0.1", answer_options=False)
    elif variant == "public-address":
        cfg = _with(base, address="127.0.0.2", public_address="198.51.100.7", port=5080)
    elif variant == "many-processes":
        cfg = dataclasses.replace(
            base, media=dataclasses.replace(base.media, processes=12, calls_per_process=150)
        )
    else:
        path = tmp_path / "bridge.yaml"
        path.write_text(
            "sip: {address: 127.0.0.1, port: 15060, answer_options: false}\n"
            "media: {processes: 5, calls_per_process: 3, sip_port_base: 16000}\n"
        )
        cfg = loading.load(path)
    files = kamailio.render(cfg, tmp_path / "run")
    kamailio.check(files)
    argv = kamailio.command(files)
    assert argv[1:3] == ["-DD", "-E"] and str(files.config) in argv


@needs_kamailio
def test_the_call_rate_limit_is_per_media_process_and_can_be_turned_off(tmp_path: Path) -> None:
    base = loading.load(None)
    files = kamailio.render(base, tmp_path / "run")
    kamailio.check(files)
    text = files.config.read_text()
    assert f'pl_check("$du", "TAILDROP", "{base.media.max_call_rate}")' in text
    assert 'modparam("pipelimit", "timer_interval", 1)' in text
    off = dataclasses.replace(base, media=dataclasses.replace(base.media, max_call_rate=0))
    assert 'pl_check("$du"' not in kamailio.render_config(off, files)
    bad = tmp_path / "bad.yaml"
    bad.write_text("media: {max_call_rate: -1}\n")
    with pytest.raises(config.ConfigError, match="media.max_call_rate"):
        loading.load(bad)


@needs_kamailio
def test_check_reports_kamailios_complaint(tmp_path: Path) -> None:
    files = kamailio.render(loading.load(None), tmp_path)
    files.config.write_text(files.config.read_text().replace("t_relay()", "t_relay_nope()"))
    with pytest.raises(kamailio.KamailioError, match="t_relay_nope"):
        kamailio.check(files)


def test_probe_is_false_when_nothing_listens() -> None:
    cfg = _with(Config(), address="127.0.0.1", port=free_udp_port())
    assert not kamailio.probe(cfg, timeout=0.3)


def test_find_kamailio_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    with pytest.raises(kamailio.KamailioError, match="install the Debian package kamailio"):
        kamailio.find_kamailio()


@pytest.fixture(params=["127.0.0.1"])
def front(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Front]:
    if shutil.which("sipp") is None:
        pytest.skip("sip-tester (sipp) not installed")
    try:
        kamailio.find_kamailio()
    except kamailio.KamailioError as exc:
        pytest.skip(str(exc))
    f = Front(tmp_path, address=request.param)
    try:
        f.start_kamailio()
        yield f
    finally:
        f.close()


# --- integration ---------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("front", ["127.0.0.1", "127.0.0.2"], indirect=True)
def test_calls_spread_503_when_full_and_load_released_after_bye(front: Front) -> None:
    front.start_backend(0)
    front.start_backend(1)
    front.wait_all_active()
    held = front.uac(uac_call(), calls=4, hold_ms=3000, rate=50)
    try:
        # Alg 10 puts each call on the least loaded process: 2 + 2.
        front.wait_for(
            "4 calls spread 2 + 2",
            lambda d: [x.load for x in d.values()] == [2, 2],
            within_s=3,
        )
        # Both at maxload: the 5th call is refused at the front, with Retry-After.
        assert front.run_uac(uac_refused(), calls=1) == 0, front.log_tail()
        assert held.wait(timeout=SIPP_TIMEOUT_S) == 0, front.log_tail()
    finally:
        stop_process(held)
    # The BYEs passed the front (record-routed; twice, on 127.0.0.2) and released the load.
    assert front.loads() == {front.uri(0): 0, front.uri(1): 0}
    assert front.run_uac(uac_call(), calls=4, hold_ms=200, rate=50) == 0, front.log_tail()
    assert front.loads() == {front.uri(0): 0, front.uri(1): 0}


@pytest.mark.integration
def test_busy_media_process_fails_over_to_the_other(front: Front) -> None:
    front.start_backend(0, mode="busy")
    front.start_backend(1)
    front.wait_all_active()
    # Whichever process alg 10 picks first, every call ends up answered by the one that is free.
    assert front.run_uac(uac_call(), calls=2, hold_ms=1000, rate=50) == 0, front.log_tail()
    assert front.loads() == {front.uri(0): 0, front.uri(1): 0}
    # Two calls at once: whichever went first, the second met the busy one and moved on.
    assert f"486 from a media process, trying {front.uri(1)}" in front.log()


@pytest.mark.integration
def test_silent_media_process_times_out_and_fails_over(front: Front) -> None:
    front.start_backend(0, mode="silent")
    front.start_backend(1)
    front.wait_all_active()
    assert front.run_uac(uac_call(), calls=2, hold_ms=500, rate=50) == 0, front.log_tail()
    assert f"408 from a media process, trying {front.uri(1)}" in front.log()
    assert front.loads() == {front.uri(0): 0, front.uri(1): 0}


@pytest.mark.integration
def test_every_media_process_busy_gives_503_without_leaking_load(front: Front) -> None:
    front.start_backend(0, mode="busy")
    front.start_backend(1, mode="busy")
    front.wait_all_active()
    assert front.run_uac(uac_refused(), calls=3, rate=50) == 0, front.log_tail()
    # ds_next_dst() with nothing left to try deletes the current entry, and ds_load_unset() then
    # releases nothing: the script checks for a next destination first (docs/architecture.md,
    # "Kamailio routing facts").
    assert front.loads() == {front.uri(0): 0, front.uri(1): 0}


@pytest.mark.integration
def test_killed_media_process_is_marked_inactive_and_skipped(front: Front) -> None:
    front.start_backend(0)
    front.start_backend(1)
    front.wait_all_active()
    front.kill_backend(0)
    # A probe each second, each bounded by fr_timer (1.5 s): at worst ~2.5 s; measured ~2 s.
    front.wait_for(
        "killed media process marked inactive",
        lambda d: not d[front.uri(0)].active and d[front.uri(1)].active,
        within_s=3,
    )
    # Calls now all go to the survivor (up to its maxload of 2 at once).
    assert front.run_uac(uac_call(), calls=4, hold_ms=200, rate=50, limit=2) == 0, front.log_tail()
    # Restarted, it is probed back in.
    front.start_backend(0)
    front.wait_all_active()


@pytest.mark.integration
def test_front_answers_options_refuses_other_methods_and_loops(front: Front) -> None:
    front.wait_for("ctl socket", lambda d: len(d) == 2, within_s=5)
    assert kamailio.probe(front.cfg, timeout=2)
    assert front.request("OPTIONS") == "200"
    assert front.request("MESSAGE") == "405"
    assert front.request("INVITE", max_forwards=0) == "483"
