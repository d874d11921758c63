"""Finding and checking the files of a learned-abstention heads model: heads, encoder name, state dict.

Apart from `heads` (which builds and runs the model) so that what is refused, and why, reads
in one place: a heads file that needs code to load, keys or shapes that are not the card's
heads on this encoder, a model that names no base encoder. Every refusal is one line naming
the file and, for the state dict, the key.
"""

from __future__ import annotations

import os
from typing import Any, NoReturn

from crossguard_cli.engine.models.files import load_cached_first, load_failure
from crossguard_cli.errors import ModelError

HEADS_FILE = "task_heads.pt"
NLI_LABELS = ("entailment", "neutral", "contradiction")  # nli_output's columns, as the card trains them
ABSTAIN_LABELS = ("confident", "uncertain")  # abstention_head's columns


def repo_file(name: str, filename: str, revision: str | None, *, optional: bool) -> str | None:
    """The local path of one file of the heads folder or repo, downloaded (cached first) when needed.

    Returns None for an optional file the folder or repo does not have.
    """
    if os.path.isdir(name):
        path = os.path.join(name, filename)
        if os.path.isfile(path):
            return path
        if optional:
            return None
        raise ModelError(f"no {filename} in {name}")
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
    from huggingface_hub.file_download import _CACHED_NO_EXIST

    cached = try_to_load_from_cache(name, filename, revision=revision)
    if isinstance(cached, str):
        return cached
    if cached is _CACHED_NO_EXIST and optional:  # the hub said so before: no need to ask again
        return None

    def fetch(local_files_only: bool) -> str:
        return hf_hub_download(name, filename, revision=revision, local_files_only=local_files_only)

    try:
        return load_cached_first(fetch, name, revision)
    except ModelError:
        raise
    except Exception as exc:
        if optional and isinstance(exc, EntryNotFoundError) and not isinstance(exc, LocalEntryNotFoundError):
            return None
        raise load_failure(name, exc) from None


def _named_base(value: Any, where: str) -> str | None:
    """A `base_model` value as a string (the hub allows a list of one), or None when absent."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ModelError(f"base_model must be a hub id or a path, got {value!r}", where=where)
    return value.strip()


def _front_matter(text: str) -> dict:
    """The YAML front matter of a model card (between the first two `---` lines), {} when none."""
    import yaml

    lines = text.lstrip("\ufeff").splitlines()
    if not lines or lines[0].strip() != "---":
        return {}
    end = next((i for i, line in enumerate(lines[1:], start=1) if line.strip() in ("---", "...")), None)
    if end is None:
        return {}
    data = yaml.safe_load("\n".join(lines[1:end]))
    return data if isinstance(data, dict) else {}


def base_encoder(name: str, revision: str | None) -> str:
    """The encoder the heads sit on: `base_model` in config.json, else in README.md's front matter.

    A path is taken from the heads folder (the folder holding the file that names it); anything
    else is a hub id.

    Raises:
        ModelError: neither names one, or a file cannot be read.
    """
    import json

    for filename in ("config.json", "README.md"):
        path = repo_file(name, filename, revision, optional=True)
        if path is None:
            continue
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
            data = json.loads(text) if filename == "config.json" else _front_matter(text)
        except Exception as exc:  # bad JSON, YAML or UTF-8: one line naming the file
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise ModelError(f"cannot read it: {reason}", where=path) from None
        found = _named_base(data.get("base_model") if isinstance(data, dict) else None, path)
        if found:
            found = os.path.expanduser(found)
            beside = os.path.normpath(os.path.join(os.path.dirname(path), found))
            pathlike = found.startswith(".") or found.count("/") > 1  # never a hub id: a missing folder
            return found if os.path.isabs(found) or not (os.path.isdir(beside) or pathlike) else beside
    raise ModelError(f"model {name!r} has {HEADS_FILE} but names no base encoder: add \"base_model\" to its "
                     "config.json (or README.md front matter), or give --encoder ID_OR_PATH")


def expected_shapes(state: dict[str, Any], width: int | None) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the card's heads, sized by the state dict's own first layers and `width`.

    `nn.Sequential` numbers its children, so LayerNorm is `.1` and the abstention head's last
    Linear is `.4` (GELU and Dropout hold no weights).
    """
    first, abstain = state.get("nli_hidden.0.weight"), state.get("abstention_head.0.weight")
    inner = first.shape[0] if getattr(first, "ndim", 0) == 2 else 512
    hidden = abstain.shape[0] if getattr(abstain, "ndim", 0) == 2 else 128
    nli, out = len(NLI_LABELS), len(ABSTAIN_LABELS)
    width = width or (first.shape[1] if getattr(first, "ndim", 0) == 2 else 0)
    return {
        "nli_hidden.0.weight": (inner, width), "nli_hidden.0.bias": (inner,),
        "nli_hidden.1.weight": (inner,), "nli_hidden.1.bias": (inner,),
        "nli_output.weight": (nli, inner), "nli_output.bias": (nli,),
        "abstention_head.0.weight": (hidden, inner + nli), "abstention_head.0.bias": (hidden,),
        "abstention_head.1.weight": (hidden,), "abstention_head.1.bias": (hidden,),
        "abstention_head.4.weight": (out, hidden), "abstention_head.4.bias": (out,),
    }


def read_heads(path: str, width: int | None = None) -> dict[str, Any]:
    """Read `task_heads.pt` without running code and check it holds exactly the card's heads.

    Args:
        path: the heads file.
        width: the encoder's hidden size (the first Linear's in-features); None: not checked
            yet (the heads are read before a large encoder is fetched; see `check_width`).

    Raises:
        ModelError: the file needs code to load, cannot be read, or has a missing, unexpected
            or wrongly shaped key (named).
    """
    import pickle
    import warnings

    import torch

    try:
        with warnings.catch_warnings():  # torch's advisories about pickle protocols: stderr is ours
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ModelError(f"refused: {HEADS_FILE} needs code to load (a pickle of more than tensors), and crossguard "
                         "never runs a model file's code; save the heads as torch.save(state_dict)",
                         where=path) from None
    except Exception as exc:  # a truncated or corrupt file
        reason = " ".join(str(exc).split()).split(". ")[0] or type(exc).__name__
        raise ModelError(f"cannot read {HEADS_FILE}: {type(exc).__name__}: {reason}", where=path) from None
    if not isinstance(state, dict):
        raise ModelError(f"holds a {type(state).__name__}, not a state dict of the heads", where=path)
    shapes = expected_shapes(state, width)
    for key in shapes:
        if key not in state:
            raise ModelError(f"missing key {key!r}: expected the card's heads (nli_hidden.*, nli_output.*, "
                             "abstention_head.*) as torch.save(state_dict) writes them", where=path)
    for key, value in state.items():
        if key not in shapes:
            raise ModelError(f"unexpected key {key!r}: expected only the card's heads (nli_hidden.*, nli_output.*, "
                             "abstention_head.*)", where=path)
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            kind = str(value.dtype) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ModelError(f"key {key!r} holds {kind}, expected a floating-point tensor", where=path)
        if tuple(value.shape) != shapes[key]:
            _wrong_shape(key, value.shape, shapes[key], width, path)
    return state


def check_width(state: dict[str, Any], width: int, path: str) -> None:
    """The first Linear's in-features against the encoder's hidden size, once the encoder is loaded."""
    key = "nli_hidden.0.weight"
    shape = tuple(state[key].shape)
    if shape[1] != width:
        _wrong_shape(key, shape, (shape[0], width), width, path)


def _wrong_shape(key: str, shape, expected, width: int | None, path: str) -> NoReturn:
    why = (f" (its in-features must be the encoder's hidden size, {width}: is the base encoder the one these "
           "heads were trained on?)" if key == "nli_hidden.0.weight" and width else "")
    raise ModelError(f"key {key!r} has shape {list(shape)}, expected {list(expected)}{why}", where=path)


__all__ = ["ABSTAIN_LABELS", "HEADS_FILE", "NLI_LABELS", "base_encoder", "check_width", "expected_shapes",
           "read_heads", "repo_file"]
