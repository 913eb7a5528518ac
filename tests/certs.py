"""A throwaway test PKI made with the ``openssl`` CLI: two CAs, a loopback server cert, a client cert.

The ``cryptography`` package isn't a dependency, so this shells out to ``openssl`` (EC P-256 keys,
which are quick to make). Every certificate carries the extensions strict X.509 verification asks
for (basicConstraints, keyUsage, subject/authority key identifiers), so the same files keep
working when Python's ``ssl`` defaults get stricter.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Pki", "make_pki"]

_DAYS = "2"

_REQ_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""

_LEAF_EXTENSIONS = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = {usage}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""


@dataclass(frozen=True, slots=True)
class Pki:
    """PEM files (keys unencrypted). ``wrong_ca`` is unrelated to everything else."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    wrong_ca: Path


def _openssl(*args: str, cwd: Path) -> None:
    tool = shutil.which("openssl")
    if tool is None:
        raise RuntimeError("the 'openssl' command is needed to make test certificates")
    done = subprocess.run([tool, *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"openssl {' '.join(args)} failed with code {done.returncode}:\n{done.stderr}"
        )


def _make_ca(workdir: Path, name: str, common_name: str) -> tuple[Path, Path]:
    cert, key = workdir / f"{name}.pem", workdir / f"{name}.key"
    _openssl(
        "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-keyout", str(key), "-out", str(cert), "-days", _DAYS,
        "-subj", f"/CN={common_name}", "-config", "req.cnf", "-extensions", "v3_ca",
        cwd=workdir,
    )  # fmt: skip
    return cert, key


def _make_leaf(
    workdir: Path,
    name: str,
    common_name: str,
    extensions: str,
    ca: tuple[Path, Path],
    serial: int,
) -> tuple[Path, Path]:
    cert, key, csr = (workdir / f"{name}.{ext}" for ext in ("pem", "key", "csr"))
    ext_file = workdir / f"{name}.ext"
    ext_file.write_text(extensions)
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={common_name}",
        "-config", "req.cnf",
        cwd=workdir,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
        "-set_serial", str(serial), "-days", _DAYS, "-sha256", "-extfile", str(ext_file),
        "-out", str(cert),
        cwd=workdir,
    )  # fmt: skip
    return cert, key


def make_pki(workdir: Path) -> Pki:
    """Write a test CA, a server cert for 127.0.0.1/localhost, a client cert and a wrong CA."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "req.cnf").write_text(_REQ_CONFIG)
    ca = _make_ca(workdir, "ca", "edgewatch test CA")
    wrong_ca, _ = _make_ca(workdir, "wrong-ca", "edgewatch unrelated CA")
    server_ext = _LEAF_EXTENSIONS.format(usage="serverAuth")
    server_ext += "subjectAltName = IP:127.0.0.1, DNS:localhost\n"
    server_cert, server_key = _make_leaf(workdir, "server", "localhost", server_ext, ca, 1001)
    client_ext = _LEAF_EXTENSIONS.format(usage="clientAuth")
    client_cert, client_key = _make_leaf(
        workdir, "client", "edgewatch-client", client_ext, ca, 1002
    )
    return Pki(
        ca=ca[0],
        server_cert=server_cert,
        server_key=server_key,
        client_cert=client_cert,
        client_key=client_key,
        wrong_ca=wrong_ca,
    )
