from __future__ import annotations

from sip_bridge.delivery.events import CALL_STARTED, DTMF, TRANSCRIPT_FINAL, TRANSCRIPT_PARTIAL
from sip_bridge.delivery.info_policy import InfoPolicy


def policy(peer: frozenset[str] | None, legacy: bool = True, partials: bool = False) -> InfoPolicy:
    return InfoPolicy.for_peer(True, "transcript", peer, legacy, partials, 1.0)


def test_the_peers_recv_info_decides() -> None:
    assert policy(frozenset({"transcript", "foo"})).wants(TRANSCRIPT_FINAL, 0)
    assert not policy(frozenset({"foo"})).wants(TRANSCRIPT_FINAL, 0)
    assert not policy(frozenset()).wants(TRANSCRIPT_FINAL, 0)  # "Recv-Info:" empty: none
    assert policy(None).wants(TRANSCRIPT_FINAL, 0)  # no Recv-Info: a legacy peer
    assert not policy(None, legacy=False).wants(TRANSCRIPT_FINAL, 0)
    off = InfoPolicy.for_peer(False, "transcript", frozenset({"transcript"}), True, True, 1.0)
    assert not off.wants(TRANSCRIPT_FINAL, 0)


def test_finals_and_dtmf_go_partials_only_when_asked_and_rate_limited() -> None:
    p = policy(None)
    assert p.wants(TRANSCRIPT_FINAL, 0) and p.wants(DTMF, 0)
    assert not p.wants(TRANSCRIPT_PARTIAL, 0)
    assert not p.wants(CALL_STARTED, 0)
    p = policy(None, partials=True)
    sent = [t / 10 for t in range(40) if p.wants(TRANSCRIPT_PARTIAL, t / 10)]
    assert sent == [0.0, 1.0, 2.0, 3.0]
    assert all(p.wants(TRANSCRIPT_FINAL, t / 10) for t in range(40))  # finals never limited


def test_a_refusal_stops_infos_and_is_reported_once() -> None:
    p = policy(None)
    assert not p.answered(200)
    assert p.answered(469)
    assert not p.answered(469)
    assert not p.answered(501)
    assert p.refused_with == 469
    assert not p.wants(TRANSCRIPT_FINAL, 0)
    assert not p.wants(DTMF, 0)
