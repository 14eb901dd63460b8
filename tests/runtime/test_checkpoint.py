"""Checkpoints: the store (atomic writes, torn and damaged checkpoints, keep K, lock) and the
executor's checkpoint/restore cycle in process (the kill -9 tests are test_exactly_once.py)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tidal import Batch, ConfigError, Executor, Pipeline, StateError, bounded
from tidal import aggregations as agg
from tidal.io.base import BaseSource
from tidal.io.jsonl import JsonlPartSink
from tidal.io.parts import read_committed
from tidal.runtime.checkpoint import CheckpointConfig, CheckpointStore, CrashHook
from tidal.runtime.replay import StartFrom, parse_time
from tidal.runtime.snapshot import decode
from tidal.testing import MemorySink, MemorySource
from tidal.windows import tumbling

# -- the store ---------------------------------------------------------------------------------


def _store(tmp_path: Path, keep: int = 3) -> CheckpointStore:
    return CheckpointStore(CheckpointConfig(data_dir=tmp_path, keep=keep), "p-1")


def test_layout_manifest_written_last_and_read_back(tmp_path: Path) -> None:
    store = _store(tmp_path)
    chk = store.write(7, b"state bytes")
    assert chk.path == tmp_path / "checkpoints" / "p-1" / "chk-000000000007"
    assert sorted(p.name for p in chk.path.iterdir()) == ["MANIFEST.json", "state.npz"]
    assert store.latest_valid() == chk
    found = store.load_latest()
    assert found is not None and found[1] == b"state bytes"
    with pytest.raises(StateError, match="not newer"):
        store.write(7, b"again")


def test_torn_checkpoint_is_skipped_with_a_log_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = _store(tmp_path)
    store.write(1, b"one")
    torn = store.dir_of(2)
    torn.mkdir()
    (torn / "state.npz").write_bytes(b"half of it")  # no manifest: the writer died
    with caplog.at_level(logging.WARNING, logger="tidal.checkpoint"):
        chk = store.latest_valid()
    assert chk is not None and chk.id == 1
    assert "chk-000000000002 is incomplete" in caplog.text


def test_hash_mismatch_and_bad_manifest_are_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = _store(tmp_path)
    store.write(1, b"one")
    store.write(2, b"two")
    store.write(3, b"three")
    (store.dir_of(3) / "state.npz").write_bytes(b"thre3")  # same size, other bytes
    (store.dir_of(2) / "MANIFEST.json").write_bytes(b"{not json")
    with caplog.at_level(logging.WARNING, logger="tidal.checkpoint"):
        chk = store.latest_valid()
    assert chk is not None and chk.id == 1
    assert "does not match its manifest" in caplog.text
    assert "unreadable manifest" in caplog.text
    with pytest.raises(StateError, match="damaged"):
        store.read(store.manifest(3))  # type: ignore[arg-type]


def test_nothing_valid_gives_none(tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert store.latest_valid() is None
    store.dir_of(1).mkdir(parents=True)
    assert store.latest_valid() is None


def test_prune_keeps_the_newest_k_complete_and_drops_torn(tmp_path: Path) -> None:
    store = _store(tmp_path, keep=2)
    for i in range(1, 5):
        store.write(i, f"s{i}".encode())
    store.dir_of(5).mkdir()  # torn
    store.write(6, b"s6")
    assert store.prune() == [1, 2, 3, 5]
    assert store.ids() == [4, 6]


def test_lock_is_exclusive(tmp_path: Path) -> None:
    a, b = _store(tmp_path), _store(tmp_path)
    a.lock()
    with pytest.raises(StateError, match="another process is running pipeline 'p-1'"):
        b.lock()
    a.unlock()
    b.lock()
    b.unlock()


def test_config_validation_and_env_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDAL_DATA_DIR", "/somewhere")
    assert str(CheckpointConfig().data_dir) == "/somewhere"
    assert CheckpointConfig(drop_state=["a"]).drop_state == ("a",)
    with pytest.raises(ConfigError, match="keep must be >= 1"):
        CheckpointConfig(keep=0)
    with pytest.raises(ConfigError, match="every_events"):
        CheckpointConfig(every_events=0)
    with pytest.raises(ConfigError, match="duration"):
        CheckpointConfig(interval="soon")
    with pytest.raises(ConfigError, match=r"drop_state=\['w'\]"):
        CheckpointConfig(drop_state="w")


def test_crash_hook_parses_and_refuses_unknown_points() -> None:
    assert CrashHook({"TIDAL_TEST_CRASH_POINT": "mid_commit:2"}).n == 2
    with pytest.raises(ConfigError, match="after_prepare"):
        CrashHook({"TIDAL_TEST_CRASH_POINT": "somewhere"})
    with pytest.raises(ConfigError, match="which occurrence"):
        CrashHook({"TIDAL_TEST_CRASH_POINT": "mid_state:x"})


# -- the executor ------------------------------------------------------------------------------

N = 4000


def _batches() -> list[Batch]:
    rng = np.random.default_rng(3)
    t = 1_000 + np.arange(N) * 5 + rng.integers(-300, 300, N)
    keys = rng.integers(0, 20, N)
    cols = {"k": keys, "ts": t, "v": np.round(rng.normal(0, 1, N), 3)}
    return [Batch({c: a[i : i + 100] for c, a in cols.items()}) for i in range(0, N, 100)]


def _pipeline(out: Path, *, name: str = "w") -> Pipeline:
    p = Pipeline("chk")
    s = p.source("in", MemorySource(_batches()), time="ts", watermark=bounded("200ms"))
    w = s.key_by("k").window(name, tumbling("1s"), {"n": agg.count(), "sum": agg.sum("v")})
    w.sink("out", JsonlPartSink(out / "main"))
    w.late.sink("late", JsonlPartSink(out / "late"))
    return p


def _canon(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(repr(sorted(r.items())) for r in rows)


def _executor(p: Pipeline, data: Path, **config: Any) -> Executor:
    config.setdefault("interval", None)
    config.setdefault("every_events", 500)
    return Executor(
        p,
        max_wait="0ms",
        handle_signals=False,
        checkpoint=CheckpointConfig(data_dir=data, **config),
    )


def _die(ex: Executor) -> None:
    """What the kernel does for a process killed now: files closed as they are, lock freed."""
    for n in ex.nodes:
        if n.sink is not None:
            n.sink.close()  # a part sink leaves its file staged
    assert ex.store is not None
    ex.store.unlock()


def _reference(tmp_path: Path) -> tuple[list[str], list[str]]:
    out = tmp_path / "ref"
    _executor(_pipeline(out), tmp_path / "ref-data").run()
    return _canon(read_committed(out / "main")), _canon(read_committed(out / "late"))


@pytest.mark.parametrize("crash_after", [3, 11, 27])
def test_abandoned_run_resumes_exactly_once(tmp_path: Path, crash_after: int) -> None:
    main, late = _reference(tmp_path)
    assert main and late
    out, data = tmp_path / "out", tmp_path / "data"
    ex = _executor(_pipeline(out), data)
    ex.open()
    for _ in range(crash_after):  # a checkpoint every 5 batches, then output never committed
        assert ex.step()
    _die(ex)
    staged = list((out / "main" / ".staging").iterdir())
    assert staged or crash_after % 5 == 0
    ex2 = _executor(_pipeline(out), data)
    summary = ex2.run()
    assert ex2.restored_from == (crash_after // 5 or None)
    assert summary.counts["checkpoints"] >= 1
    assert summary.extra["checkpoint_ms"]["p50"] > 0
    assert _canon(read_committed(out / "main")) == main
    assert _canon(read_committed(out / "late")) == late
    assert not list((out / "main" / ".staging").iterdir())


def test_a_finished_run_restarts_to_nothing_new(tmp_path: Path) -> None:
    main, _ = _reference(tmp_path)
    out, data = tmp_path / "out", tmp_path / "data"
    _executor(_pipeline(out), data).run()
    ex = _executor(_pipeline(out), data)
    summary = ex.run()
    assert summary.extra["restored_from"] is not None
    assert _canon(read_committed(out / "main")) == main
    store = ex.store
    assert store is not None and len(store.ids()) == 3  # keep=3
    assert (store.latest_valid() or pytest.fail()).final


def test_a_stop_at_the_event_limit_leaves_windows_open_and_resumes(tmp_path: Path) -> None:
    main, late = _reference(tmp_path)
    out, data = tmp_path / "out", tmp_path / "data"
    config = CheckpointConfig(data_dir=data, interval=None, every_events=500)
    first = Executor(
        _pipeline(out),
        max_events=1_500,
        at_limit="stop",
        max_wait="0ms",
        handle_signals=False,
        checkpoint=config,
    ).run()
    assert first.events == 1_500
    fired = read_committed(out / "main")
    # every event is in a fired window or late once drained; here the open windows hold some
    assert sum(r["n"] for r in fired) + len(read_committed(out / "late")) < 1_500
    rest = _executor(_pipeline(out), data)  # no limit: to the end of the input
    summary = rest.run()
    assert summary.restored_events == 1_500 and summary.events_total == N
    assert summary.events_per_s * summary.seconds == pytest.approx(N - 1_500)
    assert _canon(read_committed(out / "main")) == main
    assert _canon(read_committed(out / "late")) == late


def test_at_limit_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at_limit must be 'drain' or 'stop'"):
        Executor(_pipeline(tmp_path), at_limit="pause")  # type: ignore[arg-type]


def test_checkpoint_holds_snapshot_and_pending_sinks(tmp_path: Path) -> None:
    ex = _executor(_pipeline(tmp_path / "out"), tmp_path / "data")
    ex.open()
    ex.step()
    cid = ex.checkpoint()
    assert ex.store is not None
    found = ex.store.load_latest()
    assert found is not None and found[0].id == cid
    state = decode(found[1])
    assert state["snapshot"]["pipeline"] == "chk"
    assert set(state["sinks"]) == {"out", "late"}
    assert state["sinks"]["out"]["checkpoint"] == cid
    ex.finish(drain=False)


def test_interval_trigger(tmp_path: Path) -> None:
    ex = _executor(_pipeline(tmp_path / "out"), tmp_path / "d", interval="0s", every_events=None)
    summary = ex.run()
    assert summary.counts["checkpoints"] == len(_batches()) + 1  # one per batch and the last


def test_changed_topology_names_the_step_unless_dropped(tmp_path: Path) -> None:
    out, data = tmp_path / "out", tmp_path / "data"
    ex = _executor(_pipeline(out), data)
    ex.open()
    for _ in range(7):
        ex.step()
    ex.finish(drain=False)
    with pytest.raises(StateError, match=r"no state for step 'w2'.*drop_state=\['w2'\]"):
        _executor(_pipeline(out, name="w2"), data).open()
    ex2 = _executor(_pipeline(out, name="w2"), data, drop_state=["w", "w2"])
    summary = ex2.run()
    assert ex2.restored_from is not None and summary.events_total == N


def test_transactional_sink_needs_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="transactional.*--checkpoint-interval"):
        Executor(_pipeline(tmp_path))


def test_plain_sinks_are_flushed_at_checkpoints(tmp_path: Path) -> None:
    class Counting(MemorySink):
        flushes = 0

        def flush(self) -> None:
            Counting.flushes += 1

    p = Pipeline("plain")
    p.source("in", MemorySource(_batches())).sink("out", Counting())
    summary = _executor(p, tmp_path).run()
    assert Counting.flushes >= summary.counts["checkpoints"] >= 8


# -- replay ------------------------------------------------------------------------------------


def test_replay_ignores_checkpoints_and_starts_at_the_offset(tmp_path: Path) -> None:
    data = tmp_path / "data"
    p = Pipeline("replay")
    p.source("in", MemorySource({"x": list(range(50))})).sink("out", first := MemorySink())
    _executor(p, data).run()
    assert len(first) == 50
    p2 = Pipeline("replay")
    p2.source("in", MemorySource({"x": list(range(50))})).sink("out", again := MemorySink())
    ex = Executor(
        p2,
        max_wait="0ms",
        handle_signals=False,
        checkpoint=CheckpointConfig(data_dir=data, interval=None),
        start_from=StartFrom(offset=45),
    )
    ex.run()
    assert [r["x"] for r in again.records()] == [45, 46, 47, 48, 49]
    assert ex.restored_from is None


class _Timed(BaseSource):
    """A source over sorted times that can seek by time (as the embedded log can)."""

    def __init__(self, times: list[int]) -> None:
        super().__init__()
        self.times, self.at = times, 0

    def positions_for_time(self, time_ms: int) -> dict[int, Any]:
        return {0: int(np.searchsorted(self.times, time_ms))}

    def open(self, positions: Any) -> None:
        self.at = int(positions.get(0, 0))

    def poll(self, max_records: int, timeout: float) -> Batch | None:
        if self.at >= len(self.times):
            return None
        chunk = self.times[self.at : self.at + max_records]
        self.at += len(chunk)
        return Batch({"ts": chunk})

    def position(self) -> dict[int, Any]:
        return {0: self.at}


def test_replay_from_time_needs_a_source_that_seeks_by_time(tmp_path: Path) -> None:
    t0 = parse_time("2024-01-01T00:00:00Z")
    p = Pipeline("bytime")
    p.source("in", _Timed([t0 - 2000, t0 - 1, t0, t0 + 5]), time="ts").sink(
        "out", out := MemorySink()
    )
    Executor(p, handle_signals=False, start_from=StartFrom(time_ms=t0)).run()
    assert [r["ts"] for r in out.records()] == [t0, t0 + 5]
    p2 = Pipeline("bytime")
    p2.source("in", MemorySource({"ts": [t0]}), time="ts").sink("out", MemorySink())
    with pytest.raises(ConfigError, match=r"source 'in' \(MemorySource\) cannot start from a time"):
        Executor(p2, handle_signals=False, start_from=StartFrom(time_ms=t0)).run()


def test_start_from_validation() -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        StartFrom()
    with pytest.raises(ConfigError, match=">= 0"):
        StartFrom(offset=-1)
    with pytest.raises(ConfigError, match="2024-01-01T00:00:00Z"):
        parse_time("yesterday")
    assert StartFrom(time_ms=0).describe() == "time 1970-01-01T00:00:00.000Z"
