"""SIP over TCP at the front (``sip.tcp``, RFC 3261 §18), on a real ``sip-bridge serve``: sipp
calls over one TCP connection each (``-t t1``) and plays recorded prompts.

The caller's Contact names a TCP port where nothing listens, so the transcript INFOs (sent by a
media process over UDP to the front) can reach it only over the connection its INVITE came on;
an INVITE padded past the Ethernet MTU, which RFC 3261 §18.1.1 says must not go over UDP, is
taken over TCP with every header intact.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sip_bridge.front import kamailio_script
from sip_bridge.settings import checks
from sip_bridge.settings.config import Config, SipConfig, SipTlsConfig
from tests.support import speech
from tests.support.bridge import RunningBridge, serving
from tests.support.ports import free_tcp_port
from tests.support.requirements import NEEDS_KAMAILIO_SIPP_AND_PROMPTS, NEEDS_PCAP_PLAYBACK
from tests.support.rtp_pcap import join_with_silence, write_rtp_pcap
from tests.support.sipp import SippCall, SippResult, uac_scenario
from tests.support.webhook_receiver import WebhookReceiver
from tests.test_kamailio_script import FILES

MTU = 1500  # Ethernet's: a request within 200 bytes of it goes over TCP (RFC 3261 §18.1.1)
_CONTACT = "sip:sipp@[local_ip]:[local_port]"


# --- the script, without running anything ----------------------------------------------------


def _render(**sip: Any) -> str:
    return kamailio_script.render_config(Config(sip=SipConfig(**sip)), FILES)


def test_tcp_is_on_by_default_on_the_udp_port_and_peers_get_a_contact_alias() -> None:
    text = _render(address="0.0.0.0", public_address="192.0.2.10")
    assert "listen=udp:0.0.0.0:5060 advertise 192.0.2.10:5060" in text
    assert "listen=tcp:0.0.0.0:5060 advertise 192.0.2.10:5060" in text
    assert "listen=udp:127.0.0.1:5070" in text  # the media side stays UDP
    assert "disable_tcp=no" in text and "enable_tls" not in text
    assert 'loadmodule "nathelper.so"' in text
    assert 'if (proto == TCP && is_present_hf("Contact")' in text
    assert "handle_ruri_alias();  # back over the peer's TCP connection" in text


def test_tcp_off_opens_no_tcp_socket_and_tls_alone_is_as_before() -> None:
    off = _render(tcp=False)
    assert "disable_tcp=yes" in off and "listen=tcp:" not in off
    assert "add_contact_alias" not in off and "handle_ruri_alias" not in off
    tls = SipTlsConfig(port=5061, certificate="/c.pem", private_key="/k.pem")
    tls_only = _render(tcp=False, tls=tls)
    assert "listen=tcp:" not in tls_only and "listen=tls:0.0.0.0:5061" in tls_only
    assert 'if (proto == TLS && is_present_hf("Contact")' in tls_only
    both = _render(tls=tls)
    assert 'if ((proto == TCP || proto == TLS) && is_present_hf("Contact")' in both
    assert "back over the peer's TCP or TLS connection" in both


def test_a_tcp_port_is_checked_like_the_udp_one() -> None:
    cfg = Config(sip=SipConfig(address="127.0.0.1", port=15060))
    checks.validate(cfg, "(test)")
    clash = dataclasses.replace(cfg.media, result_port_base=15060)
    with pytest.raises(Exception, match="15060"):  # ZeroMQ (TCP) on the SIP port
        checks.validate(dataclasses.replace(cfg, media=clash), "(test)")


# --- calls over TCP on a running bridge -----------------------------------------------------


@pytest.fixture(scope="module")
def bridge(
    tmp_path_factory: pytest.TempPathFactory, receiver: WebhookReceiver
) -> Iterator[RunningBridge]:
    with serving(tmp_path_factory.mktemp("bridge"), {}, receiver.url) as b:
        yield b


def tcp_call(
    tmp: Path, bridge: RunningBridge, name: str, prompts: int, extra_headers: str = ""
) -> SippCall:
    """A sipp call over TCP whose Contact names a port with no listener (see the module)."""
    chosen = speech.select(prompts, min_s=2.0, max_s=5.0, stride=1)
    pcm = join_with_silence([p.pcm() for p in chosen], gap_s=1.5, lead_s=0.5, tail_s=0.5)
    pcap = tmp / f"{name}.pcap"
    seconds = write_rtp_pcap(pcap, pcm)
    dead = f"sip:sipp@[local_ip]:{free_tcp_port()}"
    xml = uac_scenario("PCMU", pcap, seconds, 4.0, extra_headers).replace(_CONTACT, dead)
    assert dead in xml
    return SippCall("127.0.0.1", bridge.port, pcap, audio_s=seconds, linger_s=4.0,
                    work_dir=tmp / name, scenario=xml, transport="t1")  # fmt: skip


def events(receiver: WebhookReceiver, call_id: str) -> list[dict[str, Any]]:
    ok = receiver.wait_for(
        lambda posts: any(
            p.json()["type"] == "call.ended" and p.json()["sip_call_id"] == call_id for p in posts
        ),
        timeout=30,
    )
    assert ok, f"no call.ended webhook for {call_id}"
    return [p.json() for p in receiver.posts if p.json()["sip_call_id"] == call_id]


def check_tcp_call(result: SippResult) -> None:
    assert result.ok, f"sipp failed ({result.exit_code}): {result.stderr}\n{result.errors}"
    assert result.final_status == 200 and result.bye_status == 200
    sent = [m for m in result.messages if m.direction == "sent" and m.method == "INVITE"]
    assert sent and "SIP/2.0/TCP" in (sent[0].header("Via") or "")


@pytest.mark.integration
@NEEDS_KAMAILIO_SIPP_AND_PROMPTS
@NEEDS_PCAP_PLAYBACK
def test_a_call_over_tcp_gets_its_transcript_infos_over_that_connection_and_webhooks(
    bridge: RunningBridge, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    result = tcp_call(tmp_path, bridge, "tcp", prompts=2).start().wait()
    check_tcp_call(result)
    infos = [json.loads(b) for b in result.info_bodies]
    assert infos and all(i["type"] == "transcript.final" for i in infos), result.info_bodies
    got = events(receiver, result.call_id)
    assert got[0]["type"] == "call.started" and got[-1]["type"] == "call.ended"
    finals = [e for e in got if e["type"] == "transcript.final"]
    assert [(i["seq"], i["text"]) for i in infos] == [
        (e["seq"], e["text"]) for e in finals[: len(infos)]
    ]


@pytest.mark.integration
@NEEDS_KAMAILIO_SIPP_AND_PROMPTS
@NEEDS_PCAP_PLAYBACK
def test_an_invite_over_the_mtu_is_taken_over_tcp_with_its_headers_intact(
    bridge: RunningBridge, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    pads = {f"X-Pad-{n}": chr(ord("a") + n) * 400 for n in range(4)}
    extra = "".join(f"      {k}: {v}\n" for k, v in pads.items())
    result = tcp_call(tmp_path, bridge, "big", prompts=1, extra_headers=extra).start().wait()
    check_tcp_call(result)
    invite = next(m for m in result.messages if m.direction == "sent" and m.method == "INVITE")
    size = len(invite.first_line) + sum(len(k) + len(v) + 4 for k, v in invite.headers)
    assert size + len(invite.body) > MTU, size
    started = events(receiver, result.call_id)[0]
    assert started["type"] == "call.started"
    headers = {k.lower(): v for k, v in dict(started["headers"]).items()}
    for name, value in pads.items():
        assert headers.get(name.lower()) == value, (name, headers.get(name.lower()))
