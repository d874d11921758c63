"""Which precision `--dtype auto` picks, and that the fast paths keep the numbers.

`auto` is bf16 on a CPU with native bf16 matmuls (AVX512-BF16 or AMX, read from the CPU's own
flags), fp32 elsewhere; fp32 stays the exact path. bf16 and `--compile` are checked here
against fp32 on real random-weight models.
"""

from __future__ import annotations

import pytest

from crossguard_cli.engine.models.devices import native_bf16_cpu
from crossguard_cli.engine.models.loader import load_model
from crossguard_cli.engine.scorer import Scorer
from crossguard_cli.rules import parse_rules

# Largest probability difference the bf16 default may make against fp32, on every label of
# every rule: 0.02 (2 points). Measured: 0.005 on the ModernBERT-150m shape (issue 13) and the
# figures in benchmarks/RESULTS.md; the tiny fixtures (weights of std 0.2) are harsher.
BF16_TOLERANCE = 0.02

ZEN3 = "flags\t\t: fpu vme sse sse2 avx avx2 fma f16c bmi2 sha_ni vaes\n"
ZEN5 = "flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_vnni avx512_bf16 vaes\n"
SAPPHIRE_RAPIDS = "flags\t\t: fpu avx2 avx512f avx512_vnni amx_bf16 amx_tile amx_int8\n"

RULES = parse_rules("""
version: 1
rules:
  - name: weapons
    hypotheses: [The prompt asks for instructions to build a weapon., The prompt is about explosives.]
  - name: polite
    hypothesis: The prompt is rude.
    label: contradiction
  - name: topic
    hypothesis: The prompt is about cooking.
    label: neutral
""", "test.yaml")


def test_native_bf16_is_read_from_the_cpu_flags(monkeypatch):
    monkeypatch.delenv("CROSSGUARD_CPU_BF16", raising=False)
    assert not native_bf16_cpu(ZEN3)
    assert native_bf16_cpu(ZEN5)
    assert native_bf16_cpu(SAPPHIRE_RAPIDS)
    assert not native_bf16_cpu("processor\t: 0\nFeatures\t: fp asimd bf16\n")  # not measured: stays exact
    monkeypatch.setenv("CROSSGUARD_CPU_BF16", "1")
    assert native_bf16_cpu(ZEN3)
    monkeypatch.setenv("CROSSGUARD_CPU_BF16", "0")
    assert not native_bf16_cpu(ZEN5)


@pytest.mark.parametrize("native, expect", [("1", "torch.bfloat16"), ("0", "torch.float32")])
def test_auto_dtype_on_the_cpu_follows_native_bf16(model_dir, monkeypatch, native, expect):
    monkeypatch.setenv("CROSSGUARD_CPU_BF16", native)
    assert str(load_model(str(model_dir), device="cpu").dtype) == expect
    assert str(load_model(str(model_dir), device="cpu", dtype="float32").dtype) == "torch.float32"  # exact path


def test_bf16_default_stays_within_its_tolerance(model_dirs, moderation_records, monkeypatch):
    """Where auto means bf16, the CLI's scores stay within BF16_TOLERANCE of --dtype float32."""
    folder = model_dirs["modernbert-NCE"]
    prompts = [r["prompt"] for r in moderation_records[:12]]
    exact = Scorer(load_model(str(folder), device="cpu", dtype="float32"), RULES).score(prompts)
    monkeypatch.setenv("CROSSGUARD_CPU_BF16", "1")
    fast_model = load_model(str(folder), device="cpu")
    assert str(fast_model.dtype) == "torch.bfloat16"
    fast = Scorer(fast_model, RULES).score(prompts)
    for a, b in zip(exact, fast, strict=True):
        for rule in RULES.rules:
            x, y = a.rules[rule.name], b.rules[rule.name]
            assert y.prob(rule.label) == pytest.approx(x.prob(rule.label), abs=BF16_TOLERANCE)


@pytest.mark.slow
def test_compiled_model_gives_the_same_scores(model_dirs, moderation_records):
    """--compile (torch.compile, dynamic shapes) on the CPU: the same numbers as eager fp32."""
    folder = model_dirs["bert-CEN"]
    prompts = [r["prompt"] for r in moderation_records[:10]]
    eager = Scorer(load_model(str(folder), device="cpu", dtype="float32", max_length=96), RULES,
                   batch_size=8).score(prompts)
    model = load_model(str(folder), device="cpu", dtype="float32", max_length=96, compile=True)
    assert model.compiled is not None
    compiled = Scorer(model, RULES, batch_size=8).score(prompts)
    for a, b in zip(eager, compiled, strict=True):
        assert a.windows == b.windows
        for name in a.rules:
            for label in ("entailment", "neutral", "contradiction"):
                assert b.rules[name].prob(label) == pytest.approx(a.rules[name].prob(label), abs=1e-5)


def test_compile_is_for_the_torch_backend(model_dir, run_cli):
    code, out, err = run_cli("check", "hi", "-m", str(model_dir), "--backend", "onnx", "--compile")
    assert code == 2 and out == "" and "--compile" in err and len(err.splitlines()) == 1
