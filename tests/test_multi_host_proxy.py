"""The multi-host example (``dialplans/kamailio/multi-host.cfg``) run for real: a Kamailio with
that script, only its addresses and paths changed for loopback, in front of two sipp stand-ins
for bridge hosts; sipp calls through it as a PBX would. Shows the example does what its README
says: calls spread by load, 503 when every host is full, failover from a busy host, slots freed
by BYE and by failure, trunk OPTIONS answered."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from sip_bridge.front import kamailio
from tests.support.kamailio_front import (
    SIPP_TIMEOUT_S,
    Front,
    stop_process,
    uac_call,
    uac_refused,
)
from tests.support.raw_uac import invite_status

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parent.parent / "dialplans" / "kamailio"


def loopback_copy(front: Front) -> str:
    """The example script with loopback addresses and this test's paths; nothing else changed."""
    text = (EXAMPLE / "multi-host.cfg").read_text()
    port = front.kamailio_port
    edits = [
        (r'#!substdef "!PROXY_ADDR!10\.0\.0\.10!g"', '#!substdef "!PROXY_ADDR!127.0.0.1!g"'),
        (r"listen=udp:0\.0\.0\.0:5060 advertise PROXY_ADDR:5060", f"listen=udp:127.0.0.1:{port}"),
        (r"alias=udp:PROXY_ADDR:5060", f"alias=udp:127.0.0.1:{port}"),
        (r'"unix:/run/kamailio/kamailio_ctl"', f'"unix:{front.files.ctl_socket}"'),
        (r'"/etc/kamailio/dispatcher\.list"', f'"{front.files.dispatcher_list}"'),
    ]
    for pattern, replacement in edits:
        text, n = re.subn(pattern, replacement, text)
        assert n == 1, f"the example changed: {pattern!r} found {n} times"
    return text


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Front]:
    if shutil.which("sipp") is None:
        pytest.skip("needs sipp (sip-tester)")
    try:
        kamailio.find_kamailio()
    except kamailio.KamailioError as exc:
        pytest.skip(str(exc))
    f = Front(tmp_path)
    # The two "bridge hosts" are the harness's media-process stand-ins, one call each.
    f.files.dispatcher_list.write_text(
        "".join(f"1 {f.uri(i)} 0 0 duid=host{i};maxload=1\n" for i in range(2))
    )
    f.files.config.write_text(loopback_copy(f))
    kamailio.check(f.files)
    try:
        f.start_kamailio()
        yield f
    finally:
        f.close()


def test_calls_spread_over_hosts_and_get_503_when_every_host_is_full(proxy: Front) -> None:
    proxy.start_backend(0)
    proxy.start_backend(1)
    proxy.wait_all_active()
    held = proxy.uac(uac_call(), calls=2, hold_ms=3000)
    try:
        proxy.wait_for("one call per host", lambda d: [x.load for x in d.values()] == [1, 1], 10)
        assert proxy.run_uac(uac_refused(503), calls=1) == 0, proxy.log_tail()  # both full
        assert held.wait(timeout=SIPP_TIMEOUT_S) == 0, proxy.log_tail()
    finally:
        stop_process(held)
    # The BYEs passed the proxy (record-routed) and freed both slots.
    proxy.wait_for("slots freed", lambda d: [x.load for x in d.values()] == [0, 0], 5)


def test_a_busy_host_fails_over_and_a_failed_call_frees_its_slot(proxy: Front) -> None:
    proxy.start_backend(0, mode="busy")
    proxy.start_backend(1)
    proxy.wait_all_active()
    # Every call lands on host 1 after host 0's 486; one at a time, so host 1 is never full.
    assert proxy.run_uac(uac_call(), calls=3, rate=2, limit=1) == 0, proxy.log_tail()
    assert proxy.loads() == {proxy.uri(0): 0, proxy.uri(1): 0}
    # Both busy: the PBX gets the last 486, and no slot stays taken.
    proxy.kill_backend(1)
    proxy.start_backend(1, mode="busy")
    proxy.wait_all_active()
    assert invite_status("127.0.0.1", proxy.kamailio_port) == 486
    assert proxy.loads() == {proxy.uri(0): 0, proxy.uri(1): 0}


def test_trunk_keep_alive_options_are_answered(proxy: Front) -> None:
    proxy.start_backend(0)
    proxy.start_backend(1)
    proxy.wait_all_active()
    assert proxy.request("OPTIONS") == "200"
    proxy.kill_backend(0)
    proxy.kill_backend(1)
    # Probes every 5 s; one miss makes a host "trying" (still used), two inactive.
    inactive = lambda d: all(x.flags.startswith("I") for x in d.values())  # noqa: E731
    proxy.wait_for("both hosts inactive", inactive, 20)
    assert proxy.request("OPTIONS") == "503"
