"""``tidal log ...`` as real subprocesses: create, produce from stdin, consume in pipes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tidal.cli import main
from tidal.errors import ConnectorError
from tidal.io.log import Topic
from tidal.io.log.commands import consume


def tidal(
    *args: str, cwd: Path, stdin: bytes | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TIDAL_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "tidal", "log", *args],
        cwd=cwd,
        env=full_env,
        input=stdin,
        capture_output=True,
        timeout=300,
        check=False,
    )


def lines(data: bytes) -> list[dict[str, object]]:
    return [json.loads(x) for x in data.splitlines()]


def test_create_produce_consume_describe(tmp_path: Path) -> None:
    made = tidal("create", "events", "--partitions", "3", "--retention", "7d", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert b"created topic 'events' with 3 partitions" in made.stdout
    assert (tmp_path / ".tidal" / "log" / "events" / "topic.json").is_file()  # the default dir

    rows = [{"user": f"u{i % 5}", "n": i} for i in range(1000)]
    body = b"\n".join(json.dumps(r).encode() for r in rows) + b"\n\n"
    sent = tidal("produce", "events", "--key", "user", cwd=tmp_path, stdin=body)
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.strip() == b"produced 1000 records to 'events'"

    got = tidal("consume", "events", "--group", "g", cwd=tmp_path)
    assert got.returncode == 0 and got.stderr == b""
    out = lines(got.stdout)
    assert sorted(r["n"] for r in out) == list(range(1000))  # type: ignore[type-var]
    for u in {r["user"] for r in rows}:  # a key's records stay in order
        assert [r["n"] for r in out if r["user"] == u] == [r["n"] for r in rows if r["user"] == u]

    again = tidal("consume", "events", "--group", "g", cwd=tmp_path)  # the group is done
    assert again.returncode == 0 and again.stdout == b""
    replay = tidal(
        "consume", "events", "--group", "g", "--from-beginning", "--max", "5", cwd=tmp_path
    )
    assert len(lines(replay.stdout)) == 5

    desc = tidal("describe", "events", "--json", cwd=tmp_path)
    info = json.loads(desc.stdout)
    assert sum(p["records"] for p in info["partitions"]) == 1000
    assert info["config"]["retention_ms"] == 7 * 86_400_000
    assert set(info["groups"]["g"]) == {"0", "1", "2"}
    text = tidal("describe", "events", cwd=tmp_path).stdout.decode()
    assert "topic 'events': 3 partitions" in text and "group 'g'" in text
    assert tidal("topics", cwd=tmp_path).stdout == b"events\n"


def test_consume_max_in_a_pipe_and_a_closed_pipe(tmp_path: Path) -> None:
    topic = Topic.create(tmp_path, "t", partitions=2)
    for p in range(2):
        topic.append(p, [json.dumps({"p": p, "i": i}).encode() for i in range(50_000)])
    env = {"TIDAL_DATA_DIR": str(tmp_path)}
    cmd = f"{sys.executable} -m tidal log consume t --max 7 | wc -l"
    piped = subprocess.run(
        cmd, shell=True, capture_output=True, env={**os.environ, **env}, check=False
    )
    assert piped.returncode == 0 and piped.stdout.strip() == b"7" and piped.stderr == b""
    cmd = f"set -o pipefail; {sys.executable} -m tidal log consume t | head -n 3"
    closed = subprocess.run(
        ["bash", "-c", cmd], capture_output=True, env={**os.environ, **env}, check=False
    )
    assert closed.returncode == 0, closed.stderr  # quiet: no traceback, status 0
    assert closed.stderr == b"" and len(closed.stdout.splitlines()) == 3


def test_produce_csv_file_and_tail(tmp_path: Path) -> None:
    csv = tmp_path / "in.csv"
    csv.write_text("sensor,value\na,1.5\nb,2\na,3\n")
    assert tidal("create", "r", cwd=tmp_path).returncode == 0
    sent = tidal("produce", "r", "--file", str(csv), "--key", "sensor", cwd=tmp_path)
    assert sent.returncode == 0, sent.stderr
    tailed = tidal("tail", "r", "--lines", "2", "--max", "2", cwd=tmp_path)
    assert lines(tailed.stdout) == [{"sensor": "b", "value": 2.0}, {"sensor": "a", "value": 3.0}]
    topic = Topic.open(tmp_path / ".tidal", "r")
    assert topic.read(0, 0).keys.tolist() == [b"a", b"b", b"a"]


def test_an_error_exits_2_with_one_line(tmp_path: Path) -> None:
    proc = tidal("produce", "nope", cwd=tmp_path, stdin=b"{}\n")
    assert proc.returncode == 2 and proc.stdout == b""
    assert proc.stderr.decode().startswith("tidal: error: no topic 'nope' in .tidal")
    assert proc.stderr.count(b"\n") == 1


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (("produce", "t"), b'{"a": 1}\n{"a": \n', "<stdin> line 2: invalid JSON"),
        (("produce", "t"), b"[1]\n", "<stdin> line 1: not a JSON object"),
        (("create", "t"), None, "already exists"),
        (("consume", "t", "--partition", "4"), None, "there is no partition 4"),
    ],
)
def test_error_messages(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    stdin: bytes | None,
    message: str,
) -> None:
    Topic.create(tmp_path, "t")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin or b"")))
    assert main(["log", *args, "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("tidal: error: ")
    if args[0] == "produce":
        assert Topic.open(tmp_path, "t").end_offset(0) == (1 if "line 2" in message else 0)


def _three_segments(tmp_path: Path) -> tuple[Topic, list[Path]]:
    topic = Topic.create(tmp_path, "t", segment_bytes=1 << 16)
    for block in range(3):
        topic.append(0, [json.dumps({"i": block * 3000 + i}).encode() for i in range(3000)])
    segments = sorted(topic.folder(0).glob("*.seg"))
    assert [s.name[:20] for s in segments] == [f"{b:020d}" for b in (0, 3000, 6000)]
    topic.close()
    return topic, segments


def _consume(tmp_path: Path) -> tuple[int, list[str]]:
    out = io.BytesIO()
    err = io.StringIO()
    assert consume(tmp_path, "t", out=out, err=err) == 0
    return len(out.getvalue().splitlines()), err.getvalue().splitlines()


def test_a_truncated_sealed_segment_is_one_line_with_file_offsets_and_count(
    tmp_path: Path,
) -> None:
    _, segments = _three_segments(tmp_path)
    first = segments[0]
    with first.open("r+b") as f:
        f.truncate(first.stat().st_size // 2 + 5)  # cut inside a record
    printed, err = _consume(tmp_path)
    assert len(err) == 1, err
    (line,) = err
    lost = 9000 - printed
    assert 1000 < lost < 3000
    first_lost = 3000 - lost
    assert line.startswith(
        f"tidal: skipped {lost:,} damaged records of 't' partition 0 "
        f"(offsets {first_lost}..2999): incomplete record"
    )
    assert f"of {first}" in line


def test_a_deleted_middle_segment_is_one_line_naming_the_missing_file(tmp_path: Path) -> None:
    _, segments = _three_segments(tmp_path)
    segments[1].unlink()
    printed, err = _consume(tmp_path)
    assert printed == 6000
    assert err == [
        "tidal: skipped 3,000 damaged records of 't' partition 0 (offsets 3000..5999): no "
        f"segment file holds offsets 3000..5999 (expected {segments[1]}, between "
        f"{segments[0].name} and {segments[2].name}: deleted?)"
    ]


def test_delete_removes_the_topic_and_its_groups_positions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data-dir", str(tmp_path)]
    with Topic.create(tmp_path, "t", partitions=2) as t, Topic.create(tmp_path, "keep") as k:
        t.append(0, [b'{"i":1}', b'{"i":2}'])
        t.append(1, [b'{"i":3}'])
        k.append(0, [b'{"i":4}'])
    assert consume(tmp_path, "t", group="g", out=io.BytesIO()) == 0
    assert consume(tmp_path, "keep", group="g", out=io.BytesIO()) == 0
    assert consume(tmp_path, "t", group="solo", out=io.BytesIO()) == 0
    capsys.readouterr()
    assert main(["log", "delete", "t", *data]) == 0
    assert capsys.readouterr().out == (
        "deleted topic 't' (3 records in 2 partitions); removed the positions of group(s) g, solo\n"
    )
    assert Topic.names(tmp_path) == ["keep"]
    assert sorted(p.name for p in (tmp_path / "log").iterdir()) == ["keep"]
    assert sorted(p.name for p in (tmp_path / "groups").iterdir()) == ["g"]  # solo had only t
    assert [p.name for p in (tmp_path / "groups" / "g").iterdir()] == ["keep.json"]
    # a new topic of that name starts empty, and no group starts it at an old position
    with Topic.create(tmp_path, "t") as t:
        t.append(0, [b'{"i":9}'])
    got = io.BytesIO()
    assert consume(tmp_path, "t", group="g", out=got) == 0
    assert got.getvalue() == b'{"i":9}\n'
    assert main(["log", "delete", "nope", *data]) == 2
    assert "no topic 'nope'" in capsys.readouterr().err


def test_delete_is_refused_while_a_writer_or_a_feed_holds_the_topic(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tidal.io.log.feed import LogFeed

    data = ["--data-dir", str(tmp_path)]
    writer = Topic.create(tmp_path, "t")
    writer.append(0, [b'{"i":1}'])  # an open producer (it may append again at any time)
    assert main(["log", "delete", "t", *data]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "another process has it open for writing" in err
    assert writer.append(0, [b'{"i":2}']) == 1  # untouched
    writer.close()

    feed = LogFeed(lambda seq: {"k": seq % 3}, tmp_path, "f", key="k")
    feed.produce(10)  # holds the feed lock until closed
    assert main(["log", "delete", "f", *data]) == 2
    err = capsys.readouterr().err
    assert "a feed is writing it" in err and "stop it first" in err
    feed.close()

    assert main(["log", "delete", "t", *data]) == 0
    assert main(["log", "delete", "f", *data]) == 0
    assert Topic.names(tmp_path) == []


def test_a_writer_opened_before_a_delete_does_not_bring_the_topic_back(tmp_path: Path) -> None:
    Topic.create(tmp_path, "t").close()
    stale = Topic.open(tmp_path, "t")  # opened, has not appended yet
    Topic.delete(tmp_path, "t")
    with pytest.raises(ConnectorError, match="cannot append 1 records to topic 't'"):
        stale.append(0, [b"x"])
    stale.close()
    assert not (tmp_path / "log" / "t").exists() and Topic.names(tmp_path) == []
