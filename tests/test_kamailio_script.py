"""The front's script template: every placeholder gets a value, none is left in the script, and
Kamailio's own ``$`` and braces pass through untouched (sans-IO: no Kamailio needed)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sip_bridge.front import kamailio_script
from sip_bridge.front.kamailio_files import KamailioFiles
from sip_bridge.settings.config import (
    Config,
    SipAuthConfig,
    SipConfig,
    SipTlsConfig,
    SipTrunk,
    SipUser,
)

FILES = KamailioFiles(
    rundir=Path("/run/front"),
    config=Path("/run/front/kamailio.cfg"),
    tls_config=Path("/run/front/tls.cfg"),
    dispatcher_list=Path("/run/front/dispatcher.list"),
    pidfile=Path("/run/front/kamailio.pid"),
    ctl_socket=Path("/run/front/kamailio_ctl"),
    module_dir=Path("/usr/lib/kamailio/modules"),
)
EVERYTHING_ON = Config(
    sip=SipConfig(
        address="0.0.0.0", public_address="192.0.2.10", answer_options=False,
        allow=("192.0.2.0/24",),
        auth=SipAuthConfig(users=(SipUser("pbx", password="pw"),)),
        tls=SipTlsConfig(port=5061, certificate="/c.pem", private_key="/k.pem"),
        trunks=(SipTrunk("192.0.2.9", 3),),
    ),
)  # fmt: skip


@pytest.mark.parametrize(
    "cfg",
    [Config(), EVERYTHING_ON, Config(sip=SipConfig(tcp=False))],
    ids=["defaults", "everything-on", "udp-only"],
)
def test_every_placeholder_has_a_value_and_none_is_left(cfg: Config) -> None:
    values = kamailio_script.script_values(cfg, FILES)
    assert set(kamailio_script.template().get_identifiers()) == set(values)
    text = kamailio_script.render_config(cfg, FILES)
    assert "@@" not in text
    assert text.startswith("#!KAMAILIO\n") and text.endswith("}\n")
    assert "if ($rm != $(rm{s.toupper})) {" in text  # Kamailio's $ and {} as written
    assert f'"unix:{FILES.ctl_socket}"' in text


def test_only_the_braced_form_is_a_placeholder() -> None:
    template = kamailio_script.ScriptTemplate('$ci {x} @@{name} "$(rm{s.toupper})"')
    assert template.substitute(name=1) == '$ci {x} 1 "$(rm{s.toupper})"'
    for bad in ("@@name", "@@{Name}", "@@ ", "@@"):
        with pytest.raises(ValueError):
            kamailio_script.ScriptTemplate(bad).substitute(name=1)


def test_a_feature_that_is_off_leaves_no_blank_line() -> None:
    cfg = dataclasses.replace(Config(), media=dataclasses.replace(Config().media, max_call_rate=0))
    text = kamailio_script.render_config(cfg, FILES)
    assert '    }\n    xlog("L_INFO", "INVITE $ci: to $du\\n");' in text
    assert "    route(SIPREC);\n    if ($shv(draining) == 1) {" in text
