"""docker/monitoring: Prometheus takes the shipped scrape config and alert rules, the rules'
own unit tests pass (promtool, from Debian's prometheus), every metric the rules and the Grafana
dashboard name is one the bridge exports, and a real Prometheus running the shipped config and
rules against a live ``serve`` sees a real call: counted, its latency observed, every worker
up, every rule evaluated and none firing, every dashboard query answered."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import prometheus, speech
from tests.support.bridge import serving
from tests.support.prometheus import RunningPrometheus
from tests.support.requirements import NEEDS_KAMAILIO_SIPP_AND_PROMPTS, NEEDS_PCAP_PLAYBACK
from tests.support.rtp_pcap import join_with_silence, write_rtp_pcap
from tests.support.sipp import SippCall, run_calls
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "docker" / "monitoring"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="needs promtool (apt prometheus)")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=MONITORING, capture_output=True, text=True, timeout=120
    )


@needs_promtool
@pytest.mark.parametrize(
    "args",
    [("check", "config", "prometheus.yml"), ("check", "rules", "alerts.yml"),
     ("test", "rules", "alerts_test.yml")],
    ids=["config", "rules", "rule-tests"],
)  # fmt: skip
def test_promtool_takes_the_shipped_files(args: tuple[str, ...]) -> None:
    done = promtool(*args)
    assert done.returncode == 0, done.stdout + done.stderr


def exported_families() -> set[str]:
    """Every family name the bridge's code declares (prometheus_client's first argument)."""
    names: set[str] = set()
    for path in [*(ROOT / "sip_bridge").rglob("*.py"), *(ROOT / "inference").rglob("*.py")]:
        names |= set(re.findall(r"\"(sip_bridge_[a-z0-9_]+)\"", path.read_text()))
    return names


def unknown_metrics(text: str) -> list[str]:
    """The ``sip_bridge_`` series names in ``text`` that no family of the bridge exports."""
    families = exported_families()
    used = set(re.findall(r"\b(sip_bridge_[a-z0-9_]+)", text))
    assert used, "no sip_bridge_ metric named"
    suffixes = ("_bucket", "_count", "_sum", "_total", "_created")
    return sorted(
        u for u in used
        if u not in families and not any(u.endswith(s) and u[: -len(s)] in families
                                         for s in suffixes)
    )  # fmt: skip


def test_every_metric_the_rules_name_is_exported() -> None:
    assert not unknown_metrics((MONITORING / "alerts.yml").read_text())


DASHBOARD = MONITORING / "grafana-dashboard.json"


def dashboard_panels() -> list[dict[str, Any]]:
    return list(json.loads(DASHBOARD.read_text())["panels"])


def dashboard_queries() -> list[str]:
    return [t["expr"] for p in dashboard_panels() for t in p.get("targets", [])]


def recorded_rules() -> set[str]:
    groups = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
    return {r["record"] for g in groups for r in g["rules"] if "record" in r}


def test_every_metric_the_dashboard_names_is_exported_or_recorded() -> None:
    queries = dashboard_queries()
    assert len(queries) >= 20
    assert not unknown_metrics("\n".join(queries))
    recorded = set(re.findall(r"\b(sip_bridge:[a-z0-9_:]+)", "\n".join(queries)))
    assert recorded <= recorded_rules(), recorded - recorded_rules()


def test_the_dashboard_imports_with_a_prometheus_of_your_choice() -> None:
    """Grafana's import asks for the data source ``DS_PROMETHEUS`` names: every panel and query
    must use it (a fixed uid would point at nobody's Prometheus) and filter on the host picker."""
    dash = json.loads(DASHBOARD.read_text())
    assert [i["name"] for i in dash["__inputs"]] == ["DS_PROMETHEUS"]
    ds = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    assert panels
    for p in panels:
        assert p["datasource"] == ds, p["title"]
        for t in p["targets"]:
            assert t["datasource"] == ds, p["title"]
            assert 'instance=~"$instance"' in t["expr"], (p["title"], t["expr"])
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    # Laid out on Grafana's 24-column grid without two panels on the same cell.
    cells: set[tuple[int, int]] = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        x0, y0 = g["x"], g["y"]
        assert x0 >= 0 and x0 + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(x0, x0 + g["w"]) for y in range(y0, y0 + g["h"])}
        assert not mine & cells, p["title"]
        cells |= mine


def value(prom: RunningPrometheus, expr: str) -> float | None:
    samples = prom.query(expr)
    return samples[0][1] if samples else None


@pytest.mark.integration
@NEEDS_KAMAILIO_SIPP_AND_PROMPTS
@NEEDS_PCAP_PLAYBACK
@pytest.mark.skipif(prometheus.BINARY is None, reason="needs prometheus (apt prometheus)")
def test_a_real_prometheus_sees_a_call_through_the_shipped_config_and_rules(
    tmp_path: Path,
) -> None:
    workers = 2
    parts = {"media": {"processes": 2}, "inference": {"workers": workers}}
    with serving(tmp_path / "bridge", parts, None) as bridge:
        metrics = f"127.0.0.1:{bridge.config['metrics']['port']}"
        prom = RunningPrometheus(tmp_path / "prometheus", metrics)
        try:
            prom.wait_ready(60)
            wait_until("the target is scraped and up",
                 lambda: value(prom, 'up{job="sip-bridge"}') == 1, 30)  # fmt: skip
            prompt = speech.select(1, min_s=2.0, max_s=5.0)[0]
            pcm = join_with_silence([prompt.pcm()], gap_s=1.0, lead_s=0.5, tail_s=0.5)
            seconds = write_rtp_pcap(tmp_path / "call.pcap", pcm)
            call = SippCall("127.0.0.1", bridge.port, tmp_path / "call.pcap", "PCMU",
                            audio_s=seconds, linger_s=3.0, work_dir=tmp_path / "sipp")  # fmt: skip
            (result,) = run_calls([call])
            assert result.ok, result
            assert result.info_bodies, "the call got no caption"

            wait_until("the call is counted as answered and ended by the caller",
                 lambda: value(prom, 'sum(sip_bridge_calls_total{outcome="answered"})') == 1
                 and value(prom, 'sum(sip_bridge_calls_total{outcome="ended_by_caller"})') == 1,
                 30)  # fmt: skip
            wait_until("its final's latency is observed",
                 lambda: (value(prom, "sum(sip_bridge_final_latency_seconds_count)") or 0) >= 1,
                 30)  # fmt: skip
            assert (value(prom, "sum(sip_bridge_frames_total{stage='received'})") or 0) > 0
            assert value(prom, 'sum(sip_bridge_front_statistic_total{name="core:rcv_requests"})')
            up = prom.query("sip_bridge_worker_up")
            assert sorted(s[0]["worker"] for s in up) == [str(i) for i in range(workers)]

            def at_rest() -> bool:
                """No call in progress, every worker and part up, the host admitting: read in
                turn (a heartbeat late on a loaded CI machine may show a worker down a moment)."""
                live = [v for _, v in prom.query("sip_bridge_worker_up")]
                running = [v for _, v in prom.query("sip_bridge_process_up")]
                return (
                    value(prom, "sum(sip_bridge_active_calls)") == 0
                    and live == [1.0] * workers
                    and bool(running) and all(v == 1 for v in running)
                    and value(prom, "min(sip_bridge_admitting)") == 1
                )  # fmt: skip

            wait_until("the host at rest after the call", at_rest, 30)

            # Every rule of alerts.yml loaded and evaluated without error, and none fires on a
            # healthy host that took one call.
            wait_until("every rule evaluated",
                 lambda: all(not r["lastEvaluation"].startswith("0001")  # never evaluated
                             for r in prom.rules()), 30)  # fmt: skip
            rules = prom.rules()
            shipped = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
            assert len(rules) == sum(len(g["rules"]) for g in shipped)
            broken = [r for r in rules if r["health"] != "ok"]
            assert not broken, broken
            alerts = [r for r in rules if r["type"] == "alerting"]
            firing = [r["name"] for r in alerts if r["state"] == "firing"]
            assert not firing, firing

            # Every dashboard query is one Prometheus takes (Grafana's variables filled in as
            # Grafana would), and the call shows on the panels that count calls and latency.
            for expr in dashboard_queries():
                prom.query(expr.replace("$instance", ".*").replace("$__rate_interval", "1m"))
            assert value(prom, 'sum(sip_bridge_final_latency_seconds_count{instance=~".*"})')
        except BaseException:
            print(prom.log()[-4000:])
            raise
        finally:
            prom.stop()
