"""A real Prometheus (Debian's ``prometheus``) for tests: the shipped scrape config and alert
rules of docker/monitoring, pointed at one ``serve`` on loopback, scraping and evaluating every
second, its storage in a temporary directory. Queried over its HTTP API."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.support.ports import free_tcp_port
from tests.support.procs import wait_or_kill

MONITORING = Path(__file__).resolve().parents[2] / "docker" / "monitoring"
BINARY = shutil.which("prometheus")


class PrometheusError(RuntimeError):
    pass


class RunningPrometheus:
    def __init__(self, work: Path, target: str, interval_s: int = 1) -> None:
        """``target``: host:port of ``serve``'s metrics endpoint."""
        if BINARY is None:
            raise PrometheusError("prometheus is not installed (Debian prometheus)")
        cfg = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
        cfg["global"]["scrape_interval"] = f"{interval_s}s"
        cfg["global"]["evaluation_interval"] = f"{interval_s}s"
        cfg["rule_files"] = [str(MONITORING / f) for f in cfg["rule_files"]]
        (job,) = cfg["scrape_configs"]
        job["scrape_timeout"] = f"{interval_s}s"
        job["static_configs"] = [{"targets": [target]}]
        work.mkdir(parents=True, exist_ok=True)
        config = work / "prometheus.yml"
        config.write_text(yaml.safe_dump(cfg))
        self.port = free_tcp_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = work / "prometheus.log"
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [BINARY, f"--config.file={config}", f"--storage.tsdb.path={work / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)  # polling a starting process, bounded by the deadline
        raise PrometheusError(f"prometheus not ready (exit {self.proc.poll()}):\n{self.log()}")

    def api(self, path: str, **params: str) -> Any:
        """``/api/v1/<path>``'s data; a query Prometheus rejects raises with its error."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:
            body = json.load(e)
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """An instant vector's samples as (labels, value)."""
        data = self.api("query", query=expr)
        if data["resultType"] != "vector":
            raise PrometheusError(f"{expr}: a {data['resultType']}, not a vector")
        return [(s["metric"], float(s["value"][1])) for s in data["result"]]

    def rules(self) -> list[dict[str, Any]]:
        """Every rule of every group, as /api/v1/rules gives them."""
        return [r for g in self.api("rules")["groups"] for r in g["rules"]]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            wait_or_kill(self.proc, 30)
