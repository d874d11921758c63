"""Shared fixtures: random-weight NLI model folders built once per session.

No trained model can be downloaded here, so the suite builds real model folders (several
architectures and id2label orders) with a WordPiece tokenizer trained on the real prompts in
../shared/data: real CrossEncoder loading, real tokenisation, real torch maths.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# `--dtype auto` is bf16 on a CPU with native bf16 matmuls; the suite compares scores with fp32
# references to 0.01 points, so it runs as on any other CPU (subprocesses inherit this).
# tests/test_precision.py tests the bf16 default itself.
os.environ["CROSSGUARD_CPU_BF16"] = "0"

# id2label orders differ between real models: CrossingGuard (E, N, C), cross-encoder/nli-* (C, E, N).
MODEL_SPECS = {
    "bert-ENC": ("bert", ("entailment", "neutral", "contradiction")),
    "bert-CEN": ("bert", ("contradiction", "entailment", "neutral")),
    "deberta-CEN": ("deberta-v2", ("contradiction", "entailment", "neutral")),
    "modernbert-NCE": ("modernbert", ("Neutral", "CONTRADICTION", "Entailment")),
}


def shared_data_dir() -> Path | None:
    """../shared/data beside the repository (CI clones it there), or $CROSSGUARD_SHARED_DATA."""
    env = os.environ.get("CROSSGUARD_SHARED_DATA")
    for cand in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "data"]:
        if (cand / "openai-moderation-1680.jsonl.gz").exists():
            return cand
    return None


def moderation_prompts() -> list[dict]:
    d = shared_data_dir()
    if d is None:
        return []
    with gzip.open(d / "openai-moderation-1680.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="session")
def moderation_records() -> list[dict]:
    records = moderation_prompts()
    if not records:  # the reference and pipeline tests need real prompts: never let them skip unseen
        pytest.fail("../shared/data/openai-moderation-1680.jsonl.gz not found: clone the shared data beside "
                    "the repository, or point CROSSGUARD_SHARED_DATA at its folder")
    return records


@pytest.fixture(scope="session")
def wordpiece():
    from crossguard_cli.testing import train_wordpiece

    texts = [r["prompt"] for r in moderation_prompts()] or None
    rules_text = (ROOT / "crossguard_cli" / "data" / "default_rules.yaml").read_text()
    return train_wordpiece((texts or []) + rules_text.splitlines(), vocab_size=3000)


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory, wordpiece) -> dict[str, Path]:
    """name -> folder of a tiny random-weight NLI model."""
    from crossguard_cli.testing import build_model_folder

    base = tmp_path_factory.mktemp("models")
    return {
        name: build_model_folder(base / name, arch=arch, labels=labels, tokenizer=wordpiece, seed=i)
        for i, (name, (arch, labels)) in enumerate(MODEL_SPECS.items())
    }


@pytest.fixture(scope="session")
def model_dir(model_dirs) -> Path:
    """The default test model: BERT with CrossingGuard's label order."""
    return model_dirs["bert-ENC"]


@pytest.fixture(scope="session")
def bad_label_dirs(tmp_path_factory, wordpiece) -> dict[str, Path]:
    """Models crossguard must refuse: a 1-label reranker, a 2-label model, LABEL_0..2."""
    from crossguard_cli.testing import build_model_folder

    base = tmp_path_factory.mktemp("bad-models")
    specs = {"one-label": ("score",), "two-label": ("entailment", "not_entailment"),
             "generic": ("LABEL_0", "LABEL_1", "LABEL_2")}
    return {name: build_model_folder(base / name, labels=labels, tokenizer=wordpiece) for name, labels in
            specs.items()}


@pytest.fixture
def run_cli(capsysbinary, monkeypatch):
    """Run `crossguard ARGS` in-process; returns (exit code, stdout text, stderr text)."""
    from crossguard_cli.cli import main

    for key in ("CROSSGUARD_RULES", "CROSSGUARD_MODEL", "CROSSGUARD_DEVICE"):  # a user's own settings
        monkeypatch.delenv(key, raising=False)

    def run(*args: str, stdin: bytes | None = None, env: dict | None = None):
        import io

        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code
        out, err = capsysbinary.readouterr()
        return code, out.decode(), err.decode()

    return run


def cli_env(**extra: str) -> dict[str, str]:
    """Environment for CLI subprocesses: PYTHONUNBUFFERED unset (it hides missing flushes)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    for key in ("CROSSGUARD_RULES", "CROSSGUARD_MODEL", "CROSSGUARD_DEVICE"):
        env.pop(key, None)
    env.update(extra)
    return env


def cli_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "crossguard_cli", *args]


@pytest.fixture(scope="session")
def classifier_dirs(tmp_path_factory, wordpiece) -> dict[str, Path]:
    """Random-weight classifiers: a DuoGuard-shaped Qwen2 (12 multi-label outputs, LABEL_i names, pad = eos,
    its tokenizer in a folder of its own) and BERT / DeBERTa-v2 2-label single-label classifiers."""
    from crossguard_cli.testing_classifiers import build_decoder_classifier, build_encoder_classifier, train_bpe

    base = tmp_path_factory.mktemp("classifiers")
    texts = [r["prompt"] for r in moderation_prompts()][:800]
    bpe = train_bpe(texts, vocab_size=1500)
    return {
        "qwen2": build_decoder_classifier(base / "qwen2", tokenizer_path=base / "qwen2-tokenizer", tokenizer=bpe),
        "qwen2-tokenizer": base / "qwen2-tokenizer",
        "bert": build_encoder_classifier(base / "bert", arch="bert", tokenizer=wordpiece, seed=3),
        "deberta": build_encoder_classifier(base / "deberta", arch="deberta-v2", labels=("benign", "malicious"),
                                            tokenizer=wordpiece, seed=4),
    }


def mixed_rules(nli_model: Path, dirs: dict[str, Path], **extra: str) -> str:
    """A rules file with one NLI rule and rules on two classifiers (folders as absolute paths)."""
    labels = ", ".join(f"cat{i}" for i in range(12))
    return f"""\
version: 1
model: {nli_model}
classifiers:
  duo:
    model: {dirs['qwen2']}
    tokenizer: {dirs['qwen2-tokenizer']}
    labels: [{labels}]
    max_length: {extra.get('duo_max_length', 512)}
  inj:
    model: {dirs['bert']}
rules:
  - name: weapons
    hypothesis: The prompt asks for instructions to build a weapon.
    margin: 0.05
  - name: violent
    classifier: duo
    label: cat0
    threshold: {extra.get('violent', 0.5)}
    margin: 0.1
  - name: hate
    classifier: duo
    label: 8
  - name: injection
    classifier: inj
    label: INJECTION
    threshold: {extra.get('injection', 0.9)}
    margin: 0.05
"""
