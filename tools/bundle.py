"""Write a model bundle ``<root>/<name>/<version>/{model.onnx, manifest.json}`` atomically.

The bundle is assembled in a temporary directory next to its final place, every file and the
directory are fsync'ed, and only then is it renamed into place, so a reader (or a crash) never
sees a half-written bundle. Replacing an existing bundle swaps the two directories in one
``renameat2(RENAME_EXCHANGE)`` call where the kernel supports it.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from runtime.errors import ModelError
from runtime.manifest import MANIFEST_FILE, ManifestBase, manifest_model

logger = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
_FILLED_FIELDS = ("name", "version", "file", "sha256")
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_manifest(
    name: str,
    version: str,
    model_bytes: bytes,
    manifest_fields: dict[str, Any],
    file_name: str = MODEL_FILE,
) -> ManifestBase:
    """Fill ``name``, ``version``, ``file`` and ``sha256`` in and validate against the runtime's
    manifest model. Raises :class:`ModelError` naming the bundle and the invalid fields."""
    clashes = [k for k in _FILLED_FIELDS if k in manifest_fields]
    if clashes:
        raise ValueError(
            f"manifest_fields for {name}/{version} must not set {', '.join(clashes)}: "
            "write_bundle fills them in"
        )
    fields = {
        **manifest_fields,
        "name": name,
        "version": version,
        "file": file_name,
        "sha256": sha256_hex(model_bytes),
    }
    try:
        return manifest_model().model_validate(fields)
    except ValidationError as exc:
        raise ModelError(f"manifest for bundle {name}/{version} is invalid: {exc}") from exc


def manifest_json(manifest: ManifestBase) -> str:
    """Sorted keys, 2-space indent and a final newline, so manifests diff well."""
    return json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


def write_bundle(
    root: Path,
    name: str,
    version: str,
    model_bytes: bytes,
    manifest_fields: dict[str, Any],
    *,
    overwrite: bool = False,
    file_name: str = MODEL_FILE,
    extra_files: Mapping[str, bytes] | None = None,
) -> Path:
    """Validate the manifest, then write the bundle atomically and return its directory.

    Refuses to replace an existing bundle unless ``overwrite`` is true. ``extra_files`` (e.g. a
    signature, :mod:`tools.signing`) are written into the bundle in the same atomic step.
    """
    manifest = build_manifest(name, version, model_bytes, manifest_fields, file_name)
    # name and version passed the manifest's patterns, so they are single path components
    parent = Path(root) / manifest.name
    target = parent / manifest.version
    if target.exists() and not overwrite:
        raise FileExistsError(f"bundle {target} already exists; pass overwrite=True to replace it")
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{manifest.version}.tmp-", dir=parent))
    try:
        os.chmod(staging, 0o755)
        _write_file(staging / file_name, model_bytes)
        _write_file(staging / MANIFEST_FILE, manifest_json(manifest).encode())
        for extra_name, data in (extra_files or {}).items():
            _write_file(staging / Path(extra_name).name, data)
        _fsync_dir(staging)
        if target.exists():
            _replace_dir(staging, target)
        else:
            os.rename(staging, target)
        _fsync_dir(parent)
    finally:
        if staging.exists():  # failure before the rename, or the old bundle after a swap
            shutil.rmtree(staging)
    logger.info("wrote bundle %s (%d bytes, sha256 %s)", target, len(model_bytes), manifest.sha256)
    return target


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_dir(new: Path, target: Path) -> None:
    """Put ``new`` at ``target``; afterwards the old bundle is at ``new`` (for the caller to
    delete). Atomic with renameat2(RENAME_EXCHANGE); otherwise two renames, with a moment in
    which ``target`` is missing but never half-written."""
    if _rename_exchange(new, target):
        return
    old = new.with_name(new.name + ".old")
    os.rename(target, old)
    try:
        os.rename(new, target)
    except OSError:
        os.rename(old, target)
        raise
    os.rename(old, new)


def _rename_exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths; False when this platform or filesystem can't."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    rc = renameat2(
        _AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), ctypes.c_uint(_RENAME_EXCHANGE)
    )
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, f"renameat2(RENAME_EXCHANGE) {a} <-> {b}: {os.strerror(err)}")
