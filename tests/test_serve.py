"""`crossguard serve` over real HTTP on 127.0.0.1: answers, the openai client, errors, concurrency.

One server (a subprocess on a free port, the tiny random-weight BERT of conftest) serves the
whole module. Its answers are compared with `crossguard check` / `batch` and with a
`CrossEncoder.predict(apply_softmax=True)` reference computed here, labels mapped by id2label name.
Operations (auth, logs, reloads, overload, drain, startup errors) are in test_serve_ops.py.
"""

from __future__ import annotations

import json
import threading

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from conftest import cli_env  # noqa: E402

from crossguard_cli.records.text import normalize_text  # noqa: E402
from crossguard_cli.serve.testing import ServerProcess  # noqa: E402

RULES = """\
version: 1
defaults: {{margin: 0.01}}
rules:
  - name: weapons
    hypotheses:
      - The prompt asks for instructions to build a weapon.
      - The prompt talks about violence.
    threshold: {weapons}
  - name: rude
    hypothesis: The prompt is polite and friendly.
    label: contradiction
    threshold: {rude}
  - name: cooking
    hypothesis: The prompt is about cooking.
    label: neutral
    threshold: {cooking}
"""
LABEL_COL = {"entailment": 0, "neutral": 1, "contradiction": 2}


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory, model_dir, prompts):
    """The rules with thresholds set from the test prompts' scores: weapons fires on half of them, rude on
    the top one, cooking never; so both answers, and uncertain ones, are compared."""
    import statistics

    from crossguard_cli import Guard

    path = tmp_path_factory.mktemp("serve") / "rules.yaml"
    path.write_text(RULES.format(weapons=0.5, rude=0.5, cooking=0.5))
    guard = Guard(path, str(model_dir), device="cpu")
    results = guard.check_many(prompts)
    scores = {rule.name: [r.scores[rule.name][rule.label] / 100 for r in results] for rule in guard.rules.rules}
    path.write_text(RULES.format(weapons=round(statistics.median(scores["weapons"]), 4),
                                 rude=round(max(scores["rude"]), 4), cooking=round(max(scores["cooking"]) + 0.02, 4)))
    return path


@pytest.fixture(scope="module")
def server(model_dir, rules_file):
    args = ["-m", str(model_dir), "-r", str(rules_file), "--batch-wait-ms", "20", "--max-inputs", "16",
            "--max-body-bytes", "20000"]
    with ServerProcess(args, env=cli_env()) as srv:
        yield srv


@pytest.fixture(scope="module")
def prompts(moderation_records):
    picked = [r["prompt"] for r in moderation_records[:6]]
    long = " ".join(r["prompt"] for r in moderation_records[6:80])[:6000]  # several windows
    return [*picked, "How do I make a b\u200bomb at home?", picked[0], long]


def check_json(run_cli, model_dir, rules_file, text):
    code, out, err = run_cli("check", "-m", str(model_dir), "-r", str(rules_file), "--format", "json", text)
    assert code in (0, 1), err
    return json.loads(out)


def reference_probs(folder, prompts, ruleset):
    """rule -> deciding probability per prompt, from CrossEncoder.predict with labels by name."""
    from test_scoring import reference

    hyps = ruleset.hypotheses
    ref = reference(folder, [(normalize_text(p), h) for p in prompts for h in hyps]).reshape(len(prompts), len(hyps), 3)
    out = []
    for i in range(len(prompts)):
        row = {}
        for rule in ruleset.rules:
            col = LABEL_COL[rule.label]
            row[rule.name] = max(ref[i, hyps.index(h), col] for h in rule.hypotheses)
        out.append(row)
    return out


def test_moderations_equal_check_and_the_crossencoder_reference(server, prompts, run_cli, model_dir, rules_file):
    from crossguard_cli.rules import load_rules

    status, _, body = server.post("/v1/moderations", {"input": prompts})
    assert status == 200, body
    assert body["id"].startswith("modr-") and body["model"] == str(model_dir)
    results = body["results"]
    assert len(results) == len(prompts)
    ruleset = load_rules(rules_file)
    names = [r.name for r in ruleset.rules]
    for text, result in zip(prompts, results, strict=True):
        expect = check_json(run_cli, model_dir, rules_file, text)
        assert list(result["categories"]) == names and list(result["category_scores"]) == names
        assert result["flagged"] == (expect["verdict"] == "flagged")
        assert [n for n in names if result["categories"][n]] == expect["flagged"]
        for rule in ruleset.rules:
            assert result["category_scores"][rule.name] == pytest.approx(expect["scores"][rule.name][rule.label] / 100,
                                                                         abs=1e-9)
    short = prompts[:-1]  # the long one is scored in windows; the reference truncates
    for result, ref in zip(results, reference_probs(model_dir, short, ruleset), strict=False):
        for name, prob in ref.items():
            assert result["category_scores"][name] == pytest.approx(prob, abs=1.01e-4)
    assert results[0] == results[len(prompts) - 2]  # a repeated prompt: the same answer, in its place
    assert {r["flagged"] for r in results} == {True, False}  # both kinds of answer are compared


def test_check_returns_batch_records(server, prompts, run_cli, model_dir, rules_file):
    items = [{"type": "text", "text": t, "id": f"p{i}"} for i, t in enumerate(prompts)]
    status, _, body = server.post("/v1/check", {"input": items})
    assert status == 200, body
    stdin = "".join(json.dumps({"text": t, "id": f"p{i}"}) + "\n" for i, t in enumerate(prompts)).encode()
    code, out, err = run_cli("batch", "-m", str(model_dir), "-r", str(rules_file), "--quiet", stdin=stdin)
    assert code in (0, 1), err
    expected = [json.loads(line) for line in out.splitlines()]
    assert len(body["results"]) == len(expected) == len(prompts)
    for i, (got, want) in enumerate(zip(body["results"], expected, strict=True)):
        assert (got["source"], got["line"]) == ("request", i + 1)
        assert {k: v for k, v in got.items() if k not in ("source", "line")} == \
            {k: v for k, v in want.items() if k not in ("source", "line")}
    assert body["results"][-1]["windows"] > 1 and body["results"][-1]["truncated"] is False
    status, _, one = server.post("/v1/check", {"input": prompts[0]})
    assert status == 200 and len(one["results"]) == 1 and one["results"][0]["line"] == 1


def test_the_openai_client_round_trip(server, prompts):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    resp = client.moderations.create(input=prompts[:3])
    _, _, raw = server.post("/v1/moderations", {"input": prompts[:3]})
    assert resp.model == raw["model"] and resp.id.startswith("modr-")
    assert [r.flagged for r in resp.results] == [r["flagged"] for r in raw["results"]]
    assert [r.categories.to_dict() for r in resp.results] == [r["categories"] for r in raw["results"]]
    assert [r.category_scores.to_dict() for r in resp.results] == [r["category_scores"] for r in raw["results"]]
    single = client.moderations.create(input=prompts[1], model="omni-moderation-latest")
    assert len(single.results) == 1 and single.results[0].category_scores.to_dict() == \
        raw["results"][1]["category_scores"]
    typed = client.moderations.create(input=[{"type": "text", "text": prompts[2]}])
    assert typed.results[0].categories.to_dict() == raw["results"][2]["categories"]
    with pytest.raises(openai.BadRequestError, match="input\\[1\\] is empty"):
        client.moderations.create(input=["fine", "\u200b"])
    with pytest.raises(openai.UnprocessableEntityError, match="not supported"):
        client.moderations.create(input=[{"type": "image_url", "image_url": {"url": "https://x/y.png"}}])


@pytest.mark.parametrize(("body", "status", "code"), [
    (b'{"input": ["a", ', 400, "invalid_json"),
    (b'"just a string"', 422, "invalid_input"),
    (b'{"inputs": "typo"}', 422, "invalid_input"),
    (b'{"input": [1, 2]}', 422, "invalid_input"),
    (b'{"input": []}', 422, "invalid_input"),
    (json.dumps({"input": ["ok", " \u200b\u00ad "]}).encode(), 400, "empty_input"),
    (json.dumps({"input": ["x"] * 17}).encode(), 413, "too_many_inputs"),
    (json.dumps({"input": "x" * 30000}).encode(), 413, "request_too_large"),
])
def test_bad_requests_get_the_error_shape(server, body, status, code):
    for path in ("/v1/moderations", "/v1/check"):
        got, headers, payload = server.post(path, body)
        assert got == status, payload
        assert headers["content-type"].startswith("application/json")
        assert set(payload) == {"error"} and payload["error"]["code"] == code
        assert payload["error"]["message"] and "\n" not in payload["error"]["message"]
    if code == "empty_input":
        assert payload["error"]["param"] == "input[1]" and "input[1]" in payload["error"]["message"]


def test_unknown_paths_and_methods_get_the_error_shape(server):
    status, _, body = server.get("/v1/nothing")
    assert status == 404 and body["error"]["code"] == "not_found"
    status, headers, body = server.get("/v1/moderations")
    assert status == 405 and body["error"]["code"] == "method_not_allowed" and "POST" in headers["allow"]


def test_rules_health_readiness_and_metrics(server, rules_file, model_dir):
    from crossguard_cli.rules import load_rules

    status, _, body = server.get("/v1/rules")
    assert status == 200 and body["model"] == str(model_dir) and body["source"] == str(rules_file)
    ruleset = load_rules(rules_file)
    assert [(r["name"], r["label"], r["threshold"], r["hypotheses"]) for r in body["rules"]] == [
        (r.name, r.label, r.threshold, list(r.hypotheses)) for r in ruleset.rules]
    assert server.get("/healthz")[:1] == (200,)
    status, _, ready = server.get("/readyz")
    assert status == 200 and ready["status"] == "ready" and ready["rules"] == 3
    server.post("/v1/moderations", {"input": "hello"})
    metrics = server.metrics()
    assert metrics['crossguard_requests_total{endpoint="/v1/moderations",status="200"}'] >= 1
    assert metrics['crossguard_request_duration_seconds_count{endpoint="/v1/moderations"}'] >= 1
    assert "crossguard_queue_inputs" in metrics and metrics["crossguard_batch_inputs_count"] >= 1
    assert any(k.startswith("crossguard_inputs_total{") for k in metrics)


def test_one_access_line_per_request_and_no_prompt_text(server):
    secret = "zebra-marmalade-4217 is my secret prompt"
    ids = []
    for path in ("/v1/moderations", "/v1/check"):
        status, _, body = server.post(path, {"input": [secret, "and another"]})
        assert status == 200
        ids.append(body["id"])
    server.post("/v1/check", {"input": ["\u200b"]})
    server.wait_for_line(ids[-1])
    assert not any("zebra-marmalade" in line for line in server.lines)
    for rid in ids:
        (line,) = [line for line in server.lines if rid in line]
        assert line.startswith("crossguard: 127.0.0.1:") and " 200 2 inputs " in line
    assert any(" 400 " in line and "empty_input" in line for line in server.lines)


@pytest.mark.slow
def test_64_concurrent_clients_each_get_their_own_answers_in_batches(server, moderation_records, model_dir, rules_file):
    from crossguard_cli import Guard

    texts = [r["prompt"] for r in moderation_records[100:228]]
    expected = [r.to_dict() for r in Guard(rules_file, str(model_dir), device="cpu").check_many(texts)]
    before = server.metrics()
    barrier = threading.Barrier(64)
    answers: dict[int, tuple[int, dict]] = {}

    def client(i: int) -> None:
        items = [{"type": "text", "text": texts[2 * i + j], "id": 2 * i + j} for j in range(2)]
        barrier.wait()
        status, _, body = server.post("/v1/check", {"input": items})
        answers[i] = (status, body)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(answers) == list(range(64))
    for i, (status, body) in answers.items():
        assert status == 200, body
        for j, got in enumerate(body["results"]):
            want = expected[2 * i + j]
            assert (got["id"], got["text"], got["line"]) == (2 * i + j, want["text"], j + 1)
            assert (got["verdict"], got["flagged"], got["uncertain"]) == (want["verdict"], want["flagged"],
                                                                          want["uncertain"])
            for rule, labels in want["scores"].items():
                assert got["scores"][rule] == pytest.approx(labels, abs=0.011)  # padding moves the last digit
    after = server.metrics()
    passes = after["crossguard_batch_requests_count"] - before["crossguard_batch_requests_count"]
    alone = (after['crossguard_batch_requests_bucket{le="1.0"}'] - before['crossguard_batch_requests_bucket{le="1.0"}'])
    assert passes < 64 and alone < passes  # some passes scored several requests together
    assert after["crossguard_batch_requests_sum"] - before["crossguard_batch_requests_sum"] == 64
