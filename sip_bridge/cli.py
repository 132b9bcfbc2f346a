"""The ``sip-bridge`` command.

``serve`` runs everything on one host. ``worker`` and ``media`` run one part each (``serve`` starts
them; they are also the entry points for splitting parts over containers or hosts).
``check-config`` validates a config file and prints the effective values.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from sip_bridge import logs
from sip_bridge.settings.config import Config, ConfigError, auto_processes
from sip_bridge.settings.loading import load

if TYPE_CHECKING:
    from inference.worker import WorkerSettings

log = logging.getLogger("sip_bridge")


def _setup_logging(cfg: Config, role: str, args: argparse.Namespace | None = None,
                   quiet: bool = False) -> None:  # fmt: skip
    """Log as the command line, ``serve`` (environment) or the config says; ``quiet``: only
    problems (a command whose stdout is its answer), unless the command line asks for more."""
    asked = getattr(args, "log_level", None)
    level, fmt = logs.chosen(asked, getattr(args, "log_format", None), cfg.log_level,
                             cfg.log_format)  # fmt: skip
    if quiet and asked is None:
        level = "WARNING"
    logs.setup(level, fmt, role)
    if role == "serve":
        logs.pass_down(level, fmt)


def worker_settings(cfg: Config, index: int) -> WorkerSettings:
    """Worker ``index``'s settings, from the config (``inference`` and ``vad``)."""
    from inference.batching import BatchPolicy
    from inference.turn_taking import TurnPolicy
    from inference.worker import WorkerSettings
    from media.endpointing import EndpointerSettings

    i, v = cfg.inference, cfg.vad
    return WorkerSettings(
        endpoint=cfg.worker_endpoint(index),
        policy=BatchPolicy(i.max_batch, float(i.max_wait_ms), i.max_padding),
        endpointing=EndpointerSettings(
            threshold=v.threshold,
            min_silence_ms=v.min_silence_ms,
            speech_pad_ms=v.speech_pad_ms,
            min_speech_ms=v.min_speech_ms,
            max_utterance_s=v.max_utterance_s,
        ),
        partial_interval_s=i.partial_interval_ms / 1000.0,
        partial_min_new_s=i.partial_min_new_ms / 1000.0,
        partial_cpu_share=i.partial_cpu_share,
        turn=TurnPolicy(v.turn_cue, v.turn_pause_ms),
        early_finals=i.early_finals,
        partial_nice=None if i.partial_nice < 0 else i.partial_nice,
        index=index,
        heartbeat_endpoint=cfg.heartbeat_endpoint(index),
        heartbeat_interval_s=i.heartbeat_interval_ms / 1000.0,
        curve=cfg.curve_keys(),
    )


def _capacity(cfg: Config) -> str:
    """What the config admits, as YAML comments above the effective values."""
    from sip_bridge.front import source_limits

    m, s = cfg.media, cfg.sip
    limit = source_limits.default_limit(cfg)
    why = "half the capacity, sip.per_source_max_calls: -1" if s.per_source_max_calls == -1 else (
        "sip.per_source_max_calls")  # fmt: skip
    i = cfg.inference
    workers = len(cfg.worker_targets())
    calls = source_limits.capacity(cfg)
    if not i.calls_per_worker:
        capacity = f"{calls} calls (the call slots; no per-worker limit, calls_per_worker: 0)"
    elif calls < workers * i.calls_per_worker:
        capacity = (
            f"{calls} calls (the call slots; the workers would take {workers * i.calls_per_worker})"
        )
    else:
        capacity = (f"{calls} calls ({workers} worker(s) x {i.calls_per_worker}, "
                    "inference.calls_per_worker)")  # fmt: skip
    capacity += "; beyond it, new calls get 503"
    if i.max_backlog_s:
        capacity += (f", and while every worker has over {i.max_backlog_s:g} s of audio "
                     "waiting (inference.max_backlog_s)")  # fmt: skip
    cores = len(os.sched_getaffinity(0))
    if i.provider != "cuda" and i.calls_per_worker and i.workers > cores:
        capacity += (f"\n# NOTE: {i.workers} workers on {cores} cores here; the CPU figure "
                     "of inference.calls_per_worker assumes a core per worker")  # fmt: skip
    pool = f"{m.processes} media processes x {m.calls_per_process}"
    if m.processes == auto_processes(cfg):
        pool += ("; media.processes: auto, twice the capacity, so that a source held to half "
                 "of it leaves room for the others")  # fmt: skip
    lines = [
        f"# capacity: {capacity}",
        f"# call slots: {source_limits.pool_calls(cfg)} ({pool})",
        f"# one source: at most {limit if limit else 'every'} call(s) ({why})"
        + "".join(f"; trunk {t.address}: {t.max_calls or 'no limit'}" for t in s.trunks),
        f"# an answered call not ACKed within {s.ack_timeout_s:g} s is hung up (sip.ack_timeout_s)",
    ]
    return "\n".join(lines)


def _run_worker(cfg: Config, index: int) -> int:
    from inference.model_files import ensure_converted
    from inference.moonshine import MoonshineModel
    from inference.providers import choose_providers
    from inference.silero import SileroVad
    from inference.speech_model import DraftedStreams
    from inference.worker import Worker
    from sip_bridge.serve.supervisor import notify_ready

    i, v = cfg.inference, cfg.vad
    if i.nice:
        os.nice(i.nice)
    files = ensure_converted(cfg.model_cache_path())
    providers = choose_providers(i.provider, i.device_id, i.gpu_mem_limit_mb * 1024 * 1024)
    # On a GPU, size the memory arena now for every batch shape, not during the first calls.
    warm_up = i.max_batch if providers.is_cuda else 0
    model = MoonshineModel(
        files,
        providers,
        threads=i.threads,
        warm_up_max_batch=warm_up,
        warm_up_seconds=(2.0, 5.0, v.max_utterance_s),
    )
    settings = worker_settings(cfg, index)
    streams = DraftedStreams(model, partial_model=model.for_partials() if i.partial_int8 else None)
    worker = Worker(settings, streams, SileroVad())

    import signal

    signal.signal(signal.SIGTERM, lambda *_: worker.request_stop())
    signal.signal(signal.SIGINT, lambda *_: worker.request_stop())
    log.debug("worker %d: listening on %s", index, settings.endpoint)
    worker.run(on_ready=lambda: notify_ready("worker", index))
    return 0


def _read_audio(path: str) -> tuple[Any, int]:
    """A wav file as int16 mono at 8 or 16 kHz (other rates resampled to 16 kHz, channels mixed)."""
    import wave

    import numpy as np
    import soxr

    try:
        with wave.open(path) as w:
            width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            data = w.readframes(w.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise ValueError(f"{path}: not a readable wav file ({exc or type(exc).__name__})") from exc
    if width != 2:
        raise ValueError(f"{path}: {8 * width}-bit samples; convert it to 16-bit PCM")
    pcm = np.frombuffer(data, dtype="<i2").reshape(-1, channels).mean(axis=1)
    if rate not in (8000, 16000):
        pcm, rate = soxr.resample(pcm, rate, 16000), 16000
    return np.clip(np.round(pcm), -32768, 32767).astype(np.int16), rate


def _progress(done: float, total_s: float) -> None:
    bar = "#" * int(done * 30)
    print(f"\r[{bar:<30}] {done:4.0%} of {total_s / 60:.1f} min", end="", file=sys.stderr,
          flush=True)  # fmt: skip


def _run_transcribe(cfg: Config, path: str, as_json: bool) -> int:
    import json

    from inference.file_pipeline import transcribe
    from inference.model_files import ensure_converted
    from inference.moonshine import MoonshineModel
    from inference.providers import choose_providers
    from media import wire
    from media.silence_gate import SilenceGate

    try:
        pcm, rate = _read_audio(path)
    except ValueError as exc:
        print(f"sip-bridge: {exc}", file=sys.stderr)
        return 2
    i, g = cfg.inference, cfg.media.silence_gate
    files = ensure_converted(cfg.model_cache_path())
    providers = choose_providers(i.provider, i.device_id, i.gpu_mem_limit_mb * 1024 * 1024)
    model = MoonshineModel(files, providers, threads=i.threads)
    gate = SilenceGate(rate, g.threshold_dbfs, g.hangover_ms, g.preroll_ms)
    total_s = len(pcm) / rate
    bar = sys.stderr.isatty() and total_s > 30

    def show(t: wire.Transcript) -> None:
        if bar:
            print("\r" + " " * 60 + "\r", end="", file=sys.stderr)
        if as_json:
            line = {"utterance": t.utterance, "start": round(t.start, 3), "end": round(t.end, 3),
                    "text": t.text, "confidence": round(t.confidence, 3)}  # fmt: skip
            print(json.dumps(line, ensure_ascii=False), flush=True)
        else:
            print(f"[{t.start:8.2f} - {t.end:8.2f}] {t.text}", flush=True)

    try:
        # In-process sockets: nothing to encrypt, whatever curve.enabled says.
        settings = dataclasses.replace(worker_settings(cfg, 0), curve=None)
        transcribe(pcm, rate, settings, model, gate, on_final=show,
                   on_progress=(lambda d: _progress(d, total_s)) if bar else None)  # fmt: skip
    except BrokenPipeError:  # `| head`: the reader has gone; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    if bar:
        print(file=sys.stderr)
    return 0


def _run_calls(cfg: Config, as_json: bool) -> int:
    import json
    import time

    from sip_bridge.calls import active_calls

    calls = active_calls.read_all(cfg.runtime_path())
    now = time.time()
    for c in calls:
        c["duration"] = round(max(now - float(c.get("started", now)), 0.0), 1)
    if as_json:
        print(json.dumps(calls, ensure_ascii=False, indent=1))
        return 0
    if not calls:
        print("no calls in progress")
        return 0
    tenants = any(c.get("tenant") for c in calls)
    head = f"{'tenant':<14}  " if tenants else ""
    print(f"{'call id':<32}  {'duration':>8}  {'codec':<10}  {'node':<16}  {head}from -> to")
    for c in calls:
        held = "  (on hold)" if c.get("on_hold") else ""
        tenant = f"{c.get('tenant', ''):<14}  " if tenants else ""
        print(f"{c['call_id']:<32}  {c['duration']:>7.0f}s  {c['codec']:<10}  {c['node']:<16}  "
              f"{tenant}{c['from']} -> {c['to']}{held}")  # fmt: skip
        for line in _conversation_lines(c.get("conversation")):
            print(f"  {line}")
    return 0


def _conversation_lines(conversation: Any) -> list[str]:
    """A SIPREC session's streams and who speaks on each, or a tagged leg's conversation and
    speaker, under its call's line. Names come from the network: shown without control
    characters, so that none can drive the terminal."""
    if not isinstance(conversation, dict):
        return []
    shown = _printable(conversation.get("id"))
    people = [p for p in conversation.get("participants") or () if isinstance(p, dict)]
    if conversation.get("kind") == "legs":
        speaker = next((p.get("name") for p in people if p.get("name")), None)
        return [f"leg of conversation {shown}" + (f": {_printable(speaker)}" if speaker else "")]
    aors = {p.get("name") or p.get("aor"): p.get("aor") for p in people}
    lines = [f"SIPREC session {shown}: {len(people)} participant(s)"]
    for s in conversation.get("streams") or ():
        if not isinstance(s, dict):
            continue
        name = s.get("name")  # the speaker's name, else its aor
        who = _printable(name) if name else "(nobody named)"
        aor = aors.get(name)
        if aor and aor != name:
            who += f" <{_printable(aor)}>"
        held = "  (on hold)" if s.get("on_hold") else ""
        lines.append(f"stream {_printable(s.get('stream'))}: {who}{held}")
    return lines


def _printable(value: Any) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in str(value))


def _demo_wav(given: str | None) -> str | None:
    """The wav to play: the one given, else a recorded prompt of Debian's Asterisk sounds."""
    if given:
        return given
    prompt = Path("/usr/share/asterisk/sounds/en/conf-getpin.wav")
    return str(prompt) if prompt.is_file() else None


def _run_demo(cfg: Config, wav_arg: str | None, to: str | None) -> int:
    from sip_bridge.front import kamailio
    from sip_bridge.serve.demo import run

    wav = _demo_wav(wav_arg)
    if wav is None:
        print("sip-bridge: give a wav file to play (or install asterisk-core-sounds-en-wav)",
              file=sys.stderr)  # fmt: skip
        return 2
    host, port = kamailio.probe_address(cfg)
    target = to or f"sip:transcribe@{host}:{port}"
    if to is None and not kamailio.probe(cfg, timeout=1.0):
        print(f"sip-bridge: nothing answers SIP on {host}:{port}; is `sip-bridge serve` running"
              " with this config?", file=sys.stderr)  # fmt: skip
        return 1

    def show(event: dict[str, Any]) -> None:
        if event.get("type") == "dtmf":
            print(f"[{event.get('time', 0):7.2f}] DTMF {event.get('digit')}", flush=True)
        elif event.get("type", "").startswith("transcript."):
            mark = "" if event["type"] == "transcript.final" else "  (partial)"
            print(f"[{event.get('start', 0):7.2f}] {event.get('text', '')}{mark}", flush=True)

    print(f"calling {target}, playing {wav}", file=sys.stderr)
    result = run(target, Path(wav), show, timeout_s=600)
    if result.status != 200:
        print(f"sip-bridge: the call was not answered ({result.status})", file=sys.stderr)
        return 1
    if not result.captions:
        print("sip-bridge: no captions came back in the call", file=sys.stderr)
        return 1
    return 0


def _spools(cfg: Config) -> list[tuple[str, Path]]:
    """(media process name, spool file) for every spool file in the spool directory."""
    base = cfg.spool_path(0).parent
    return [(p.stem.removeprefix("spool-"), p) for p in sorted(base.glob("spool-media*.sqlite"))]


def _run_dead_letters(cfg: Config, as_json: bool) -> int:
    import json
    import time

    from sip_bridge.delivery.spool import Spool, SpoolError

    rows: list[dict[str, Any]] = []
    for name, path in _spools(cfg):
        try:
            spool = Spool(path)
        except SpoolError as exc:
            print(f"sip-bridge: {exc}", file=sys.stderr)
            return 1
        try:
            for d in spool.dead_letters(limit=100_000):
                rows.append({
                    "id": f"{name}:{d.id}", "event_id": d.event_id, "type": d.type,
                    "endpoint": d.endpoint, "attempts": d.attempts, "created_at": d.created_at,
                    "parked_at": d.parked_at, "last_error": d.last_error,
                })  # fmt: skip
        finally:
            spool.close()
    if as_json:
        print(json.dumps(rows, indent=1))
    elif not rows:
        print("no dead letters")
    else:
        for r in rows:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["parked_at"]))
            print(f"{r['id']:<14} {r['event_id']:<40} {r['type']:<18} {when}  "
                  f"{r['attempts']} attempts  {r['endpoint']}  ({r['last_error']})")  # fmt: skip
    return 0


def _run_replay(cfg: Config, ids: list[str], everything: bool) -> int:
    import time

    from sip_bridge.delivery.spool import Spool

    if not ids and not everything:
        print("sip-bridge: name dead letters to replay (as listed by dead-letters) or --all",
              file=sys.stderr)  # fmt: skip
        return 2
    wanted: dict[str, list[int]] = {}
    for item in ids:
        name, _, number = item.partition(":")
        if not number.isdigit():
            print(f"sip-bridge: {item!r} is not a dead letter id like media0:12", file=sys.stderr)
            return 2
        wanted.setdefault(name, []).append(int(number))
    total = 0
    for name, path in _spools(cfg):
        spool = Spool(path)
        try:
            chosen = [d.id for d in spool.dead_letters(limit=100_000)] if everything else []
            total += spool.replay(chosen or wanted.get(name, []), time.time())
        finally:
            spool.close()
    print(f"{total} dead letters back in the queue; a running server sends them within 30 s")
    return 0


def _run_captions(cfg: Config) -> int:
    from sip_bridge.captions import server as captions_server
    from sip_bridge.serve.supervisor import notify_ready

    return captions_server.main(cfg, on_ready=lambda: notify_ready("captions", 0))


def _run_captions_url(cfg: Config) -> int:
    from sip_bridge.captions.server import page_url, token_path

    c = cfg.captions
    if not c.enabled:
        print("sip-bridge: captions.enabled is false in this config", file=sys.stderr)
        return 1
    url = page_url(cfg)
    token = c.tokens[0] if c.tokens else None
    if token is None and not any(t.captions_tokens for t in cfg.tenants):
        try:
            token = token_path(cfg).read_text().strip()
        except OSError:
            print(f"sip-bridge: no token in {token_path(cfg)}; is `sip-bridge serve` running"
                  " with this config?", file=sys.stderr)  # fmt: skip
            return 1
    # After '#': browsers never send it, and the page removes it from the address bar at once.
    print(f"{url}#token={token}" if token else f"{url}  (sign in with a tenant's token)")
    return 0


def _run_media(cfg: Config, index: int) -> int:
    from sip_bridge.calls import media_process
    from sip_bridge.serve.supervisor import notify_ready

    return media_process.main(cfg, index, on_ready=lambda: notify_ready("media", index))


SECRET_KEYS = ("secret", "tokens", "captions_tokens", "password", "ha1")


def _redacted(value: Any) -> Any:
    """The config with webhook secrets, captions tokens and SIP passwords (or their HA1) hidden
    (it is printed, and pasted into tickets)."""
    if isinstance(value, dict):
        return {
            k: ("<hidden>" if isinstance(v, str) else ["<hidden>"] * len(v))
            if k in SECRET_KEYS and v
            else _redacted(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redacted(v) for v in value]
    return value


def _run_keys(directory: str) -> int:
    from media.curve import CurveError
    from sip_bridge.serve.keys import generate

    try:
        written = generate(directory)
    except (CurveError, OSError) as exc:
        print(f"sip-bridge: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    print(f"set curve.enabled: true and curve.keys_dir: {directory} (copy the directory to every"
          " host; the .key_secret files are secrets)")  # fmt: skip
    return 0


def _run_rolling_restart(cfg: Config) -> int:
    """SIGHUP to the running ``serve`` (its pid file in the runtime dir); it does the rest and
    logs each step."""
    import signal

    from sip_bridge.serve.supervisor import PIDFILE

    pidfile = cfg.runtime_path() / PIDFILE
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError) as exc:
        print(f"sip-bridge: no running serve found through {pidfile}: {exc}", file=sys.stderr)
        return 1
    print(f"rolling restart asked of serve (pid {pid}); its log says how it goes")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sip-bridge", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (
        ("serve", "run the SIP front, the media processes and the workers on this host"),
        ("check-config", "validate a config file and print the effective configuration"),
        ("worker", "run one inference worker (started by serve)"),
        ("media", "run one PJSUA2 media process (started by serve)"),
        ("transcribe", "transcribe a wav file through the same pipeline as a call, no SIP"),
        ("calls", "list the calls in progress on this host (of the server using this config)"),
        ("demo", "call the running server, play a wav file and print the captions"),
        ("dead-letters", "list the webhook events given up on (past delivery.webhook_horizon_s)"),
        ("replay", "send dead letters again: the ids dead-letters lists, or --all"),
        ("captions-url", "print the link to the live captions page, with its token"),
        ("captions", "run the captions page and API (started by serve)"),
        ("rolling-restart", "restart the media processes one by one, dropping no call"),
        ("keys", "make the ZeroMQ CURVE key pairs for curve.keys_dir"),
    ):
        p = sub.add_parser(name, help=help_)
        if name == "transcribe":
            p.add_argument("file", help="a wav file (16-bit; any rate, resampled if needed)")
            p.add_argument("--json", action="store_true", help="one JSON object per utterance")
        if name == "demo":
            p.add_argument("file", nargs="?", help="a wav file (default: a recorded prompt)")
            p.add_argument(
                "--to", metavar="URI", help="whom to call (default: this config's front)"
            )
        if name == "dead-letters":
            p.add_argument("--json", action="store_true", help="a JSON list")
        if name == "replay":
            p.add_argument("ids", nargs="*", metavar="ID", help="e.g. media0:12")
            p.add_argument("--all", action="store_true", help="every dead letter")
        if name == "calls":
            p.add_argument("--json", action="store_true", help="a JSON list of the calls")
        if name == "keys":
            p.add_argument("dir", help="where to write them (then set curve.keys_dir to it)")
        p.add_argument("--config", metavar="FILE", help="YAML config (default: built-in defaults)")
        if name in ("worker", "media", "captions"):
            p.add_argument("--index", type=int, default=0)
        p.add_argument(
            "--workers", type=int, metavar="N", help="inference workers (overrides the config)"
        )
        p.add_argument(
            "--log-level", choices=logs.LEVELS, type=str.upper,
            help="log this and above (default: the config's log_level, INFO)",
        )  # fmt: skip
        p.add_argument(
            "--log-format", choices=logs.FORMATS,
            help="text, or json: one object per line, with call_id (log_format)",
        )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        cfg = load(args.config, workers=args.workers)
    except ConfigError as exc:
        print(f"sip-bridge: config error: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(_capacity(cfg))
        print(yaml.safe_dump(_redacted(dataclasses.asdict(cfg)), sort_keys=False), end="")
        return 0
    if args.command == "calls":
        return _run_calls(cfg, args.json)
    if args.command == "dead-letters":
        return _run_dead_letters(cfg, args.json)
    if args.command == "replay":
        return _run_replay(cfg, args.ids, args.all)
    if args.command == "captions-url":
        return _run_captions_url(cfg)
    if args.command == "rolling-restart":
        return _run_rolling_restart(cfg)
    if args.command == "keys":
        return _run_keys(args.dir)
    if args.command == "demo":
        _setup_logging(cfg, "demo", args, quiet=True)
        return _run_demo(cfg, args.file, args.to)
    if args.command == "transcribe":  # stdout is the transcript; only problems on stderr
        _setup_logging(cfg, "transcribe", args, quiet=True)
        return _run_transcribe(cfg, args.file, args.json)
    role = args.command if args.command == "serve" else f"{args.command}[{args.index}]"
    _setup_logging(cfg, role, args)
    if args.command != "serve":
        from sip_bridge.serve.supervisor import die_with_supervisor

        die_with_supervisor()
    if args.command == "serve":
        from sip_bridge.serve.supervisor import serve

        return serve(cfg, args.config)
    if args.command == "worker":
        return _run_worker(cfg, args.index)
    if args.command == "captions":
        return _run_captions(cfg)
    return _run_media(cfg, args.index)


if __name__ == "__main__":
    sys.exit(main())
