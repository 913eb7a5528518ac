"""Reads a device config: YAML with line numbers, ``${ENV}`` substitution, secrets from env or file.

This is the only module that reads environment variables and files named by the config.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr, ValidationError

from runtime.config.schema import DeviceConfigBase, cross_reference_problems, device_config_model
from runtime.errors import ConfigError

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Secrets:
    mqtt_password: SecretStr | None = None


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    path: Path
    config: DeviceConfigBase
    secrets: Secrets


class ConfigErrors(ConfigError):
    """Every problem found in one config file, each with its YAML path and line."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: {len(problems)} error(s)\n" + "\n".join(problems))


def load_config(
    path: Path, environ: Mapping[str, str] | None = None, *, resolve_secrets: bool = True
) -> LoadedConfig:
    """Parse, substitute, validate and resolve secrets; raise ConfigErrors listing every problem.

    ``resolve_secrets=False`` (``edgewatch validate``) checks a config on a machine that doesn't
    hold the device's secrets.
    """
    env = os.environ if environ is None else environ
    data, lines = _read_yaml(path, env)
    try:
        config = device_config_model().model_validate(
            data, context={"base_dir": str(path.parent.resolve())}
        )
    except ValidationError as exc:
        raise ConfigErrors(path, [_format_error(err, lines) for err in exc.errors()]) from None
    cross = cross_reference_problems(config)
    if cross:
        raise ConfigErrors(path, [_at(loc, msg, lines) for loc, msg in cross])
    secrets = _read_secrets(path, config, env, lines) if resolve_secrets else Secrets()
    return LoadedConfig(path=path, config=config, secrets=secrets)


def _read_yaml(path: Path, env: Mapping[str, str]) -> tuple[Any, dict[Loc, int]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from exc
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            raise ConfigErrors(path, ["(document): line 1: the file is empty"])
        problems: list[str] = []
        lines: dict[Loc, int] = {}
        _walk(root, (), lines, env, problems)
        if problems:
            raise ConfigErrors(path, problems)
        data = loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise ConfigErrors(path, [f"(document): {where}: invalid YAML: {exc.problem}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigErrors(path, [f"(document): invalid YAML: {exc}"]) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigErrors(path, ["(document): line 1: expected a mapping at the top level"])
    return data, lines


def _walk(
    node: yaml.Node, loc: Loc, lines: dict[Loc, int], env: Mapping[str, str], problems: list[str]
) -> None:
    """Record the line of every path, substitute ``${VAR}`` in scalars, reject duplicate keys."""
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            child = (*loc, key)
            if key in seen:
                problems.append(
                    f"{_dotted(child)}: line {key_node.start_mark.line + 1}: duplicate key"
                )
            seen.add(key)
            _walk(value_node, child, lines, env, problems)
            lines[child] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*loc, i), lines, env, problems)
    elif isinstance(node, yaml.ScalarNode) and "${" in node.value:
        # the result stays a string (YAML would read 0755 or "on" as numbers/booleans); pydantic
        # turns "1883" into an int where a field wants one
        node.value = _substitute(node.value, loc, lines[loc], env, problems)


def _substitute(
    value: str, loc: Loc, line: int, env: Mapping[str, str], problems: list[str]
) -> str:
    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        problems.append(
            f"{_dotted(loc)}: line {line}: environment variable {name} is not set "
            f"(use ${{{name}:-default}} for a default)"
        )
        return ""

    return _ENV_REF.sub(replace, value)


def _format_error(err: Any, lines: dict[Loc, int]) -> str:
    loc: Loc = tuple(err["loc"])
    # pydantic inserts union tags (e.g. 'camera') into loc; keep only parts that exist in the YAML
    yaml_loc: Loc = ()
    for part in loc:
        if (*yaml_loc, part) in lines:
            yaml_loc = (*yaml_loc, part)
    line = lines.get(yaml_loc, 1)
    msg = str(err["msg"])
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "missing":
        yaml_loc = (*yaml_loc, loc[-1]) if loc and loc[-1] not in yaml_loc else yaml_loc
    elif err["type"] == "literal_error" and loc[-1:] == ("type",):
        ctx = err.get("ctx", {})
        msg = f"unknown type {err.get('input')!r}; expected one of: {ctx.get('expected')}"
    elif err["type"] == "union_tag_invalid":
        ctx = err.get("ctx", {})
        msg = f"unknown type {ctx.get('tag')!r}; expected one of: {ctx.get('expected_tags')}"
        if (*yaml_loc, "type") in lines:
            yaml_loc = (*yaml_loc, "type")
            line = lines[yaml_loc]
    return f"{_dotted(yaml_loc) or '(document)'}: line {line}: {msg}"


def _at(loc: Loc, msg: str, lines: dict[Loc, int]) -> str:
    known = loc
    while known and known not in lines:
        known = known[:-1]
    return f"{_dotted(loc)}: line {lines.get(known, 1)}: {msg}"


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _read_secrets(
    path: Path, config: DeviceConfigBase, env: Mapping[str, str], lines: dict[Loc, int]
) -> Secrets:
    mqtt = config.mqtt
    if mqtt is None:
        return Secrets()
    if mqtt.password_env and mqtt.password_file:
        raise ConfigErrors(
            path, [_at(("mqtt",), "give password_env or password_file, not both", lines)]
        )
    if mqtt.password_env:
        if mqtt.password_env not in env:
            msg = f"environment variable {mqtt.password_env} is not set"
            raise ConfigErrors(path, [_at(("mqtt", "password_env"), msg, lines)])
        return Secrets(mqtt_password=SecretStr(env[mqtt.password_env]))
    if mqtt.password_file:
        try:
            text = Path(mqtt.password_file).read_text(encoding="utf-8")
        except OSError as exc:
            msg = f"cannot read {mqtt.password_file}: {exc.strerror or exc}"
            raise ConfigErrors(path, [_at(("mqtt", "password_file"), msg, lines)]) from exc
        return Secrets(mqtt_password=SecretStr(text.rstrip("\r\n")))
    return Secrets()


def iter_problems(
    path: Path, environ: Mapping[str, str] | None = None, *, check_secrets: bool = False
) -> Iterator[str]:
    """Every problem in a config file, for ``edgewatch validate``; nothing when it is valid."""
    try:
        load_config(path, environ, resolve_secrets=check_secrets)
    except ConfigErrors as exc:
        yield from exc.problems
    except ConfigError as exc:
        yield str(exc)
