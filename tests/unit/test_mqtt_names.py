"""Names that become MQTT topic levels or the client id can't inject levels or wildcards; bad ones
are rejected at config load with their YAML path. Also the session/limit settings' validation."""

from __future__ import annotations

import copy
import ssl
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from runtime.config.loader import ConfigErrors, load_config
from runtime.config.schema import Name
from runtime.mqtt_settings import (
    SESSION_EXPIRY_NEVER,
    MqttSettings,
    TlsSettings,
    build_tls_context,
    check_client_id,
    check_name,
)

FORBIDDEN = "/+#$\x00"
"""Never inside a topic level: level separator, wildcards, the broker-topic marker, NUL."""
NAME = TypeAdapter(Name)

valid_names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", fullmatch=True)
troublemakers = st.sampled_from([*FORBIDDEN, " ", "\t", "\n", "\r", "\x0b", "\u00a0", "\u2028"])


@st.composite
def tainted(draw: st.DrawFn, base: st.SearchStrategy[str] = valid_names) -> str:
    """A valid name with one forbidden or unusual character put anywhere (also at the end, where
    a regex ``$`` would still match before a newline)."""
    name = draw(base)
    at = draw(st.integers(0, len(name)))
    bad = draw(st.one_of(troublemakers, st.characters(exclude_categories=["Cs"])))
    return name[:at] + bad + name[at:]


candidate_names = st.one_of(st.text(max_size=80), valid_names, tainted())


def accepted(check: Any, value: str) -> bool:
    try:
        check("name", value) if check is check_name else check(value)
    except ValueError:
        return False
    return True


def assert_safe_topic_level(value: str, max_len: int) -> None:
    assert 1 <= len(value) <= max_len
    assert value.isascii()
    assert not set(value) & set(FORBIDDEN)
    assert not any(c.isspace() or not c.isprintable() for c in value)


@given(candidate_names)
@settings(max_examples=500)
def test_an_accepted_name_is_one_safe_topic_level(value: str) -> None:
    if accepted(check_name, value):
        assert_safe_topic_level(value, 64)
        assert not value.startswith((".", "-", "_"))


@given(candidate_names)
@settings(max_examples=500)
def test_the_config_schema_and_the_link_accept_exactly_the_same_names(value: str) -> None:
    """Device ids and pipeline names are checked by the pydantic ``Name`` at config load and by
    ``check_name`` in the link; one must not let through what the other refuses."""
    try:
        NAME.validate_python(value)
        schema_ok = True
    except ValidationError:
        schema_ok = False
    assert schema_ok == accepted(check_name, value)


@given(st.one_of(st.text(max_size=140), tainted(), tainted(st.just("edgewatch-gw01"))))
@settings(max_examples=300)
def test_an_accepted_client_id_has_no_wildcards_separators_or_control_characters(
    value: str,
) -> None:
    if accepted(check_client_id, value):
        assert_safe_topic_level(value, 128)


@pytest.mark.parametrize(
    "client_id", ["edgewatch-gw01", "gw07:plant3", "dev@site.example", "A" * 128, "0"]
)
def test_reasonable_client_ids_are_accepted(client_id: str) -> None:
    assert MqttSettings(client_id=client_id).client_id == client_id


@pytest.mark.parametrize(
    "client_id", ["gw/01", "gw+", "#", "$SYS", " gw", "gw 01", "gw\x00", "gw\n", "é", "a" * 129]
)
def test_client_ids_with_separators_wildcards_or_odd_characters_are_rejected(
    client_id: str,
) -> None:
    with pytest.raises(ValidationError, match="client_id"):
        MqttSettings(client_id=client_id)


# ------------------------------------------------------------------ config load

CONFIG: dict[str, Any] = {
    "device": {"id": "gw-1"},
    "mqtt": {"host": "127.0.0.1"},
    "models": {"m": {"bundle": "bundles/m"}},
    "pipelines": [
        {
            "name": "line1",
            "source": {"type": "camera", "uri": "videos/a.mp4"},
            "model": "m",
            "rules": {"fire": {"type": "threshold", "labels": ["fire"], "raise_score": 0.8}},
        }
    ],
    "sinks": [{"type": "mqtt"}],
}


def write_config(path: Path, data: dict[str, Any]) -> str:
    text = yaml.safe_dump(data, sort_keys=False, width=10**6, allow_unicode=True)
    path.write_text(text, encoding="utf-8")
    return text


def line_of(text: str, prefix: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith(prefix))


@given(name=candidate_names, where=st.sampled_from(["device", "pipeline"]))
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_config_load_accepts_a_name_exactly_when_the_link_would_and_names_the_yaml_path(
    tmp_path: Path, name: str, where: str
) -> None:
    assume("${" not in name)  # ${VAR} is substituted before validation
    data = copy.deepcopy(CONFIG)
    if where == "device":
        data["device"]["id"] = name
        path_prefix, line_prefix = "device.id", "  id:"
    else:
        data["pipelines"][0]["name"] = name
        path_prefix, line_prefix = "pipelines[0].name", "- name:"
    text = write_config(tmp_path / "device.yaml", data)
    try:
        loaded = load_config(tmp_path / "device.yaml", {})
    except ConfigErrors as exc:
        assert not accepted(check_name, name)
        assert exc.problems == [
            f"{path_prefix}: line {line_of(text, line_prefix)}: String should match pattern "
            "'^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'"
        ]
    else:
        assert accepted(check_name, name)
        got = loaded.config.device.id if where == "device" else loaded.config.pipelines[0].name
        assert got == name


@pytest.mark.parametrize("rule", ["door/#", "+", "a b", "$SYS"])
def test_a_rule_name_that_would_inject_topic_levels_is_rejected_with_its_path(
    tmp_path: Path, rule: str
) -> None:
    data = copy.deepcopy(CONFIG)
    data["pipelines"][0]["rules"] = {rule: data["pipelines"][0]["rules"]["fire"]}
    text = write_config(tmp_path / "device.yaml", data)
    with pytest.raises(ConfigErrors) as info:
        load_config(tmp_path / "device.yaml", {})
    [problem] = info.value.problems
    assert problem.startswith(f"pipelines[0].rules.{rule}: line {line_of(text, '  rules:') + 1}:")


def test_a_bad_client_id_is_rejected_at_config_load_with_its_path(tmp_path: Path) -> None:
    data = copy.deepcopy(CONFIG)
    data["mqtt"]["client_id"] = "gw/+"
    text = write_config(tmp_path / "device.yaml", data)
    with pytest.raises(ConfigErrors) as info:
        load_config(tmp_path / "device.yaml", {})
    [problem] = info.value.problems
    assert problem.startswith(f"mqtt.client_id: line {line_of(text, '  client_id:')}:")
    assert "'/', '+', '#'" in problem


# ---------------------------------------------------- session and TLS settings


def test_session_defaults_resume_the_session_for_an_hour_with_a_1_mib_packet_limit() -> None:
    s = MqttSettings()
    assert (s.clean_start, s.session_expiry_s, s.max_packet_bytes) == (False, 3600, 1_048_576)
    yaml_style = MqttSettings.model_validate(
        {"clean_start": True, "session_expiry_s": SESSION_EXPIRY_NEVER, "max_packet_bytes": None}
    )
    assert yaml_style.clean_start and yaml_style.max_packet_bytes is None
    assert MqttSettings(protocol="3.1.1", clean_start=True).clean_start


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"session_expiry_s": -1}, "session_expiry_s"),
        ({"session_expiry_s": SESSION_EXPIRY_NEVER + 1}, "session_expiry_s"),
        ({"max_packet_bytes": 100}, "max_packet_bytes"),
        ({"max_packet_bytes": 2**28}, "max_packet_bytes"),
        ({"protocol": "3.1.1", "session_expiry_s": 60}, "MQTT 5 only"),
        ({"protocol": "3.1.1", "max_packet_bytes": 4096}, "MQTT 5 only"),
    ],
)
def test_invalid_session_settings_name_the_problem(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        MqttSettings(**values)


def test_the_tls_context_requires_tls_1_2_or_newer_and_verifies_the_broker() -> None:
    ctx = build_tls_context(TlsSettings())
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert (ctx.verify_mode, ctx.check_hostname) == (ssl.CERT_REQUIRED, True)
    insecure = build_tls_context(TlsSettings(insecure=True))
    assert insecure.minimum_version == ssl.TLSVersion.TLSv1_2
    assert (insecure.verify_mode, insecure.check_hostname) == (ssl.CERT_REQUIRED, False)
