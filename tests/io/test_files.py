"""File connectors: CSV, JSON Lines, Parquet sources and sinks, and the stdout sink."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from tidal.core.batch import Batch
from tidal.errors import ConfigError, ConnectorError
from tidal.io.base import DeadLetter, Sink, Source
from tidal.io.csv import CsvSink, CsvSource
from tidal.io.files import CsvSource as CsvSourceReexport
from tidal.io.jsonl import JsonlSink, JsonlSource
from tidal.io.parquet import ParquetSink, ParquetSource
from tidal.io.stdout import StdoutSink

Row = tuple[int, dict[str, Any]]


def drain(src: Any, max_records: int = 1000) -> tuple[list[Row], list[DeadLetter], int]:
    """Poll to the end: (offset, record) pairs, dead letters, number of polls."""
    rows: list[Row] = []
    dead: list[DeadLetter] = []
    polls = 0
    while True:
        batch = src.poll(max_records, 0.0)
        polls += 1
        dead += src.dead_letters()
        if batch is None:
            return rows, dead, polls
        assert len(batch) <= max_records
        rows += list(zip(batch.offset.tolist(), batch.to_records(), strict=True))


def same(a: list[Row], b: list[Row]) -> bool:
    """Row lists equal, NaN equal to NaN."""

    def norm(rows: list[Row]) -> str:
        return json.dumps(rows, default=str).replace("NaN", "null")

    return norm(a) == norm(b)


def check_resume(make: Callable[[], Any], max_records: int) -> None:
    """Stopping after any number of polls and resuming gives the rest: no loss, no repeat."""
    full_rows, full_dead, polls = drain(make(), max_records)
    for k in range(polls + 1):
        src = make()
        src.open({})
        rows: list[Row] = []
        dead: list[DeadLetter] = []
        for _ in range(k):
            batch = src.poll(max_records, 0.0)
            dead += src.dead_letters()
            if batch is None:
                break
            rows += list(zip(batch.offset.tolist(), batch.to_records(), strict=True))
        saved = json.loads(json.dumps(src.position()))  # as a checkpoint stores it: {"0": n}
        src.close()
        again = make()
        again.open(saved)
        rest, rest_dead, _ = drain(again, max_records)
        assert same(rows + rest, full_rows), f"resume after {k} polls at {saved}"
        assert dead + rest_dead == full_dead, f"dead letters after {k} polls at {saved}"


# -- CSV ---------------------------------------------------------------------------------
def test_csv_round_trip_keeps_values_and_dtypes(tmp_path: Path) -> None:
    path = tmp_path / "out" / "data.csv"
    sink = CsvSink(path)
    assert isinstance(sink, Sink)
    sink.open()
    sink.write(
        Batch(
            {
                "id": [1, 2, 3],
                "value": [0.5, float("nan"), -2.25],
                "ok": [True, False, True],
                "text": ["a,b", 'say "hi"', "two\nlines"],
            },
            time=[1, 2, 3],
        )
    )
    sink.write(Batch({"id": [4], "value": [1e-3], "ok": [False], "text": ["plain"]}))
    sink.close()
    assert path.read_text().splitlines()[0] == '"id","value","ok","text"'  # no system arrays

    src = CsvSource(path)
    assert isinstance(src, Source)
    src.open({})
    batch = src.poll(100, 0.0)
    assert batch is not None
    assert {k: v.dtype.kind for k, v in batch.columns.items()} == {
        "id": "i",
        "value": "f",
        "ok": "b",
        "text": "O",
    }
    assert batch["id"].tolist() == [1, 2, 3, 4]
    assert math.isnan(batch["value"][1])
    assert batch["value"][[0, 2, 3]].tolist() == [0.5, -2.25, 1e-3]
    assert batch["ok"].tolist() == [True, False, True, False]
    assert batch["text"].tolist() == ["a,b", 'say "hi"', "two\nlines", "plain"]
    # offsets are physical line numbers: the quoted newline makes row 3 two lines long
    assert batch.offset.tolist() == [2, 3, 4, 6]
    assert batch.partition.tolist() == [0, 0, 0, 0]
    assert src.poll(100, 0.0) is None
    assert src.position() == {0: 6}
    src.close()


def test_csv_schema_accepts_python_types_and_names(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("a,b,c,d\n1,2,x,true\n 3 ,+4,7,FALSE\n")
    rows, dead, _ = drain(CsvSource(path, schema={"a": int, "b": "float", "c": str, "d": bool}))
    assert dead == []
    assert [r for _, r in rows] == [
        {"a": 1, "b": 2.0, "c": "x", "d": True},
        {"a": 3, "b": 4.0, "c": "7", "d": False},
    ]


MALFORMED_CSV = (
    "id,name,value\n"  # 1
    "1,a,1.5\n"  # 2 good
    "2,b,2.5,extra\n"  # 3 too many fields
    "3,c\n"  # 4 too few fields
    "4,d,abc\n"  # 5 not a number
    "\n"  # 6 blank: skipped
    "5,,\n"  # 7 good: empty str, empty float is NaN
    "x,e,3.5\n"  # 8 not an integer
    ",f,4.5\n"  # 9 empty integer
    "6,g,7\n"  # 10 good
    "y,h,zzz\n"  # 11 two bad values
    "7,i,8.5"  # 12 good, no final newline
)


def test_csv_malformed_lines_become_dead_letters(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(MALFORMED_CSV)
    src = CsvSource(path, schema={"id": int, "value": float}, name="readings")
    src.open({})
    batch = src.poll(100, 0.0)
    assert batch is not None
    assert batch["id"].tolist() == [1, 5, 6, 7]
    assert batch["name"].tolist() == ["a", "", "g", "i"]
    assert batch["value"].dtype == np.float64
    assert np.array_equal(batch["value"], [1.5, np.nan, 7.0, 8.5], equal_nan=True)
    assert batch.offset.tolist() == [2, 7, 10, 12]
    dead = src.dead_letters()
    assert [(d.reason, d.position, d.raw) for d in dead] == [
        ("line 3: expected 3 fields, got 4", {"file": str(path), "line": 3}, "2,b,2.5,extra"),
        ("line 4: expected 3 fields, got 2", {"file": str(path), "line": 4}, "3,c"),
        (
            "line 5: expected a number in 'value', got 'abc'",
            {"file": str(path), "line": 5},
            "4,d,abc",
        ),
        (
            "line 8: expected an integer in 'id', got 'x'",
            {"file": str(path), "line": 8},
            "x,e,3.5",
        ),
        (
            "line 9: expected an integer in 'id', got an empty value",
            {"file": str(path), "line": 9},
            ",f,4.5",
        ),
        (
            "line 11: expected an integer in 'id', got 'y'; "
            "expected a number in 'value', got 'zzz'",
            {"file": str(path), "line": 11},
            "y,h,zzz",
        ),
    ]
    assert {d.step for d in dead} == {"readings"}
    assert src.poll(100, 0.0) is None
    assert src.position() == {0: 12}


def test_csv_dead_letters_wait_for_the_position(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(MALFORMED_CSV)
    src = CsvSource(path, schema={"id": int, "value": float})
    first = src.poll(1, 0.0)
    assert first is not None and first.offset.tolist() == [2]
    # the next good row is line 7: lines 3-6 are handed out (as dead letters), not 8 and 9
    assert src.position() == {0: 6}
    assert [d.position["line"] for d in src.dead_letters()] == [3, 4, 5]
    src.close()


def test_csv_unreadable_row_and_crlf_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "win.csv"
    path.write_bytes(b"\xef\xbb\xbfk,v\r\n1,a\r\n2,\xff\xfe\r\n\r\n3,c\r\n")
    src = CsvSource(path)
    rows, dead, _ = drain(src)
    assert rows == [(2, {"k": 1, "v": "a"}), (5, {"k": 3, "v": "c"})]
    assert len(dead) == 1
    assert dead[0].reason.startswith("line 3: cannot parse the row as CSV (")
    assert "UTF8" in dead[0].reason
    assert dead[0].raw == "2,\ufffd\ufffd"


def test_csv_inferred_types_are_fixed_by_the_first_block(tmp_path: Path) -> None:
    path = tmp_path / "drift.csv"
    path.write_text("n,x\n1,a\n2,b\n3.5,c\n4,d\n")
    rows, dead, _ = drain(CsvSource(path, block_rows=2))
    assert [r["n"] for _, r in rows] == [1, 2, 4]
    assert [d.reason for d in dead] == ["line 4: expected an integer in 'n', got '3.5'"]
    # declaring the type is the fix
    rows, dead, _ = drain(CsvSource(path, block_rows=2, schema={"n": float}))
    assert [r["n"] for _, r in rows] == [1.0, 2.0, 3.5, 4.0] and dead == []


def test_csv_max_records_and_blocks(tmp_path: Path) -> None:
    path = tmp_path / "n.csv"
    path.write_text("i\n" + "".join(f"{i}\n" for i in range(100)))
    src = CsvSource(path, block_rows=16)
    sizes = []
    while (batch := src.poll(7, 0.0)) is not None:
        sizes.append(len(batch))
    assert max(sizes) == 7
    assert sum(sizes) == 100


def test_csv_resume_gives_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(MALFORMED_CSV + '\n8,"multi\nline",9\n9,j,10\n')

    def make() -> CsvSource:
        return CsvSource(path, schema={"id": int, "value": float}, block_rows=4)

    check_resume(make, max_records=1)
    check_resume(make, max_records=2)


def test_csv_large_file_goes_through_in_bulk(tmp_path: Path) -> None:
    n = 200_000
    path = tmp_path / "big.csv"
    ids = np.arange(n)
    pa_csv.write_csv(pa.table({"id": ids, "value": ids * 0.5, "tag": (ids % 7).astype(str)}), path)
    src = CsvSource(path, schema={"tag": str})
    total, polls, checksum = 0, 0, 0.0
    while (batch := src.poll(100_000, 0.0)) is not None:
        polls += 1
        total += len(batch)
        checksum += float(batch["value"].sum())
        assert batch["id"].dtype == np.int64
    assert total == n
    assert checksum == float((ids * 0.5).sum())
    assert polls <= 5  # a block of 65536 rows per decode, not a row at a time
    assert src.position() == {0: n + 1}
    assert src.dead_letters() == []


def test_csv_errors_say_what_and_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConnectorError) as err:
        CsvSource(tmp_path / "x.csv").open({})
    assert str(err.value) == (
        f"cannot open CSV file '{tmp_path / 'x.csv'}': No such file or directory; check the path"
    )
    assert isinstance(err.value.__cause__, FileNotFoundError)

    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ConnectorError, match="is empty; its first line must be the header"):
        CsvSource(empty).open({})

    path = tmp_path / "h.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ConnectorError, match=r"lacks \['c'\] from the schema"):
        CsvSource(path, schema={"c": int}).open({})
    with pytest.raises(ConfigError, match="the type of column 'a' must be one of"):
        CsvSource(path, schema={"a": list})
    with pytest.raises(ConnectorError, match="has only 2 lines"):
        CsvSource(path).open({0: 5})
    with pytest.raises(ConfigError, match="max_records must be >= 1"):
        CsvSource(path).poll(0, 0.0)


def test_csv_sink_append_flush_and_schema_errors(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    sink = CsvSink(path)
    sink.write(Batch({"x": [1, 2], "y": ["p", "q"]}))
    sink.flush()
    assert path.read_text() == '"x","y"\n1,"p"\n2,"q"\n'  # visible before close
    with pytest.raises(ConnectorError, match=r"CsvSink\('.*a.csv'\): column 'x' is string"):
        sink.write(Batch({"x": ["oops"], "y": ["r"]}))
    sink.write(Batch({"y": ["r"], "x": [3]}))  # other column order is fine
    sink.close()

    more = CsvSink(path, append=True)
    more.write(Batch({"x": [4], "y": ["s"]}))
    more.close()
    rows, _, _ = drain(CsvSource(path))
    assert [r for _, r in rows] == [
        {"x": 1, "y": "p"},
        {"x": 2, "y": "q"},
        {"x": 3, "y": "r"},
        {"x": 4, "y": "s"},
    ]
    other = CsvSink(path, append=True)
    with pytest.raises(ConnectorError, match=r"cannot append columns \['z'\]"):
        other.write(Batch({"z": [1]}))
    other.close()
    nested = CsvSink(tmp_path / "n.csv")
    with pytest.raises(ConnectorError, match="column 'v' holds list<item: int64>"):
        nested.write(Batch.from_arrow(pa.table({"v": [[1, 2]]})))
    nested.close()


def test_files_module_reexports_the_connectors() -> None:
    assert CsvSourceReexport is CsvSource


# -- JSON Lines --------------------------------------------------------------------------
def test_jsonl_round_trip_keeps_values_and_dtypes(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "data.jsonl"
    sink = JsonlSink(path)
    sink.write(
        Batch(
            {
                "id": np.array([1, 2, 3], dtype=np.int64),
                "value": [0.5, float("nan"), 2.0],
                "ok": [True, False, True],
                "name": ["a", None, "c"],
            },
            offset=[7, 8, 9],
        )
    )
    sink.flush()
    assert path.read_text().splitlines()[1] == '{"id":2,"value":null,"ok":false,"name":null}'
    sink.write(Batch.from_records([{"id": 4, "value": 1.5, "ok": False, "name": "d"}]))
    sink.close()
    batch = JsonlSource(path).poll(100, 0.0)
    assert batch is not None
    assert {k: v.dtype.kind for k, v in batch.columns.items()} == {
        "id": "i",
        "value": "f",
        "ok": "b",
        "name": "O",
    }
    assert batch["id"].tolist() == [1, 2, 3, 4]
    assert np.array_equal(batch["value"], [0.5, np.nan, 2.0, 1.5], equal_nan=True)
    assert batch["ok"].tolist() == [True, False, True, False]
    assert batch["name"].tolist() == ["a", None, "c", "d"]
    assert batch.offset.tolist() == [1, 2, 3, 4]


def test_jsonl_missing_fields_nested_values_and_mixed_types(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text(
        '{"n": 1, "tags": ["a", "b"], "meta": {"k": 1}, "id": 1}\n'
        '{"n": null, "id": 2}\n'
        '{"n": 3, "id": "x3"}\n'
        '{"n": 4, "id": 4}\n'
    )
    src = JsonlSource(path)
    batch = src.poll(10, 0.0)
    assert batch is not None
    assert batch.names == ["n", "tags", "meta", "id"]
    assert batch["n"].dtype == np.float64  # an int column with a gap, as Batch.from_arrow does
    assert np.array_equal(batch["n"], [1.0, np.nan, 4.0], equal_nan=True)
    assert batch["tags"][0].tolist() == ["a", "b"] and batch["tags"][1] is None
    assert batch["meta"][0] == {"k": 1}
    assert batch["id"].tolist() == [1, 2, 4]  # mixed types: the odd one is a dead letter
    assert [d.reason for d in src.dead_letters()] == [
        "line 3: expected a number in 'id' (the type of most of its values), got \"x3\""
    ]


def test_jsonl_malformed_lines_become_dead_letters(tmp_path: Path) -> None:
    lines = [
        '{"time": 1, "value": 1.5, "tag": "a"}',  # 1 good
        '{"time": 2, "value": 2.5',  # 2 truncated
        "[1, 2]",  # 3 an array
        "",  # 4 blank: skipped
        '{"time": 4, "value": "high"}',  # 5 wrong type
        '{"value": 5.5}',  # 6 no time
        '{"time": null, "value": 6.5}',  # 7 null time
        '{"time": 8, "tag": "z"}',  # 8 good: missing value is NaN
        '"just a string"',  # 9 not an object
        '{"time": 10.5, "value": 1, "tag": 5}',  # 10 two wrong types
        '{"time": 11, "value": 11}',  # 11 good: int in a float column
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    src = JsonlSource(path, schema={"time": int, "value": float, "tag": str}, name="events")
    src.open({})
    batch = src.poll(100, 0.0)
    assert batch is not None
    assert batch["time"].tolist() == [1, 8, 11]
    assert batch["time"].dtype == np.int64
    assert np.array_equal(batch["value"], [1.5, np.nan, 11.0], equal_nan=True)
    assert batch["tag"].tolist() == ["a", "z", None]
    assert batch.offset.tolist() == [1, 8, 11]
    with pytest.raises(orjson.JSONDecodeError) as parse:
        orjson.loads(lines[1])
    dead = src.dead_letters()
    assert [(d.reason, d.position["line"], d.raw) for d in dead] == [
        (f"line 2: invalid JSON: {parse.value}", 2, lines[1]),
        ("line 3: not a JSON object, got an array", 3, lines[2]),
        ("line 5: expected a number in 'value', got \"high\"", 5, lines[4]),
        ("line 6: expected an integer in 'time', but the field is missing", 6, lines[5]),
        ("line 7: expected an integer in 'time', got null", 7, lines[6]),
        ("line 9: not a JSON object, got a string", 9, lines[8]),
        (
            "line 10: expected an integer in 'time', got 10.5; expected a string in 'tag', got 5",
            10,
            lines[9],
        ),
    ]
    assert all(d.step == "events" and d.position["file"] == str(path) for d in dead)
    assert src.poll(100, 0.0) is None
    assert src.position() == {0: 11}


def test_jsonl_block_of_only_bad_lines_gives_an_empty_batch(tmp_path: Path) -> None:
    path = tmp_path / "b.jsonl"
    path.write_text("nope\n" * 5 + '{"a": 1}\n')
    src = JsonlSource(path, block_bytes=8)
    batch = src.poll(10, 0.0)
    assert batch is not None and len(batch) == 0
    assert [d.position["line"] for d in src.dead_letters()] == [1]
    rows, dead, _ = drain(src)
    assert rows == [(6, {"a": 1})]
    assert [d.position["line"] for d in dead] == [2, 3, 4, 5]


def test_jsonl_max_records_and_resume(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    body = []
    for i in range(40):
        if i % 9 == 4:
            body.append("{broken")
        elif i % 11 == 5:
            body.append("   ")
        else:
            body.append(orjson.dumps({"i": i, "sq": i * i}).decode())
    path.write_text("\r\n".join(body))  # CRLF, and no newline at the end

    def make() -> JsonlSource:
        return JsonlSource(path, schema={"i": int}, block_bytes=64)

    rows, dead, _ = drain(make(), max_records=3)
    assert [r["i"] for _, r in rows] == [i for i in range(40) if i % 9 != 4 and i % 11 != 5]
    assert [d.position["line"] for d in dead] == [i + 1 for i in range(40) if i % 9 == 4]
    check_resume(make, max_records=3)
    check_resume(make, max_records=5)


def test_jsonl_large_file_goes_through_in_bulk(tmp_path: Path) -> None:
    n = 200_000
    path = tmp_path / "big.jsonl"
    sink = JsonlSink(path)
    ids = np.arange(n)
    sink.write(Batch({"id": ids, "value": ids * 0.25, "tag": (ids % 3).astype(str)}))
    sink.close()
    src = JsonlSource(path)
    total, polls = 0, 0
    while (batch := src.poll(50_000, 0.0)) is not None:
        polls += 1
        total += len(batch)
        assert batch["id"].dtype == np.int64
    assert total == n
    assert polls <= 10  # about 1 MiB (~25k lines) per decoded block
    assert src.position() == {0: n}


def test_jsonl_sink_writes_dead_letters_and_appends(tmp_path: Path) -> None:
    path = tmp_path / "dead.jsonl"
    letters = [
        DeadLetter("read", "line 2: invalid JSON: x", {"file": "in.jsonl", "line": 2}, "{"),
        DeadLetter("read", "line 3: not a JSON object, got an array", {"line": 3}, "[]"),
    ]
    sink = JsonlSink(path)
    sink.write(Batch.from_records([letters[0].to_record()]))
    sink.close()
    more = JsonlSink(path, append=True)
    more.write(Batch.from_records([letters[1].to_record()]))
    more.close()
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        d.to_record() for d in letters
    ]
    odd = JsonlSink(tmp_path / "x.jsonl")
    with pytest.raises(ConnectorError, match="cannot write column 'obj' as JSON"):
        odd.write(Batch({"ok": [1], "obj": [object()]}))
    odd.close()


def test_jsonl_sink_escapes_and_nesting_survive_the_bulk_encoder(tmp_path: Path) -> None:
    tricky = ['},{"x":1}', "back\\slash\\", 'quote\\"', "new\nline", "é ☃", "", "[1,2]"]
    nested = [{"a": [1, {"b": '",'}]}, [], {}, ["}", "{"], None, {"k": "\\"}, [[[]]]]
    path = tmp_path / "t.jsonl"
    sink = JsonlSink(path)
    column = np.empty(len(nested), dtype=object)
    for i, value in enumerate(nested):
        column[i] = value
    sink.write(Batch({"s": tricky, "n": column, "i": list(range(7))}))
    sink.close()
    assert len(path.read_bytes().splitlines()) == 7
    got = [json.loads(line) for line in path.read_text().splitlines()]
    assert got == [
        {"s": s, "n": n, "i": i} for i, (s, n) in enumerate(zip(tricky, nested, strict=True))
    ]


def test_jsonl_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConnectorError, match="cannot open JSON Lines file .*; check the path"):
        JsonlSource(tmp_path / "nope.jsonl").poll(10, 0.0)


# -- Parquet -----------------------------------------------------------------------------
def test_parquet_round_trip_max_records_and_resume(tmp_path: Path) -> None:
    path = tmp_path / "p" / "data.parquet"
    sink = ParquetSink(path)
    for start in range(0, 50, 10):  # five row groups
        ids = np.arange(start, start + 10)
        sink.write(
            Batch(
                {
                    "id": ids,
                    "value": ids * 1.5,
                    "ok": ids % 2 == 0,
                    "name": [f"n{i}" for i in ids],
                },
                time=ids,
            )
        )
    sink.close()
    assert pq.ParquetFile(path).metadata.num_row_groups == 5
    src = ParquetSource(path, batch_rows=8)
    rows, dead, _ = drain(src, max_records=7)
    assert dead == []
    assert [o for o, _ in rows] == list(range(50))
    assert rows[13][1] == {"id": 13, "value": 19.5, "ok": False, "name": "n13"}
    batch = ParquetSource(path).poll(100, 0.0)
    assert batch is not None
    assert {k: v.dtype.kind for k, v in batch.columns.items()} == {
        "id": "i",
        "value": "f",
        "ok": "b",
        "name": "O",
    }
    check_resume(lambda: ParquetSource(path, batch_rows=8), max_records=7)
    only = ParquetSource(path, columns=["name"]).poll(2, 0.0)
    assert only is not None and only.to_records() == [{"name": "n0"}, {"name": "n1"}]


def test_parquet_large_file_in_bulk(tmp_path: Path) -> None:
    n = 200_000
    path = tmp_path / "big.parquet"
    pq.write_table(pa.table({"x": np.arange(n)}), path, row_group_size=50_000)
    src = ParquetSource(path)
    total, polls = 0, 0
    while (batch := src.poll(65_536, 0.0)) is not None:
        polls += 1
        total += len(batch)
    assert total == n and polls <= 8
    assert src.position() == {0: n}


def test_parquet_sink_schema_checks(tmp_path: Path) -> None:
    path = tmp_path / "s.parquet"
    sink = ParquetSink(path)
    sink.write(Batch({"x": [1.5], "y": ["a"]}))
    sink.write(Batch({"x": [2], "y": [None]}))  # int -> float and an all-null column are cast
    with pytest.raises(ConnectorError) as err:
        sink.write(Batch({"x": ["bad"], "y": ["b"]}))
    assert "ParquetSink(" in str(err.value) and "column 'x' is string" in str(err.value)
    with pytest.raises(ConnectorError, match=r"this batch has columns \['x'\]"):
        sink.write(Batch({"x": [3.0]}))
    sink.close()
    assert pq.read_table(path).to_pylist() == [{"x": 1.5, "y": "a"}, {"x": 2.0, "y": None}]
    with pytest.raises(ConnectorError, match="cannot be reopened"):
        sink.open()

    empty = tmp_path / "empty.parquet"
    quiet = ParquetSink(empty)
    quiet.open()
    quiet.close()
    assert ParquetSource(empty).poll(10, 0.0) is None


def test_parquet_source_errors(tmp_path: Path) -> None:
    with pytest.raises(ConnectorError, match="cannot open Parquet file .*No such file"):
        ParquetSource(tmp_path / "none.parquet").open({})
    text = tmp_path / "text.parquet"
    text.write_text("not parquet at all")
    with pytest.raises(ConnectorError, match="is it a Parquet file"):
        ParquetSource(text).open({})
    good = tmp_path / "g.parquet"
    pq.write_table(pa.table({"a": [1]}), good)
    with pytest.raises(ConnectorError, match=r"has no columns \['b'\]"):
        ParquetSource(good, columns=["b"]).open({})
    with pytest.raises(ConnectorError, match="has 1 rows, cannot resume after row 2"):
        ParquetSource(good).open({0: 2})


# -- stdout ------------------------------------------------------------------------------
def test_stdout_sink_jsonl(capsys: pytest.CaptureFixture[str]) -> None:
    sink = StdoutSink()
    sink.write(Batch({"a": [1, 2], "b": [float("nan"), 0.5]}, time=[5, 6]))
    sink.close()
    assert capsys.readouterr().out == '{"a":1,"b":null}\n{"a":2,"b":0.5}\n'


def test_stdout_sink_table_with_limit() -> None:
    out = io.StringIO()
    sink = StdoutSink("table", stream=out, limit=3)
    sink.write(Batch({"sensor": ["[red]x", "y"], "value": [1.0, 2.5]}))
    sink.write(Batch({"sensor": ["z", "w"], "value": [3.0, None]}))
    sink.write(Batch({"sensor": ["v"], "value": [4.0]}))
    sink.close()
    text = out.getvalue()
    assert "batch 1: 2 rows" in text and "batch 2: 2 rows" in text and "batch 3" not in text
    assert "[red]x" in text  # values are not rich markup
    assert "2.5" in text and "│ z " in text and "│ w " not in text
    assert text.rstrip().endswith("(2 more rows not shown: limit=3)")
    with pytest.raises(ConfigError, match="format must be 'jsonl' or 'table'"):
        StdoutSink("xml")  # type: ignore[arg-type]
