"""ZeroMQ CURVE for the wire between media processes and inference workers (RFC 26 CurveZMQ):
encryption, and only clients holding an authorised key get in.

One key pair for every socket that binds (workers' audio and heartbeat sockets, media
processes' result sockets: the *server* pair) and one for every socket that connects (the
*client* pair). ``sip-bridge keys DIR`` makes both, in pyzmq's certificate format, and puts the
client's public key in ``DIR/authorized``; a binding socket's process runs a ZAP authenticator
that admits exactly the public keys found there. Copy DIR to every host; to admit another
client key, add its ``.key`` file to ``authorized`` and restart.

I/O only at start-up (reading key files); applying keys to a socket is a few setsockopts.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

SERVER, CLIENT, AUTHORIZED = "server", "client", "authorized"


class CurveError(Exception):
    """The keys directory is missing a file, or holds something that is not a key."""


@dataclass(frozen=True, slots=True)
class CurveKeys:
    server_public: bytes
    server_secret: bytes
    client_public: bytes
    client_secret: bytes
    authorized: Path  # public keys a binding socket lets in

    @classmethod
    def load(cls, keys_dir: str | Path) -> CurveKeys:
        d = Path(keys_dir).expanduser()
        if not zmq.has("curve"):
            raise CurveError("this libzmq has no CURVE support")
        pairs = []
        for name in (SERVER, CLIENT):
            path = d / f"{name}.key_secret"
            try:
                public, secret = zmq.auth.load_certificate(str(path))
            except (OSError, ValueError) as exc:
                raise CurveError(
                    f"{path}: {exc} (make the keys with `sip-bridge keys {d}`)"
                ) from exc
            if secret is None:
                raise CurveError(f"{path}: no secret key in it")
            pairs.append((public, secret))
        if not (d / AUTHORIZED).is_dir():
            raise CurveError(f"{d / AUTHORIZED}: missing (the public keys of allowed clients)")
        (sp, ss), (cp, cs) = pairs
        return cls(sp, ss, cp, cs, d / AUTHORIZED)

    def bind_side(self, sock: zmq.Socket[Any]) -> None:
        """Before ``bind``: this socket is a CURVE server."""
        sock.curve_secretkey = self.server_secret
        sock.curve_publickey = self.server_public
        sock.curve_server = True

    def connect_side(self, sock: zmq.Socket[Any]) -> None:
        """Before ``connect``: this socket is a CURVE client of our servers."""
        sock.curve_secretkey = self.client_secret
        sock.curve_publickey = self.client_public
        sock.curve_serverkey = self.server_public


def authenticator(ctx: zmq.Context[Any], keys: CurveKeys) -> ThreadAuthenticator:
    """Start the ZAP handler of ``ctx``'s binding sockets: only authorised client keys pass.
    Call before binding; ``stop()`` it at shutdown."""
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=str(keys.authorized))
    return auth


def generate(keys_dir: str | Path) -> list[Path]:
    """Make the server and client key pairs in ``keys_dir`` (refusing to overwrite any) and
    authorise the client's public key. Returns the files written."""
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
