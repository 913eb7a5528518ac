"""Camera uri helpers: what a uri names, and showing it without credentials."""

from __future__ import annotations

import pytest

from runtime.sources._uri import UriKind, default_name, redact_uri, uri_kind
from runtime.sources.camera import CameraConfig, CameraSource


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (0, "device"),
        ("2", "device"),
        (" 3 ", "device"),
        ("rtsp://cam/1", "url"),
        ("HTTPS://cam/mjpg", "url"),
        ("rtsp+tcp://cam/1", "url"),
        ("/clips/yard.mp4", "path"),
        ("clips/2.mp4", "path"),
        ("C:/clips/yard.mp4", "path"),
        ("frames", "path"),
    ],
)
def test_uri_kind(uri: int | str, expected: UriKind) -> None:
    assert uri_kind(uri) == expected


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("rtsp://admin:hunter2@10.0.0.5:554/stream1", "rtsp://***@10.0.0.5:554/stream1"),
        ("rtsp://admin:p@ss/w0rd@cam.local/live", "rtsp://***@cam.local/live"),
        ("rtsp://10.0.0.5/stream1", "rtsp://10.0.0.5/stream1"),
        ("https://cam/mjpg?user=a&password=b&fps=5", "https://cam/mjpg?user=a&password=***&fps=5"),
        ("http://u:p@cam/x?api_key=k1#frag", "http://***@cam/x?api_key=***#frag"),
        ("http://cam/x?Token=t1;sig=s2&res=low", "http://cam/x?Token=***;sig=***&res=low"),
        ("/data/clips/yard@night.mp4", "/data/clips/yard@night.mp4"),
        (0, "0"),
    ],
)
def test_redact_uri(uri: int | str, expected: str) -> None:
    assert redact_uri(uri) == expected


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (0, "camera0"),
        ("2", "camera2"),
        ("rtsp://a:b@cam/1", "rtsp://***@cam/1"),
        ("/clips/yard.mp4", "/clips/yard.mp4"),
    ],
)
def test_default_name(uri: int | str, expected: str) -> None:
    assert default_name(uri) == expected
    assert CameraSource(CameraConfig(type="camera", uri=uri)).name == expected
    assert CameraSource(CameraConfig(type="camera", uri=uri, name="door")).name == "door"
