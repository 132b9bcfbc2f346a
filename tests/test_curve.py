"""ZeroMQ CURVE (issue 6, point 4): keys made by ``sip-bridge keys``; real sockets show that an
authorised client gets through and that a client with another key, or none, gets nothing in;
a real ``serve`` with CURVE on transcribes a call (every socket between media processes and
the worker encrypted)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.auth

from inference.worker import authenticator
from media.curve import CurveError, CurveKeys
from sip_bridge.serve.keys import generate
from tests.support import speech
from tests.support.ports import free_tcp_port
from tests.support.requirements import NEEDS_KAMAILIO_SIPP_AND_PROMPTS

KEYS = [sys.executable, "-m", "sip_bridge.cli", "keys"]


@pytest.fixture()
def keys_dir(tmp_path: Path) -> Path:
    done = subprocess.run([*KEYS, str(tmp_path / "keys")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "curve.keys_dir" in done.stdout
    return tmp_path / "keys"


def test_keys_are_made_private_and_never_overwritten(keys_dir: Path) -> None:
    names = sorted(p.name for p in keys_dir.iterdir())
    assert names == ["authorized", "client.key", "client.key_secret", "server.key",
                     "server.key_secret"]  # fmt: skip
    for secret in keys_dir.glob("*.key_secret"):
        assert secret.stat().st_mode & 0o077 == 0, secret
    assert (keys_dir / "authorized" / "client.key").read_bytes() == (
        keys_dir / "client.key"
    ).read_bytes()
    again = subprocess.run([*KEYS, str(keys_dir)], capture_output=True, text=True)
    assert again.returncode == 1 and "not overwriting" in again.stderr


def test_loading_a_broken_keys_dir_names_the_file(tmp_path: Path) -> None:
    generate(tmp_path / "k")
    (tmp_path / "k" / "client.key_secret").write_text("garbage\n")
    with pytest.raises(CurveError, match="client.key_secret"):
        CurveKeys.load(tmp_path / "k")
    with pytest.raises(CurveError, match="sip-bridge keys"):
        CurveKeys.load(tmp_path / "nothing")


@pytest.fixture()
def server(keys_dir: Path) -> Iterator[tuple[CurveKeys, str, zmq.Socket[Any]]]:
    keys = CurveKeys.load(keys_dir)
    ctx: zmq.Context[Any] = zmq.Context()
    auth = authenticator(ctx, keys)
    pull = ctx.socket(zmq.PULL)
    keys.bind_side(pull)
    endpoint = f"tcp://127.0.0.1:{free_tcp_port()}"
    pull.bind(endpoint)
    yield keys, endpoint, pull
    pull.close(0)
    auth.stop()
    ctx.term()


def _push(endpoint: str, setup: Any) -> tuple[zmq.Context[Any], zmq.Socket[Any]]:
    ctx: zmq.Context[Any] = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    setup(push)
    push.connect(endpoint)
    return ctx, push


def test_only_an_authorised_client_key_gets_in(
    server: tuple[CurveKeys, str, zmq.Socket[Any]], tmp_path: Path
) -> None:
    keys, endpoint, pull = server
    public, secret = zmq.curve_keypair()

    def stranger(sock: zmq.Socket[Any]) -> None:  # knows the server key, not authorised
        sock.curve_secretkey, sock.curve_publickey = secret, public
        sock.curve_serverkey = keys.server_public

    for name, setup in (("no key", lambda s: None), ("stranger", stranger),
                        ("authorised", keys.connect_side)):  # fmt: skip
        ctx, push = _push(endpoint, setup)
        try:
            # PUSH queues until the handshake succeeds: only the authorised one ever delivers.
            push.send(name.encode())
            got = pull.recv() if pull.poll(1500) else None
        finally:
            push.close(0)
            ctx.term()
        assert got == (b"authorised" if name == "authorised" else None), (name, got)


@pytest.mark.integration
@NEEDS_KAMAILIO_SIPP_AND_PROMPTS
def test_serve_with_curve_transcribes_a_call(keys_dir: Path, tmp_path: Path) -> None:
    from tests.support.bridge import serving
    from tests.support.sipp import run_calls
    from tests.support.webhook_receiver import WebhookReceiver
    from tests.test_e2e import check_call, make_call

    receiver = WebhookReceiver()
    overrides = {
        "media": {"processes": 1}, "inference": {"workers": 1},
        "curve": {"enabled": True, "keys_dir": str(keys_dir)},
    }  # fmt: skip
    (tmp_path / "bridge").mkdir()
    try:
        with serving(tmp_path / "bridge", overrides, receiver.url) as bridge:
            prompts = speech.select(1, min_s=2.0, max_s=5.0, stride=53)
            (result,) = run_calls([make_call(tmp_path, bridge, prompts, "curved")])
            ended = check_call(result, receiver)
            assert speech.wer([prompts[0].text], [str(ended["text"])]) <= 0.3, ended
    finally:
        receiver.close()
