"""A running bridge's operator endpoint (``metrics.port``: /metrics, /healthz, /readyz) as the
tests read it: the samples of a scrape by name and labels, and the front's counters (Kamailio's
``kamcmd stats``, one sample of ``sip_bridge_front_statistic_total`` per counter name)."""

from __future__ import annotations

import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.support.bridge import RunningBridge

# (sample name, its labels sorted) -> value
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

FRONT_STATISTIC = "sip_bridge_front_statistic_total"


def get(bridge: RunningBridge, path: str) -> tuple[int, bytes]:
    """The status and body of a GET of ``path`` on the bridge's metrics port."""
    url = f"http://127.0.0.1:{bridge.config['metrics']['port']}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def scrape(bridge: RunningBridge) -> Samples:
    status, body = get(bridge, "/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: Samples, metric: str, **labels: str) -> float:
    """The sum over samples of ``metric`` whose labels include ``labels``."""
    return sum(
        v for (n, ls), v in samples.items()
        if n == metric and all((k, w) in ls for k, w in labels.items())
    )  # fmt: skip


def front_statistic(bridge: RunningBridge, *names: str) -> float:
    """The sum of the front's counters ``names`` (``script:over_capacity``, ``sl:5xx_replies``,
    ...) in a scrape now; 0 for a counter the front has not reported yet."""
    return sum(
        v for (n, ls), v in scrape(bridge).items()
        if n == FRONT_STATISTIC and dict(ls).get("name") in names
    )  # fmt: skip
