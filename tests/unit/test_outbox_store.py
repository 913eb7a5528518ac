"""The outbox's SQLite file: order, acknowledgement, bounds, reopening, refusal of bad files."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.errors import SinkError
from runtime.sinks._outbox_store import NewAlert, OutboxStore


def new(alert_id: str, *, priority: int = 1, created_ns: int = 1_000, size: int = 100) -> NewAlert:
    payload = b"{" + b"x" * (size - 2) + b"}"
    return NewAlert(
        alert_id, "door", f"ew/gw/alerts/door/{alert_id}", priority, created_ns, payload
    )


def test_rows_come_back_in_write_order_and_leave_when_acknowledged(tmp_path: Path) -> None:
    store = OutboxStore(tmp_path / "o.sqlite")
    seqs = store.write([new("a"), new("b"), new("c")], [])
    assert seqs == [1, 2, 3]
    assert (store.depth, store.bytes) == (3, 300)
    assert [r.alert_id for r in store.after(0, 10)] == ["a", "b", "c"]
    assert [r.alert_id for r in store.after(1, 1)] == ["b"]

    assert store.write([new("d")], acked=[1, 3, 99]) == [4]  # 99: unknown, ignored
    assert [r.alert_id for r in store.after(0, 10)] == ["b", "d"]
    assert (store.depth, store.bytes) == (2, 200)
    store.close()


def test_reopening_continues_the_sequence_and_marks_the_earlier_run(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    first = OutboxStore(path)
    first.write([new("a"), new("b")], [])
    first.write([], acked=[1])
    first.close()

    second = OutboxStore(path)
    assert second.reopened_seq == 2 and (second.depth, second.bytes) == (1, 100)
    assert second.write([new("c")], []) == [3]
    assert [(r.seq, r.alert_id) for r in second.after(0, 10)] == [(2, "b"), (3, "c")]
    second.close()


def test_shrink_drops_lowest_priority_oldest_first_and_spares_in_flight(tmp_path: Path) -> None:
    store = OutboxStore(tmp_path / "o.sqlite")
    store.write(
        [
            new("info-1", priority=0),
            new("crit-1", priority=2),
            new("info-2", priority=0),
            new("warn-1", priority=1),
            new("info-3", priority=0),
        ],
        [],
    )
    dropped = store.shrink_to(250, keep={1})  # info-1 is in flight
    assert [d.alert_id for d in dropped] == ["info-2", "info-3", "warn-1"]
    assert [r.alert_id for r in store.after(0, 10)] == ["info-1", "crit-1"]
    assert store.bytes == 200
    assert store.shrink_to(250, keep=set()) == []
    store.close()


def test_expire_removes_rows_older_than_the_cutoff(tmp_path: Path) -> None:
    store = OutboxStore(tmp_path / "o.sqlite")
    store.write(
        [new("old", created_ns=10), new("kept", created_ns=10), new("new", created_ns=50)], []
    )
    dropped = store.expire(before_ns=20, keep={2})
    assert [d.alert_id for d in dropped] == ["old"]
    assert [r.alert_id for r in store.after(0, 10)] == ["kept", "new"]
    assert store.oldest_created_ns() == 10
    store.close()


def test_a_second_process_is_refused_the_same_outbox(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    store = OutboxStore(path)
    store.write([new("a")], [])
    code = (
        "import sys; from pathlib import Path\n"
        "from runtime.sinks._outbox_store import OutboxStore\n"
        "from runtime.errors import SinkError\n"
        "try:\n    OutboxStore(Path(sys.argv[1]))\n"
        "except SinkError as e:\n    print(e); sys.exit(3)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 3, done.stderr
    assert "another edgewatch process" in done.stdout
    store.close()


def test_a_file_that_is_not_an_outbox_is_refused_with_advice(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(SinkError, match=r"o\.sqlite.*not a usable outbox; move it away"):
        OutboxStore(path)


def test_an_outbox_from_a_newer_edgewatch_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=7")
    with pytest.raises(SinkError, match="schema version 7"):
        OutboxStore(path)


@pytest.mark.parametrize("fsync", ["full", "normal", "off"])
def test_fsync_policy_sets_sqlite_synchronous(tmp_path: Path, fsync: str) -> None:
    store = OutboxStore(tmp_path / "o.sqlite", fsync=fsync)  # type: ignore[arg-type]
    level = store._db.execute("PRAGMA synchronous").fetchone()[0]
    assert level == {"off": 0, "normal": 1, "full": 2}[fsync]
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()
