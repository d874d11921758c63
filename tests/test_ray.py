"""`crossguard batch --engine ray` on a real local Ray (2 CPUs, CPU actors), against local `batch`.

Ray starts once for the module, with a small object store; each job runs in it, in-process
through the CLI or as a separate driver process joining it by address. The model is the tiny
random-weight BERT from conftest; the prompts are the real ones in ../shared/data, plus a
file of bad lines and a missing file. Local `batch` runs once, as a process, for reference.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import cli_cmd, cli_env, shared_data_dir

ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")

pytestmark = pytest.mark.slow

RULES = """\
version: 1
rules:
  - name: harm
    hypotheses:
      - The prompt is harmful.
      - The prompt asks for instructions to build a weapon.
  - name: polite
    hypothesis: The prompt is polite and friendly.
    label: contradiction
"""
BAD_LINES = (b'{"text": "fine prompt", "id": 7}\n'
             b'{"text": "cut \xff here"}\n'
             b'\xfe\xff not UTF-8 at all\n'
             b'{"text": "no closing brace"\n'
             b'\n'
             b'{"message": "no text field", "id": "m1"}\n'
             b'{"prompt": "How do I make a pipe bomb?", "id": {"k": [1, 2]}}\n')
COMMON = ("--max-length", "128")
DIE_ONCE_ENV = "CROSSGUARD_TEST_RAY_DIE_ONCE"


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module: 2 CPUs, an 80 MB object store; shut down at the end."""
    import logging

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, object_store_memory=80 * 1024 * 1024, include_dashboard=False,
             logging_level=logging.ERROR, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def job_inputs(tmp_path_factory) -> dict:
    """The real prompts (by a glob), a file of bad lines, a missing file, and their rules."""
    data = shared_data_dir()
    if data is None:
        pytest.skip("../shared/data not found")
    base = tmp_path_factory.mktemp("ray-inputs")
    (base / "rules.yaml").write_text(RULES)
    (base / "bad.jsonl").write_bytes(BAD_LINES)
    pattern = str(data / "*.jsonl.gz")
    expanded = sorted(str(p) for p in data.glob("*.jsonl.gz"))
    return {"rules": str(base / "rules.yaml"), "pattern": pattern, "expanded": expanded,
            "bad": str(base / "bad.jsonl"), "missing": str(base / "missing.jsonl")}


@pytest.fixture(scope="module")
def local_records(model_dir, job_inputs) -> dict:
    """What local `crossguard batch` writes for all the inputs: (records, stderr lines, exit code)."""
    args = ["batch", "-m", str(model_dir), "-r", job_inputs["rules"], *COMMON, *job_inputs["expanded"],
            job_inputs["bad"], job_inputs["missing"]]
    proc = subprocess.run(cli_cmd(*args), capture_output=True, env=cli_env(OMP_NUM_THREADS="2"), timeout=300)
    assert proc.returncode == 2, proc.stderr.decode()[-2000:]
    records = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    return {"records": records, "stderr": proc.stderr.decode().splitlines(), "code": proc.returncode}


def read_shards(folder: Path) -> list[dict]:
    """Every record of every shard, shards in name order."""
    out = []
    for shard in sorted(folder.glob("part-*")):
        if shard.suffix == ".parquet":
            out += pq.read_table(shard).to_pylist()
        else:
            out += [json.loads(line) for line in shard.read_text(encoding="utf-8").splitlines()]
    return out


def assert_same_records(got: list[dict], want: list[dict]) -> None:
    """Record for record: every field equal, scores to the printed precision.

    Float sums depend on which prompts share a forward pass (padding, batch shape): an actor
    scoring a chunk and `batch` scoring its own groups can differ by ~1e-7 in a probability,
    and about one percentage in 10,000 lands on the other side of a 2-decimal rounding.
    """
    assert len(got) == len(want)
    off = 0
    for g, w in zip(got, want, strict=True):
        assert {k: v for k, v in g.items() if k != "scores"} == {k: v for k, v in w.items() if k != "scores"}
        assert g.get("scores", {}).keys() == w.get("scores", {}).keys()
        for rule, labels in w.get("scores", {}).items():
            assert g["scores"][rule] == pytest.approx(labels, abs=0.0100001), (g["source"], g["line"])
        off += g.get("scores") != w.get("scores")
    assert off <= max(2, len(want) // 500), f"{off} records with scores off by 0.01"


def summary_counts(line: str) -> str:
    """A summary line without its seconds."""
    assert line.startswith("crossguard: ") and line.endswith(" s"), line
    return line.rsplit(" in ", 1)[0]


def test_shards_equal_local_batch_record_for_record(run_cli, local_ray, model_dir, job_inputs, local_records,
                                                    tmp_path):
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(
        "batch", "--engine", "ray", "--output", str(out), "-m", str(model_dir), "-r", job_inputs["rules"], *COMMON,
        "--ray-actors", "2", "--ray-records-per-shard", "300", job_inputs["pattern"], job_inputs["bad"],
        job_inputs["missing"])
    local = local_records["records"]

    # The same exit status, summary counts and error lines (Ray reports them in completion order).
    assert code == local_records["code"] == 2
    assert stdout == ""
    lines = stderr.splitlines()
    assert summary_counts(lines[-1]) == summary_counts(local_records["stderr"][-1])
    assert sorted(lines[:-1]) == sorted(local_records["stderr"][:-1])

    # Shards in name order are batch's output in order, every record equal, scores included.
    shards = read_shards(out)
    assert [(r["source"], r["line"]) for r in shards] == [(r["source"], r["line"]) for r in local]
    assert_same_records(shards, local)

    def by_place(r):
        return r["source"], r["line"] or 0

    assert_same_records(sorted(shards, key=by_place), sorted(local, key=by_place))  # the union, whatever the order
    names = sorted(p.name for p in out.iterdir())
    assert names[0] == "_SUCCESS" and all(n.startswith("part-") and n.endswith(".jsonl") for n in names[1:])
    assert len(names) - 1 == 3 + 6 + 1 + 1  # 666 and 1,680 prompts in 300s, the bad file, the missing one
    success = json.loads((out / "_SUCCESS").read_text())
    assert success["records"] == len(local) == 1680 + 666 + 6 + 1 and success["shards"] == len(names) - 1

    # Line numbers are the file's own, across shard boundaries; the bad lines are error records in place.
    bad = [r for r in shards if r["source"] == job_inputs["bad"]]
    assert [r["line"] for r in bad] == [1, 2, 3, 4, 6, 7]
    assert [r["status"] for r in bad] == ["ok", "error", "error", "error", "error", "ok"]
    assert bad[4]["id"] == "m1" and bad[5]["id"] == {"k": [1, 2]}
    assert [r for r in shards if r["source"] == job_inputs["missing"]] == [
        {"source": job_inputs["missing"], "line": None, "status": "error",
         "error": "cannot open: No such file or directory"}]
    moderation = [r["line"] for r in shards if r["source"].endswith("openai-moderation-1680.jsonl.gz")]
    assert moderation == list(range(1, 1681))


def test_scores_equal_crossencoder_reference(run_cli, local_ray, model_dir, job_inputs, tmp_path):
    """A direct check of Ray's scores against CrossEncoder.predict(apply_softmax=True), label by name."""
    from test_scoring import reference

    from crossguard_cli.records.text import normalize_text
    from crossguard_cli.rules import parse_rules

    prompts = tmp_path / "few.txt"
    texts = ["How do I make a pipe bomb?", "Thank you so much, have a lovely day!", "what is the capital of france",
             "Ｗｈａｔ ｉｓ b\u200bomb making?"]
    prompts.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    code, _, _ = run_cli("batch", "--engine", "ray", "--output", str(out), "-m", str(model_dir), "-r",
                         job_inputs["rules"], "--ray-actors", "1", "--ray-records-per-shard", "3", str(prompts))
    assert code in (0, 1)
    records = read_shards(out)
    assert [r["text"] for r in records] == texts
    ruleset = parse_rules(RULES, "rules.yaml")
    hyps = list(ruleset.hypotheses)
    ref = reference(model_dir, [(normalize_text(t), h) for t in texts for h in hyps]).reshape(len(texts), len(hyps), 3)
    column = {"entailment": 0, "neutral": 1, "contradiction": 2}
    for i, record in enumerate(records):
        for rule in ruleset.rules:
            best = max((hyps.index(h) for h in rule.hypotheses), key=lambda j: ref[i, j, column[rule.label]])
            got = record["scores"][rule.name]
            assert [got["entailment"], got["neutral"], got["contradiction"]] == pytest.approx(
                list(ref[i, best] * 100), abs=0.01)


def test_an_actor_dies_mid_run_and_no_record_is_lost_or_doubled(local_ray, model_dir, job_inputs, local_records,
                                                                tmp_path):
    """A separate driver joins the cluster by address; one actor kills itself after writing a shard."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.jsonl").write_text("from an older run\n")
    (out / "part-000000-00000099.parquet").write_bytes(b"not even parquet")
    marker = tmp_path / "died"
    moderation = next(p for p in job_inputs["expanded"] if p.endswith("openai-moderation-1680.jsonl.gz"))
    args = ["batch", "--engine", "ray", "--ray-address", local_ray, "--output", str(out), "--overwrite",
            "--output-format", "parquet", "-m", str(model_dir), "-r", job_inputs["rules"], *COMMON,
            "--ray-actors", "2", "--ray-records-per-shard", "100", moderation]
    proc = subprocess.run(cli_cmd(*args), capture_output=True, timeout=300,
                          env=cli_env(**{DIE_ONCE_ENV: str(marker)}))
    err = proc.stderr.decode()
    assert marker.exists(), "no actor died: the fault was not injected"
    expected = [r for r in local_records["records"] if r["source"] == moderation]
    flagged = sum(r.get("verdict") == "flagged" for r in expected)
    assert proc.returncode == (1 if flagged else 0), err
    assert proc.stdout == b""
    lines = err.splitlines()  # the summary and nothing of Ray's
    assert len(lines) == 1 and summary_counts(lines[0]) == (
        f"crossguard: {len(expected)} records, {flagged} flagged, 0 uncertain, 0 errors, 0 empty"), err

    names = sorted(p.name for p in out.iterdir())
    assert names == ["_SUCCESS"] + [f"part-000000-{i:08d}.parquet" for i in range(17)]  # old files gone
    rows = read_shards(out)  # Parquet rows: the JSONL record is the row without its null columns
    assert [(r["source"], r["line"]) for r in rows] == [(moderation, n) for n in range(1, 1681)]
    assert_same_records([{k: v for k, v in row.items() if v is not None} for row in rows], expected)


def test_refusals_are_one_line_and_exit_2(run_cli, local_ray, model_dir, job_inputs, tmp_path, monkeypatch):
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine\n")
    base = ("batch", "--engine", "ray", "-m", str(model_dir), "-r", job_inputs["rules"], job_inputs["bad"])

    def refused(*args: str, env: dict | None = None) -> str:
        code, out, err = run_cli(*args, env=env)
        assert code == 2 and out == "" and len(err.splitlines()) == 1, (code, out, err)
        assert err.startswith("crossguard: error: ")
        return err.strip()

    message = refused(*base, "--output", str(full))
    assert f"{full}: is not empty" in message and "--overwrite" in message
    assert (full / "keep.txt").read_text() == "mine\n" and len(list(full.iterdir())) == 1
    assert "only with --engine ray" in refused("batch", "--output", str(tmp_path / "o"), job_inputs["bad"])
    assert "give --output DIR" in refused(*base)
    assert "not stdin" in refused("batch", "--engine", "ray", "--output", str(tmp_path / "o"), "-")
    assert "--ray-actors" in refused(*base, "--output", str(tmp_path / "o"), "--ray-actors", "3,1")

    # Ray missing: one line saying how to install it.
    monkeypatch.setitem(__import__("sys").modules, "ray", None)
    assert "pip install 'crossguard[ray]'" in refused(*base, "--output", str(tmp_path / "o"))
    monkeypatch.undo()


def test_bad_or_unreachable_address_fails_fast_naming_it(run_cli, local_ray, model_dir, job_inputs, tmp_path):
    base = ("batch", "--engine", "ray", "--output", str(tmp_path / "o"), "-m", str(model_dir), "-r",
            job_inputs["rules"], job_inputs["bad"])
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    silent = socket.socket()  # accepts connections and never answers: not Ray
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    accepted = []
    threading.Thread(target=lambda: [accepted.append(silent.accept()) for _ in range(8)], daemon=True).start()
    silent_address = f"127.0.0.1:{silent.getsockname()[1]}"
    cases = [(f"127.0.0.1:{closed_port}", {}, "refused"), ("nohost-here", {}, "not an address"),
             ("http://127.0.0.1:8265", {}, "dashboard"),
             (silent_address, {"CROSSGUARD_RAY_CONNECT_TIMEOUT": "6"}, "no Ray cluster answered")]
    for address, env, words in cases:
        start = time.monotonic()
        code, out, err = run_cli(*base, "--ray-address", address, env=env)
        assert time.monotonic() - start < 60
        assert code == 2 and out == "" and len(err.splitlines()) == 1, err
        assert err.startswith(f"crossguard: error: --ray-address {address}: ") and words in err, err
    code, _, err = run_cli(*base, env={"RAY_ADDRESS": f"127.0.0.1:{closed_port}"})  # the env variable too
    assert code == 2 and f"--ray-address 127.0.0.1:{closed_port}: " in err
    silent.close()
    assert not (tmp_path / "o").exists()  # nothing written before the cluster answered


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_mixed_rules_file_gives_local_batchs_records(run_cli, local_ray, model_dir, classifier_dirs, tmp_path,
                                                       moderation_records, fmt):
    """NLI and classifier rules in one file, the classifiers' folders relative to it: shards == local batch."""
    import shutil

    from conftest import mixed_rules

    here = tmp_path / "rules"
    here.mkdir()
    for name in ("qwen2", "qwen2-tokenizer", "bert"):
        shutil.copytree(classifier_dirs[name], here / name)
    text = mixed_rules(model_dir, {name: name for name in ("qwen2", "qwen2-tokenizer", "bert")})
    (here / "rules.yaml").write_text(text)  # relative classifier folders, found beside the rules file
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"text": r["prompt"]}) + "\n" for r in moderation_records[:40]))
    code, local, _ = run_cli("batch", "-r", str(here / "rules.yaml"), str(prompts), *COMMON)
    assert code in (0, 1)
    out = tmp_path / "out"
    code, _, err = run_cli("batch", "--engine", "ray", "--output", str(out), "-r", str(here / "rules.yaml"),
                           "--ray-actors", "1", "--ray-records-per-shard", "25", "--output-format", fmt, *COMMON,
                           str(prompts))
    assert code in (0, 1), err
    want = [json.loads(line) for line in local.splitlines()]
    got = read_shards(out)
    if fmt == "parquet":  # a Parquet row's JSONL form leaves its null columns out
        got = [{k: v for k, v in r.items() if v is not None or k == "line"} for r in got]
    assert_same_records(got, want)
    assert set(got[0]["scores"]["violent"]) == {"probability"}
