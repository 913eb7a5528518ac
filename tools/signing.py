"""Ed25519 keys and bundle signatures (desktop side; the device verifies with
:mod:`runtime.signature`).

``generate_keys`` writes ``model-signing.key`` (PKCS#8 PEM, mode 0600) and ``model-signing.pub``
(SubjectPublicKeyInfo PEM); the public one goes to devices (``security.model_public_key``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.errors import EdgewatchError
from runtime.manifest import MANIFEST_FILE
from runtime.model import read_manifest, sha256_file
from runtime.signature import SIGNATURE_FILE, encode_signature

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

logger = logging.getLogger(__name__)

PRIVATE_KEY_FILE = "model-signing.key"
PUBLIC_KEY_FILE = "model-signing.pub"


class SigningError(EdgewatchError):
    """A key can't be made or read, or a bundle can't be signed."""


@dataclass(frozen=True, slots=True)
class KeyPair:
    private: Path
    public: Path


def generate_keys(out_dir: Path) -> KeyPair:
    """A new Ed25519 key pair in ``out_dir``; never overwrites an existing key file."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )

    pair = KeyPair(out_dir / PRIVATE_KEY_FILE, out_dir / PUBLIC_KEY_FILE)
    existing = [str(p) for p in (pair.private, pair.public) if p.exists()]
    if existing:
        raise SigningError(f"{', '.join(existing)} already exist; refusing to overwrite a key")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    public_pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_new(pair.private, private_pem, 0o600)
    _write_new(pair.public, public_pem, 0o644)
    return pair


def load_private_key(path: Path) -> Ed25519PrivateKey:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningError(f"signing key {path}: cannot read: {exc.strerror or exc}") from exc
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        # the library's message never contains key material
        raise SigningError(f"signing key {path}: not an unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"signing key {path}: expected Ed25519, got {type(key).__name__}")
    return key


def signature_for(manifest_bytes: bytes, key: Ed25519PrivateKey) -> bytes:
    """The contents of ``manifest.sig`` for these exact manifest bytes."""
    return encode_signature(key.sign(manifest_bytes), key.public_key())


def sign_bundle(bundle_dir: Path, key_path: Path) -> Path:
    """Sign an existing bundle's manifest (after checking the model's sha256 against it) and
    write ``manifest.sig`` atomically (temporary file, fsync, rename)."""
    key = load_private_key(key_path)
    manifest = read_manifest(bundle_dir)
    model_path = bundle_dir / manifest.file
    if not model_path.is_file():
        raise SigningError(f"{bundle_dir}: model file {manifest.file} is missing; not signing")
    if sha256_file(model_path) != manifest.sha256:
        raise SigningError(f"{model_path}: sha256 differs from the manifest's; not signing")
    target = bundle_dir / SIGNATURE_FILE
    temporary = bundle_dir / f".{SIGNATURE_FILE}.tmp-{os.getpid()}"
    try:
        _write_new(temporary, signature_for((bundle_dir / MANIFEST_FILE).read_bytes(), key), 0o644)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    fd = os.open(bundle_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    logger.info("signed %s (model sha256 %s)", bundle_dir, manifest.sha256)
    return target


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
