"""What ``serve`` tells its operator endpoint (``metrics_server``): readiness, and the gauges
only the supervisor knows (its parts, restarts, the drain) or asks the front for (its
destinations and counters, over kamcmd, at most once a second however often it is scraped).

Runs on the metrics server's threads: it only reads the supervisor's plain attributes.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from typing import Protocol

from prometheus_client.core import Metric

from sip_bridge.front import kamailio
from sip_bridge.serve import metrics_server


class Part(Protocol):
    """What is read of one of serve's child processes (``supervisor.Child``)."""

    @property
    def name(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def index(self) -> int: ...
    @property
    def proc(self) -> subprocess.Popen[bytes] | None: ...
    @property
    def restarts(self) -> int: ...


class Supervised(Protocol):
    """What is read of the supervisor: plain attributes, written on its own thread."""

    @property
    def children(self) -> Sequence[Part]: ...
    @property
    def files(self) -> kamailio.KamailioFiles | None: ...
    @property
    def started(self) -> bool: ...
    @property
    def draining(self) -> bool: ...
    @property
    def stopping(self) -> bool: ...


class ServeStatus:
    def __init__(self, sup: Supervised) -> None:
        self.sup = sup
        self._front_view: tuple[float, list[kamailio.Destination] | None, dict[str, int]] = (
            -1.0, None, {},
        )  # fmt: skip

    def _front(self) -> tuple[list[kamailio.Destination] | None, dict[str, int]]:
        """The front's destinations and statistics, asked at most once a second (kamcmd)."""
        at, dests, stats = self._front_view
        if at >= 0 and time.monotonic() - at < 1.0 or self.sup.files is None:
            return dests, stats
        try:
            dests = kamailio.destinations(self.sup.files, timeout_s=1.0)
            stats = kamailio.statistics(self.sup.files, timeout_s=1.0)
        except kamailio.KamailioError:
            dests, stats = None, {}
        self._front_view = (time.monotonic(), dests, stats)
        return dests, stats

    def readiness(self) -> metrics_server.Readiness:
        """Called from the metrics server's threads: reads plain attributes only."""
        parts: dict[str, str] = {}
        for c in list(self.sup.children):
            proc = c.proc
            parts[c.name] = "up" if proc is not None and proc.poll() is None else "down"
        if not self.sup.started:
            parts["serve"] = "starting"
        elif self.sup.draining or self.sup.stopping:
            parts["serve"] = "draining"
        dests, _ = self._front()
        active = sum(d.active for d in dests or [])
        parts["front rotation"] = f"{active} media process(es) active" if dests else "unknown"
        if self.sup.files is None:  # a host of workers only: no front to route calls
            parts.pop("front rotation")
            active = 1
        ready = (
            self.sup.started and not self.sup.draining and not self.sup.stopping and active > 0
            and all(v == "up" for k, v in parts.items() if k not in ("front rotation",))
        )  # fmt: skip
        return metrics_server.Readiness(ready, parts)

    def metrics(self) -> list[Metric]:
        children = list(self.sup.children)
        dests, stats = self._front()
        up = [([c.role, str(c.index)], float(c.proc is not None and c.proc.poll() is None))
              for c in children]  # fmt: skip
        restarts = [([c.role, str(c.index)], float(c.restarts)) for c in children]
        out = [
            metrics_server.gauge(
                "sip_bridge_process_up", "1 while a part of serve runs", ["role", "index"], up
            ),  # fmt: skip
            metrics_server.gauge(
                "sip_bridge_process_restarts",
                "Restarts of a part since serve started",
                ["role", "index"],
                restarts,
            ),  # fmt: skip
            metrics_server.gauge(
                "sip_bridge_draining",
                "1 while serve drains (new calls get 503)",
                [],
                [([], float(self.sup.draining))],
            ),  # fmt: skip
        ]
        if dests is not None:
            out.append(metrics_server.gauge(
                "sip_bridge_front_destination_active", "1 while the front routes new calls to a"
                " media process", ["uri"], [([d.uri], float(d.active)) for d in dests],
            ))  # fmt: skip
            out.append(metrics_server.gauge(
                "sip_bridge_front_destination_calls", "Calls the front counts on a media process",
                ["uri"], [([d.uri], float(d.load)) for d in dests],
            ))  # fmt: skip
        if stats:
            out.append(metrics_server.counter(
                "sip_bridge_front_statistic", "Kamailio's own counters (kamcmd stats): requests"
                " received and dropped, replies sent by class (5xx includes every 503 of"
                " admission control)", ["name"], [([k], float(v)) for k, v in stats.items()],
            ))  # fmt: skip
        return out
