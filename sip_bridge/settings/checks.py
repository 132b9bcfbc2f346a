"""The checks of a loaded configuration: what crosses keys or bounds a value.

:func:`validate` works out the "auto" keys and runs one check per section (the SIP front, the
call pool, the wire between media processes and workers, media, the ports, inference, VAD,
delivery, captions, curve and metrics, then the tenants', the front's security and the per-source
limits, which their own modules own). Each raises :class:`ConfigError` naming the file and the
first bad dotted key; none changes a value but the "auto" ones.
"""

from __future__ import annotations

import dataclasses
import ipaddress

from media.curve import CurveError, CurveKeys
from sip_bridge.front import security as front_security
from sip_bridge.front import source_limits
from sip_bridge.settings import tenants
from sip_bridge.settings.config import AUTO, Config, ConfigError, auto_processes, reachable

# The characters of a SIP token (RFC 3261 25.1) besides letters and digits.
_TOKEN_CHARS = "-._!%*+`'~"


def validate(cfg: Config, source: str) -> Config:
    """Checks that cross keys or bound values, and works out the "auto" ones; raises
    ConfigError."""
    if cfg.media.processes == AUTO:
        cfg = dataclasses.replace(
            cfg, media=dataclasses.replace(cfg.media, processes=auto_processes(cfg))
        )
    # Addresses first: the wire's check reaches the workers' replies through them.
    _check_sip(cfg, source)
    _check_pool(cfg, source)
    _check_wire(cfg, source)
    _check_media(cfg, source)
    used = _check_ports(cfg, source)
    _check_inference(cfg, source)
    _check_vad(cfg, source)
    _check_delivery(cfg, source)
    _check_captions(cfg, source, used)
    _check_curve(cfg, source)
    _check_metrics(cfg, source, used)
    tenants.check(cfg, source)
    front_security.check(cfg, source)
    source_limits.check(cfg, source)
    return cfg


def _check_port(source: str, key: str, port: int) -> None:
    if not 1 <= port <= 65535:
        raise ConfigError(source, key, f"port {port} is out of range")


def _check_ip(source: str, key: str, address: str) -> None:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise ConfigError(source, key, f"{address!r} is not an IP address") from None


def _loopback(address: str) -> bool:
    return ipaddress.ip_address(address).is_loopback


def _check_sip(cfg: Config, source: str) -> None:
    s = cfg.sip
    _check_port(source, "sip.port", s.port)
    _check_ip(source, "sip.address", s.address)
    _check_ip(source, "sip.public_address", cfg.public_address)
    if not 90 <= s.min_se_s <= s.session_expires_s:
        raise ConfigError(
            source, "sip.min_se_s", "must be at least 90 and at most session_expires_s"
        )
    for n, name in enumerate(s.metadata_headers):
        if not name or not all(c.isalnum() or c in "-_*." for c in name):
            raise ConfigError(
                source, f"sip.metadata_headers[{n}]", f"{name!r} is not a header name"
            )


def _check_pool(cfg: Config, source: str) -> None:
    """How many media processes and workers, and the calls each takes."""
    m, i = cfg.media, cfg.inference
    for key, value in (
        ("media.calls_per_process", m.calls_per_process),
        ("media.rtp_ports_per_process", m.rtp_ports_per_process),
    ):
        if value < 1:
            raise ConfigError(source, key, "must be at least 1")
    if m.rtp_ports_per_process < 4 * m.calls_per_process:
        raise ConfigError(source, "media.rtp_ports_per_process", "need 4 ports per call at least")
    if i.calls_per_worker < 0 or i.max_backlog_s < 0:
        key = "inference.calls_per_worker" if i.calls_per_worker < 0 else "inference.max_backlog_s"
        raise ConfigError(source, key, "must be 0 (no limit) or more")
    if m.max_call_rate < 0:
        raise ConfigError(source, "media.max_call_rate", "must be 0 (no limit) or more")
    if m.processes < 0 or i.workers < 0:
        key = "media.processes" if m.processes < 0 else "inference.workers"
        raise ConfigError(source, key, "must be 0 or more")
    if m.processes and not (i.workers or i.remote):
        raise ConfigError(source, "inference.workers", "media processes need a worker: at least"
                          " 1 here, or some in inference.remote")  # fmt: skip
    if not (m.processes or i.workers):
        raise ConfigError(source, "media.processes", "nothing to run: no media process, no worker")


def _check_wire(cfg: Config, source: str) -> None:
    """Addresses of the sockets between media processes and workers; CURVE beyond loopback."""
    i, m = cfg.inference, cfg.media
    beyond: list[str] = []
    addresses = [("inference.address", i.address), ("media.result_address", m.result_address)]
    addresses += [(f"inference.remote[{n}].address", r.address) for n, r in enumerate(i.remote)]
    for key, address in addresses:
        try:
            if not _loopback(address):
                beyond.append(key)
        except ValueError:
            raise ConfigError(source, key, f"{address!r} is not an IP address") from None
    for n, r in enumerate(i.remote):
        _check_port(source, f"inference.remote[{n}].port", r.port)
        _check_port(source, f"inference.remote[{n}].heartbeat_port", r.heartbeat_port)
    replies = reachable(m.result_address, cfg.public_address)
    if m.processes and _loopback(replies) and any(not _loopback(r.address) for r in i.remote):
        raise ConfigError(source, "media.result_address", "workers on other hosts send"
                          " transcripts here: give an address they reach")  # fmt: skip
    if beyond and not cfg.curve.enabled and not cfg.curve.allow_plaintext:
        raise ConfigError(
            source,
            beyond[0],
            "beyond loopback, call audio and transcripts need"
            " curve.enabled (or curve.allow_plaintext: true on a trusted network)",
        )


def _check_media(cfg: Config, source: str) -> None:
    """The media processes' timeouts, replay bound, jitter buffer and silence gate."""
    m = cfg.media
    if m.drain_timeout_s < 0:
        raise ConfigError(source, "media.drain_timeout_s", "must be 0 or more")
    if m.rtp_timeout_s < 0 or m.max_call_s < 0:
        key = "media.rtp_timeout_s" if m.rtp_timeout_s < 0 else "media.max_call_s"
        raise ConfigError(source, key, "timeouts must not be negative")
    if m.replay_max_s < cfg.vad.max_utterance_s:
        raise ConfigError(source, "media.replay_max_s", "must be at least vad.max_utterance_s")
    jb = m.jitter_buffer
    if not 0 < jb.min_prefetch_ms <= jb.max_prefetch_ms <= jb.max_ms or jb.init_ms > jb.max_ms:
        raise ConfigError(
            source, "media.jitter_buffer",
            "need 0 < min_prefetch_ms <= max_prefetch_ms <= max_ms and init_ms <= max_ms",
        )  # fmt: skip
    gate = m.silence_gate
    if min(gate.preroll_ms, gate.hangover_ms) < cfg.vad.speech_pad_ms:
        # The gate would drop the audio the VAD pads utterances with, silently.
        raise ConfigError(
            source, "media.silence_gate.preroll_ms",
            "preroll_ms and hangover_ms must be at least vad.speech_pad_ms",
        )  # fmt: skip


def _check_ports(cfg: Config, source: str) -> dict[int, str]:
    """Every port range in range and none overlapping; returns port -> the key that takes it."""
    m, i = cfg.media, cfg.inference
    _check_port(source, "media.sip_port_base", m.sip_port_base + m.processes - 1)
    _check_port(source, "media.result_port_base", m.result_port_base + m.processes - 1)
    _check_port(source, "inference.port_base", i.port_base + i.workers - 1)
    _check_port(source, "inference.heartbeat_port_base", i.heartbeat_port_base + i.workers - 1)
    _check_port(
        source, "media.rtp_port_base", m.rtp_port_base + m.processes * m.rtp_ports_per_process
    )
    used: dict[int, str] = {cfg.sip.port: "sip.port"}
    ranges = (
        ("media.sip_port_base", m.sip_port_base, m.processes),
        ("media.result_port_base", m.result_port_base, m.processes),
        ("inference.port_base", i.port_base, i.workers),
        ("inference.heartbeat_port_base", i.heartbeat_port_base, i.workers),
    )
    for key, base, count in ranges:
        for port in range(base, base + count):
            if port in used:
                raise ConfigError(source, key, f"port {port} is also used by {used[port]}")
            used[port] = key
    return used


def _check_inference(cfg: Config, source: str) -> None:
    """The workers: batching, threads, priorities, partials, GPU and heartbeats."""
    i = cfg.inference
    for key, value in (("inference.max_batch", i.max_batch), ("inference.threads", i.threads)):
        if value < 1:
            raise ConfigError(source, key, "must be at least 1")
    if i.max_wait_ms < 0:
        raise ConfigError(source, "inference.max_wait_ms", "must not be negative")
    if not 0 <= i.max_padding <= 1:
        raise ConfigError(source, "inference.max_padding", "must be between 0 and 1")
    if not 0 <= i.nice <= 19:
        raise ConfigError(source, "inference.nice", "must be between 0 and 19")
    if i.device_id < 0 or i.gpu_mem_limit_mb < 0:
        key = "inference.device_id" if i.device_id < 0 else "inference.gpu_mem_limit_mb"
        raise ConfigError(source, key, "must not be negative")
    _check_partials(cfg, source)
    _check_heartbeats(cfg, source)


def _check_partials(cfg: Config, source: str) -> None:
    i = cfg.inference
    if not -1 <= i.partial_nice <= 19:
        raise ConfigError(source, "inference.partial_nice", "must be between -1 and 19")
    if i.partial_interval_ms < 0 or i.partial_min_new_ms < 0:
        raise ConfigError(source, "inference.partial_interval_ms", "must not be negative")
    if not 0 < i.partial_cpu_share <= 1:
        raise ConfigError(source, "inference.partial_cpu_share", "must be in (0, 1]")


def _check_heartbeats(cfg: Config, source: str) -> None:
    i = cfg.inference
    if i.heartbeat_interval_ms < 10:
        raise ConfigError(source, "inference.heartbeat_interval_ms", "must be at least 10")
    if i.heartbeat_timeout_ms < 3 * i.heartbeat_interval_ms:
        raise ConfigError(
            source, "inference.heartbeat_timeout_ms", "must be at least 3 heartbeat intervals"
        )
    if i.stall_timeout_s < 1:
        raise ConfigError(source, "inference.stall_timeout_s", "must be at least 1 second")


def _check_vad(cfg: Config, source: str) -> None:
    v = cfg.vad
    if not 0 < v.threshold < 1:
        raise ConfigError(source, "vad.threshold", "must be between 0 and 1")
    if v.max_utterance_s < 1 or v.max_utterance_s > 30:
        raise ConfigError(source, "vad.max_utterance_s", "must be between 1 and 30 seconds")
    if v.turn_pause_ms < 0:
        raise ConfigError(source, "vad.turn_pause_ms", "must not be negative")


def _check_delivery(cfg: Config, source: str) -> None:
    """SIP INFO's package, the webhook retry policy, and the operator's webhooks."""
    d = cfg.delivery
    if not d.info_package or not all(c.isalnum() or c in _TOKEN_CHARS for c in d.info_package):
        raise ConfigError(source, "delivery.info_package", "must be a SIP token")
    for key in ("webhook_timeout_s", "webhook_backoff_s"):
        if getattr(d, key) <= 0:
            raise ConfigError(source, f"delivery.{key}", "must be positive")
    if d.webhook_max_backoff_s < d.webhook_backoff_s:
        raise ConfigError(source, "delivery.webhook_max_backoff_s", "must be >= webhook_backoff_s")
    if d.webhook_horizon_s < 0:
        raise ConfigError(source, "delivery.webhook_horizon_s", "must not be negative")
    if d.webhook_spool_max < 1:
        raise ConfigError(source, "delivery.webhook_spool_max", "must be at least 1")
    if d.event_version not in (1, 2):
        raise ConfigError(
            source, "delivery.event_version", "must be 1 or 2 (the event schemas shipped)"
        )
    for n, hook in enumerate(cfg.webhooks):
        if not hook.url.startswith(("http://", "https://")):
            raise ConfigError(source, f"webhooks[{n}].url", "must be an http:// or https:// URL")
        if not hook.secret:
            raise ConfigError(source, f"webhooks[{n}].secret", "must not be empty")


def _check_captions(cfg: Config, source: str, used: dict[int, str]) -> None:
    """The captions page's address and ports (added to ``used``) and its bounds."""
    c = cfg.captions
    _check_ip(source, "captions.address", c.address)
    for key, port in (("captions.port", c.port), ("captions.feed_port", c.feed_port)):
        _check_port(source, key, port)
        if c.enabled and port in used:
            raise ConfigError(source, key, f"port {port} is also used by {used[port]}")
        used[port] = key
    if c.keep_ended < 0:
        raise ConfigError(source, "captions.keep_ended", "must be 0 or more")
    if c.history < 100:
        raise ConfigError(source, "captions.history", "must be at least 100")


def _check_curve(cfg: Config, source: str) -> None:
    if not cfg.curve.enabled:
        return
    if not cfg.curve.keys_dir:
        raise ConfigError(source, "curve.keys_dir", "needed with curve.enabled: make one"
                          " with `sip-bridge keys DIR`")  # fmt: skip
    try:
        CurveKeys.load(cfg.curve.keys_dir)
    except CurveError as exc:
        raise ConfigError(source, "curve.keys_dir", str(exc)) from None


def _check_metrics(cfg: Config, source: str, used: dict[int, str]) -> None:
    m = cfg.metrics
    _check_ip(source, "metrics.address", m.address)
    _check_port(source, "metrics.port", m.port)
    if m.enabled and m.port in used:
        raise ConfigError(source, "metrics.port", f"port {m.port} is also used by {used[m.port]}")
