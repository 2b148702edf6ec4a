"""A self-signed certificate for the embedded cluster's HTTPS port on loopback.

kubectl (client-go) sends a kubeconfig's credentials only over TLS: against a plain-HTTP server it is
anonymous. So the cluster also listens with TLS, with a certificate for 127.0.0.1 and localhost that
`openssl` makes once per process; where there is no `openssl`, there is no HTTPS port.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import ssl
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


@functools.cache
def loopback_certificate() -> Certificate | None:
    """The process's certificate (a day's validity, ECDSA P-256), or None without `openssl`."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    directory = Path(tempfile.mkdtemp(prefix="torchproof-sim-tls-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    try:
        subprocess.run(
            [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-days", "1", "-subj", "/CN=torchproof-sim", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
             "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True, timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return Certificate(cert, key)
