"""Device config loading: validation errors carry the YAML path and line; env and secrets."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.cli import main
from runtime.config.loader import ConfigErrors, iter_problems, load_config
from runtime.config.schema import json_schema
from runtime.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

BASE = """\
device:
  id: gw-1
mqtt:
  host: 127.0.0.1
  port: ${PORT:-1883}
models:
  m:
    bundle: bundles/m
pipelines:
  - name: line1
    source:
      type: camera
      uri: videos/a.mp4
    model: m
    rules:
      fire:
        type: threshold
        labels: [fire]
        raise_score: 0.8
sinks:
  - type: mqtt
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "device.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems_of(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        load_config(path, env or {})
    return info.value.problems


def test_valid_config_loads_with_defaults_and_resolved_paths(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, BASE), {})
    cfg = loaded.config
    assert cfg.device.id == "gw-1"
    assert cfg.mqtt is not None and cfg.mqtt.port == 1883
    assert cfg.models["m"].bundle == str(tmp_path / "bundles/m")
    assert cfg.models["m"].backend.type == "onnxruntime"
    assert cfg.pipelines[0].source.uri == str(tmp_path / "videos/a.mp4")  # type: ignore[attr-defined]
    assert [s.type for s in cfg.sinks] == ["mqtt"]
    assert loaded.secrets.mqtt_password is None


def test_env_substitution_retypes_plain_scalars(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BASE), {"PORT": "18830"}).config
    assert cfg.mqtt is not None and cfg.mqtt.port == 18830


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("  id: gw-1", "  id: gw-1\n  colour: red", "device.colour: line 3: unknown key"),
        ("port: ${PORT:-1883}", "port: lots", "mqtt.port: line 5: Input should be a valid integer"),
        ("port: ${PORT:-1883}", "port: ${NOPE}", "mqtt.port: line 5: environment variable NOPE"),
        ("type: camera", "type: cam", "pipelines[0].source.type: line 12: unknown type 'cam'"),
        (
            "type: threshold",
            "type: treshold",
            "pipelines[0].rules.fire.type: line 17: unknown type",
        ),
        ("raise_score: 0.8", "raise_score: 1.8", "pipelines[0].rules.fire.raise_score: line 19"),
        (
            "model: m",
            "model: other",
            "pipelines[0].model: line 14: pipeline 'line1' uses model 'other'",
        ),
        ("  id: gw-1", "  id: gw/1", "device.id: line 2: String should match pattern"),
        ("  - type: mqtt", "  - type: kafka", "sinks[0].type: line 21: unknown type 'kafka'"),
    ],
)
def test_errors_name_yaml_path_and_line(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in BASE
    problems = problems_of(write(tmp_path, BASE.replace(old, new)))
    assert any(p.startswith(expected) for p in problems), problems


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    text = BASE.replace("  id: gw-1", "  id: gw-1\n  colour: red").replace(
        "port: ${PORT:-1883}", "port: lots"
    )
    assert len(problems_of(write(tmp_path, text))) == 2


def test_missing_field_names_the_field(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, BASE.replace("    model: m\n", "")))
    assert any(p.startswith("pipelines[0].model: line 10: Field required") for p in problems)


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, BASE.replace("  id: gw-1", "  id: gw-1\n  id: gw-2")))
    assert problems == ["device.id: line 3: duplicate key"]


def test_invalid_yaml_gives_line_and_column(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, BASE.replace("  id: gw-1", "  id: [gw-1")))
    assert len(problems) == 1 and "invalid YAML" in problems[0] and "line" in problems[0]


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "absent.yaml", {})


def test_mqtt_sink_without_mqtt_section(tmp_path: Path) -> None:
    text = BASE.split("mqtt:\n  host", maxsplit=1)[0] + "models:" + BASE.split("models:")[1]
    problems = problems_of(write(tmp_path, text))
    assert problems == ["sinks[0].type: line 18: an `mqtt` sink needs a top-level `mqtt` section"]


def test_password_from_env_and_file(tmp_path: Path) -> None:
    text = BASE.replace(
        "  host: 127.0.0.1", "  host: 127.0.0.1\n  username: gw\n  password_env: MQTT_PW"
    )
    loaded = load_config(write(tmp_path, text), {"MQTT_PW": "s3cret"})
    assert loaded.secrets.mqtt_password is not None
    assert loaded.secrets.mqtt_password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(loaded)

    (tmp_path / "pw.txt").write_text("from-file\n", encoding="utf-8")
    text = BASE.replace(
        "  host: 127.0.0.1", "  host: 127.0.0.1\n  username: gw\n  password_file: pw.txt"
    )
    loaded = load_config(write(tmp_path, text), {})
    assert loaded.secrets.mqtt_password is not None
    assert loaded.secrets.mqtt_password.get_secret_value() == "from-file"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "  username: gw\n  password_env: MQTT_PW",
            "mqtt.password_env: line 6: environment variable",
        ),
        ("  username: gw\n  password_file: absent.txt", "mqtt.password_file: line 6: cannot read"),
        ("  password: inline", "mqtt: line 3: Value error, inline 'password' is not allowed"),
        ("  password_env: MQTT_PW", "mqtt: line 3: Value error, password_env/password_file need a"),
    ],
)
def test_password_problems(tmp_path: Path, line: str, expected: str) -> None:
    text = BASE.replace("  host: 127.0.0.1", f"  host: 127.0.0.1\n{line}")
    problems = problems_of(write(tmp_path, text))
    assert problems[0].startswith(expected), problems


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "firmware_configs").glob("*.yaml")))
def test_shipped_configs_are_valid_without_the_device_secrets(name: str) -> None:
    assert list(iter_problems(REPO / "firmware_configs" / name, {})) == []


def test_validate_can_check_the_secrets_too() -> None:
    path = REPO / "firmware_configs" / "gateway-example.yaml"
    problems = list(iter_problems(path, {}, check_secrets=True))
    assert len(problems) == 1
    assert "mqtt.password_env" in problems[0] and "EDGEWATCH_MQTT_PASSWORD" in problems[0]
    assert list(iter_problems(path, {"EDGEWATCH_MQTT_PASSWORD": "x"}, check_secrets=True)) == []


@pytest.mark.parametrize("value", ["0755", "on", "null", "1e3"])
def test_substituted_values_stay_strings(tmp_path: Path, value: str) -> None:
    text = BASE.replace("  id: gw-1", "  id: ${DEV}").replace("port: ${PORT:-1883}", "port: 1883")
    text = text.replace("  host: 127.0.0.1", "  host: 127.0.0.1\n  username: ${DEV}")
    cfg = load_config(write(tmp_path, text), {"DEV": value}).config
    assert cfg.device.id == value
    assert cfg.mqtt is not None and cfg.mqtt.username == value


def test_validate_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, BASE)
    assert main(["validate", str(good)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE.replace("port: ${PORT:-1883}", "port: lots"), encoding="utf-8")
    assert main(["validate", str(good), str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"{good}: ok" in out
    assert "mqtt.port: line 5:" in out


def test_schema_is_json_schema_with_plugin_variants(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema == json_schema()
    text = json.dumps(schema)
    for key in ('"camera"', '"threshold"', '"zone"', '"mqtt"', '"onnxruntime"'):
        assert key in text
    assert "device" in schema["required"]


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(min_size=1, max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    section=st.sampled_from(["device", "mqtt", "models", "pipelines", "sinks"]), value=yaml_values
)
def test_any_shape_of_section_gives_config_errors_not_crashes(
    tmp_path: Path, section: str, value: object
) -> None:
    data = yaml.safe_load(BASE.replace("${PORT:-1883}", "1883"))
    data[section] = value
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    try:
        load_config(path, {})
    except ConfigErrors as exc:
        assert exc.problems and all(": line " in p for p in exc.problems)


def test_published_config_schema_is_current() -> None:
    published = json.loads((REPO / "docs" / "device-config.schema.json").read_text())
    assert published == json_schema(), (
        "run: edgewatch schema --output docs/device-config.schema.json"
    )


SENSOR = """\
sensor_pipelines:
  - name: pumps
    source:
      type: mqtt
      topics: [$share/gw/plant/+/pump]
      decoder:
        type: json
        fields: {vib: v, cur: c}
    model: m
    silence_after_s: 5
    rules:
      anomaly:
        type: threshold
        for_windows: 2
      quiet:
        type: silence
"""


def test_sensor_pipelines_load_beside_camera_pipelines(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BASE + SENSOR), {}).config
    (pumps,) = cfg.sensor_pipelines
    assert pumps.source.topics == ["$share/gw/plant/+/pump"]  # type: ignore[attr-defined]
    assert pumps.window is None and pumps.silence_after_s == 5
    assert [r.type for r in pumps.rules.values()] == ["threshold", "silence"]


def test_a_config_with_only_sensor_pipelines_is_valid(tmp_path: Path) -> None:
    text = BASE.split("pipelines:", maxsplit=1)[0] + SENSOR + "sinks:\n  - type: mqtt\n"
    cfg = load_config(write(tmp_path, text), {}).config
    assert cfg.pipelines == [] and len(cfg.sensor_pipelines) == 1


def test_sensor_pipeline_problems_name_their_path(tmp_path: Path) -> None:
    no_pipelines = BASE.split("pipelines:", maxsplit=1)[0] + "sinks:\n  - type: console\n"
    (problem,) = problems_of(write(tmp_path, no_pipelines))
    assert problem.startswith("pipelines: ")
    assert problem.endswith("no pipelines: give `pipelines` or `sensor_pipelines`")
    same_name = BASE + SENSOR.replace("name: pumps", "name: line1")
    assert any(
        p.startswith("sensor_pipelines[0].name: line ") and "'line1' is used twice" in p
        for p in problems_of(write(tmp_path, same_name))
    )
    bad_rule = BASE + SENSOR.replace("for_windows: 2", "for_windows: 0")
    assert any(
        p.startswith("sensor_pipelines[0].rules.anomaly")
        for p in problems_of(write(tmp_path, bad_rule))
    )
    no_mqtt = (
        BASE.split("mqtt:\n  host", maxsplit=1)[0] + "models:" + (BASE + SENSOR).split("models:")[1]
    )
    problems = problems_of(write(tmp_path, no_mqtt))
    assert any(
        p.startswith("sensor_pipelines[0].source.type") and "needs a top-level `mqtt`" in p
        for p in problems
    )
