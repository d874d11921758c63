"""Finding and checking a model, whatever runs it: folder or hub id, labels, token limit.

Shared by every backend (torch, ONNX Runtime), so that a model is found, refused or accepted
the same way whichever runs it. Models disagree on label order (CrossingGuard: entailment,
neutral, contradiction; cross-encoder/nli-*: contradiction, entailment, neutral), so the
column of each label is found in `config.id2label` by name, never assumed by position; a model
without exactly those three labels is refused here rather than producing confident nonsense.
"""

from __future__ import annotations

import os
from typing import Any

from crossguard_cli import DEFAULT_MODEL
from crossguard_cli.errors import ModelError
from crossguard_cli.rules import LABELS

HUB_TIMEOUT_S = 10.0


def label_columns(id2label: dict | None) -> tuple[int, int, int]:
    """Find the entailment, neutral and contradiction columns by name, case-insensitively.

    Raises:
        ModelError: unless the labels are exactly those three names.
    """
    names = {str(v).strip().lower(): int(k) for k, v in (id2label or {}).items()}
    if len(id2label or {}) != 3 or set(names) != set(LABELS):
        found = ", ".join(str(v) for _, v in sorted((id2label or {}).items(), key=lambda kv: int(kv[0])))
        raise ModelError(
            f"not a 3-label NLI model: config.id2label has [{found or 'nothing'}], expected "
            "entailment, neutral and contradiction; use an NLI cross-encoder such as "
            f"{DEFAULT_MODEL} (or fix id2label in the model's config.json)"
        )
    return names["entailment"], names["neutral"], names["contradiction"]


def check_model_name(name: str) -> None:
    """Fail fast on a path-like name that is no folder, before asking the hub about it."""
    if not os.path.isdir(name) and (name.startswith(("/", ".", "~")) or name.count("/") > 1):
        raise ModelError(f"no such model folder: {name}; give --model a folder or a hub id like ORG/NAME")


def require_fast_tokenizer(tokenizer: Any, name: str) -> None:
    """Windows and pair templates need a fast (Rust) tokenizer."""
    if tokenizer is None or not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"model {name!r} has no fast tokenizer; crossguard needs one (tokenizer.json)")


def model_limit(tokenizer: Any, config: Any) -> int | None:
    """The model's own token limit, from the tokenizer or the position embeddings."""
    limits = []
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:
        limits.append(tok_max)
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        # RoBERTa-style models reserve padding_idx + 1 positions.
        offset = 2 if getattr(config, "model_type", "") in ("roberta", "xlm-roberta") else 0
        limits.append(positions - offset)
    return min(limits) if limits else None


def require_hub(name: str, revision: str | None) -> None:
    """Before downloading a model that is not cached: one quick request, or one clear error.

    The hub client retries a failed connection five times with back-off (about 30 s of
    "Retrying in 8s" lines) before it gives up; a guardrail that is offline should say so at
    once. Any HTTP answer, even 404, means the hub is reachable: the real download then
    reports what is wrong with the id or revision.
    """
    from huggingface_hub import constants, hf_hub_url

    hint = "download it where the hub is reachable (it is cached after), or set --model to a local folder"
    if constants.HF_HUB_OFFLINE:
        raise ModelError(f"model {name!r} is not in the local cache and HF_HUB_OFFLINE is set; {hint}")
    from huggingface_hub.utils import get_session

    try:
        get_session().head(hf_hub_url(name, "config.json", revision=revision), timeout=HUB_TIMEOUT_S)
    except Exception as exc:  # DNS, refused, TLS, timeout: the client's own error classes vary
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ModelError(f"model {name!r} is not in the local cache and the Hugging Face hub cannot be "
                         f"reached ({reason}); {hint}") from None


def load_cached_first(load, name: str, revision: str | None):
    """`load(local_files_only=...)` from the cache first, so a cached hub model needs no network.

    A folder loads as it is; a hub id not in the cache is fetched only once `require_hub` has
    seen the hub answer.
    """
    if os.path.isdir(name):
        return load(local_files_only=False)
    try:
        return load(local_files_only=True)
    except Exception:  # not cached (or partly)
        require_hub(name, revision)
        return load(local_files_only=False)


MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # what a cross-encoder may take


def checked_model(name: str, config, tokenizer, max_length: int) -> tuple[tuple[int, int, int], int, tuple[str, ...]]:
    """Check a loaded config and tokenizer for scoring, whatever runs the model afterwards.

    Returns the E/N/C logits columns, the tokens a pair may have (`max_length` capped by the
    model's own limit) and the inputs the model takes.

    Raises:
        ModelError: not a 3-label NLI model, or no fast tokenizer.
    """
    columns = label_columns(getattr(config, "id2label", None))
    require_fast_tokenizer(tokenizer, name)
    limit = model_limit(tokenizer, config)
    names = tuple(n for n in getattr(tokenizer, "model_input_names", MODEL_INPUTS[:2]) if n in MODEL_INPUTS)
    return columns, min(max_length, limit) if limit else max_length, names


def is_library_failure(exc: BaseException) -> bool:
    """Whether `exc` is a loading library's failure rather than a signal or an exit to pass on.

    A Rust panic in the tokenizer (a corrupt tokenizer.json) arrives as PyO3's PanicException,
    a BaseException; Ctrl-C, SIGTERM (the CLI's Terminated) and SystemExit must go on unwinding.
    """
    return isinstance(exc, Exception) or type(exc).__name__ == "PanicException"


def load_failure(name: str, exc: BaseException) -> ModelError:
    """One line for a model that could not be loaded: what failed, and where to look."""
    local = os.path.isdir(name)
    hint = ("check the folder holds a complete saved model (config.json, weights, tokenizer.json); "
            "a truncated or corrupt file reads like this" if local
            else "check the id and --revision; offline, download it first or set --model to a local folder")
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return ModelError(f"cannot load model {name!r}: {type(exc).__name__}: {first}; {hint}")


__all__ = [
    "MODEL_INPUTS",
    "check_model_name",
    "checked_model",
    "is_library_failure",
    "label_columns",
    "load_cached_first",
    "load_failure",
    "model_limit",
    "require_fast_tokenizer",
    "require_hub",
]
