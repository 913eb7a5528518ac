"""App: building pipelines from a config, failures isolated, supervision and shutdown."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from runtime.app import App, StartupError
from runtime.config.loader import load_config
from runtime.errors import ModelError
from runtime.pipeline import FramePipeline
from tests.fixture_models import build_colour_bundle
from tests.integration.test_end_to_end import write_video

pytestmark = pytest.mark.integration


def pipeline(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "source": {"type": "camera", "uri": "video.mp4", "pace": "max"},
        "model": "colour",
        "rules": {"red": {"type": "threshold", "labels": ["red"], "raise_score": 0.9}},
        **extra,
    }


def make_app(tmp_path: Path, pipelines: list[dict[str, Any]]) -> App:
    build_colour_bundle(tmp_path / "models")
    write_video(tmp_path / "video.mp4", [("blue", 5), ("red", 5)])
    config = {
        "device": {"id": "gw"},
        "models": {"colour": {"bundle": "models/colour/1.0.0"}},
        "pipelines": pipelines,
        "sinks": [{"type": "jsonl", "path": "alerts.jsonl"}],
    }
    (tmp_path / "device.yaml").write_text(yaml.safe_dump(config))
    return App.from_config(load_config(tmp_path / "device.yaml", {}))


def test_a_decoder_that_does_not_fit_the_model_fails_that_pipeline_at_start(
    tmp_path: Path,
) -> None:
    app = make_app(
        tmp_path,
        [pipeline("good"), pipeline("misfit", postprocess={"type": "classify", "output": 2})],
    )
    assert [p.name for p in app.pipelines] == ["good"]
    (failed,) = app.failed
    assert failed.name == "misfit"
    assert "postprocess 'classify' does not fit" in failed.reason
    assert "output=2" in failed.reason
    assert len(app.models) == 1, "one model shared by both pipelines"
    app.stop()


def test_a_crashed_pipeline_is_restarted_by_the_supervisor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(tmp_path, [pipeline("p")])
    calls: list[int] = []
    real_run = FramePipeline.run

    def crash_once(self: FramePipeline, stop: threading.Event, *args: Any, **kw: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise MemoryError("simulated crash outside any frame")
        real_run(self, stop, *args, **kw)

    monkeypatch.setattr(FramePipeline, "run", crash_once)
    app.start()
    try:
        assert app.wait(timeout_s=15), "restarted pipeline ran the video to its end"
    finally:
        app.stop()
    assert len(calls) == 2
    assert app.restarts == {"p": 1}
    status = app.status()["pipelines"][0]  # type: ignore[index]
    assert status["restarts"] == 1
    assert status["errors_by_stage"]["crash"] == 1
    assert status["frames_processed"] == 10


def test_stop_closes_models_once_and_later_runs_are_refused(tmp_path: Path) -> None:
    app = make_app(tmp_path, [pipeline("a"), pipeline("b")])
    app.start()
    assert app.wait(timeout_s=15)
    app.stop()
    model = app.models[0]
    with pytest.raises(ModelError, match="after close"):
        model.sample_outputs()


def test_nothing_to_run_is_a_startup_error(tmp_path: Path) -> None:
    app = make_app(tmp_path, [pipeline("p", source={"type": "camera", "uri": "absent.mp4"})])
    with pytest.raises(StartupError, match=r"no pipeline could start \(p: .*absent\.mp4"):
        app.start()
    app.stop()
