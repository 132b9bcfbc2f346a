"""Where Kamailio is on this host, and where the front's files go under its run directory.

This module owns the search for the ``kamailio`` and ``kamcmd`` binaries and for Kamailio's
module directory, the names of the files the front writes (:class:`KamailioFiles`), and the
error that says Kamailio is missing or refused what we generated. It writes nothing and runs
nothing: :mod:`sip_bridge.front.kamailio_script` says what goes into the files,
:mod:`sip_bridge.front.kamailio` writes them and talks to the running front.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

_MODULE_DIRS = (
    "/usr/lib/x86_64-linux-gnu/kamailio/modules",
    "/usr/lib/aarch64-linux-gnu/kamailio/modules",
    "/usr/lib64/kamailio/modules",
    "/usr/lib/kamailio/modules",
    "/usr/local/lib64/kamailio/modules",
    "/usr/local/lib/kamailio/modules",
)


class KamailioError(Exception):
    """Kamailio is missing, or rejected the config we generated (our bug, not the caller's)."""


@dataclass(frozen=True, slots=True)
class KamailioFiles:
    """Where :func:`sip_bridge.front.kamailio.render` wrote things; everything lives under
    ``rundir``."""

    rundir: Path
    config: Path  # kamailio.cfg
    tls_config: Path  # tls.cfg (written only with sip.tls.port)
    dispatcher_list: Path  # dispatcher.list
    pidfile: Path  # written by kamailio -P
    ctl_socket: Path  # `kamcmd -s unix:<ctl_socket> dispatcher.list`
    module_dir: Path


def find_kamailio() -> Path:
    """The ``kamailio`` binary (Debian puts it in /usr/sbin, often not on a user's PATH)."""
    found = shutil.which("kamailio") or shutil.which("kamailio", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise KamailioError("kamailio not found: install the Debian package kamailio")
    return Path(found)


def find_kamcmd() -> Path:
    found = shutil.which("kamcmd") or shutil.which("kamcmd", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise KamailioError("kamcmd not found: install the Debian package kamailio")
    return Path(found)


def find_module_dir() -> Path:
    """The directory holding Kamailio's modules (``tm.so`` and friends), found at run time."""
    candidates = [Path(d) for d in _MODULE_DIRS]
    candidates += sorted(Path("/usr/lib").glob("*/kamailio/modules"))
    for directory in candidates:
        if (directory / "tm.so").is_file() and (directory / "dispatcher.so").is_file():
            return directory
    raise KamailioError(
        "Kamailio modules (tm.so, dispatcher.so) not found: install the Debian package kamailio"
    )


def files_in(rundir: Path) -> KamailioFiles:
    """Where the front's files are (or go) under ``rundir``."""
    return KamailioFiles(
        rundir=rundir,
        config=rundir / "kamailio.cfg",
        tls_config=rundir / "tls.cfg",
        dispatcher_list=rundir / "dispatcher.list",
        pidfile=rundir / "kamailio.pid",
        ctl_socket=rundir / "kamailio_ctl",
        module_dir=find_module_dir(),
    )
