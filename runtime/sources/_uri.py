"""What a camera ``uri`` names, and how to show it without credentials."""

from __future__ import annotations

import re
from typing import Literal

_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_SECRET_QUERY_RE = re.compile(
    r"([?&;][^=&#;]*(?:pass|pwd|token|secret|key|auth|sig|cred)[^=&#;]*=)[^&#;]*", re.IGNORECASE
)

UriKind = Literal["device", "url", "path"]


def uri_kind(uri: int | str) -> UriKind:
    """What a ``uri`` names, from its text alone: a device index, a stream URL, or a path."""
    if isinstance(uri, int) or uri.strip().isdigit():
        return "device"
    if _URL_RE.match(uri):
        return "url"
    return "path"


def redact_uri(uri: int | str) -> str:
    """The uri with URL credentials (``user:pass@``) and secret-looking query values replaced.

    Everything before the last ``@`` of the authority-and-path part is treated as credentials, so
    a password containing ``/`` or ``@`` is redacted too (at worst a host is hidden as well).
    """
    text = str(uri)
    scheme = _URL_RE.match(text)
    if scheme is None:
        return text
    head, rest = scheme.group(0), text[scheme.end() :]
    cut = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    location, tail = rest[:cut], rest[cut:]
    if "@" in location:
        location = "***@" + location.rpartition("@")[2]
    return head + location + _SECRET_QUERY_RE.sub(r"\1***", tail)


def default_name(uri: int | str) -> str:
    """``camera<N>`` for a device index, otherwise the redacted uri."""
    if uri_kind(uri) == "device":
        return f"camera{int(uri)}"
    return redact_uri(uri)
