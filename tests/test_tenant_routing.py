"""Tenant routing at the front: the generated script, and a real Kamailio that recognises each
call's tenant by source address, dialled number or header, refuses unknown callers, holds each
tenant to its concurrent-call limit over both media processes, and replaces a forged tenant
header. Calls are placed with sipp through the front; sipp stand-ins answer as media processes.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from sip_bridge.front import kamailio, tenant_routing
from sip_bridge.settings import checks
from sip_bridge.settings.config import (
    Config,
    TenantConfig,
    TenantMatch,
    UnknownTenantConfig,
    WebhookConfig,
)
from tests.support.kamailio_front import (
    SIPP_TIMEOUT_S,
    Front,
    stop_process,
    uac_call,
    uac_refused,
)

TENANTS = (
    TenantConfig("acme", (TenantMatch(source="127.0.0.2"),), max_calls=2),
    TenantConfig(
        "globex",
        (TenantMatch(to_user="5550(100|101)"), TenantMatch(header="X-Customer: globex")),
        max_calls=1,
        limit_status=503,
        webhooks=(WebhookConfig("http://127.0.0.1:9/globex", "globex-secret"),),
    ),
    # Both keys must hold: calls to 44... from 127.0.0.3 only.
    TenantConfig("initech", (TenantMatch(to_user="44[0-9]+", source="127.0.0.3/32"),)),
)
UNKNOWN = UnknownTenantConfig(status=404, reason="No such number here")


def with_tenants(cfg: Config, tenants: tuple[TenantConfig, ...] = TENANTS) -> Config:
    return checks.validate(
        Config(
            sip=cfg.sip,
            media=cfg.media,
            tenants=tenants,
            unknown_tenant=UNKNOWN,
        ),
        "test",
    )


# --- the script -----------------------------------------------------------------------------


def test_a_rule_is_the_and_of_its_keys_and_a_tenant_the_or_of_its_rules() -> None:
    both = TenantMatch(to_user="44[0-9]+", source="10.0.0.0/8", header="X-A: b")
    assert tenant_routing.condition(both) == (
        'is_in_subnet("$si", "10.0.0.0/8") && $tU =~ "^(44[0-9]+)$" && $hdr(X-A) == "b"'
    )
    text = tenant_routing.route(with_tenants(Config()))
    assert '($tU =~ "^(5550(100|101))$") || ($hdr(X-Customer) == "globex")' in text
    # Tried in order: acme first, then globex, then initech.
    assert text.index('"acme"') < text.index('"globex"') < text.index('"initech"')
    assert 'send_reply("404", "No such number here")' in text
    assert tenant_routing.modules(with_tenants(Config())) == ["ipops", "dialog", "cfgutils"]


def test_no_tenants_no_tenant_route() -> None:
    assert tenant_routing.route(Config()) == ""
    assert tenant_routing.modules(Config()) == []


def test_unknown_callers_may_go_to_a_tenant_instead() -> None:
    cfg = checks.validate(
        Config(tenants=TENANTS, unknown_tenant=UnknownTenantConfig(tenant="initech")), "t"
    )
    text = tenant_routing.route(cfg)
    assert "no tenant matches" not in text
    assert '    if ($var(tenant) == "") {\n        $var(tenant) = "initech";' in text


@pytest.mark.skipif(shutil.which("kamailio", path="/usr/sbin:/usr/bin") is None,
                    reason="needs kamailio")  # fmt: skip
def test_kamailio_accepts_the_script_with_tenants(tmp_path: Path) -> None:
    cfg = with_tenants(Config())
    kamailio.check(kamailio.render(cfg, tmp_path))
    no_limits = tuple(TenantConfig(t.name, t.match) for t in TENANTS)
    kamailio.check(kamailio.render(with_tenants(Config(), no_limits), tmp_path / "b"))


# --- a real front -----------------------------------------------------------------------------


@pytest.fixture
def front(tmp_path: Path) -> Iterator[Front]:
    if shutil.which("sipp") is None:
        pytest.skip("needs sipp (sip-tester)")
    try:
        kamailio.find_kamailio()
    except kamailio.KamailioError as exc:
        pytest.skip(str(exc))
    f = Front(tmp_path)
    f.cfg = with_tenants(f.cfg)
    f.files = kamailio.render(f.cfg, tmp_path / "kamailio")
    try:
        f.start_kamailio()
        f.start_backend(0)
        f.start_backend(1)
        f.wait_all_active()
        yield f
    finally:
        f.close()


def tenants_seen(front: Front) -> list[str]:
    """The X-Bridge-Tenant of every INVITE the media processes got, in arrival order."""
    out = []
    for invite in front.received_invites():
        found = re.findall(r"^X-Bridge-Tenant:\s*(.*?)\s*$", invite, re.M | re.I)
        out.append(",".join(found))
    return out


@pytest.mark.integration
def test_each_selector_picks_its_tenant_and_unknown_callers_are_refused(front: Front) -> None:
    assert front.run_uac(uac_call(), calls=1, source="127.0.0.2") == 0, front.log_tail()
    assert front.run_uac(uac_call(), calls=1, service="5550101") == 0, front.log_tail()
    assert front.run_uac(uac_call("X-Customer: globex\n"), calls=1) == 0, front.log_tail()
    assert front.run_uac(uac_call(), calls=1, service="4420", source="127.0.0.3") == 0
    # A forged tenant header is replaced by the front's own verdict.
    forged = uac_call("X-Bridge-Tenant: globex\n")
    assert front.run_uac(forged, calls=1, source="127.0.0.2") == 0, front.log_tail()
    assert tenants_seen(front) == ["acme", "globex", "globex", "initech", "acme"]
    # Nothing matches: the dialled number is wrong, or only one key of initech's rule holds.
    for service, source in (("bridge", "127.0.0.1"), ("5550102", "127.0.0.1"),
                            ("4420", "127.0.0.1"), ("bridge", "127.0.0.3")):  # fmt: skip
        code = front.run_uac(uac_refused(404), calls=1, service=service, source=source)
        assert code == 0, f"{service} from {source}: {front.log_tail()}"
    assert len(front.received_invites()) == 5  # the refused calls never reached a process
    assert "no tenant matches, 404" in front.log()


@pytest.mark.integration
def test_a_tenant_at_its_limit_gets_busy_and_its_slot_comes_back_after_bye(
    front: Front,
) -> None:
    # acme (max_calls 2, 486): two calls held, a third refused while they last, over both
    # media processes (each takes 2): the limit is the tenant's, not a process's.
    held = front.uac(uac_call(), calls=2, hold_ms=4000, source="127.0.0.2")
    try:
        front.wait_for("two calls up", lambda d: sum(x.load for x in d.values()) == 2, 10)
        assert front.run_uac(uac_refused(486), calls=1, source="127.0.0.2") == 0, front.log_tail()
        # Another tenant is not held back by acme's limit.
        assert front.run_uac(uac_call(), calls=1, service="5550100") == 0, front.log_tail()
        assert held.wait(timeout=SIPP_TIMEOUT_S) == 0, front.log_tail()
    finally:
        stop_process(held)
    # The BYEs released acme's slots.
    assert front.run_uac(uac_call(), calls=2, source="127.0.0.2") == 0, front.log_tail()
    assert "tenant acme has 2 calls (max_calls), 486" in front.log()


@pytest.mark.integration
def test_limit_status_503_says_when_to_retry_and_failed_calls_free_their_slot(
    front: Front,
) -> None:
    held = front.uac(uac_call(), calls=1, hold_ms=3000, service="5550100")
    try:
        front.wait_for("one call up", lambda d: sum(x.load for x in d.values()) == 1, 10)
        # uac_refused(503) checks the Retry-After header.
        assert front.run_uac(uac_refused(503), calls=1, service="5550101") == 0, front.log_tail()
        assert held.wait(timeout=SIPP_TIMEOUT_S) == 0
    finally:
        stop_process(held)
    # A call refused by every media process (both busy) leaves no dialog behind in the count.
    front.kill_backend(0)
    front.kill_backend(1)
    front.start_backend(0, mode="busy")
    front.start_backend(1, mode="busy")
    front.wait_all_active()
    refusals = front.log().count("tenant globex has")
    assert front.run_uac(uac_refused(503), calls=2, service="5550100", rate=1) == 0
    assert front.log().count("tenant globex has") == refusals  # the 503s were the pool's
    front.kill_backend(0)
    front.kill_backend(1)
    front.start_backend(0)
    front.start_backend(1)
    front.wait_all_active()
    assert front.run_uac(uac_call(), calls=1, service="5550100") == 0, front.log_tail()
    assert "tenant globex has 1 calls (max_calls), 503" in front.log()
