"""The ``mqtt:`` section of the device config, MQTT name/topic checks, and the broker TLS context."""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from runtime.config.base import NAME_PATTERN, ConfigPath, StrictModel
from runtime.errors import ConfigError

_NAME_RE = re.compile(NAME_PATTERN)
_CLIENT_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}")
SESSION_EXPIRY_NEVER = 0xFFFFFFFF
MAX_PACKET_LIMIT = 268_435_455  # the largest packet MQTT can frame (256 MiB - 1)


def check_name(kind: str, value: str) -> str:
    """``value`` unchanged if it is safe as one MQTT topic level (``NAME_PATTERN``), else
    ``ValueError``."""
    if not _NAME_RE.fullmatch(value):
        raise ValueError(
            f"{kind} {value!r}: expected 1-64 characters from [A-Za-z0-9_.-] starting with a "
            "letter or digit (it becomes one MQTT topic level; '/', '+', '#', '$' and spaces "
            "are not allowed)"
        )
    return value


def check_client_id(value: str) -> str:
    """``value`` unchanged if it is a safe MQTT client id, else ``ValueError``."""
    if not _CLIENT_ID_RE.fullmatch(value):
        raise ValueError(
            f"client_id {value!r}: expected 1-128 characters from [A-Za-z0-9_.:@-] starting "
            "with a letter or digit (no '/', '+', '#', '$', spaces or control characters)"
        )
    return value


def check_topic_prefix(value: str) -> str:
    """``value`` unchanged if it is a valid publish-topic prefix, else ``ValueError``."""
    problem = None
    if not value:
        problem = "must not be empty"
    elif "+" in value or "#" in value:
        problem = "must not contain the wildcards '+' or '#'"
    elif value.startswith("/") or value.endswith("/"):
        problem = "must not start or end with '/'"
    elif "//" in value:
        problem = "must not contain empty levels ('//')"
    elif value.startswith("$"):
        problem = "must not start with '$' (reserved for broker topics)"
    elif "\x00" in value:
        problem = "must not contain NUL characters"
    if problem is not None:
        raise ValueError(f"topic_prefix {value!r} {problem}; expected e.g. 'edgewatch/plant3'")
    return value


def check_topic_filter(value: str) -> str:
    """``value`` unchanged if it is a valid MQTT subscription filter, else ``ValueError``."""
    levels = value.split("/")
    ok = bool(value) and "\x00" not in value
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            ok = False
        if "+" in level and level != "+":
            ok = False
    if not ok:
        raise ValueError(
            f"topic filter {value!r}: expected levels separated by '/', where '+' is a whole "
            "level and '#' only the whole last level"
        )
    return value


class TlsSettings(StrictModel):
    """TLS to the broker (TLS 1.2 or newer). File paths are read when the link is built."""

    ca_file: ConfigPath | None = Field(None, description="CA bundle; None uses the system CAs")
    cert_file: ConfigPath | None = Field(
        None, description="client certificate (PEM) for mutual TLS"
    )
    key_file: ConfigPath | None = Field(None, description="client key (PEM), if not in cert_file")
    insecure: bool = Field(False, description="skip the broker hostname check (testing only)")

    @model_validator(mode="after")
    def _key_needs_cert(self) -> TlsSettings:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("tls.key_file is set but tls.cert_file is not; set both")
        return self


class MqttSettings(StrictModel):
    """The device config's ``mqtt:`` section. Passwords come from ``password_env``/``password_file``
    (resolved by the config loader), never inline."""

    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(1883, ge=1, le=65535)
    client_id: str | None = Field(
        None,
        min_length=1,
        description='default "edgewatch-<device>"; the broker keeps the session under this id',
    )
    keepalive_s: int = Field(30, ge=1, le=65535)
    topic_prefix: str = "edgewatch"
    protocol: Literal["5", "3.1.1"] = "5"
    clean_start: bool = Field(
        False,
        description="true: start a new broker session on every connect (QoS 1 messages sent to "
        "the device while it was away are lost); false: resume it (3.1.1: clean_session)",
    )
    session_expiry_s: int = Field(
        3600,
        ge=0,
        le=SESSION_EXPIRY_NEVER,
        description="MQTT 5: how long the broker keeps the session (subscriptions, queued QoS 1 "
        f"messages) after the device disconnects; 0 ends it at once, {SESSION_EXPIRY_NEVER} "
        "never. With 3.1.1 the broker's own setting decides",
    )
    max_packet_bytes: int | None = Field(
        1_048_576,
        ge=1024,
        le=MAX_PACKET_LIMIT,
        description="MQTT 5: the broker drops messages to the device larger than this (Maximum "
        "Packet Size) instead of sending them; null for no limit. 3.1.1 has no such limit",
    )
    username: str | None = Field(None, min_length=1)
    password_env: str | None = Field(None, min_length=1)
    password_file: ConfigPath | None = Field(None, min_length=1)
    tls: TlsSettings | None = None
    reconnect_min_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)
    max_queued_messages: int = Field(10000, ge=1, description="QoS>0 messages kept while offline")

    @model_validator(mode="before")
    @classmethod
    def _no_inline_password(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "password" in data:
            raise ValueError(
                "inline 'password' is not allowed; use password_env (an environment variable "
                "name) or password_file (a file holding the password)"
            )
        return data

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_number(cls, value: Any) -> Any:
        # YAML reads `protocol: 5` as an int.
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _topic_prefix(cls, value: str) -> str:
        return check_topic_prefix(value)

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, value: str | None) -> str | None:
        return None if value is None else check_client_id(value)

    @model_validator(mode="after")
    def _consistent(self) -> MqttSettings:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError(
                f"reconnect_max_s ({self.reconnect_max_s}) must be >= "
                f"reconnect_min_s ({self.reconnect_min_s})"
            )
        if self.password_env is not None and self.password_file is not None:
            raise ValueError("set only one of password_env and password_file")
        if (self.password_env or self.password_file) and self.username is None:
            raise ValueError("password_env/password_file need a username")
        mqtt5_only = {"session_expiry_s", "max_packet_bytes"} & self.model_fields_set
        if self.protocol == "3.1.1" and mqtt5_only:
            raise ValueError(
                f"{', '.join(sorted(mqtt5_only))}: MQTT 5 only, but protocol is 3.1.1 (there "
                "the broker's own settings decide)"
            )
        return self


def build_tls_context(tls: TlsSettings) -> ssl.SSLContext:
    """An SSL context for the broker connection; unreadable files become ``ConfigError``."""
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"mqtt.tls.ca_file {tls.ca_file!r}: can't load CA bundle: {e}") from e
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert_file is not None:
        try:
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(
                f"mqtt.tls.cert_file {tls.cert_file!r} / key_file {tls.key_file!r}: "
                f"can't load client certificate: {e}"
            ) from e
    if tls.insecure:
        ctx.check_hostname = False
    return ctx


__all__ = [
    "MAX_PACKET_LIMIT",
    "SESSION_EXPIRY_NEVER",
    "MqttSettings",
    "TlsSettings",
    "build_tls_context",
    "check_client_id",
    "check_name",
    "check_topic_filter",
    "check_topic_prefix",
]
