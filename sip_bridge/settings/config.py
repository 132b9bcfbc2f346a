"""The configuration's schema: every section as a frozen dataclass, with its documented default.

One frozen :class:`Config` is loaded from YAML and checked once, at the entry point
(:func:`sip_bridge.settings.loading.load`, checks in :mod:`sip_bridge.settings.checks`); this
module owns what the keys are, their defaults (see ``config.example.yaml``), the small accessors
the processes read them through, and :class:`ConfigError`, which names the file and the dotted key.

Each default is written here once. A module fed by the config that keeps a default of its own
(so that tests can build it bare) takes it from the named constant below, never from a second
copy of the number. This module imports nothing else of ``sip_bridge``, so that every part may
import it without an import cycle.
"""

from __future__ import annotations

import ipaddress
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from media.curve import CurveKeys
from sip_bridge.delivery.events import EVENT_VERSION

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]  # log_level, --log-level
LogFormat = Literal["text", "json"]  # log_format, --log-format

# Defaults that the modules this config feeds also use as their own constructor defaults.
# A worker silent this long is dead (inference.heartbeat_timeout_ms; the uplink's WorkerRouter).
HEARTBEAT_TIMEOUT_MS = 1500
# A worker whose loop has not turned for this long is stuck (inference.stall_timeout_s).
STALL_TIMEOUT_S = 15.0
# Admission: calls one 1-thread CPU worker takes (inference.calls_per_worker), and what "auto"
# sizes the media pool for when that limit is off.
CALLS_PER_CPU_WORKER = 8
REPLAY_MAX_S = 60.0  # media.replay_max_s; the audio sender's replay bound
# delivery.webhook_*: the webhook dispatcher's and the spool's retry policy.
WEBHOOK_TIMEOUT_S = 5.0
WEBHOOK_BACKOFF_S = 0.5
WEBHOOK_MAX_BACKOFF_S = 300.0
WEBHOOK_HORIZON_S = 86400.0
WEBHOOK_SPOOL_MAX = 100000
# captions.history and captions.keep_ended: the caption hub's bounds.
CAPTIONS_HISTORY = 10000
CAPTIONS_KEEP_ENDED = 20
# The speech model a tenant gets unless it names another (tenants.MODELS lists those available).
DEFAULT_MODEL = "moonshine-base-en"


class ConfigError(Exception):
    def __init__(self, source: str, key: str, problem: str) -> None:
        super().__init__(f"{source}: {key}: {problem}")
        self.source, self.key, self.problem = source, key, problem


@dataclass(frozen=True, slots=True)
class SipUser:
    """A trunk's SIP digest credentials (``sip.auth.users``)."""

    user: str
    password: str = ""
    # Or MD5("user:realm:password") in hex, so the config need not hold the password itself.
    ha1: str = ""


@dataclass(frozen=True, slots=True)
class SipAuthConfig:
    """SIP digest authentication (RFC 3261 22.3) of every new call at the front: with users
    listed, an INVITE without good credentials gets 407 Proxy Authentication Required."""

    realm: str = "sip-bridge"
    users: tuple[SipUser, ...] = ()


@dataclass(frozen=True, slots=True)
class SipTlsConfig:
    """SIP over TLS at the front (RFC 3261 26.2; RFC 5630), beside UDP."""

    port: int = 0  # 0 = no TLS listener; 5061 is the usual port
    certificate: str = ""  # PEM file: the front's certificate (and its chain)
    private_key: str = ""  # PEM file, unencrypted
    # PEM file of CAs: a client must present a certificate one of them signed (mutual TLS).
    # "" = clients are not asked for one (trunks are then told apart by source and digest auth).
    ca_list: str = ""


@dataclass(frozen=True, slots=True)
class SipTrunk:
    """A listed trunk (``sip.trunks``): its calls are limited by ``max_calls``, not by
    ``sip.per_source_max_calls``."""

    address: str  # an address or network ("192.0.2.10", "10.1.0.0/16")
    max_calls: int = 0  # per source address in it; 0 = no limit


@dataclass(frozen=True, slots=True)
class SipFloodConfig:
    """Kamailio's pike flood limit: a source sending more requests than this in a window is
    ignored (no answer) until its rate falls back under it. Our media processes are exempt."""

    requests: int = 200  # per source address and window; 0 = no limit
    window_s: int = 2


@dataclass(frozen=True, slots=True)
class SipConfig:
    address: str = "0.0.0.0"  # where the front (Kamailio) listens for the trunk
    port: int = 5060  # UDP port the trunk sends to (and TCP's, with `tcp`)
    # SIP over TCP on the same address and port (RFC 3261 §18: a server must take both; a
    # request over the MTU cannot go over UDP). In-dialog requests go back over the caller's
    # connection.
    tcp: bool = True
    # Address written into SDP (RTP) and Record-Route, as the PBX must reach it. "" = derived from
    # `address` (127.0.0.1 when that is a wildcard).
    public_address: str = ""
    # Answer OPTIONS pings from the trunk at the front.
    answer_options: bool = True
    # Session timers (RFC 4028), used when the peer asks for them: the interval we ask for, and
    # the shortest we accept (a 422 asks for more). A call not refreshed in time is hung up.
    session_expires_s: int = 1800
    min_se_s: int = 90
    # Headers of the INVITE copied into call.started (`headers`), by name; `*` matches any
    # characters ("X-*": every X- header). Case-insensitive.
    metadata_headers: tuple[str, ...] = ("X-*",)
    # Trunk allowlist: only these addresses or networks ("192.0.2.10", "10.1.0.0/16") may send
    # requests; others are dropped without an answer. () = every source.
    allow: tuple[str, ...] = ()
    auth: SipAuthConfig = field(default_factory=SipAuthConfig)
    tls: SipTlsConfig = field(default_factory=SipTlsConfig)
    flood: SipFloodConfig = field(default_factory=SipFloodConfig)
    # A call answered (200 OK) but not confirmed by an ACK within this long is half-open: the
    # media process ends it with a BYE (RFC 3261 §13.3.1.4) and its slot is free again, at the
    # front too. RFC 3261 waits 32 s (64*T1); an ACK normally comes within one round trip.
    ack_timeout_s: float = 4.0
    # Concurrent calls one source address may hold, half-open ones included; over it, new calls
    # from it get over_limit_status (503 + Retry-After, or 486). -1 = half the calls the host
    # takes (source_limits.capacity: no one stranger can take them all), 0 = no limit. Listed
    # trunks ({address, max_calls}, max_calls 0 = no limit) have their own: list your PBX to
    # give it the whole pool.
    per_source_max_calls: int = -1
    trunks: tuple[SipTrunk, ...] = ()
    over_limit_status: Literal[503, 486] = 503
    # Requests whose User-Agent names a known SIP scanner (sipvicious' "friendly-scanner", ...)
    # are dropped without an answer.
    drop_scanners: bool = True


@dataclass(frozen=True, slots=True)
class JitterBufferConfig:
    # Start small and let PJSIP's adaptive buffer grow on a jittery line (up to max_prefetch_ms):
    # on a clean one a 100 ms floor only delayed every final (bench/word_lag.py: -60 ms at p50;
    # 80 ms of jitter with 5% loss is still absorbed, tests/test_impairments.py).
    init_ms: int = 40
    min_prefetch_ms: int = 20
    max_prefetch_ms: int = 200
    # The most audio held. With no discard the buffer shrinks only by running dry, so a sender
    # whose clock runs fast, or a burst after a network stall, raises the call's latency up to
    # this; then each new frame pushes out the oldest (0.5 % fast: 10 ms every 2 s).
    max_ms: int = 250
    # "none": frames go only when the buffer is full. "static" / "progressive": PJSIP shrinks
    # the buffer towards its measured burst level (20-40 ms here), which holds latency flat
    # against any drift but, on a busy host, runs it dry again and again: each time 100 ms of
    # silence goes in and frames go out (bench/clock_drift.py).
    discard: Literal["none", "static", "progressive"] = "none"


@dataclass(frozen=True, slots=True)
class SilenceGateConfig:
    threshold_dbfs: float = -50.0  # frames quieter than this are silence
    # Keep sending this long after the last loud frame. Above vad.min_silence_ms, the worker
    # decides an utterance's end on real audio; below it, on time marks that lag the preroll.
    hangover_ms: int = 700
    preroll_ms: int = 200  # send this much audio from before the first loud frame


@dataclass(frozen=True, slots=True)
class MediaConfig:
    # PJSUA2 media processes behind the front; "auto": call slots for twice the calls the
    # workers take (inference.calls_per_worker each), so that the slots are never what runs out
    # first, half-open calls and refused INVITEs included (3 on the default 2 workers was 12
    # slots for 16 calls).
    processes: int = field(default=-1, metadata={"auto": True})
    calls_per_process: int = 4  # the pjsua2-python wheel caps a process at 4
    # New calls the front sends one media process per second; beyond it the next process is
    # tried, then 503 + Retry-After. A burst of short calls otherwise exhausts the wheel's
    # 64-handle ioqueue (each call holds two RTP sockets until 0.5 s after it ends) and PJSIP
    # aborts the process. 0 = no limit (a PJSIP built with a bigger ioqueue).
    max_call_rate: int = 10
    sip_port_base: int = 5071  # process i listens on 127.0.0.1:(base + i)
    rtp_port_base: int = 40000  # process i takes RTP ports from base + i * rtp_ports_per_process
    rtp_ports_per_process: int = 200
    jitter_buffer: JitterBufferConfig = field(default_factory=JitterBufferConfig)
    silence_gate: SilenceGateConfig = field(default_factory=SilenceGateConfig)
    result_port_base: int = 5701  # process i pulls results on result_address:(base + i)
    # Where workers send transcripts back; workers on other hosts must reach it (then
    # curve.enabled is required). 0.0.0.0 binds every address and tells workers public_address.
    result_address: str = "127.0.0.1"
    call_end_flush_s: float = 10.0  # wait this long for a worker's last finals after BYE
    # No RTP received for this long (and the call not on hold): hang up, reason "rtp timeout".
    # 0 = never.
    rtp_timeout_s: float = 30.0
    max_call_s: float = (
        14400.0  # a call longer than this is hung up (reason "max duration"); 0 = no limit
    )
    # Audio of each call kept until its worker confirms it transcribed it, to replay to another
    # worker if that one dies. Only a worker dead or stuck this long makes a replay fall short.
    replay_max_s: float = REPLAY_MAX_S
    # SIGTERM (or a rolling restart) lets calls in progress end by themselves for up to this
    # long while the front refuses new ones (503, Retry-After); then they are hung up
    # (reason "shutdown"). A second SIGTERM or SIGINT cuts the wait short.
    drain_timeout_s: float = 300.0
    # SRTP with SDES keys (RFC 4568): "optional" answers an RTP/SAVP offer (or crypto lines) with
    # SRTP and a plain one with RTP; "mandatory" refuses plain RTP (488); "off" refuses SRTP.
    # The keys travel in the SDP: only SIP over TLS at the front keeps them secret.
    srtp: Literal["optional", "mandatory", "off"] = "optional"


@dataclass(frozen=True, slots=True)
class RemoteWorker:
    """An inference worker on another host (its ``inference.address`` and ports there)."""

    address: str
    port: int  # its audio port (port_base + i on that host)
    heartbeat_port: int  # its heartbeat port (heartbeat_port_base + i there)


@dataclass(frozen=True, slots=True)
class InferenceConfig:
    workers: int = 2  # worker processes on this host (`serve --workers N` overrides)
    # Where this host's workers listen. Loopback unless media processes on other hosts use them
    # (they list them in inference.remote); beyond loopback, curve.enabled is required.
    address: str = "127.0.0.1"
    port_base: int = 5601  # worker i pulls audio on address:(base + i)
    heartbeat_port_base: int = 5651  # worker i publishes heartbeats on address:(base + i)
    # Workers on other hosts that this host's media processes also send calls to.
    remote: tuple[RemoteWorker, ...] = ()
    heartbeat_interval_ms: int = 250
    # A worker silent this long is dead: its calls move to another worker, replaying their open
    # utterance.
    heartbeat_timeout_ms: int = HEARTBEAT_TIMEOUT_MS
    # A worker whose loop has not turned for this long (its heartbeats say so) is stuck: its calls
    # move too. Above the longest model batch this machine runs.
    stall_timeout_s: float = STALL_TIMEOUT_S
    # Admission: a new call gets 503 (and the front's Retry-After) while every live worker has
    # this many calls (8: bench/word_lag.py held caption lag p95 under 1 s at 16 calls on two
    # 1-thread CPU workers, 1.8 s at 24) or is behind (max_backlog_s). 0: no limit (a GPU worker
    # takes more: measure it with bench/worker_capacity.py --provider cuda).
    calls_per_worker: int = CALLS_PER_CPU_WORKER
    # A worker whose heartbeats report more than this much audio waiting for its model, twice
    # in a row, takes no new calls: at the 15-25 audio-s per s one CPU worker decodes, about
    # half a second of finals queued. 0: off.
    max_backlog_s: float = 8.0
    max_batch: int = 8  # utterances transcribed together
    max_wait_ms: int = 50  # longest a ready utterance waits for others to batch with
    max_padding: float = 0.25  # longest padding, as a fraction of a clip, when batching
    threads: int = 1  # ONNX Runtime intra-op threads per worker
    # A transcript.partial of a growing utterance at most this often, when the CPU allows; the
    # stalest caption goes first (inference/partial_scheduler.py). 0: no partials.
    partial_interval_ms: int = 300
    partial_min_new_ms: int = 200  # new speech before an utterance gets another partial
    # Of the partial thread's time, the share partials may use (1.0: as much as is free).
    partial_cpu_share: float = 1.0
    # Partials run on their own thread this much nicer (Linux nice) than the worker's loop, so a
    # final never waits behind a partial; -1: partials run in the loop, between finals.
    partial_nice: int = 10
    # Partials through Moonshine's INT8 encoder (about half the encoder's CPU time; finals always
    # use the exact one). CPU provider only; false: partials use the finals' encoder.
    partial_int8: bool = True
    # Decode an utterance's final while the silence that ends it is still being waited for
    # (from speech end + vad.speech_pad_ms), so the final is ready when the pause is long enough.
    early_finals: bool = True
    provider: Literal["auto", "cuda", "cpu"] = "auto"
    device_id: int = 0  # the GPU the workers use, with CUDA
    # Cap on each CUDA session's memory arena (MiB); 0 = none. The arena grows by what is asked,
    # not by doubling, and the model is warmed up at start for every batch size up to max_batch.
    gpu_mem_limit_mb: int = 0
    # Workers run this much nicer than the media processes: a worker can wait, a 20 ms audio
    # frame cannot (a starved PJSIP clock thread loses audio for every call of its process).
    nice: int = 5
    model_cache: str = ""  # "" = $XDG_CACHE_HOME/sip-bridge or ~/.cache/sip-bridge


@dataclass(frozen=True, slots=True)
class VadConfig:
    threshold: float = 0.5  # Silero speech probability that starts speech
    min_silence_ms: int = 500  # silence that ends an utterance
    # audio kept before and after speech; the early final starts once this much pause is heard
    # (200 -> 120 ms with turn_pause_ms 120: finals 0.47 -> 0.33 s p50 at 1 call, same WER,
    # bench/word_lag.py; at the default turn_pause_ms it makes the early final ready sooner)
    speech_pad_ms: int = 120
    min_speech_ms: int = 200  # shorter bursts are dropped
    max_utterance_s: float = 15.0  # longer speech is cut here
    # End an utterance at a short pause (turn_pause_ms, at least speech_pad_ms) when its early
    # final's text ends a sentence ("punctuation"), else after min_silence_ms; "off": always
    # after min_silence_ms. Needs inference.early_finals.
    turn_cue: Literal["punctuation", "off"] = "punctuation"
    # 400: longer than the pauses between sentences inside one recorded prompt (up to 352 ms
    # in the Asterisk prompts), so a talker's "Login incorrect.  Please enter..." stays one
    # final; 120-200 ends turns sooner where two finals for two sentences are fine.
    turn_pause_ms: int = 400


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    url: str
    secret: str


@dataclass(frozen=True, slots=True)
class TenantMatch:
    """One way to recognise a tenant's calls; every key given must hold (a rule with a dialled
    number and a source matches calls to that number from that address only)."""

    to_user: str = ""  # a regex the whole To user (the dialled number) must match: "5550100"
    header: str = ""  # "Name: value": the INVITE has this header with exactly this value
    source: str = ""  # the sender's IP address or network, "192.0.2.10" or "10.1.0.0/16"

    def describe(self) -> str:
        parts = [f"to_user ~ {self.to_user}" if self.to_user else "",
                 f"header {self.header}" if self.header else "",
                 f"source {self.source}" if self.source else ""]  # fmt: skip
        return " and ".join(p for p in parts if p)

    def header_name_value(self) -> tuple[str, str]:
        name, _, value = self.header.partition(":")
        return name.strip(), value.strip()

    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(self.source, strict=False)


@dataclass(frozen=True, slots=True)
class TenantConfig:
    name: str
    # The tenant's calls are those matching any of these rules (tenants are tried in order;
    # the first whose rule matches takes the call).
    match: tuple[TenantMatch, ...] = ()
    max_calls: int = 0  # calls of this tenant at once, over every media process; 0 = no limit
    limit_status: int = 486  # a call over max_calls gets 486 Busy Here, or 503 with Retry-After
    webhooks: tuple[WebhookConfig, ...] = ()  # this tenant's calls only (with their secrets)
    sip_info: bool | None = None  # captions into the call as SIP INFO; None = delivery.sip_info
    model: str = DEFAULT_MODEL  # tenants.MODELS lists those available
    language: str = "en"
    # Bearer tokens of the captions page and API that see this tenant's calls (only).
    captions_tokens: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UnknownTenantConfig:
    """Calls that no tenant's rule matches (only when tenants are configured)."""

    tenant: str = ""  # "" = refuse them; or the name of the tenant that takes them
    status: int = 403  # the SIP answer that refuses them
    reason: str = "No tenant for this call"


@dataclass(frozen=True, slots=True)
class CaptionsConfig:
    """The live captions page and its API (Server-Sent Events), served by ``serve``."""

    enabled: bool = True
    address: str = "127.0.0.1"  # where the page and API listen (HTTP; put TLS in front)
    port: int = 8090
    # The media processes publish every event to the captions server on 127.0.0.1:feed_port.
    feed_port: int = 5790
    # Bearer tokens that see every tenant's calls. With none here and none for any tenant, one
    # is made at each start and written to runtime_dir/captions.token (mode 0600).
    tokens: tuple[str, ...] = ()
    # Ended calls still listed (and on the page), newest first.
    keep_ended: int = CAPTIONS_KEEP_ENDED
    # Events kept so a client that reconnects gets what it missed.
    history: int = CAPTIONS_HISTORY


@dataclass(frozen=True, slots=True)
class CurveConfig:
    """ZeroMQ CURVE between media processes and workers (keys from `sip-bridge keys DIR`)."""

    enabled: bool = False
    keys_dir: str = ""
    # Workers or results beyond loopback without CURVE are refused unless this is set (a
    # network where transcripts and call audio may travel in clear).
    allow_plaintext: bool = False


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """``serve``'s operator endpoint: /metrics (Prometheus), /healthz, /readyz."""

    enabled: bool = True
    address: str = "127.0.0.1"
    port: int = 9095


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    sip_info: bool = True  # send each transcript.final (and dtmf) into the call as SIP INFO
    # The RFC 6086 Info-Package our INFOs carry (`Info-Package:` header). A peer whose INVITE
    # lists packages in Recv-Info gets INFOs only if this one is among them; a peer that names
    # none (most PBXs) gets them unless `sip_info_legacy` is off.
    info_package: str = "transcript"
    sip_info_legacy: bool = True
    # transcript.partial into the call too, at most one per call this often (finals always go).
    sip_info_partials: bool = False
    sip_info_partial_interval_ms: int = 1000
    # Webhook events are spooled on disk (spool_dir/spool-media<N>.sqlite) before delivery and
    # retried with jittered back-off doubling from webhook_backoff_s up to webhook_max_backoff_s,
    # until webhook_horizon_s after the event; then parked as dead letters.
    webhook_timeout_s: float = WEBHOOK_TIMEOUT_S
    webhook_backoff_s: float = WEBHOOK_BACKOFF_S
    webhook_max_backoff_s: float = WEBHOOK_MAX_BACKOFF_S
    webhook_horizon_s: float = WEBHOOK_HORIZON_S
    # Events pending per endpoint and media process; then dropped.
    webhook_spool_max: int = WEBHOOK_SPOOL_MAX
    # Where the spool lives: a disk that survives reboots. "" = $XDG_STATE_HOME/sip-bridge or
    # ~/.local/state/sip-bridge.
    spool_dir: str = ""
    # The event contract sent (sip_bridge/delivery/schemas/v<N>): 2 has conversations and
    # speakers (SIPREC); 1 for consumers that still validate against it.
    event_version: int = EVENT_VERSION


@dataclass(frozen=True, slots=True)
class Config:
    sip: SipConfig = field(default_factory=SipConfig)
    media: MediaConfig = field(default_factory=MediaConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    vad: VadConfig = field(default_factory=VadConfig)
    # Every call's events, whatever its tenant (the operator's); tenants add their own.
    webhooks: tuple[WebhookConfig, ...] = ()
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    captions: CaptionsConfig = field(default_factory=CaptionsConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    curve: CurveConfig = field(default_factory=CurveConfig)
    tenants: tuple[TenantConfig, ...] = ()
    unknown_tenant: UnknownTenantConfig = field(default_factory=UnknownTenantConfig)
    runtime_dir: str = ""  # "" = $XDG_RUNTIME_DIR/sip-bridge or /tmp/sip-bridge-<uid>
    log_level: LogLevel = "INFO"
    log_format: LogFormat = "text"  # json: one object per line, for log shippers

    @property
    def public_address(self) -> str:
        if self.sip.public_address:
            return self.sip.public_address
        if self.sip.address in ("0.0.0.0", "::"):
            return "127.0.0.1"
        return self.sip.address

    def runtime_path(self) -> Path:
        if self.runtime_dir:
            return Path(self.runtime_dir).expanduser()
        base = os.environ.get("XDG_RUNTIME_DIR")
        if base:
            return Path(base) / "sip-bridge"
        return Path(f"/tmp/sip-bridge-{os.getuid()}")

    def state_path(self) -> Path:
        """What must survive a restart or reboot: webhook spools and call journals."""
        if self.delivery.spool_dir:
            return Path(self.delivery.spool_dir).expanduser()
        state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return Path(state) / "sip-bridge"

    def spool_path(self, index: int) -> Path:
        """Media process ``index``'s webhook spool."""
        return self.state_path() / f"spool-media{index}.sqlite"

    def journal_path(self, index: int) -> Path:
        """Media process ``index``'s calls in progress (see ``call_journal``)."""
        return self.state_path() / f"calls-media{index}.sqlite"

    def model_cache_path(self) -> Path:
        if self.inference.model_cache:
            return Path(self.inference.model_cache).expanduser()
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base) / "sip-bridge"

    def worker_endpoint(self, index: int) -> str:
        """Where this host's worker ``index`` binds its audio socket."""
        return _tcp(self.inference.address, self.inference.port_base + index)

    def heartbeat_endpoint(self, index: int) -> str:
        return _tcp(self.inference.address, self.inference.heartbeat_port_base + index)

    def worker_targets(self) -> list[tuple[str, str]]:
        """(audio, heartbeat) endpoints of every worker this host's media processes use: its
        own (over loopback when they listen on every address), then the remote ones."""
        i = self.inference
        local = reachable(i.address, "127.0.0.1")
        own = [(_tcp(local, i.port_base + n), _tcp(local, i.heartbeat_port_base + n))
               for n in range(i.workers)]  # fmt: skip
        return own + [
            (_tcp(r.address, r.port), _tcp(r.address, r.heartbeat_port)) for r in i.remote
        ]

    def result_endpoint(self, index: int) -> str:
        """Where media process ``index`` binds its result socket."""
        return _tcp(self.media.result_address, self.media.result_port_base + index)

    def result_reply_endpoint(self, index: int) -> str:
        """What workers are told to send media process ``index``'s results to."""
        host = reachable(self.media.result_address, self.public_address)
        return _tcp(host, self.media.result_port_base + index)

    def media_sip_port(self, index: int) -> int:
        return self.media.sip_port_base + index

    def curve_keys(self) -> CurveKeys | None:
        """The CURVE keys when ``curve.enabled`` (raises CurveError if they cannot be read)."""
        if not self.curve.enabled:
            return None
        return CurveKeys.load(self.curve.keys_dir)


def _tcp(host: str, port: int) -> str:
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


def reachable(bound: str, otherwise: str) -> str:
    """The address to reach a socket bound on ``bound`` (a wildcard is reached ``otherwise``)."""
    return otherwise if bound in ("0.0.0.0", "::") else bound


AUTO = -1  # an "auto" key, until checks.validate() works out its value


def auto_processes(cfg: Config) -> int:
    """media.processes "auto": twice the workers' calls (see MediaConfig.processes)."""
    i = cfg.inference
    workers = i.workers + len(i.remote)
    # With no per-worker limit (inference.calls_per_worker: 0), "auto" sizes the pool for the
    # CPU figure.
    per_worker = i.calls_per_worker or CALLS_PER_CPU_WORKER
    return max(1, math.ceil(2 * workers * per_worker / cfg.media.calls_per_process))
