"""Learned-abstention heads as a model: the card's computation, base encoder, refusals, dispatch.

The reference is the model card's own code: its `nn.Sequential` heads loaded from the same
state dict onto `AutoModel`, run on one pair tokenised alone. `HeadsModel.logits` runs padded
batches; the two must agree within 0.02 percentage points in float32.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from crossguard_cli.engine.models.heads import HeadsModel, is_heads_model, load_heads_model
from crossguard_cli.engine.models.heads_files import base_encoder
from crossguard_cli.engine.models.loader import load_model
from crossguard_cli.errors import ModelError, UsageError
from crossguard_cli.testing_heads import build_encoder_folder, build_heads_model, main

HYPOTHESES = ("The prompt asks for instructions to build a weapon.",
              "The prompt tries to make the assistant ignore its instructions.")
TOLERANCE_PP = 0.02


@pytest.fixture(scope="module")
def prompts(moderation_records) -> list[str]:
    """Real prompts of varied lengths: short ones, ones past the local-attention window, over 512 tokens."""
    texts = sorted({r["prompt"] for r in moderation_records if r["prompt"].strip()}, key=len)
    picks = np.linspace(0, len(texts) - 1, 10).astype(int)
    return [texts[i] for i in picks]


@pytest.fixture(scope="module")
def built(tmp_path_factory, wordpiece, moderation_records) -> dict[str, Path]:
    """A heads model (card sizes), small heads on the same encoder, and a wider second encoder."""
    base = tmp_path_factory.mktemp("heads")
    texts = [r["prompt"] for r in moderation_records[:200]]
    heads = build_heads_model(base / "heads", tokenizer=wordpiece, texts=texts, seed=3)
    small = build_heads_model(base / "small", encoder_folder=heads / "encoder", texts=texts, seed=5, inner=64,
                              abstain=16)
    wide = build_encoder_folder(base / "wide", tokenizer=wordpiece, shape={
        "hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64})
    return {"heads": heads, "small": small, "encoder": heads / "encoder", "wide": wide}


def card_reference(heads_folder: Path, encoder: Path, premise: str, hypothesis: str) -> tuple[np.ndarray, float]:
    """The model card's code on one pair: (E, N, C percentages, uncertain percentage)."""
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(encoder, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    task_heads = torch.load(heads_folder / "task_heads.pt", map_location="cpu", weights_only=True)
    size, inner = model.config.hidden_size, task_heads["nli_hidden.0.weight"].shape[0]
    abstain = task_heads["abstention_head.0.weight"].shape[0]
    nli_hidden = nn.Sequential(nn.Linear(size, inner), nn.LayerNorm(inner), nn.GELU(), nn.Dropout(0.1))
    nli_output = nn.Linear(inner, 3)
    abstention_head = nn.Sequential(nn.Linear(inner + 3, abstain), nn.LayerNorm(abstain), nn.GELU(), nn.Dropout(0.1),
                                    nn.Linear(abstain, 2))
    for name, module in (("nli_hidden", nli_hidden), ("nli_output", nli_output), ("abstention_head", abstention_head)):
        module.load_state_dict({k.replace(name + ".", ""): v for k, v in task_heads.items()
                                if k.startswith(name + ".")})
        module.eval()
    inputs = tokenizer(premise, hypothesis, truncation="only_first", max_length=512, return_tensors="pt")
    with torch.no_grad():
        cls = model(**inputs).last_hidden_state[:, 0]
        hidden = nli_hidden(cls)
        logits = nli_output(hidden)
        abstention = abstention_head(torch.cat([hidden, logits], dim=-1))
    return (torch.softmax(logits, -1)[0] * 100).numpy(), float(torch.softmax(abstention, -1)[0, 1] * 100)


def batched(model: HeadsModel, premises: list[str], hypotheses: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """E/N/C and uncertain percentages from one padded batch through `HeadsModel.logits`, as the scorer takes them."""
    enc = model.tokenizer(premises, hypotheses, padding=True, truncation="only_first", max_length=512,
                          return_tensors="np")
    types = enc.get("token_type_ids", np.zeros_like(enc["input_ids"]))
    out = model.logits(enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64),
                       types.astype(np.int64))
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (len(premises), 5)
    out = torch.from_numpy(out)
    enc_probs = torch.softmax(out[:, list(model.label_columns)], -1) * 100
    uncertain = torch.softmax(out[:, list(model.abstain_columns)], -1)[:, 1] * 100
    return enc_probs.numpy(), uncertain.numpy()


@pytest.mark.parametrize("which", ["heads", "small"])
def test_scores_equal_the_card_code_on_one_pair(built, prompts, which):
    model = load_heads_model(str(built[which]), device="cpu", dtype="float32")
    premises = [p for p in prompts for _ in HYPOTHESES]
    hypotheses = [h for _ in prompts for h in HYPOTHESES]
    got_enc, got_uncertain = batched(model, premises, hypotheses)
    want = [card_reference(built[which], built["encoder"], p, h) for p, h in zip(premises, hypotheses, strict=True)]
    want_enc = np.stack([w[0] for w in want])
    want_uncertain = np.array([w[1] for w in want])
    assert np.abs(got_enc - want_enc).max() < TOLERANCE_PP
    assert np.abs(got_uncertain - want_uncertain).max() < TOLERANCE_PP
    # The comparison means something only if the scores differ from pair to pair far beyond it.
    assert np.ptp(want_enc[:, 0]) > 100 * TOLERANCE_PP and np.ptp(want_uncertain) > 100 * TOLERANCE_PP
    lengths = [len(model.tokenizer(p, h)["input_ids"]) for p, h in zip(premises, hypotheses, strict=True)]
    assert min(lengths) < 64 and max(lengths) > 512  # padding, the local-attention window and truncation all ran


def test_model_surface(built):
    model = load_model(str(built["heads"]), device="cpu", dtype="float32")
    assert isinstance(model, HeadsModel)
    assert model.label_columns == (0, 1, 2) and model.abstain_columns == (3, 4) and model.n_outputs == 5
    assert model.encoder_name == str(built["heads"] / "encoder")
    assert model.input_names == ("input_ids", "attention_mask") and not model.uses_token_types
    assert model.max_length == 512 and model.dtype == torch.float32 and model.device.type == "cpu"
    assert not model.module.training and model.compiled is None
    assert model.to_host([])().shape == (0, 5)
    part = torch.ones(2, 5)
    assert model.to_host([part, part])().shape == (4, 5)
    assert load_heads_model(str(built["heads"]), device="cpu", max_length=64).max_length == 64


def test_heads_file_holds_the_cards_sequential_keys(built):
    state = torch.load(built["heads"] / "task_heads.pt", weights_only=True)
    assert sorted(state) == sorted([
        "nli_hidden.0.weight", "nli_hidden.0.bias", "nli_hidden.1.weight", "nli_hidden.1.bias",
        "nli_output.weight", "nli_output.bias",
        "abstention_head.0.weight", "abstention_head.0.bias", "abstention_head.1.weight", "abstention_head.1.bias",
        "abstention_head.4.weight", "abstention_head.4.bias"])
    assert state["nli_hidden.0.weight"].shape == (512, 32) and state["abstention_head.0.weight"].shape == (128, 515)


def test_dtype_applies_to_the_encoder_and_logits_stay_float32(built):
    model = load_heads_model(str(built["heads"]), device="cpu", dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    assert model.module.nli_output.weight.dtype == torch.float32  # the heads always run in float32
    enc, uncertain = batched(model, ["How do I bake bread?"], [HYPOTHESES[0]])
    assert np.isfinite(enc).all() and np.isfinite(uncertain).all()


def test_encoder_option_overrides_and_token_types_reach_the_encoder(built, model_dir, prompts):
    """A BERT encoder of the same width: --encoder wins over config.json, and token_type_ids are passed."""
    model = load_heads_model(str(built["heads"]), encoder=str(model_dir), device="cpu", dtype="float32")
    assert model.encoder_name == str(model_dir) and model.uses_token_types
    got_enc, got_uncertain = batched(model, prompts[:3], [HYPOTHESES[0]] * 3)
    for i, premise in enumerate(prompts[:3]):
        want_enc, want_uncertain = card_reference(built["heads"], model_dir, premise, HYPOTHESES[0])
        assert np.abs(got_enc[i] - want_enc).max() < TOLERANCE_PP
        assert abs(got_uncertain[i] - want_uncertain) < TOLERANCE_PP


def _heads_copy(built, tmp_path: Path, config: dict | None, readme: str | None) -> Path:
    folder = tmp_path / "copy"
    folder.mkdir()
    shutil.copy(built["heads"] / "task_heads.pt", folder / "task_heads.pt")
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    if readme is not None:
        (folder / "README.md").write_text(readme)
    return folder


def test_base_model_from_config_json_relative_to_the_heads_folder(built):
    assert base_encoder(str(built["heads"]), None) == str(built["heads"] / "encoder")


def test_base_model_from_readme_front_matter(built, tmp_path):
    folder = _heads_copy(built, tmp_path, {"heads": "task_heads.pt"},
                         f"---\nlicense: mit\nbase_model:\n- {built['encoder']}\n---\n# card\n")
    assert base_encoder(str(folder), None) == str(built["encoder"])
    assert load_heads_model(str(folder), device="cpu").encoder_name == str(built["encoder"])
    made = build_heads_model(tmp_path / "readme-only", encoder_folder=built["encoder"], base_model_in="readme")
    assert "base_model" not in json.loads((made / "config.json").read_text())
    assert Path(base_encoder(str(made), None)).resolve() == built["encoder"].resolve()


def test_config_json_beats_readme_and_hub_ids_pass_through(built, tmp_path):
    folder = _heads_copy(built, tmp_path, {"base_model": "answerdotai/ModernBERT-large"},
                         "---\nbase_model: encoder\n---\n")
    assert base_encoder(str(folder), None) == "answerdotai/ModernBERT-large"


def test_a_missing_relative_encoder_folder_is_named_from_the_heads_folder(built, tmp_path):
    folder = _heads_copy(built, tmp_path, {"base_model": "./gone"}, None)
    with pytest.raises(ModelError) as err:
        load_heads_model(str(folder), device="cpu")
    assert str(folder / "gone") in str(err.value) and "\n" not in str(err.value)


def test_missing_base_model_is_one_line(built, tmp_path):
    folder = _heads_copy(built, tmp_path, {"heads": "task_heads.pt"}, "# a card without front matter\n")
    with pytest.raises(ModelError) as err:
        load_heads_model(str(folder), device="cpu")
    message = str(err.value)
    assert "\n" not in message and "names no base encoder" in message and "--encoder" in message
    assert load_heads_model(str(folder), encoder=str(built["encoder"]), device="cpu").encoder_name == str(
        built["encoder"])


@pytest.mark.parametrize("config, needle", [
    ("{not json", "config.json: cannot read it"),
    (json.dumps({"base_model": 7}), "base_model must be a hub id or a path"),
])
def test_unreadable_config_is_one_line_naming_it(built, tmp_path, config, needle):
    folder = _heads_copy(built, tmp_path, None, None)
    (folder / "config.json").write_text(config)
    with pytest.raises(ModelError) as err:
        load_heads_model(str(folder), device="cpu")
    assert needle in str(err.value) and "\n" not in str(err.value)


class _Payload:
    """Unpickling this runs `open(target, "w")`: a file appears if the pickle's code ever runs."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return open, (self.target, "w")


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_a_pickle_that_needs_code_is_refused_and_never_run(built, tmp_path, monkeypatch, writer):
    import pickle

    control, target = tmp_path / "control-ran", tmp_path / "payload-ran"
    state = {"nli_hidden.0.weight": _Payload(str(target))}
    folder = _heads_copy(built, tmp_path, {"base_model": "./no-such-encoder"}, None)  # refused before it is looked for
    if writer == "torch.save":
        torch.save(state, folder / "task_heads.pt")
        torch.save({"x": _Payload(str(control))}, tmp_path / "control.pt")
        torch.load(tmp_path / "control.pt", weights_only=False)  # the payload is real: loading it unsafely runs it
    else:
        (folder / "task_heads.pt").write_bytes(pickle.dumps(state))
        pickle.loads(pickle.dumps({"x": _Payload(str(control))}))
    assert control.exists()
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # a user's environment cannot lower the guard
    for load in (lambda: load_heads_model(str(folder), device="cpu"), lambda: load_model(str(folder), device="cpu")):
        with pytest.raises(ModelError) as err:
            load()
        assert "\n" not in str(err.value) and "task_heads.pt" in str(err.value)
        assert not target.exists()
    if writer == "torch.save":
        assert "refused" in str(err.value) and "needs code to load" in str(err.value)


def test_a_pickle_is_refused_by_the_cli_in_one_line(built, tmp_path, run_cli):
    target = tmp_path / "payload-ran"
    folder = _heads_copy(built, tmp_path, {"base_model": str(built["encoder"])}, None)
    torch.save({"nli_hidden.0.weight": _Payload(str(target))}, folder / "task_heads.pt")
    code, out, err = run_cli("check", "--model", str(folder), "--device", "cpu", "hello")
    assert code == 2 and out == "" and not target.exists()
    assert err.count("\n") == 1 and err.startswith("crossguard: error: ") and "refused" in err


def _with_state(built, tmp_path: Path, edit) -> Path:
    state = torch.load(built["heads"] / "task_heads.pt", weights_only=True)
    edit(state)
    folder = _heads_copy(built, tmp_path, {"base_model": str(built["encoder"])}, None)
    torch.save(state, folder / "task_heads.pt")
    return folder


@pytest.mark.parametrize("edit, needle", [
    (lambda s: s.pop("abstention_head.4.weight"), "missing key 'abstention_head.4.weight'"),
    (lambda s: s.pop("nli_output.bias"), "missing key 'nli_output.bias'"),
    (lambda s: s.__setitem__("abstention_head.5.weight", torch.zeros(2)), "unexpected key 'abstention_head.5.weight'"),
    (lambda s: s.__setitem__("module.nli_output.weight", s.pop("nli_output.weight")),
     "missing key 'nli_output.weight'"),
    (lambda s: s.__setitem__("nli_output.bias", [0.0, 0.0, 0.0]), "key 'nli_output.bias' holds list"),
    (lambda s: s.__setitem__("nli_output.bias", torch.zeros(3, dtype=torch.int64)), "holds torch.int64"),
], ids=["missing-last", "missing-bias", "unexpected", "prefixed", "not-a-tensor", "integer"])
def test_wrong_keys_are_one_line_naming_the_key(built, tmp_path, edit, needle):
    folder = _with_state(built, tmp_path, edit)
    with pytest.raises(ModelError) as err:
        load_heads_model(str(folder), device="cpu")
    assert needle in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("key, shape", [
    ("nli_output.weight", (3, 500)),
    ("nli_output.weight", (4, 512)),
    ("abstention_head.0.weight", (128, 512)),
    ("abstention_head.4.weight", (3, 128)),
    ("nli_hidden.1.weight", (511,)),
])
def test_wrong_shapes_are_one_line_naming_the_key(built, tmp_path, key, shape):
    folder = _with_state(built, tmp_path, lambda s: s.__setitem__(key, torch.zeros(shape)))
    with pytest.raises(ModelError) as err:
        load_heads_model(str(folder), device="cpu")
    assert f"key {key!r} has shape {list(shape)}" in str(err.value) and "\n" not in str(err.value)


def test_an_encoder_of_another_width_names_the_first_linear(built):
    with pytest.raises(ModelError) as err:
        load_heads_model(str(built["heads"]), encoder=str(built["wide"]), device="cpu")
    message = str(err.value)
    assert "key 'nli_hidden.0.weight' has shape [512, 32], expected [512, 48]" in message
    assert "hidden size, 48" in message and "\n" not in message


def test_not_a_state_dict(built, tmp_path):
    folder = _with_state(built, tmp_path, lambda s: None)
    torch.save(torch.zeros(3), folder / "task_heads.pt")
    with pytest.raises(ModelError, match="holds a Tensor, not a state dict"):
        load_heads_model(str(folder), device="cpu")
    (folder / "task_heads.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ModelError, match="cannot read task_heads.pt"):
        load_heads_model(str(folder), device="cpu")


def test_load_model_dispatches_on_task_heads(built, model_dir):
    assert is_heads_model(str(built["heads"]), None) and not is_heads_model(str(model_dir), None)
    assert not is_heads_model("./no/such/folder", None)
    assert isinstance(load_model(str(built["heads"]), device="cpu"), HeadsModel)
    assert not isinstance(load_model(str(model_dir), device="cpu"), HeadsModel)


@pytest.mark.parametrize("backend", ["onnx", "openvino-int8"])
def test_another_backend_is_refused_at_start(built, backend):
    with pytest.raises(UsageError) as err:
        load_model(str(built["heads"]), backend=backend, device="cpu")
    assert f"--backend {backend}" in str(err.value) and "torch only" in str(err.value)
    assert "\n" not in str(err.value)


def test_encoder_for_a_model_without_heads_is_refused(model_dir, built):
    with pytest.raises(UsageError, match="--encoder"):
        load_model(str(model_dir), device="cpu", encoder=str(built["encoder"]))


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A local hub cache (no network): `put(repo, files)` caches a repo's files at main."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))

    def put(repo: str, files: dict[str, bytes]) -> None:
        root = cache / f"models--{repo.replace('/', '--')}"
        commit = "0" * 40
        (root / "refs").mkdir(parents=True)
        (root / "refs" / "main").write_text(commit)
        for name, data in files.items():
            path = root / "snapshots" / commit / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    return put


class _Session:
    def __init__(self, status: int | None) -> None:
        self.status, self.asked = status, []

    def head(self, url, **kwargs):
        self.asked.append((url, kwargs.get("timeout")))
        if self.status is None:
            raise OSError("Name or service not known")
        return type("Answer", (), {"status_code": self.status})()


def _session(monkeypatch, status: int | None) -> _Session:
    import huggingface_hub.utils

    session = _Session(status)
    monkeypatch.setattr(huggingface_hub.utils, "get_session", lambda: session)
    return session


def test_hub_ids_are_answered_from_the_cache_first(hub_cache, monkeypatch, built):
    session = _session(monkeypatch, None)  # any request would fail the test
    hub_cache("org/heads", {"task_heads.pt": (built["heads"] / "task_heads.pt").read_bytes(),
                            "config.json": json.dumps({"base_model": str(built["encoder"])}).encode()})
    hub_cache("org/plain", {"config.json": b"{}"})
    assert is_heads_model("org/heads", None)
    assert not is_heads_model("org/plain", None)
    assert session.asked == []
    model = load_heads_model("org/heads", device="cpu", dtype="float32")  # from the cache, offline
    assert model.encoder_name == str(built["encoder"]) and session.asked == []


@pytest.mark.parametrize("status, heads", [(200, True), (302, True), (404, False), (401, False)])
def test_an_uncached_hub_id_is_asked_once_with_a_timeout(hub_cache, monkeypatch, status, heads):
    session = _session(monkeypatch, status)
    assert is_heads_model("org/elsewhere", "v1") is heads
    assert len(session.asked) == 1 and session.asked[0][1] and "task_heads.pt" in session.asked[0][0]


def test_an_unreachable_hub_is_one_line_and_offline_asks_nothing(hub_cache, monkeypatch):
    from huggingface_hub import constants

    session = _session(monkeypatch, None)
    with pytest.raises(ModelError) as err:
        is_heads_model("org/elsewhere", None)
    assert "cannot be reached" in str(err.value) and "\n" not in str(err.value)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert not is_heads_model("org/elsewhere2", None) and len(session.asked) == 1


def test_main_builds_a_folder_users_can_load(tmp_path, capsys):
    main([str(tmp_path / "try")])
    assert capsys.readouterr().out.strip().endswith("try")
    model = load_model(str(tmp_path / "try"), device="cpu")
    assert isinstance(model, HeadsModel) and model.encoder_name == str(tmp_path / "try" / "encoder")
