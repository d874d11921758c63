"""NLI heads with learned abstention on a plain encoder: the "ModernBERT-NLI with Learned Abstention" format.

The model card publishes no sequence-classification model, only `task_heads.pt` (a state dict
of small `nn.Sequential` heads) and the name of the frozen encoder they were trained on. The
computation is the card's: the first token's vector of the encoder's last hidden state goes
through `nli_hidden` (Linear, LayerNorm, GELU, Dropout), then `nli_output` gives entailment,
neutral and contradiction logits; `abstention_head` reads both (concatenated) and gives
confident / uncertain logits. One forward pass returns the five logits side by side, so the
scorer batches, windows and copies them like any NLI model's three.

The heads file is read with `weights_only=True`: a `.pt` file is a pickle, and a pickle that
needs code to load is refused here rather than run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from crossguard_cli.engine.models.devices import resolve_device, resolve_dtype
from crossguard_cli.engine.models.files import (
    HUB_TIMEOUT_S,
    MODEL_INPUTS,
    check_model_name,
    is_library_failure,
    load_cached_first,
    load_failure,
    model_limit,
    require_fast_tokenizer,
)
from crossguard_cli.engine.models.heads_files import (
    ABSTAIN_LABELS,
    HEADS_FILE,
    NLI_LABELS,
    base_encoder,
    check_width,
    read_heads,
    repo_file,
)
from crossguard_cli.engine.models.nli_torch import LoadedModel, compiled
from crossguard_cli.errors import ModelError


def is_heads_model(name: str, revision: str | None = None) -> bool:
    """Whether `name` is a heads model: a folder holding `task_heads.pt`, or a hub repo that has one.

    A hub id is answered from the local cache when it can be (a cached plain model needs no
    network, as when loading it); otherwise the hub is asked once, with a timeout.

    Raises:
        ModelError: `name` is not cached and the hub cannot be reached (it could not load anyway).
    """
    if os.path.isdir(name):
        return os.path.isfile(os.path.join(name, HEADS_FILE))
    if name.startswith(("/", ".", "~")) or name.count("/") > 1:
        return False  # no folder and no hub id: the plain loader says so
    from huggingface_hub import constants, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.file_download import _CACHED_NO_EXIST

    try:
        cached = try_to_load_from_cache(name, HEADS_FILE, revision=revision)
        if isinstance(cached, str) or cached is _CACHED_NO_EXIST:
            return isinstance(cached, str)
        if isinstance(try_to_load_from_cache(name, "config.json", revision=revision), str):
            return False  # a cached plain model: never ask the hub about it
    except Exception:  # an id the hub client refuses (spaces, ...): the plain loader reports it
        return False
    if constants.HF_HUB_OFFLINE:
        return False  # the plain loader gives the offline error
    from huggingface_hub.utils import build_hf_headers, get_session

    try:
        answer = get_session().head(hf_hub_url(name, HEADS_FILE, revision=revision), headers=build_hf_headers(),
                                    timeout=HUB_TIMEOUT_S)
    except Exception as exc:  # DNS, refused, TLS, timeout: the client's own error classes vary
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ModelError(f"model {name!r} is not in the local cache and the Hugging Face hub cannot be reached "
                         f"({reason}); download it where the hub is reachable (it is cached after), or set "
                         "--model to a local folder") from None
    return answer.status_code < 400  # 3xx: a file on the CDN; 404, 401: no heads (or no repo)


def _heads_net(encoder, layers: dict[str, Any]):
    """The encoder and the card's three heads as one module whose output is the five logits."""
    import torch
    from torch import nn
    from transformers.modeling_outputs import SequenceClassifierOutput

    class HeadsNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            for key, module in layers.items():
                self.add_module(key, module)

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            kwargs = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            states = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
            pooled = states[:, 0].float()  # the card pools the first token; heads run in float32
            hidden = self.nli_hidden(pooled)
            nli = self.nli_output(hidden)
            abstain = self.abstention_head(torch.cat([hidden, nli], dim=-1))
            return SequenceClassifierOutput(logits=torch.cat([nli, abstain], dim=-1))

    return HeadsNet()


def build_heads(state: dict[str, Any]) -> dict[str, Any]:
    """The card's `nn.Sequential` heads, sized by `state` (already checked) and loaded from it, in eval mode."""
    from torch import nn

    inner, width = state["nli_hidden.0.weight"].shape
    abstain = state["abstention_head.0.weight"].shape[0]
    layers = {
        "nli_hidden": nn.Sequential(nn.Linear(width, inner), nn.LayerNorm(inner), nn.GELU(), nn.Dropout(0.1)),
        "nli_output": nn.Linear(inner, len(NLI_LABELS)),
        "abstention_head": nn.Sequential(nn.Linear(inner + len(NLI_LABELS), abstain), nn.LayerNorm(abstain),
                                         nn.GELU(), nn.Dropout(0.1), nn.Linear(abstain, len(ABSTAIN_LABELS))),
    }
    for key, module in layers.items():
        module.load_state_dict({k[len(key) + 1:]: v.float() for k, v in state.items() if k.startswith(key + ".")})
        module.eval()
    return layers


@dataclass
class HeadsModel(LoadedModel):
    """A heads model ready for scoring: `LoadedModel`'s surface, with five logits per pair.

    `logits` gives columns 0-2 the NLI logits [entailment, neutral, contradiction]
    (`label_columns`) and columns 3-4 the abstention logits [confident, uncertain]
    (`abstain_columns`); the scorer softmaxes each group on its own.

    Attributes:
        encoder_name: the base encoder as found (`--encoder`, config.json or README.md).
        abstain_columns: logits columns of confident and uncertain, in that order.
    """

    encoder_name: str = ""
    abstain_columns: tuple[int, int] = (3, 4)

    @property
    def n_outputs(self) -> int:
        """Logits columns of a forward pass: three NLI, then two abstention."""
        return len(NLI_LABELS) + len(ABSTAIN_LABELS)


def load_heads_model(
    name: str,
    *,
    encoder: str | None = None,
    revision: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    max_length: int = 512,
    compile: bool = False,
) -> HeadsModel:
    """Load a heads model (`task_heads.pt` on its base encoder) for scoring.

    Args:
        name: a folder holding `task_heads.pt`, or a hub id whose repo has it.
        encoder: the base encoder (hub id or folder); None: `base_model` in the heads' config.json,
            else in the front matter of their README.md (relative paths from the heads folder).
        revision: hub branch, tag or commit of the heads repo.
        device, dtype, max_length, compile: as for `load_torch_model`; the heads themselves
            always run in float32 (they are 0.15% of the work).

    Raises:
        ModelError: a file is missing or unreadable, no base encoder is named, the heads file
            needs code to load, or its keys or shapes do not fit the card's heads on this encoder.
        UsageError: the device or dtype cannot be used here.
    """
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    check_model_name(name)
    heads_path = repo_file(name, HEADS_FILE, revision, optional=False)
    state = read_heads(heads_path)  # refused before any encoder is fetched
    encoder_name = encoder or base_encoder(name, revision)
    try:
        check_model_name(encoder_name)
    except ModelError:
        named = "--encoder" if encoder else f"base_model in {name}'s config.json or README.md"
        raise ModelError(f"no such base encoder folder: {encoder_name} (named by {named}); give a folder or a hub "
                         "id like ORG/NAME") from None
    model, tokenizer = _load_encoder(encoder_name, torch_dtype)
    require_fast_tokenizer(tokenizer, encoder_name)
    width = getattr(model.config, "hidden_size", None)
    if not isinstance(width, int):
        raise ModelError(f"base encoder {encoder_name!r} has no hidden_size in its config; is it an encoder?")
    check_width(state, width, heads_path)
    layers = build_heads(state)
    model.eval()
    net = _heads_net(model, layers).to(device).eval()
    limit = model_limit(tokenizer, model.config)
    names = tuple(n for n in getattr(tokenizer, "model_input_names", MODEL_INPUTS[:2]) if n in MODEL_INPUTS)
    return HeadsModel(
        name=name,
        tokenizer=tokenizer,
        module=net,
        device=next(model.parameters()).device,
        dtype=next(model.parameters()).dtype,
        label_columns=(0, 1, 2),
        max_length=min(max_length, limit) if limit else max_length,
        input_names=names,
        compiled=compiled(net) if compile else None,
        encoder_name=encoder_name,
    )


def _load_encoder(name: str, torch_dtype):
    """`AutoModel` and its tokenizer (fast required), cached files first, failures as one line."""
    from transformers import AutoModel, AutoTokenizer

    def load(local_files_only: bool):
        model = AutoModel.from_pretrained(name, dtype=torch_dtype, local_files_only=local_files_only)
        return model, AutoTokenizer.from_pretrained(name, local_files_only=local_files_only)

    try:
        return load_cached_first(load, name, None)
    except ModelError:
        raise
    except BaseException as exc:  # noqa: BLE001 - hub, file-format, config and tokenizer (Rust panic) errors
        if not is_library_failure(exc):  # Ctrl-C, SIGTERM, exit: not a broken model
            raise
        error = load_failure(name, exc)
        raise ModelError(f"base encoder: {error.what}") from None


__all__ = ["ABSTAIN_LABELS", "HEADS_FILE", "NLI_LABELS", "HeadsModel", "build_heads", "is_heads_model",
           "load_heads_model"]
