"""Ed25519 signatures over a bundle's ``manifest.json``, checked on the device before loading.

The signature file ``manifest.sig`` next to the manifest is JSON::

    {"algorithm": "ed25519", "key_id": "<16 hex>", "signature": "<base64, 64 bytes>"}

It signs the manifest's exact bytes; the manifest holds the model file's sha256, which
:meth:`runtime.model.LoadedModel.load` checks, so the signature covers the model too. ``key_id``
(the start of the sha256 of the raw public key) only makes "signed with another key" errors
clearer; it is not trusted. ``cryptography`` is imported only when a key is configured.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.errors import ConfigError, ModelError
from runtime.manifest import MANIFEST_FILE

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

SIGNATURE_FILE = "manifest.sig"
ALGORITHM = "ed25519"
SIGNATURE_BYTES = 64
INSTALL_HINT = "pip install 'edgewatch[signing]'"


def key_id(public_key: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def encode_signature(signature: bytes, public_key: Ed25519PublicKey) -> bytes:
    """The signature file's contents."""
    document = {
        "algorithm": ALGORITHM,
        "key_id": key_id(public_key),
        "signature": base64.b64encode(signature).decode("ascii"),
    }
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file; ConfigError when it can't be used."""
    try:
        from cryptography.exceptions import UnsupportedAlgorithm
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        from cryptography.hazmat.primitives.serialization import load_pem_public_key
    except ImportError as exc:
        raise ConfigError(
            f"model public key {path} is configured but the `cryptography` package is missing: "
            f"{INSTALL_HINT}"
        ) from exc
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"model public key {path}: cannot read: {exc.strerror or exc}") from exc
    try:
        key = load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"model public key {path}: not a PEM public key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(
            f"model public key {path}: expected an Ed25519 key, got {type(key).__name__}"
        )
    return key


def verify_bundle(bundle_dir: Path, key_path: Path) -> bytes:
    """Check ``bundle_dir``'s manifest signature with the key at ``key_path``; return the
    verified manifest bytes. ModelError when the signature is missing, malformed or wrong."""
    public_key = load_public_key(key_path)  # ConfigError first when cryptography is missing
    from cryptography.exceptions import InvalidSignature

    manifest_path = bundle_dir / MANIFEST_FILE
    signature_path = bundle_dir / SIGNATURE_FILE
    refusing = "refusing to load an unverified model"
    try:
        manifest = manifest_path.read_bytes()
    except OSError as exc:
        raise ModelError(f"model bundle {bundle_dir}: cannot read {MANIFEST_FILE}: {exc}") from exc
    try:
        document = signature_path.read_bytes()
    except FileNotFoundError:
        raise ModelError(
            f"model bundle {bundle_dir} is not signed (no {SIGNATURE_FILE}) but the device "
            f"requires bundles signed for {key_path}; {refusing}"
        ) from None
    except OSError as exc:
        raise ModelError(f"{signature_path}: cannot read: {exc}") from exc
    try:
        signature, signed_by = _parse(document)
    except ValueError as exc:
        raise ModelError(
            f"{signature_path}: malformed signature file ({exc}); {refusing}"
        ) from None
    try:
        public_key.verify(signature, manifest)
    except InvalidSignature:
        ours = key_id(public_key)
        why = "" if signed_by in (None, ours) else f" (signed by key {signed_by}, not {ours})"
        raise ModelError(
            f"model bundle {bundle_dir}: signature {SIGNATURE_FILE} does not verify with "
            f"{key_path}{why}; refusing to load a modified or foreign bundle"
        ) from None
    return manifest


def _parse(document: bytes) -> tuple[bytes, str | None]:
    try:
        parsed: Any = json.loads(document)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(parsed, dict) or parsed.get("algorithm") != ALGORITHM:
        raise ValueError(f"expected algorithm {ALGORITHM!r}")
    try:
        signature = base64.b64decode(str(parsed.get("signature", "")), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"signature: {exc}") from None
    if len(signature) != SIGNATURE_BYTES:
        raise ValueError(f"signature has {len(signature)} bytes, expected {SIGNATURE_BYTES}")
    signed_by = parsed.get("key_id")
    return signature, signed_by if isinstance(signed_by, str) else None
