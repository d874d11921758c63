"""The Ray job's parts that need no cluster: globs, chunks, shard names and writes, formats, options.

The job end to end, on a real local Ray, is in test_ray.py.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("pyarrow")

from crossguard_cli.cli.batch_ray import parse_actors  # noqa: E402
from crossguard_cli.errors import UsageError  # noqa: E402
from crossguard_cli.records.inputs import Record, read_records  # noqa: E402
from crossguard_cli.rules import parse_rules  # noqa: E402
from crossguard_cli.scale import formats, inputs, shards  # noqa: E402

RULES = parse_rules("version: 1\nrules:\n  - name: harm\n    hypothesis: The prompt is harmful.\n", "r.yaml")


def test_globs_expand_in_order_as_a_shell_spells_them(tmp_path, monkeypatch):
    for name in ("b.jsonl", "a.jsonl", "c.txt", ".hidden.jsonl", "sub/d.jsonl", "sub/deeper/e.jsonl", "x[1].jsonl"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text('{"text": "hi"}\n')
    monkeypatch.chdir(tmp_path)
    files = inputs.expand(["*.jsonl", "c.txt", "nothing-*.jsonl", "sub/**/*.jsonl", "x[1].jsonl", "gone.txt"])
    assert [(f.index, f.source) for f in files] == [
        (0, "a.jsonl"), (1, "b.jsonl"), (2, "x[1].jsonl"), (3, "c.txt"), (4, "nothing-*.jsonl"),
        (5, "sub/d.jsonl"), (6, "sub/deeper/e.jsonl"), (7, "x[1].jsonl"), (8, "gone.txt")]
    assert files[0].location == str(tmp_path / "a.jsonl") and files[8].location == str(tmp_path / "gone.txt")
    assert files[4].location is None
    assert list(inputs.read_file(files[4], inputs.ReadOptions())) == [
        Record("nothing-*.jsonl", None, error="cannot open: no file matches this pattern")]
    with pytest.raises(UsageError, match="stdin"):
        inputs.expand(["-"])


def test_a_file_reads_as_batch_reads_it_in_chunks_with_its_own_line_numbers(tmp_path):
    path = tmp_path / "p.jsonl.gz"
    import gzip

    path.write_bytes(gzip.compress(b'{"text": "a"}\n\n{"text": "b", "id": 3}\nnot json\n{"text": "c"}\n'))
    file = inputs.expand([str(path)])[0]
    read = list(inputs.read_file(file, inputs.ReadOptions()))
    assert read == list(read_records([str(path)]))
    assert [r.line for r in read] == [1, 3, 4, 5]
    got = [(i, [r.line for r in recs], last) for i, recs, last in inputs.chunks(read, 2)]
    assert got == [(0, [1, 3], False), (1, [4, 5], True)]
    assert list(inputs.chunks([], 2)) == [(0, [], True)]  # an empty file still reports its (only) chunk
    assert inputs.decode(str(path), inputs.encode(read)) == read
    missing = inputs.expand([str(tmp_path / "nope.jsonl")])[0]
    assert list(inputs.read_file(missing, inputs.ReadOptions())) == list(read_records([str(tmp_path / "nope.jsonl")]))
    folder = inputs.expand([str(tmp_path)])[0]
    assert list(inputs.read_file(folder, inputs.ReadOptions())) == list(read_records([str(tmp_path)]))


def test_shards_are_written_whole_named_in_input_order_and_replaced_on_retry(tmp_path):
    assert shards.shard_name(2, 10, "jsonl") < shards.shard_name(10, 2, "jsonl") < shards.shard_name(10, 3, "jsonl")
    spec = shards.output_spec(str(tmp_path / "out"), "jsonl")
    shards.check_empty(spec, "out", overwrite=False)  # a folder that does not exist yet is fine
    shards.prepare(spec, "out", overwrite=False)
    writer = shards.ShardWriter(spec)
    name = writer.write(0, 1, b"first\n")
    assert writer.write(0, 1, b"again\n") == name  # a retried chunk replaces its shard
    (tmp_path / "out" / f".{name}.dead.tmp").write_bytes(b"half")  # left by an attempt that died
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f".{name}.dead.tmp", name]
    with pytest.raises(shards.OutputDirError, match="is not empty"):
        shards.check_empty(spec, "out", overwrite=False)
    with pytest.raises(shards.OutputDirError, match="1 shards missing"):
        shards.finish(spec, "out", {name, shards.shard_name(0, 2, "jsonl")}, {})
    shards.finish(spec, "out", {name}, {"records": 1})
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["_SUCCESS", name]
    assert (tmp_path / "out" / name).read_bytes() == b"again\n"
    assert json.loads((tmp_path / "out" / "_SUCCESS").read_text()) == {"records": 1, "shards": 1}
    shards.prepare(spec, "out", overwrite=True)
    assert list((tmp_path / "out").iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(shards.OutputDirError, match="not a folder"):
        shards.check_empty(shards.output_spec(str(tmp_path / "file"), "jsonl"), "file", overwrite=True)


def test_formats_jsonl_is_batchs_writer_and_parquet_has_one_schema():
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from crossguard_cli.records.writers import JsonlWriter

    scored = {"source": "s", "line": 1, "id": 5, "text": "caf\u00e9 \u2028", "status": "ok", "verdict": "allowed",
              "flagged": [], "uncertain": [], "scores": {"harm": {"entailment": 1.5, "neutral": 2.5,
                                                                    "contradiction": 96.0}},
              "truncated": False, "windows": 1}
    error = {"source": "s", "line": None, "status": "error", "error": "cannot open: gone"}
    text = io.StringIO()
    for record in (scored, error):
        JsonlWriter(text).write(record)
    assert formats.jsonl_bytes([scored, error]) == text.getvalue().encode()
    table = pq.read_table(pa.BufferReader(formats.parquet_bytes([scored, error], RULES)))
    assert table.schema == formats.parquet_schema(RULES)
    assert pq.read_table(pa.BufferReader(formats.parquet_bytes([], RULES))).schema == table.schema
    rows = table.to_pylist()
    assert {k: v for k, v in rows[0].items() if v is not None} == {**scored, "id": "5"}
    assert {k: v for k, v in rows[1].items() if v is not None or k == "line"} == error


@pytest.mark.parametrize(("value", "expected"), [("3", (3, 3)), ("1,4", (1, 4)), (" 2 , 2 ", (2, 2)), (None, None)])
def test_ray_actors_takes_n_or_min_max(value, expected):
    assert parse_actors(value) == expected


@pytest.mark.parametrize("value", ["0", "4,1", "a", "1,2,3", "", "-1"])
def test_ray_actors_refuses_anything_else(value):
    with pytest.raises(UsageError, match="--ray-actors"):
        parse_actors(value)


def test_workers_get_absolute_model_and_encoder_folders(tmp_path, monkeypatch):
    """A heads model's `--encoder` folder, like the model's, must mean the same on every node."""
    from crossguard_cli.engine.options import EngineOptions
    from crossguard_cli.rules import load_rules
    from crossguard_cli.scale.job import _portable

    (tmp_path / "heads").mkdir()
    (tmp_path / "encoder").mkdir()
    monkeypatch.chdir(tmp_path)
    out = _portable(EngineOptions(model="heads", encoder="encoder"), load_rules(None))
    assert out.model == str(tmp_path / "heads") and out.encoder == str(tmp_path / "encoder")
    assert out.rules is None  # the rules travel loaded, never as a path
    hub = _portable(EngineOptions(model="org/heads-model", encoder="org/encoder"), load_rules(None))
    assert (hub.model, hub.encoder) == ("org/heads-model", "org/encoder")  # hub ids stay as they are
