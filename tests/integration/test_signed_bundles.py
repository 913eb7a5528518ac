"""Ed25519-signed bundles: `edgewatch bundle` / keygen / sign write them, and the runtime loads
only bundles that verify when the device config names a public key."""

from __future__ import annotations

import json
import logging
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from runtime.app import App
from runtime.backends.onnxruntime import OrtBackendConfig
from runtime.config.loader import load_config
from runtime.errors import ConfigError, ModelError
from runtime.model import LoadedModel
from runtime.signature import SIGNATURE_FILE
from tests.fixture_models import colour_classifier_bytes, colour_manifest, zscore_model_bytes
from tests.integration.test_end_to_end import write_video
from tools import bundle_cli
from tools.signing import KeyPair, generate_keys

pytestmark = pytest.mark.integration

ORT = OrtBackendConfig(type="onnxruntime")


@pytest.fixture
def keys(tmp_path: Path) -> KeyPair:
    return generate_keys(tmp_path / "keys")


def make_bundle(tmp_path: Path, key: Path | None, version: str = "1.0.0") -> Path:
    """`edgewatch bundle` on a model file and a manifest template (in process)."""
    model = tmp_path / "colour.onnx"
    model.write_bytes(colour_classifier_bytes())
    template = tmp_path / "template.json"
    template.write_text(json.dumps(colour_manifest()))
    argv = [str(model), "--manifest-template", str(template), "--out", str(tmp_path / "models")]
    argv += ["--name", "colour", "--version", version]
    assert bundle_cli.main([*argv, *(["--sign-key", str(key)] if key else [])]) == 0
    return tmp_path / "models" / "colour" / version


def load(bundle: Path, public_key: Path | None) -> LoadedModel:
    model = LoadedModel.load(bundle, ORT, public_key=public_key)
    model.close()
    return model


def test_keygen_makes_a_private_key_only_its_owner_can_read(keys: KeyPair) -> None:
    assert stat.S_IMODE(keys.private.stat().st_mode) == 0o600
    assert keys.private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert keys.public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert bundle_cli.main(["keygen", "--out", str(keys.private.parent)]) == 1  # no overwrite


def test_a_signed_bundle_verifies_and_loads(tmp_path: Path, keys: KeyPair) -> None:
    bundle = make_bundle(tmp_path, keys.private)
    assert sorted(p.name for p in bundle.iterdir()) == [
        "manifest.json",
        SIGNATURE_FILE,
        "model.onnx",
    ]
    assert load(bundle, keys.public).manifest.labels == ["red", "green", "blue"]


def tamper_manifest(bundle: Path) -> None:
    data = json.loads((bundle / "manifest.json").read_text())
    data["labels"] = ["green", "red", "blue"]
    (bundle / "manifest.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def swap_model(bundle: Path) -> None:
    (bundle / "model.onnx").write_bytes(colour_classifier_bytes(sharpness=5.0))


def break_signature(bundle: Path) -> None:
    document = json.loads((bundle / SIGNATURE_FILE).read_text())
    document["signature"] = document["signature"][:40]
    (bundle / SIGNATURE_FILE).write_text(json.dumps(document))


def remove_signature(bundle: Path) -> None:
    (bundle / SIGNATURE_FILE).unlink()


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (tamper_manifest, "signature manifest.sig does not verify with"),
        (swap_model, "sha256"),
        (break_signature, "malformed signature file"),
        (remove_signature, "is not signed (no manifest.sig)"),
    ],
)
def test_a_tampered_or_unsigned_bundle_is_refused(
    tmp_path: Path, keys: KeyPair, tamper: object, message: str
) -> None:
    bundle = make_bundle(tmp_path, keys.private)
    assert callable(tamper)
    tamper(bundle)
    with pytest.raises(ModelError, match="refusing") as err:
        load(bundle, keys.public)
    assert message in str(err.value)


def test_a_bundle_signed_with_another_key_is_refused(tmp_path: Path, keys: KeyPair) -> None:
    other = generate_keys(tmp_path / "other")
    bundle = make_bundle(tmp_path, other.private)
    with pytest.raises(ModelError, match=f"does not verify with {keys.public}") as err:
        load(bundle, keys.public)
    assert "signed by key" in str(err.value)


def test_an_unsigned_bundle_loads_when_no_key_is_configured(tmp_path: Path) -> None:
    assert load(make_bundle(tmp_path, None), None).manifest.name == "colour"


def test_a_bad_public_key_file_is_a_config_error(tmp_path: Path, keys: KeyPair) -> None:
    bundle = make_bundle(tmp_path, keys.private)
    with pytest.raises(ConfigError, match="not a PEM public key"):
        load(bundle, keys.private)
    with pytest.raises(ConfigError, match="cannot read"):
        load(bundle, tmp_path / "missing.pub")


def test_without_cryptography_a_configured_key_names_the_pip_install(
    tmp_path: Path, keys: KeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = make_bundle(tmp_path, keys.private)
    # a None entry makes `import` fail as if the package were not installed
    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.asymmetric.ed25519", None)
    with pytest.raises(ConfigError, match=r"pip install 'edgewatch\[signing\]'"):
        load(bundle, keys.public)


def write_device(tmp_path: Path, key: Path | None) -> Path:
    write_video(tmp_path / "video.mp4", [("red", 3)])
    config: dict[str, object] = {
        "device": {"id": "gw"},
        "models": {"colour": {"bundle": "models/colour/1.0.0"}},
        "pipelines": [
            {
                "name": "cam",
                "source": {"type": "camera", "uri": "video.mp4", "pace": "max"},
                "model": "colour",
                "rules": {"red": {"type": "threshold", "labels": ["red"], "raise_score": 0.9}},
            }
        ],
        "sinks": [{"type": "jsonl", "path": "alerts.jsonl"}],
    }
    if key is not None:
        config["security"] = {"model_public_key": str(key.relative_to(tmp_path))}
    (tmp_path / "device.yaml").write_text(yaml.safe_dump(config))
    return tmp_path / "device.yaml"


@pytest.mark.parametrize("signed", [True, False])
def test_the_app_loads_only_signed_bundles_when_the_config_names_a_key(
    tmp_path: Path, keys: KeyPair, signed: bool
) -> None:
    make_bundle(tmp_path, keys.private if signed else None)
    loaded = load_config(write_device(tmp_path, keys.public), {})
    assert loaded.config.security.model_public_key == str(keys.public)
    app = App.from_config(loaded)
    try:
        if signed:
            assert app.failed == [] and [p.name for p in app.pipelines] == ["cam"]
        else:
            assert app.pipelines == []
            assert [f.name for f in app.failed] == ["cam"]
            assert "is not signed" in app.failed[0].reason
    finally:
        app.stop()


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runtime", "bundle", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_keygen_bundle_and_sign(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    keygen = run_cli(tmp_path, "keygen", "--out", "keys")
    assert keygen.returncode == 0, keygen.stderr
    private = (tmp_path / "keys" / "model-signing.key").read_text()
    secret = private.splitlines()[1]
    assert secret not in keygen.stdout + keygen.stderr

    bundle = make_bundle(tmp_path, None)  # unsigned, then signed by `bundle sign`
    public = tmp_path / "keys" / "model-signing.pub"
    signed = run_cli(tmp_path, "sign", str(bundle), "--key", "keys/model-signing.key")
    assert signed.returncode == 0, signed.stderr
    assert secret not in signed.stdout + signed.stderr
    with caplog.at_level(logging.DEBUG):
        assert load(bundle, public).manifest.sha256 in (bundle / "manifest.json").read_text()
    assert secret not in caplog.text

    swap_model(bundle)  # `sign` checks the model against the manifest before signing
    refused = run_cli(tmp_path, "sign", str(bundle), "--key", "keys/model-signing.key")
    assert refused.returncode == 1 and "sha256 differs" in refused.stderr


def test_cli_bundle_is_atomic_and_never_half_written(tmp_path: Path, keys: KeyPair) -> None:
    bundle = make_bundle(tmp_path, keys.private)
    before = {p.name: p.read_bytes() for p in bundle.iterdir()}
    model = tmp_path / "z.onnx"
    model.write_bytes(zscore_model_bytes(np.zeros(2), np.ones(2)))
    base = [str(model), "--out", "models", "--name", "colour", "--version", "1.0.0"]
    exists = run_cli(tmp_path, *base)
    assert exists.returncode == 1 and "already exists" in exists.stderr
    bad_key = run_cli(tmp_path, *base, "--overwrite", "--sign-key", str(keys.public))
    assert bad_key.returncode == 1 and "not an unencrypted PEM private key" in bad_key.stderr
    assert {p.name: p.read_bytes() for p in bundle.iterdir()} == before
    assert sorted(p.name for p in bundle.parent.iterdir()) == ["1.0.0"]  # no staging left over
