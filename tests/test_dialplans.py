"""What can be checked here of the shipped integration files: Asterisk and FreeSWITCH are not
packaged for this machine and Docker has no engine, so syntax and consistency only, plus
`kamailio -c` of the multi-host example. Standard library only (no xmllint, no asterisk)."""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from sip_bridge.settings.loading import load

ROOT = Path(__file__).resolve().parent.parent
DIALPLANS = ROOT / "dialplans"
KAMAILIO = shutil.which("kamailio", path="/usr/sbin:/usr/bin")

# Applications of core FreeSWITCH (mod_dptools) that a dialplan here may use. A name outside
# this list is a typo or needs a module the READMEs do not ask for.
FREESWITCH_APPS = {
    "answer", "bridge", "eavesdrop", "echo", "execute_extension", "export", "hangup", "info",
    "log", "multiset", "park", "playback", "pre_answer", "record_session", "respond",
    "ring_ready", "sched_hangup", "set", "sleep", "stop_record_session", "three_way",
    "transfer", "unset",
}  # fmt: skip

# Asterisk dialplan applications the contexts here may use (all in a stock build).
ASTERISK_APPS = {
    "Answer", "ChanSpy", "Dial", "ExecIf", "Gosub", "GosubIf", "Goto", "GotoIf", "Hangup",
    "NoOp", "Originate", "Playback", "Return", "Set", "Wait",
}  # fmt: skip


# --- FreeSWITCH -----------------------------------------------------------------------------


def _fs(name: str) -> ET.Element:
    return ET.parse(DIALPLANS / "freeswitch" / name).getroot()


def _fs_extensions() -> dict[str, ET.Element]:
    return {x.get("name", ""): x for x in _fs("dialplan.xml").iter("extension")}


def _fs_actions() -> list[ET.Element]:
    return list(_fs("dialplan.xml").iter("action"))


@pytest.mark.parametrize("name", ["gateway.xml", "dialplan.xml"])
def test_freeswitch_files_are_well_formed_xml(name: str) -> None:
    _fs(name)


def test_freeswitch_actions_name_core_applications() -> None:
    apps = {a.get("application") for a in _fs_actions()}
    assert apps, "no <action> in dialplan.xml"
    assert apps <= FREESWITCH_APPS, f"not core mod_dptools: {apps - FREESWITCH_APPS}"


def test_freeswitch_expressions_compile_and_route_each_number_once() -> None:
    patterns = {}
    for name, ext in _fs_extensions().items():
        cond = ext.find("condition")
        assert cond is not None and cond.get("field") == "destination_number", name
        patterns[name] = re.compile(cond.get("expression", ""))
    expected = {
        "5550100": "to-transcriber",
        "71001": "transcribe-live-call",
        "81001": "transcribe-live-call-per-speaker",
    }
    for number, extension in expected.items():
        hits = [name for name, rx in patterns.items() if rx.search(number)]
        assert hits == [extension], (number, hits)


def test_freeswitch_dialplan_dials_the_gateway_it_ships() -> None:
    gateways = {g.get("name") for g in _fs("gateway.xml").iter("gateway")}
    dialled = set()
    for action in _fs_actions():
        dialled |= set(re.findall(r"sofia/gateway/([^/]+)/", action.get("data", "")))
    assert dialled and dialled <= gateways, (dialled, gateways)


@dataclass
class Originate:
    variables: dict[str, str] = field(default_factory=dict)
    app: str = ""


def _originate(data: str) -> Originate:
    """Split `bgapi originate {a=1,b=${x}}endpoint &app(args)` as FreeSWITCH does: the
    variables run to the brace that closes the first one (values hold ${...})."""
    prefix = "bgapi originate {"
    assert data.startswith(prefix), data
    depth, end = 1, len(prefix)
    while depth:
        assert end < len(data), f"unclosed {{ in {data}"
        depth += {"{": 1, "}": -1}.get(data[end], 0)
        end += 1
    endpoint, _, app = data[end:].partition(" ")
    assert endpoint.startswith("sofia/gateway/") and re.fullmatch(r"&\w+\(.*\)", app), data
    pairs = [v.split("=", 1) for v in data[len(prefix) : end - 1].split(",")]
    assert all(len(p) == 2 for p in pairs), data
    return Originate({k: v for k, v in pairs}, app)


def _spy_legs(extension: str) -> dict[str, Originate]:
    legs = {}
    for action in _fs_extensions()[extension].iter("action"):
        name, _, value = action.get("data", "").partition("=")
        if action.get("application") == "set" and name.startswith("api_on_answer"):
            legs[name] = _originate(value)
    return legs


@pytest.mark.parametrize("extension", ["transcribe-live-call", "transcribe-live-call-per-speaker"])
def test_freeswitch_spy_legs_only_listen(extension: str) -> None:
    legs = _spy_legs(extension)
    assert legs
    for name, leg in legs.items():
        assert leg.app == "&eavesdrop(${uuid})", name
        assert leg.variables.get("eavesdrop_enable_dtmf") == "false", name
        whisper = [k for k in leg.variables if k.startswith("eavesdrop_whisper")]
        assert not whisper, (name, whisper)


def test_freeswitch_per_speaker_legs_take_one_direction_each() -> None:
    legs = _spy_legs("transcribe-live-call-per-speaker")
    directions = {}
    for name, leg in legs.items():
        chosen = [k for k in ("eavesdrop_bridge_aleg", "eavesdrop_bridge_bleg")
                  if leg.variables.get(k) == "true"]  # fmt: skip
        assert len(chosen) == 1, (name, chosen)
        directions[leg.variables["sip_h_X-Transcribe-Speaker"]] = chosen[0]
    assert directions == {"caller": "eavesdrop_bridge_aleg", "callee": "eavesdrop_bridge_bleg"}


def test_freeswitch_per_speaker_legs_share_one_conversation() -> None:
    """Both legs of one spied call carry a speaker and the same conversation id, the uuid they
    eavesdrop on; the bridge groups legs by that header. Mixed and direct legs carry none: they
    are conversations of their own."""
    legs = _spy_legs("transcribe-live-call-per-speaker")
    assert len(legs) == 2
    speakers, conversations = set(), set()
    for name, leg in legs.items():
        speakers.add(leg.variables.get("sip_h_X-Transcribe-Speaker"))
        conversation = leg.variables.get("sip_h_X-Transcribe-Conversation", "")
        assert conversation, f"{name}: no sip_h_X-Transcribe-Conversation"
        assert leg.app == f"&eavesdrop({conversation})", (name, leg.app, conversation)
        conversations.add(conversation)
    assert speakers == {"caller", "callee"}
    assert len(conversations) == 1, conversations
    for name, leg in _spy_legs("transcribe-live-call").items():
        assert "sip_h_X-Transcribe-Conversation" not in leg.variables, name


# --- Asterisk -------------------------------------------------------------------------------

_EXTEN = re.compile(r"exten\s*=>\s*(?P<pattern>[^,\s]+)\s*,\s*(?P<prio>\d+)\s*,(?P<rest>.*)")
_SAME = re.compile(r"same\s*=>\s*(?P<prio>n|\d+)(?:\((?P<label>\w+)\))?\s*,(?P<rest>.*)")
_APP = re.compile(r"(?P<app>[A-Za-z]+)\((?P<args>.*)\)")


@dataclass
class Step:
    context: str
    exten: str
    label: str | None
    app: str
    args: str
    line: int


def _strip_comment(line: str) -> str:
    return line.split(";", 1)[0].rstrip()


def _asterisk_steps() -> tuple[dict[str, set[str]], list[Step]]:
    """Contexts (with their extensions) and every dialplan step of extensions.conf."""
    contexts: dict[str, set[str]] = {}
    steps: list[Step] = []
    context = exten = None
    text = (DIALPLANS / "asterisk" / "extensions.conf").read_text()
    for number, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw).strip()
        if not line:
            continue
        if m := re.fullmatch(r"\[([\w-]+)\]", line):
            context, exten = m.group(1), None
            assert context not in contexts, f"line {number}: context [{context}] twice"
            contexts[context] = set()
            continue
        assert context is not None, f"line {number}: outside any context: {line}"
        if m := _EXTEN.fullmatch(line):
            exten, label = m.group("pattern"), None
            assert m.group("prio") == "1", f"line {number}: an extension starts at priority 1"
            assert exten != "_.", f"line {number}: _. also matches h, i, t, ..."
            contexts[context].add(exten)
        elif m := _SAME.fullmatch(line):
            assert exten is not None, f"line {number}: same => before any exten =>"
            label = m.group("label")
        else:
            pytest.fail(f"line {number}: not an exten => / same => line: {line}")
        app = _APP.fullmatch(m.group("rest").strip())
        assert app, f"line {number}: not App(args): {m.group('rest')}"
        steps.append(Step(context, exten, label, app["app"], app["args"], number))
    return contexts, steps


def _balanced(text: str, pair: str) -> bool:
    depth = 0
    for char in text:
        depth += {pair[0]: 1, pair[1]: -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def test_asterisk_lines_are_well_formed_and_use_known_applications() -> None:
    contexts, steps = _asterisk_steps()
    assert {"to-transcriber", "phones-transcribed", "phones-transcribed-per-speaker"} <= set(
        contexts
    )
    for step in steps:
        assert step.app in ASTERISK_APPS, f"line {step.line}: unknown application {step.app}"
        assert _balanced(step.args, "()"), f"line {step.line}: unbalanced parentheses"
        assert _balanced(step.args, "{}"), f"line {step.line}: unbalanced braces"


def _referenced_contexts(step: Step) -> list[tuple[str, str]]:
    """(context, extension) pairs a step sends a channel to."""
    refs = []
    # b(ctx^exten^prio(...)) of Dial/Originate: a pre-dial Gosub.
    refs += re.findall(r"b\(([\w-]+)\^([\w-]+)\^\d+", step.args)
    # U(ctx[^args]) of Dial: Gosub at s,1 on the callee's channel.
    refs += [(ctx, "s") for ctx in re.findall(r"U\(([\w-]+)", step.args)]
    if step.app == "Originate":
        args = step.args.split(",")
        assert args[1] == "exten", f"line {step.line}: Originate type {args[1]}"
        refs.append((args[2], args[3]))
    if step.app in ("Goto", "Gosub") and step.args.count(",") == 2:
        ctx, exten, _ = step.args.split(",")
        refs.append((ctx, exten))
    return refs


def test_asterisk_referenced_contexts_and_labels_exist() -> None:
    contexts, steps = _asterisk_steps()
    pjsip = _pjsip_sections()
    endpoint_contexts = [o["context"] for (_, kind), o in pjsip.items() if kind == "endpoint"]
    refs = [(ctx, "_X.") for ctx in endpoint_contexts]
    for step in steps:
        refs += _referenced_contexts(step)
    assert refs
    for ctx, exten in refs:
        assert ctx in contexts, f"no context [{ctx}]"
        if exten != "_X.":
            assert exten in contexts[ctx], f"no extension {exten} in [{ctx}]"
    for step in steps:
        if step.app == "GotoIf":
            targets = re.split(r"[?:]", step.args.rsplit("?", 1)[1])
            labels = {s.label for s in steps if (s.context, s.exten) == (step.context, step.exten)}
            for target in filter(None, targets):
                assert target in labels, f"line {step.line}: no label {target}"


def test_asterisk_spy_legs_only_listen() -> None:
    _, steps = _asterisk_steps()
    options = [
        (step, m.group(1))
        for step in steps
        if step.app == "Originate"
        for m in [re.search(r"SPY_OPTIONS=(\w*)", step.args)]
        if m
    ]
    assert len(options) == 3, [step.line for step, _ in options]
    for step, opts in options:
        assert "q" in opts and "E" in opts, f"line {step.line}: {opts}"
        assert not set(opts) & set("BwW"), f"line {step.line}: {opts} talks into the call"
        assert "SPY_TARGET=${" in step.args, f"line {step.line}: no SPY_TARGET"
        # the async option: U() and the caller must not wait for the bridge
        assert re.search(r",\d+,a", step.args), f"line {step.line}: Originate without a"
    per_speaker = [opts for step, opts in options if step.context.endswith("per-speaker")]
    assert per_speaker and all("o" in opts for opts in per_speaker)
    spy = [s for s in steps if s.app == "ChanSpy"]
    assert [s.args for s in spy] == ["${SPY_TARGET},${SPY_OPTIONS}"]


def _predial_args(step: Step, handler: str = "transcriber-headers") -> list[str] | None:
    """The ^-separated arguments a Dial/Originate step passes to its pre-dial handler
    b(handler^s^1(...)), or None without one. Values hold ${...(...)}: read to the closing
    parenthesis that balances the opening one."""
    start = step.args.find(f"b({handler}^s^1(")
    if start < 0:
        return None
    begin = end = start + len(f"b({handler}^s^1(")
    depth = 1
    while depth:
        assert end < len(step.args), f"line {step.line}: unclosed b() arguments"
        depth += {"(": 1, ")": -1}.get(step.args[end], 0)
        end += 1
    return step.args[begin : end - 1].split("^")


def test_asterisk_per_speaker_legs_share_one_conversation() -> None:
    """Both per-speaker legs of one call pass a speaker and the same, non-empty conversation
    expression to the pre-dial handler; the handler turns ARG2 into X-Transcribe-Speaker and
    ARG4 into X-Transcribe-Conversation; legs that are not per speaker pass no ARG4."""
    _, steps = _asterisk_steps()
    legs = [s for s in steps if s.app in ("Dial", "Originate") and _predial_args(s) is not None]
    per_speaker = [s for s in legs if s.context == "transcribe-answered-per-speaker"]
    assert len(per_speaker) == 2, [s.line for s in per_speaker]
    speakers, conversations = set(), set()
    for step in per_speaker:
        args = _predial_args(step)
        assert args is not None and len(args) == 4, f"line {step.line}: {args}"
        speakers.add(args[1])
        assert args[3], f"line {step.line}: empty conversation id"
        conversations.add(args[3])
    assert speakers == {"caller", "callee"}
    assert len(conversations) == 1, conversations
    for step in legs:
        if step not in per_speaker:
            args = _predial_args(step)
            assert args is not None and (len(args) < 4 or not args[3]), f"line {step.line}"
    handler = [s.args for s in steps if s.context == "transcriber-headers"]
    assert "PJSIP_HEADER(add,X-Transcribe-Speaker)=${ARG2}" in handler
    conversation = [a for a in handler if "X-Transcribe-Conversation" in a]
    assert conversation == [
        '$["${ARG4}" != ""]?Set(PJSIP_HEADER(add,X-Transcribe-Conversation)=${ARG4})'
    ], conversation


# pjsip.conf: the type= of each section and the options that must point at another section.
PJSIP_TYPES = {"transport", "aor", "endpoint", "identify", "auth", "registration"}
PJSIP_REFERENCES = {
    ("endpoint", "transport"): "transport",
    ("endpoint", "aors"): "aor",
    ("identify", "endpoint"): "endpoint",
}


def _pjsip_sections() -> dict[tuple[str, str], dict[str, str]]:
    """{(section name, type): options}; a name may carry several types, never one twice."""
    sections: list[tuple[str, dict[str, str], int]] = []
    text = (DIALPLANS / "asterisk" / "pjsip.conf").read_text()
    for number, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw).strip()
        if not line:
            continue
        if m := re.fullmatch(r"\[([\w-]+)\]", line):
            sections.append((m.group(1), {}, number))
            continue
        key, sep, value = line.partition("=")
        assert sep and sections, f"pjsip.conf line {number}: {line}"
        sections[-1][1][key.strip()] = value.strip()
    typed: dict[tuple[str, str], dict[str, str]] = {}
    for name, options, number in sections:
        kind = options.get("type")
        assert kind in PJSIP_TYPES, f"pjsip.conf line {number}: [{name}] type={kind}"
        assert (name, kind) not in typed, f"pjsip.conf: two [{name}] of type {kind}"
        typed[(name, kind)] = options
    return typed


def test_asterisk_pjsip_sections_are_typed_and_refer_to_each_other() -> None:
    sections = _pjsip_sections()
    kinds = {kind for _, kind in sections}
    assert {"transport", "aor", "endpoint", "identify"} <= kinds
    for (name, kind), options in sections.items():
        for (of, key), target in PJSIP_REFERENCES.items():
            if of == kind:
                for ref in options[key].split(","):
                    assert (ref.strip(), target) in sections, f"[{name}] {key}={ref}"
    endpoint = sections[("transcriber", "endpoint")]
    assert endpoint["direct_media"] == "no"
    assert sections[("transcriber", "aor")]["contact"].startswith("sip:")


def test_asterisk_endpoint_offers_only_what_the_bridge_takes() -> None:
    text = (DIALPLANS / "asterisk" / "pjsip.conf").read_text()
    assert "[transcriber]" in text
    allow = [line for line in text.splitlines() if line.strip().startswith("allow")]
    assert allow and all("ulaw" in a and "alaw" in a and "g722" in a for a in allow)
    assert "Dial(PJSIP/" in (DIALPLANS / "asterisk" / "extensions.conf").read_text()


# --- docker and Kamailio --------------------------------------------------------------------


def test_docker_config_is_valid_and_compose_parses() -> None:
    cfg = load(ROOT / "docker" / "config.docker.yaml")
    assert cfg.sip.address == "0.0.0.0"
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    assert "bridge" in compose["services"]
    # The images expose exactly the RTP range the config's (auto-sized) pool opens.
    m = cfg.media
    last = m.rtp_port_base + m.processes * m.rtp_ports_per_process - 1
    rtp = f"EXPOSE {m.rtp_port_base}-{last}/udp"
    sip = [f"EXPOSE {cfg.sip.port}/{p}" for p in ("udp", "tcp")[: 1 + cfg.sip.tcp]]
    for image in ("Dockerfile", "Dockerfile.gpu"):
        lines = (ROOT / "docker" / image).read_text().splitlines()
        assert rtp in lines, (image, rtp)
        assert all(e in lines for e in sip), (image, sip)


def _kamailio_script() -> str:
    lines = (DIALPLANS / "kamailio" / "multi-host.cfg").read_text().splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith("# "))


def test_multi_host_kamailio_example_keeps_what_makes_it_work() -> None:
    """What running it on loopback showed it needs (see dialplans/README.md)."""
    script = _kamailio_script()
    for listen in re.findall(r"^listen=.*$", script, re.M):
        # 0.0.0.0 would go into Record-Route and no in-dialog request could come back
        assert "0.0.0.0" not in listen or " advertise " in listen, listen
    if "ds_next_dst" in script:  # failover needs the list of the other hosts
        flags = re.search(r'modparam\("dispatcher", "flags", (\d+)\)', script)
        assert flags and int(flags.group(1)) & 2
    assert 'ds_select_dst("1", "10")' in script
    assert "duid=" in (DIALPLANS / "kamailio" / "dispatcher.list").read_text()


@pytest.mark.skipif(KAMAILIO is None, reason="needs kamailio")
def test_multi_host_kamailio_example_passes_kamailio_check(tmp_path: Path) -> None:
    cfg = (DIALPLANS / "kamailio" / "multi-host.cfg").read_text()
    listing = DIALPLANS / "kamailio" / "dispatcher.list"
    cfg = cfg.replace('"/etc/kamailio/dispatcher.list"', f'"{listing}"')
    path = tmp_path / "multi-host.cfg"
    path.write_text(cfg)
    assert KAMAILIO is not None
    proc = subprocess.run([KAMAILIO, "-c", "-f", str(path)], capture_output=True, text=True,
                          timeout=30)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]


# --- SIPREC ---------------------------------------------------------------------------------

RECORDING_NS = "urn:ietf:params:xml:ns:recording:1"


def _siprec_example() -> tuple[str, dict[str, str], bytes]:
    """The ```sip block of siprec/README.md as (start line, headers, body with CRLF)."""
    text = (DIALPLANS / "siprec" / "README.md").read_text()
    blocks = re.findall(r"^```sip\n(.*?)^```$", text, re.S | re.M)
    assert len(blocks) == 1, f"{len(blocks)} ```sip blocks in siprec/README.md"
    head, sep, body = blocks[0].partition("\n\n")
    assert sep, "no blank line between headers and body"
    start, *lines = head.split("\n")
    headers = {}
    for line in lines:
        name, colon, value = line.partition(":")
        assert colon and name.strip() == name, f"not a header line: {line!r}"
        assert name.lower() not in headers, f"{name} twice"
        headers[name.lower()] = value.strip()
    return start, headers, body.replace("\n", "\r\n").encode()


def _sdp_media(sdp: str) -> list[tuple[str, list[str]]]:
    """[(m= line, its a= attributes)] of an SDP."""
    media: list[tuple[str, list[str]]] = []
    for line in sdp.splitlines():
        if line.startswith("m="):
            media.append((line, []))
        elif line.startswith("a=") and media:
            media[-1][1].append(line[2:])
    return media


def _text(part: email.message.Message) -> str:
    payload = part.get_payload()
    assert isinstance(payload, str), f"{part.get_content_type()}: not a text part"
    return payload


def test_siprec_example_invite_is_a_siprec_request() -> None:
    start, headers, body = _siprec_example()
    assert re.fullmatch(r"INVITE sip:\S+ SIP/2\.0", start), start
    for name in ("via", "from", "to", "call-id", "cseq", "contact", "max-forwards"):
        assert name in headers, f"no {name} header"
    assert "siprec" in [v.strip() for v in headers["require"].split(",")]
    assert re.search(r";\s*\+sip\.src\b", headers["contact"]), headers["contact"]
    assert headers["content-type"].startswith("multipart/mixed")
    assert int(headers["content-length"]) == len(body), (headers["content-length"], len(body))


def test_siprec_example_body_is_well_formed_and_labels_match() -> None:
    _, headers, body = _siprec_example()
    message = email.parser.BytesParser(policy=email.policy.default).parsebytes(
        b"Content-Type: " + headers["content-type"].encode() + b"\r\n\r\n" + body
    )
    assert message.is_multipart() and not message.defects, message.defects
    parts = {part.get_content_type(): part for part in message.iter_parts()}
    assert set(parts) == {"application/sdp", "application/rs-metadata+xml"}, set(parts)
    for part in parts.values():
        assert not part.defects, part.defects

    media = _sdp_media(_text(parts["application/sdp"]))
    audio = [(m, attrs) for m, attrs in media if m.startswith("m=audio ")]
    assert len(audio) >= 2, media
    sdp_labels = []
    for m, attrs in audio:
        assert "sendonly" in attrs, f"{m}: not a=sendonly"
        labels = [a.split(":", 1)[1] for a in attrs if a.startswith("label:")]
        assert len(labels) == 1, f"{m}: a=label {labels}"
        sdp_labels.append(labels[0])
    assert len(set(sdp_labels)) == len(sdp_labels), sdp_labels

    meta = parts["application/rs-metadata+xml"]
    assert meta["Content-Disposition"].split(";")[0].strip() == "recording-session"
    root = ET.fromstring(_text(meta).encode())
    ns = {"r": RECORDING_NS}
    assert root.tag == f"{{{RECORDING_NS}}}recording", root.tag
    streams = {s.get("stream_id"): s.findtext("r:label", "", ns) for s in
               root.findall("r:stream", ns)}  # fmt: skip
    assert sorted(streams.values()) == sorted(sdp_labels), (streams, sdp_labels)
    participants = root.findall("r:participant", ns)
    assert len(participants) >= 2
    for participant in participants:
        name_id = participant.find("r:nameID", ns)
        assert name_id is not None and name_id.get("aor", "").startswith("sip:")
    ids = {p.get("participant_id") for p in participants}
    sent = set()
    for assoc in root.findall("r:participantstreamassoc", ns):
        assert assoc.get("participant_id") in ids, assoc.get("participant_id")
        for ref in assoc.findall("r:send", ns) + assoc.findall("r:recv", ns):
            assert ref.text in streams, f"no stream {ref.text}"
        sent |= {ref.text for ref in assoc.findall("r:send", ns)}
    assert sent == set(streams), "a stream nobody sends"
