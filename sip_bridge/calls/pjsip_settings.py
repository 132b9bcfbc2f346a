"""How this bridge sets PJSUA2 up: media (clock, jitter buffer), the codecs it takes, and the
account that answers calls (RTP ports, session timers). Called once per media process, on its
main thread, before the first call; no state of its own."""

from __future__ import annotations

import json
from typing import Any

import pjsua2 as pj

from sip_bridge.settings.config import Config, MediaConfig

# Codecs we take, best first (as the answerer we follow the offer's order among these; every
# other codec of the build is disabled). Wideband stays wideband all the way to the model.
# The pjsua2-python wheel has no Opus; a PJSIP built with it uses it.
SRTP_USE = {
    "off": pj.PJMEDIA_SRTP_DISABLED,
    "optional": pj.PJMEDIA_SRTP_OPTIONAL,
    "mandatory": pj.PJMEDIA_SRTP_MANDATORY,
}
CODEC_PRIORITIES = {"opus/48000": 254, "G722/16000": 253, "PCMU/8000": 252, "PCMA/8000": 251}


def set_codecs(ep: Any) -> list[str]:
    """Give our codecs their priorities and disable every other; returns those taken, best
    first."""
    taken = []
    for codec in ep.codecEnum2():  # ids look like "PCMU/8000/1"
        name = "/".join(codec.codecId.split("/")[:2])
        priority = CODEC_PRIORITIES.get(name, 0)
        ep.codecSetPriority(codec.codecId, priority)
        if priority:
            taken.append(name)
    return sorted(taken, key=lambda n: -CODEC_PRIORITIES[n])


def set_media_config(ep_cfg: Any, m: MediaConfig) -> None:
    """Media settings. They go through pjsua2's JSON reader because SWIG cannot assign the
    jitter buffer's discard enum from Python."""
    doc = pj.JsonDocument()
    doc.writeObject(ep_cfg.medConfig)
    obj = json.loads(doc.saveString())
    jb = m.jitter_buffer
    obj["MediaConfig"].update(
        clockRate=16000,  # the bridge runs wideband; 8 kHz ports are resampled to by PJSIP
        sndClockRate=16000,
        ecTailLen=0,  # we never play audio: no echo canceller
        noVad=True,
        maxMediaPorts=max(254, 4 * m.calls_per_process + 8),
        jbInit=jb.init_ms,
        jbMinPre=jb.min_prefetch_ms,
        jbMaxPre=jb.max_prefetch_ms,
        jbMax=jb.max_ms,
        # Default "none": PJSIP's progressive (and static) discard squeeze the buffer to the
        # burst level, 20-40 ms; here it then runs dry, refills with 100 ms of silence and
        # discards again, all the time (received audio correlates 0.4-0.9 with the source, not
        # 0.999). With none, jbMax bounds what a fast sender clock adds (bench/clock_drift.py).
        jbDiscardAlgo={"none": 0, "static": 1, "progressive": 2}[jb.discard],
    )
    doc = pj.JsonDocument()
    doc.loadString(json.dumps(obj))
    doc.readObject(ep_cfg.medConfig)


def account_config(cfg: Config, index: int) -> Any:
    """The account of media process ``index``: its identity, RTP port range and session timers."""
    m = cfg.media
    acfg = pj.AccountConfig()
    acfg.idUri = f"sip:transcribe@127.0.0.1:{cfg.media_sip_port(index)}"
    acfg.callConfig.timerUse = pj.PJSUA_SIP_TIMER_OPTIONAL  # RFC 4028, when the peer asks
    acfg.callConfig.timerSessExpiresSec = cfg.sip.session_expires_s
    acfg.callConfig.timerMinSESec = cfg.sip.min_se_s
    media = acfg.mediaConfig
    media.srtpUse = SRTP_USE[m.srtp]
    # SDES keys are accepted whatever the signalling transport (a PBX trunk is rarely TLS);
    # the README says what that exposes. DTLS-SRTP is a WebRTC matter: not offered.
    media.srtpSecureSignaling = 0
    keyings = pj.IntVector()
    keyings.append(pj.PJMEDIA_SRTP_KEYING_SDES)
    media.srtpOpt.keyings = keyings
    rtp = media.transportConfig
    rtp.port = m.rtp_port_base + index * m.rtp_ports_per_process
    rtp.portRange = m.rtp_ports_per_process
    rtp.publicAddress = cfg.public_address
    if cfg.sip.address not in ("0.0.0.0", "::"):
        rtp.boundAddress = cfg.sip.address
    return acfg
