"""What the live captions cost and how late they arrive, with every part in its own process as in
``serve``: the real captions server (``sip-bridge captions``), a publisher process standing in
for a media process (a real CaptionFeed, as the SIP loop uses it), and N plain HTTP clients on
the event stream, as browsers would be.

Prints, for each number of clients:

- the publisher's cost of one event on its loop (CaptionFeed.event, p50/p99), and of its list of
  4 calls (sent every 2 s by a media process);
- publish → received by a client (p50, p95, max; one monotonic clock for all processes), and
  events lost or clients cut off;
- the captions server's CPU per event delivered to one client.

Load: ``--calls`` calls, each with one final every ``--every-ms``, for ``--seconds``.

Run:  .venv/bin/python -m bench.captions_fanout --clients 1,10,50
"""

from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness.cpu_time import process_cpu_s  # noqa: E402
from tests.support.ports import free_tcp_port  # noqa: E402

TOKEN = "bench-operator-token-0123456789"

# The media process's side, in its own interpreter: announce, then one final per call in turn,
# each carrying its send time; report the publish costs on stdout.
_PUBLISHER = """
import json, sys, time
import zmq
from media.wire import Transcript
from sip_bridge.captions.feed import CaptionFeed
from sip_bridge.delivery.events import CallEvents, CallInfo
port, calls, every_ms = (int(a) for a in sys.argv[1:4])
seconds = float(sys.argv[4])
ctx = zmq.Context()
feed = CaptionFeed(ctx, f"tcp://127.0.0.1:{port}", "bench/media0")
events = [CallEvents(CallInfo(f"{n:032x}", f"{n}@pbx", "<sip:a@pbx>", "<sip:t@us>", "PCMU/8000",
                              8000, "bench/media0")) for n in range(calls)]
rows = [{"call_id": c.info.call_id, "tenant": ""} for c in events[:4]]
for _ in range(20):  # a PUB drops what it sends before the subscription reaches it
    feed.calls(rows)
    time.sleep(0.05)
for c in events:
    feed.event("", c.started().body)
publish, listing = [], []
interval = every_ms / 1000.0 / calls
n, next_at = 0, time.perf_counter()
end = next_at + seconds
while time.perf_counter() < end:
    c = events[n % calls]
    e = c.transcript(Transcript(c.info.call_id, n // calls, True, repr(time.perf_counter()),
                                0.0, 1.0, 0.9))
    t0 = time.perf_counter()
    feed.event("", e.body)
    publish.append(time.perf_counter() - t0)
    if n % 50 == 0:
        t1 = time.perf_counter()
        feed.calls(rows)
        listing.append(time.perf_counter() - t1)
    n += 1
    next_at += interval
    time.sleep(max(0.0, next_at - time.perf_counter()))
feed.close()
ctx.term()
print(json.dumps({"sent": n, "publish": publish, "listing": listing}))
"""


def _reader(port: int, latencies: list[float], lock: threading.Lock) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/v1/events", headers={"Authorization": f"Bearer {TOKEN}"})
    resp = conn.getresponse()
    event = ""
    try:
        while line := resp.fp.readline():
            if line.startswith(b"event: "):
                event = line[7:].strip().decode()
            elif line.startswith(b"data: ") and event == "transcript.final":
                sent = float(json.loads(line[6:])["text"])
                with lock:
                    latencies.append(time.perf_counter() - sent)
    except (OSError, ValueError):
        pass
    finally:
        conn.close()


def _get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def run_level(
    work: Path, clients: int, calls: int, every_ms: int, seconds: float
) -> dict[str, Any]:
    port, feed_port = free_tcp_port(), free_tcp_port()
    cfg_path = work / f"captions-{clients}.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "captions": {"port": port, "feed_port": feed_port, "tokens": [TOKEN], "history": 100000},
        "runtime_dir": str(work / "run"), "log_level": "WARNING",
    }))  # fmt: skip
    server = subprocess.Popen([sys.executable, "-m", "sip_bridge.cli", "captions", "--config",
                               str(cfg_path)], stdin=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if _get(port, "/healthz") == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("the captions server did not come up")
            time.sleep(0.05)
        latencies: list[float] = []
        lock = threading.Lock()
        readers = [threading.Thread(target=_reader, args=(port, latencies, lock), daemon=True)
                   for _ in range(clients)]  # fmt: skip
        for r in readers:
            r.start()
        cpu0 = process_cpu_s(server.pid)
        pub = subprocess.run(
            [sys.executable, "-c", _PUBLISHER, str(feed_port), str(calls), str(every_ms),
             str(seconds)],
            capture_output=True, text=True, timeout=seconds + 60, check=True,
            cwd=Path(__file__).resolve().parent.parent,
        )  # fmt: skip
        report = json.loads(pub.stdout)
        expected = report["sent"] * clients
        drain = time.monotonic() + 10
        while len(latencies) < expected and time.monotonic() < drain:
            time.sleep(0.05)
        cpu = process_cpu_s(server.pid) - cpu0
    finally:
        server.terminate()
        server.wait(10)
    lat = np.array(latencies) * 1000 if latencies else np.array([float("nan")])
    publish = np.array(report["publish"]) * 1e6
    return {
        "clients": clients,
        "events": report["sent"],
        "lost": expected - len(latencies),
        "publish_us": (np.percentile(publish, 50), np.percentile(publish, 99)),
        "list_us": float(np.median(report["listing"])) * 1e6,
        "latency_ms": (np.percentile(lat, 50), np.percentile(lat, 95), lat.max()),
        "cpu_us_per_delivery": cpu / max(len(latencies), 1) * 1e6,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", default="1,10,50")
    ap.add_argument("--calls", type=int, default=12)
    ap.add_argument("--every-ms", type=int, default=1000, help="per call: one event this often")
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    print(f"{args.calls} calls, one event per call every {args.every_ms} ms, {args.seconds:.0f} s")
    print("clients  events  lost  publish p50/p99 us  list(4) us  latency p50/p95/max ms"
          "  server CPU us per delivery")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="captions-bench-") as tmp:
        for clients in (int(c) for c in args.clients.split(",")):
            r = run_level(Path(tmp), clients, args.calls, args.every_ms, args.seconds)
            print(f"{r['clients']:>7}  {r['events']:>6}  {r['lost']:>4}  "
                  f"{r['publish_us'][0]:>8.1f} / {r['publish_us'][1]:<6.1f}  {r['list_us']:>10.1f}"
                  f"  {r['latency_ms'][0]:>6.2f} / {r['latency_ms'][1]:.2f} / "
                  f"{r['latency_ms'][2]:.1f}  {r['cpu_us_per_delivery']:>10.1f}",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
