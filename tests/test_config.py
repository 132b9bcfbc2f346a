import dataclasses
import re
from pathlib import Path

import pytest

from sip_bridge.settings.config import Config, ConfigError
from sip_bridge.settings.loading import load

ROOT = Path(__file__).resolve().parent.parent


def test_example_documents_exactly_the_defaults() -> None:
    assert load(ROOT / "config.example.yaml") == load(None)
    # ... and they are the dataclasses' defaults, the "auto" keys worked out (for 2 workers
    # taking 8 calls each: slots for 32 calls)
    defaults = Config()
    auto = dataclasses.replace(defaults.media, processes=8)
    assert load(None) == dataclasses.replace(defaults, media=auto)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("sip:\n  port: 70000\n", "sip.port"),
        ("sip:\n  prot: 5060\n", "sip.prot"),
        ("media:\n  processes: -1\n", "media.processes"),
        ("media:\n  processes: 0\ninference:\n  workers: 0\n", "media.processes"),
        ("inference:\n  workers: 0\n", "inference.workers"),
        ("inference:\n  address: 10.0.0.1\n", "inference.address"),
        ("media:\n  result_address: 0.0.0.0\n", "media.result_address"),
        ("curve:\n  enabled: true\n", "curve.keys_dir"),
        ("media:\n  srtp: sometimes\n", "media.srtp"),
        ("media:\n  jitter_buffer:\n    init_ms: fast\n", "media.jitter_buffer.init_ms"),
        ("inference:\n  provider: tpu\n", "inference.provider"),
        ("inference:\n  device_id: -1\n", "inference.device_id"),
        ("inference:\n  gpu_mem_limit_mb: -1\n", "inference.gpu_mem_limit_mb"),
        ("inference:\n  calls_per_worker: -1\n", "inference.calls_per_worker"),
        ("inference:\n  max_backlog_s: -1\n", "inference.max_backlog_s"),
        ("media:\n  max_call_s: -1\n", "media.max_call_s"),
        ("media:\n  rtp_timeout_s: -1\n", "media.rtp_timeout_s"),
        ("media:\n  processes: lots\n", "media.processes"),
        ("captions:\n  keep_ended: -1\n", "captions.keep_ended"),
        ("captions:\n  history: 10\n", "captions.history"),
        ("webhooks:\n  - url: ftp://x\n    secret: s\n", "webhooks[0].url"),
        ("webhooks:\n  - url: http://x\n    secret: ''\n", "webhooks[0].secret"),
        ("inference:\n  port_base: 5060\n", "inference.port_base"),
        ("sip:\n  address: example.com\n", "sip.address"),
        ("- just\n- a list\n", "(top)"),
        ("sip: [\n", "(file)"),
    ],
)
def test_errors_name_the_file_and_the_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.key == key
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("key", "replacement"),
    [("webhook_retries", "delivery.webhook_horizon_s"), ("webhook_queue", "webhook_spool_max")],
)
def test_a_removed_key_names_its_replacement(tmp_path: Path, key: str, replacement: str) -> None:
    path = tmp_path / "old.yaml"
    path.write_text(f"delivery:\n  {key}: 5\n")
    with pytest.raises(ConfigError, match=replacement) as info:
        load(path)
    assert info.value.key == f"delivery.{key}"


def test_values_are_read(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(
        "sip: {address: 127.0.0.1, port: 5090}\n"
        "media: {processes: 2, calls_per_process: 4}\n"
        "inference: {workers: 2, max_wait_ms: 20}\n"
        "webhooks:\n  - {url: 'http://127.0.0.1:9/hook', secret: s3cret}\n"
    )
    cfg = load(path)
    assert cfg.sip.port == 5090 and cfg.public_address == "127.0.0.1"
    assert cfg.media.processes == 2 and cfg.inference.workers == 2
    assert cfg.worker_endpoint(1) == "tcp://127.0.0.1:5602"
    assert cfg.webhooks[0].secret == "s3cret"


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing.yaml"):
        load(tmp_path / "missing.yaml")


def test_the_gate_must_keep_the_audio_the_vad_pads_with(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("vad:\n  speech_pad_ms: 600\n")
    with pytest.raises(ConfigError, match="media.silence_gate.preroll_ms"):
        load(path)
    path.write_text("vad:\n  speech_pad_ms: 600\nmedia:\n  silence_gate:\n    preroll_ms: 600\n")
    assert load(path).vad.speech_pad_ms == 600


def test_telephony_keys_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    for text, key in (
        ("sip:\n  min_se_s: 30\n", "sip.min_se_s"),
        ("delivery:\n  info_package: 'a b'\n", "delivery.info_package"),
        ("delivery:\n  webhook_backoff_s: 0\n", "delivery.webhook_backoff_s"),
        ("delivery:\n  webhook_max_backoff_s: 0.1\n", "delivery.webhook_max_backoff_s"),
        ("delivery:\n  webhook_spool_max: 0\n", "delivery.webhook_spool_max"),
        ("sip:\n  metadata_headers: ['X-Ok', 'bad:name']\n", "sip.metadata_headers[1]"),
        ("media:\n  rtp_timeout_s: -1\n", "media.rtp_timeout_s"),
        ("media:\n  jitter_buffer:\n    max_ms: 150\n", "media.jitter_buffer"),
    ):
        path.write_text(text)
        with pytest.raises(ConfigError, match=re.escape(key)):
            load(path)


def test_the_webhook_spool_lives_on_a_lasting_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert Config().spool_path(2) == tmp_path / "state" / "sip-bridge" / "spool-media2.sqlite"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert Config().spool_path(0) == Path.home() / ".local/state/sip-bridge/spool-media0.sqlite"
    path = tmp_path / "c.yaml"
    path.write_text("delivery:\n  spool_dir: /var/lib/sip-bridge\n")
    assert load(path).spool_path(1) == Path("/var/lib/sip-bridge/spool-media1.sqlite")
