"""CPU inside ONNX Runtime, per thread and model, of every inference worker (benchmarks only).

Put on ``PYTHONPATH`` with ``SIP_BRIDGE_CPU_PROBE_DIR`` set: in a process started as an
inference worker (``... sip_bridge.cli worker ...``), every ``InferenceSession.run`` and
``run_with_iobinding`` is timed with ``time.thread_time()`` (CPU of the calling thread: the
sessions run one intra-op thread, the caller's) and added up by (thread name, model file). A
daemon thread writes the totals to ``$SIP_BRIDGE_CPU_PROBE_DIR/<pid>.json`` twice a second. It
changes nothing the worker computes, so it measures any revision of the bridge the same way:
the partials' CPU is what their thread ("partials") spent in the model, the finals' what the
worker's loop ("MainThread") spent in Moonshine.
"""

import os
import sys

_DIR = os.environ.get("SIP_BRIDGE_CPU_PROBE_DIR")
_ARGV = getattr(sys, "orig_argv", sys.argv)

if _DIR and "sip_bridge.cli" in _ARGV and "worker" in _ARGV:
    import json
    import threading
    import time

    import onnxruntime as _ort

    _totals: dict = {}
    _lock = threading.Lock()
    _cls = _ort.InferenceSession

    def _label(session) -> str:  # type: ignore[no-untyped-def]
        path = getattr(session, "_model_path", None) or ""
        name = os.path.basename(str(path)) or "in-memory graph"
        return f"{threading.current_thread().name}|{name}"

    def _timed(method):  # type: ignore[no-untyped-def]
        def run(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            t0 = time.thread_time()
            try:
                return method(self, *args, **kwargs)
            finally:
                spent = time.thread_time() - t0
                key = _label(self)
                with _lock:
                    _totals[key] = _totals.get(key, 0.0) + spent

        return run

    _cls.run = _timed(_cls.run)
    _cls.run_with_iobinding = _timed(_cls.run_with_iobinding)

    def _dump() -> None:
        path = os.path.join(_DIR, f"{os.getpid()}.json")
        while True:
            time.sleep(0.5)
            with _lock:
                data = json.dumps(_totals)
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                f.write(data)
            os.replace(tmp, path)

    threading.Thread(target=_dump, name="cpu-probe", daemon=True).start()
