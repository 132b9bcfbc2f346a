"""The front's guards (issue 6, point 4), on a real ``sip-bridge serve``: a trunk allowlist, a
scanner User-Agent drop, pike's flood limit, digest auth of new calls and SIP over TLS.

One bridge serves the module with all of them on: sources 127.0.0.1-3 are allowed
(127.0.0.0/30), 127.0.0.9 is not; user ``pbx1`` may call. The scans are real sipvicious runs;
the TLS call is baresip (PCMU, SRTP) authenticating with digest, transcribed, its INFOs sent
back over its own TLS connection.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sip_bridge.front import kamailio
from sip_bridge.front import security as front_security
from sip_bridge.settings import checks, config, loading
from sip_bridge.settings.config import Config, SipAuthConfig, SipConfig, SipTlsConfig, SipUser
from tests.support import speech
from tests.support.baresip import play_prompts
from tests.support.bridge import RunningBridge, serving
from tests.support.ports import free_tcp_port
from tests.support.raw_uac import digest_authorization, invite_answer
from tests.support.webhook_receiver import WebhookReceiver

USER, PASSWORD = "pbx1", "correct-horse-battery-9"
ALLOWED, FLOODER, STRANGER = "127.0.0.2", "127.0.0.3", "127.0.0.9"
FLOOD_REQUESTS = 30  # per 2 s window and source, for this module's bridge


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl CLI)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


# --- the config and the script, without running anything ----------------------------------


def problem(data: dict[str, object], tmp_path: Path) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(config.ConfigError) as info:
        loading.load(path)
    return info.value.key


def test_bad_security_keys_are_config_errors_naming_the_key(tmp_path: Path) -> None:
    assert problem({"sip": {"allow": ["10.0.0.0/8", "nonsense"]}}, tmp_path) == "sip.allow[1]"
    assert problem({"sip": {"auth": {"users": [{"user": "a"}]}}}, tmp_path) == "sip.auth.users[0]"
    both = {"user": "a", "password": "p", "ha1": "0" * 32}
    assert problem({"sip": {"auth": {"users": [both]}}}, tmp_path) == "sip.auth.users[0]"
    bad_ha1 = {"user": "a", "ha1": "xyz"}
    assert problem({"sip": {"auth": {"users": [bad_ha1]}}}, tmp_path) == "sip.auth.users[0].ha1"
    quote = {"user": 'a"b', "password": "p"}
    assert problem({"sip": {"auth": {"users": [quote]}}}, tmp_path) == "sip.auth.users[0].user"
    assert problem({"sip": {"auth": {"realm": "a b"}}}, tmp_path) == "sip.auth.realm"
    assert problem({"sip": {"tls": {"port": 5061}}}, tmp_path) == "sip.tls.certificate"
    missing = {"port": 5061, "certificate": str(tmp_path / "no.pem"), "private_key": "x"}
    assert problem({"sip": {"tls": missing}}, tmp_path) == "sip.tls.certificate"
    assert problem({"sip": {"flood": {"window_s": 0}}}, tmp_path) == "sip.flood"


def test_ha1_is_md5_of_user_realm_password_and_a_given_ha1_is_kept() -> None:
    # RFC 2617 3.5's example credentials.
    user = SipUser("Mufasa", password="Circle Of Life")
    assert front_security.ha1(user, "testrealm@host.com") == "939e7578ed9e3c518a452acee763bce9"
    assert front_security.ha1(SipUser("x", ha1="AB" * 16), "r") == "ab" * 16


@pytest.mark.skipif(not shutil.which("openssl"), reason="needs openssl")
def test_every_guard_on_gives_a_config_kamailio_accepts_without_the_password(
    tmp_path: Path,
) -> None:
    if not (Path(kamailio.find_module_dir()) / "tls.so").is_file():
        pytest.skip("needs the Debian package kamailio-tls-modules")
    cert, key = make_certificate(tmp_path)
    cfg = Config(
        sip=SipConfig(
            address="127.0.0.1", port=25060, allow=("127.0.0.0/30", "::1"),
            auth=SipAuthConfig(users=(SipUser(USER, password=PASSWORD),)),
            tls=SipTlsConfig(port=25061, certificate=str(cert), private_key=str(key)),
        ),
        runtime_dir=str(tmp_path / "run"),
    )  # fmt: skip
    checks.validate(cfg, "(test)")
    files = kamailio.render(cfg, tmp_path / "run")
    kamailio.check(files)  # kamailio -c: every module, parameter and route is real
    text = files.config.read_text()
    assert PASSWORD not in text and front_security.ha1(cfg.sip.auth.users[0], "sip-bridge") in text
    assert "listen=tls:127.0.0.1:25061" in text and "route(AUTH)" in text
    assert f"certificate = {cert.resolve()}" in files.tls_config.read_text()
    # Nothing on (sip.tcp off too): no guard but the scanner drop and the default flood limit,
    # TCP stays off.
    plain = kamailio.render_config(Config(sip=SipConfig(tcp=False)), files)
    assert "disable_tcp=yes" in plain and "route(AUTH)" not in plain
    assert "is_in_subnet" not in plain and "pike_check_req" in plain


# --- a running bridge with every guard on -------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def bridge(
    tmp_path_factory: pytest.TempPathFactory,
    receiver: WebhookReceiver,
    tls_files: tuple[Path, Path],
) -> Iterator[RunningBridge]:
    if not (speech.available() and shutil.which("kamailio") and shutil.which("openssl")):
        pytest.skip("needs kamailio, openssl and asterisk-core-sounds-en-wav")
    if not (Path(kamailio.find_module_dir()) / "tls.so").is_file():
        pytest.skip("needs the Debian package kamailio-tls-modules")
    cert, key = tls_files
    sip = {
        "allow": ["127.0.0.0/30"],
        "auth": {"users": [{"user": USER, "password": PASSWORD}]},
        "flood": {"requests": FLOOD_REQUESTS, "window_s": 2},
        "tls": {"port": free_tcp_port(), "certificate": str(cert), "private_key": str(key)},
    }
    overrides = {"sip": sip, "media": {"processes": 1}, "inference": {"workers": 1}}
    with serving(tmp_path_factory.mktemp("security"), overrides, receiver.url) as b:
        yield b


def options(port: int, local_ip: str, user_agent: str = "pbx", timeout: float = 1.0) -> int:
    """One OPTIONS from ``local_ip``; its status, or 0 when no answer came in ``timeout``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((local_ip, 0))
        sock.settimeout(timeout)
        me = f"{local_ip}:{sock.getsockname()[1]}"
        sock.sendto(options_request(port, me, user_agent), ("127.0.0.1", port))
        try:
            return int(sock.recv(65535).split(b" ", 2)[1])
        except TimeoutError:
            return 0


def options_request(port: int, me: str, user_agent: str) -> bytes:
    tag = uuid.uuid4().hex[:12]
    return (
        f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {me};branch=z9hG4bK{tag}\r\n"
        f"From: <sip:probe@{me}>;tag={tag}\r\nTo: <sip:127.0.0.1:{port}>\r\n"
        f"Call-ID: {tag}@{me}\r\nCSeq: 1 OPTIONS\r\nUser-Agent: {user_agent}\r\n"
        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def front_stats(bridge: RunningBridge) -> dict[str, int]:
    return kamailio.statistics(kamailio.files_in(Path(bridge.config["runtime_dir"])))


@pytest.mark.integration
def test_a_source_off_the_allowlist_gets_no_answer_and_is_counted(bridge: RunningBridge) -> None:
    assert options(bridge.port, ALLOWED) == 200
    for _ in range(5):
        assert options(bridge.port, STRANGER, timeout=0.3) == 0
    assert invite_answer("127.0.0.1", bridge.port, local_ip=STRANGER, timeout=1.0) == (0, "")
    assert front_stats(bridge)["script:unlisted_source"] >= 6
    # Logged, but once a minute per source, not once per packet.
    assert bridge.wait_for_front_log(f"from {STRANGER}", timeout=5)
    assert bridge.front_log_text().count(f"from {STRANGER}:") == 1


@pytest.mark.integration
def test_a_scanner_user_agent_gets_no_answer_even_from_an_allowed_source(
    bridge: RunningBridge,
) -> None:
    assert options(bridge.port, ALLOWED, user_agent="friendly-scanner", timeout=0.5) == 0
    assert options(bridge.port, ALLOWED, user_agent="SIPVicious 0.3") == 0
    assert options(bridge.port, ALLOWED, user_agent="Asterisk PBX 20.5") == 200
    assert front_stats(bridge)["script:scanner"] >= 2


@pytest.mark.integration
def test_every_new_call_is_challenged_alike_whatever_user_it_names(bridge: RunningBridge) -> None:
    answers = []
    for to_user in ("transcribe", USER, "100", "nobody"):
        code, msg = invite_answer("127.0.0.1", bridge.port, to_user, local_ip=ALLOWED, timeout=5)
        challenges = [line for line in msg.split("\r\n") if line.startswith("Proxy-Authenticate")]
        answers.append((code, len(challenges), 'realm="sip-bridge"' in msg))
    assert answers == [(407, 1, True)] * 4, answers
    # A wrong password, and a user that does not exist, are told the same: challenged again.
    code, msg = invite_answer("127.0.0.1", bridge.port, local_ip=ALLOWED, timeout=5)
    (challenge,) = [line.split(": ", 1)[1] for line in msg.split("\r\n")
                    if line.startswith("Proxy-Authenticate")]  # fmt: skip
    uri = f"sip:transcribe@127.0.0.1:{bridge.port}"
    for user, password in ((USER, "wrong"), ("intruder", PASSWORD)):
        extra = digest_authorization(challenge, user, password, "INVITE", uri)
        code, msg = invite_answer("127.0.0.1", bridge.port, local_ip=ALLOWED, extra=extra)
        assert code == 407 and "Proxy-Authenticate" in msg, msg
    # Control: the same answer with the right password is let through (the call is answered,
    # then hung up).
    extra = digest_authorization(challenge, USER, PASSWORD, "INVITE", uri)
    assert invite_answer("127.0.0.1", bridge.port, local_ip=ALLOWED, extra=extra)[0] == 200
    assert front_stats(bridge)["script:auth_failed"] >= 2
    assert bridge.wait_for_front_log('digest auth failed for user "intruder"', timeout=5)


def sipvicious(tool: str, source: str, port: int, *args: str) -> str:
    """Run one sipvicious tool from ``source`` against 127.0.0.1:``port``; its output."""
    argv = [str(Path(sys.executable).parent / f"sipvicious_{tool}"), "-b", source, "-p", str(port),
            "-t", "0.02", *args, "127.0.0.1"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=90)
    return done.stdout + done.stderr


@pytest.mark.integration
@pytest.mark.parametrize("source", [STRANGER, ALLOWED])
def test_sipvicious_finds_no_server_and_no_user(bridge: RunningBridge, source: str) -> None:
    if not (Path(sys.executable).parent / "sipvicious_svwar").exists():
        pytest.skip("needs sipvicious (pip install sipvicious)")
    # Control: the same scans find a SIP server that is not behind the front (a media process
    # on loopback; only the front faces a trunk), so "found nothing" below means something.
    media_port = bridge.config["media"]["sip_port_base"]
    found = sipvicious("svmap", source, media_port)
    assert f"127.0.0.1:{media_port}" in found and "found nothing" not in found, found
    for tool, args in (
        ("svmap", ()),
        ("svwar", ("-m", "INVITE", "-e", "100-110,200", "--maximumtime", "15")),
        ("svwar", ("-m", "REGISTER", "-e", "100-110,200", "--maximumtime", "15")),
    ):
        out = sipvicious(tool, source, bridge.port, *args)
        assert f"127.0.0.1:{bridge.port}" not in out.replace("Could not resolve", ""), out
        assert "found nothing" in out and "reqauth" not in out and "noauth" not in out, out


@pytest.mark.integration
def test_a_source_over_the_flood_limit_is_ignored_while_others_are_served(
    bridge: RunningBridge,
) -> None:
    sent = FLOOD_REQUESTS * 4
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((FLOODER, 0))
        me = f"{FLOODER}:{sock.getsockname()[1]}"
        for _ in range(sent):
            sock.sendto(options_request(bridge.port, me, "pbx"), ("127.0.0.1", bridge.port))
        answered = 0
        sock.settimeout(0.5)
        try:
            while True:
                sock.recv(65535)
                answered += 1
        except TimeoutError:
            pass
    assert 0 < answered < sent, answered
    assert front_stats(bridge)["script:flood"] >= sent - answered - 1
    assert options(bridge.port, ALLOWED) == 200  # another source is served meanwhile
    # Once it slows down, it is served again (pike forgets it within a few windows).
    deadline = time.monotonic() + 30
    while options(bridge.port, FLOODER, timeout=0.5) != 200:
        assert time.monotonic() < deadline, "the flooder was never let back in"
        time.sleep(1)  # one probe a second: slower than the limit


@pytest.mark.integration
def test_a_call_over_tls_with_digest_auth_and_srtp_is_transcribed(
    bridge: RunningBridge, receiver: WebhookReceiver, tls_files: tuple[Path, Path], tmp_path: Path
) -> None:
    if not shutil.which("baresip"):
        pytest.skip("needs baresip")
    prompts = speech.select(2, min_s=2.0, max_s=5.0, stride=29)
    uri = f"sip:transcribe@127.0.0.1:{bridge.config['sip']['tls']['port']};transport=tls"
    result = play_prompts(uri, prompts, tmp_path, mediaenc="srtp-mand", auth=(USER, PASSWORD),
                          ca_file=tls_files[0])  # fmt: skip
    assert not result.timed_out and result.exit_code == 0, result.output[-3000:]

    def baresips_end(posts: list[Any]) -> list[dict[str, Any]]:  # not the raw callers' calls
        return [p.json() for p in posts if p.json()["type"] == "call.ended"
                and not p.json()["sip_call_id"].startswith("raw-")]  # fmt: skip

    assert receiver.wait_for(baresips_end, timeout=30), bridge.log_text()[-3000:]
    (ended,) = baresips_end(receiver.posts)
    refs = " ".join(p.text for p in prompts)
    assert speech.wer([refs], [str(ended["text"])]) <= 0.3, ended["text"]
    assert "SRTP is Enabled" in result.output, result.output[-2000:]
    # The INFOs went back over baresip's own TLS connection, which answered them (488: baresip
    # takes no INFO), so the media process heard the refusal.
    assert bridge.wait_for_log("peer refused INFO (488", timeout=10), bridge.log_text()[-3000:]


@pytest.mark.integration
def test_no_secret_reaches_the_log_or_the_runtime_files(bridge: RunningBridge) -> None:
    """Last: after the calls and scans above have logged what they log."""
    secrets = (PASSWORD, "test-secret")  # the trunk's password, the webhook's secret
    assert not [s for s in secrets if s in bridge.log_text() + bridge.front_log_text()]
    run = Path(bridge.config["runtime_dir"])
    for path in run.rglob("*"):
        if path.is_file() and path.stat().st_size < 1_000_000:
            text = path.read_bytes().decode(errors="replace")
            assert not [s for s in secrets if s in text], path
