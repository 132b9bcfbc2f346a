"""``sip-bridge keys DIR``: the two CURVE key pairs (server, client) in pyzmq's certificate
format, and the client's public key authorised, for ``curve.keys_dir`` (see :mod:`media.curve`
for what each pair is for and how the files are read)."""

from __future__ import annotations

import shutil
from pathlib import Path

import zmq
import zmq.auth

from media.curve import AUTHORIZED, CLIENT, SERVER, CurveError


def generate(keys_dir: str | Path) -> list[Path]:
    """Make the server and client key pairs in ``keys_dir`` (refusing to overwrite any) and
    authorise the client's public key. Returns the files written."""
    if not zmq.has("curve"):
        raise CurveError("this libzmq has no CURVE support")
    d = Path(keys_dir).expanduser()
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in (SERVER, CLIENT):
        for suffix in (".key", ".key_secret"):
            if (d / f"{name}{suffix}").exists():
                raise CurveError(f"{d / (name + suffix)} exists: not overwriting keys in use")
    written = []
    for name in (SERVER, CLIENT):
        public, secret = zmq.auth.create_certificates(str(d), name)
        Path(secret).chmod(0o600)
        written += [Path(public), Path(secret)]
    (d / AUTHORIZED).mkdir(exist_ok=True, mode=0o700)
    allowed = d / AUTHORIZED / f"{CLIENT}.key"
    shutil.copyfile(d / f"{CLIENT}.key", allowed)
    written.append(allowed)
    return written
