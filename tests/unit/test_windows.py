"""Windower: count/time windows with hop, reordering within lateness, late/duplicate/missing
drops, gaps and state reset, silence, partial flag, bounded memory."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from runtime.messages import SensorReading
from runtime.processing.windows import Gap, Window, WindowConfig, Windower

MS = 1_000_000
S = 1_000_000_000


def reading(
    ts_ns: int, key: str = "pump1", mono_ns: int | None = None, **values: float
) -> SensorReading:
    if not values:
        values = {"a": float(ts_ns // MS), "b": -float(ts_ns // MS)}
    return SensorReading(
        key=key,
        ts_ns=ts_ns,
        received_mono_ns=ts_ns if mono_ns is None else mono_ns,
        fields=tuple(values),
        values=np.array(list(values.values()), np.float64),
    )


def config(**kwargs: Any) -> WindowConfig:
    base: dict[str, Any] = {
        "kind": "time",
        "size": 1.0,
        "hop": 1.0,
        "fields": ["a", "b"],
        "max_lateness_s": 0.0,
    }
    base.update(kwargs)
    return WindowConfig(**base)


def windows_of(items: list[Window | Gap]) -> list[Window]:
    return [w for w in items if isinstance(w, Window)]


def push_all(windower: Windower, readings: list[SensorReading]) -> list[Window | Gap]:
    out: list[Window | Gap] = []
    for r in readings:
        out += windower.push(r)
    return out


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hop": 2.0, "size": 1.0}, "hop must be <= size"),
        ({"kind": "count", "size": 4.5, "hop": 1}, "whole number of samples as size"),
        ({"fields": ["a", "a"]}, "duplicates: a"),
        ({"fields": []}, "fields"),
        ({"hop": 0}, "hop"),
        ({"gap_s": 0}, "gap_s"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        config(**kwargs)


def test_window_validates_shapes() -> None:
    with pytest.raises(ValueError, match=r"expected float64 data of shape \(2, 1\)"):
        Window("k", 0, 1, ("a",), np.array([1, 2], np.int64), np.zeros((2, 2)), False)
    with pytest.raises(ValueError, match="expected int64 timestamps"):
        Window("k", 0, 1, ("a",), np.array([1.0, 2.0]), np.zeros((2, 1)), False)


def test_count_windows_with_hop() -> None:
    w = Windower(config(kind="count", size=4, hop=2))
    out = push_all(w, [reading(i * MS) for i in range(11)])
    wins = windows_of(out)
    assert len(out) == len(wins) == 4  # after samples 4, 6, 8, 10
    assert [list(win.timestamps_ns // MS) for win in wins] == [
        [0, 1, 2, 3],
        [2, 3, 4, 5],
        [4, 5, 6, 7],
        [6, 7, 8, 9],
    ]
    last = wins[-1]
    assert last.fields == ("a", "b")
    np.testing.assert_array_equal(last.data, [[6, -6], [7, -7], [8, -8], [9, -9]])
    assert not any(win.partial for win in wins)
    assert last.start_ns == 6 * MS and last.end_ns == 9 * MS + 1
    with pytest.raises(ValueError, match="read-only"):
        last.data[0, 0] = 1.0


def test_fields_are_selected_and_ordered_by_config() -> None:
    w = Windower(config(kind="count", size=2, hop=2, fields=["b", "a"]))
    w.push(reading(0, a=1.0, extra=9.0, b=2.0))
    (win,) = windows_of(w.push(reading(MS, b=4.0, a=3.0)))
    assert win.fields == ("b", "a")
    np.testing.assert_array_equal(win.data, [[2.0, 1.0], [4.0, 3.0]])


def test_time_windows_aligned_to_hop_and_emitted_when_watermark_passes_end() -> None:
    w = Windower(config(size=1.0, hop=0.5, max_lateness_s=0.1))
    # 10 Hz from t = 10.25 s: the first window starts at the next hop boundary, 10.5 s
    readings = [reading(10 * S + 250 * MS + k * 100 * MS) for k in range(40)]
    out: list[Window | Gap] = []
    for r in readings:
        new = w.push(r)
        for win in windows_of(new):
            # emitted as soon as newest - lateness reaches the window end, not before
            assert r.ts_ns - 100 * MS >= win.end_ns > r.ts_ns - 200 * MS
        out += new
    wins = windows_of(out)
    assert [win.start_ns for win in wins] == [
        10 * S + 500 * MS + i * 500 * MS for i in range(len(wins))
    ]
    assert len(wins) == 6  # last reading 14.15 s → watermark 14.05 s → windows ending up to 14.0 s
    for win in wins:
        assert win.end_ns - win.start_ns == S
        assert win.n_samples == 10
        assert win.timestamps_ns[0] >= win.start_ns and win.timestamps_ns[-1] < win.end_ns
        assert np.all(np.diff(win.timestamps_ns) > 0)
        assert not win.partial


def test_out_of_order_within_lateness_is_reordered() -> None:
    ordered = [reading(k * 100 * MS) for k in range(60)]
    shuffled = list(ordered)
    for i in range(0, 58, 3):  # reverse triples: at most 200 ms out of order
        shuffled[i : i + 3] = reversed(shuffled[i : i + 3])
    expected = windows_of(
        push_all(Windower(config(size=1.0, hop=0.5, max_lateness_s=0.3)), ordered)
    )
    w = Windower(config(size=1.0, hop=0.5, max_lateness_s=0.3))
    got = windows_of(push_all(w, shuffled))
    assert w.dropped == {"late": 0, "missing_field": 0, "duplicate_timestamp": 0}
    assert len(got) == len(expected) > 5
    for a, b in zip(got, expected, strict=True):
        assert (a.start_ns, a.end_ns, a.partial) == (b.start_ns, b.end_ns, b.partial)
        np.testing.assert_array_equal(a.timestamps_ns, b.timestamps_ns)
        np.testing.assert_array_equal(a.data, b.data)


def test_late_readings_are_dropped_and_counted() -> None:
    w = Windower(config(kind="count", size=3, hop=3, max_lateness_s=0.2))
    push_all(w, [reading(k * 100 * MS) for k in range(5)])  # newest 400 ms → watermark 200 ms
    assert w.push(reading(150 * MS, a=-1.0, b=-1.0)) == []
    assert w.dropped["late"] == 1
    push_all(w, [reading(250 * MS, a=-2.0, b=-2.0)])  # within lateness: accepted
    wins = windows_of(push_all(w, [reading(k * 100 * MS) for k in range(5, 12)]))
    values = np.concatenate([win.data[:, 0] for win in wins])
    assert -1.0 not in values
    assert -2.0 in values
    assert w.dropped["late"] == 1


def test_duplicate_timestamps_and_missing_fields_are_dropped_and_counted() -> None:
    w = Windower(config(kind="count", size=2, hop=1, max_lateness_s=1.0))
    w.push(reading(0))
    w.push(reading(5 * MS))
    assert w.push(reading(5 * MS)) == []  # still in the reorder buffer
    w.push(reading(2 * S))  # releases 0 and 5 ms
    assert w.push(reading(0)) == []  # already released (and late)
    assert w.push(reading(3 * S, a=1.0)) == []
    assert w.dropped == {"late": 1, "missing_field": 1, "duplicate_timestamp": 1}


def test_gap_is_reported_and_window_state_reset() -> None:
    w = Windower(config(kind="count", size=3, hop=1, gap_s=1.0))
    out = push_all(w, [reading(k * 100 * MS) for k in range(4)])
    assert len(windows_of(out)) == 2
    out = w.push(reading(5 * S))
    assert out == [Gap("pump1", 300 * MS, 5 * S)]
    assert isinstance(out[0], Gap) and out[0].duration_s == pytest.approx(4.7)
    # the pre-gap samples are gone: a new window needs three fresh samples
    assert w.push(reading(5 * S + 100 * MS)) == []
    (win,) = windows_of(w.push(reading(5 * S + 200 * MS)))
    assert list(win.timestamps_ns) == [5 * S, 5 * S + 100 * MS, 5 * S + 200 * MS]


def test_gap_resets_time_windows() -> None:
    w = Windower(config(size=1.0, hop=1.0, gap_s=0.5))
    out = push_all(w, [reading(k * 100 * MS) for k in range(15)])  # up to 1.4 s
    out += push_all(w, [reading(3 * S + 200 * MS + k * 100 * MS) for k in range(25)])
    gaps = [g for g in out if isinstance(g, Gap)]
    assert gaps == [Gap("pump1", 1400 * MS, 3200 * MS)]
    wins = windows_of(out)
    # [0, 1) full; [1, 2) is cut short by the gap and discarded; after it windows restart at the
    # first hop boundary after the gap, 4 s (last reading 5.6 s: [5, 6) is not complete yet)
    assert [win.start_ns for win in wins] == [0, 4 * S]
    assert all(win.n_samples == 10 for win in wins)


def test_silence_is_reported_once_per_silence() -> None:
    w = Windower(config(kind="count", size=3, hop=1, gap_s=2.0))
    w.push(reading(10 * S, key="a", mono_ns=100 * S))
    w.push(reading(11 * S, key="b", mono_ns=101 * S))
    assert w.check_silence(102 * S) == []
    assert w.check_silence(102 * S + 1) == [Gap("a", 10 * S, 12 * S + 1, ongoing=True)]
    assert w.check_silence(103 * S + 5) == [Gap("b", 11 * S, 13 * S + 5, ongoing=True)]
    assert w.check_silence(110 * S) == []  # already reported
    w.push(reading(20 * S, key="a", mono_ns=110 * S))
    assert w.check_silence(112 * S + 1) == [Gap("a", 20 * S, 22 * S + 1, ongoing=True)]
    assert Windower(config()).check_silence(10**18) == []  # no gap_s: silence isn't judged


def test_partial_flag_for_underfilled_time_windows() -> None:
    w = Windower(config(size=1.0, hop=1.0, min_fill=0.8))
    stamps = [k * 10 * MS for k in range(400)]  # 100 Hz, windows of 100 samples
    stamps = [t for t in stamps if not (1 * S <= t < 1 * S + 300 * MS)]  # window [1, 2): 70 left
    stamps = [t for t in stamps if not (2 * S <= t < 2 * S + 150 * MS)]  # window [2, 3): 85 left
    wins = windows_of(push_all(w, [reading(t) for t in stamps]))
    assert [(win.start_ns // S, win.n_samples, win.partial) for win in wins] == [
        (0, 100, False),
        (1, 70, True),
        (2, 85, False),
    ]
    (last,) = windows_of(w.flush())
    assert (last.start_ns, last.n_samples, last.partial) == (3 * S, 100, False)
    assert w.keys == []


def test_flush_releases_pending_and_emits_trailing_windows() -> None:
    w = Windower(config(kind="count", size=4, hop=4, max_lateness_s=10.0))
    push_all(w, [reading(k * MS, key=key) for k in range(6) for key in ("x", "y")])
    assert w.keys == ["x", "y"]
    flushed = windows_of(w.flush("x"))
    assert [(win.key, win.n_samples, win.partial) for win in flushed] == [
        ("x", 4, False),
        ("x", 4, False),
    ]
    assert list(flushed[1].timestamps_ns // MS) == [2, 3, 4, 5]  # the last `size` samples
    w.push(reading(0, key="z"))
    (short,) = windows_of(w.flush("z"))
    assert (short.n_samples, short.partial) == (1, True)
    assert w.keys == ["y"]
    assert w.flush("unknown") == []
    assert len(windows_of(w.flush())) == 2


def test_memory_stays_bounded_under_100k_readings() -> None:
    rng = np.random.default_rng(1)
    count = Windower(config(kind="count", size=64, hop=32, max_lateness_s=0.002))
    time_w = Windower(
        config(size=0.5, hop=0.25, max_lateness_s=0.002, max_pending=2, max_window_samples=256)
    )
    jitter = rng.integers(0, 3 * MS, 100_000)
    n_count = n_time = 0
    for k in range(100_000):
        r = reading(k * MS + int(jitter[k]), a=1.0, b=2.0)  # 1 kHz, up to 3 ms out of order
        n_count += len(count.push(r))
        n_time += len(time_w.push(r))
    for w, capacity in ((count, 64), (time_w, 256)):
        st = w._states["pump1"]
        assert st.buffer.capacity == capacity
        assert len(st.buffer) <= capacity
        assert st.buffer._ts.shape[0] == 2 * capacity
        assert len(st.pending) <= w.config.max_pending
        assert len(st.intervals_ns) <= 255
    released = 100_000 - sum(count.dropped.values()) - len(count._states["pump1"].pending)
    assert n_count == (released - 64) // 32 + 1 > 2500
    assert n_time > 300
    # the time windows need ~500 samples but only 256 fit: the buffer evicts (and counts), the
    # reorder buffer stays within 2 and forces early releases (counted)
    assert time_w.overflow["window"] > 0
    assert time_w.overflow["reorder"] > 0
    assert count.overflow == {"reorder": 0, "window": 0}
