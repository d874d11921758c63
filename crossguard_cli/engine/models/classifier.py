"""Loading a trained sequence classifier (DuoGuard, Prompt Guard, protectai's injection model).

Loaded with `AutoModelForSequenceClassification`, as the models' own cards load them, and
run on torch whatever `--backend` says (the export backends know cross-encoders only). What
the rules file could not check without the model is checked here, before any prompt is read:
that the checkpoint is a sequence classifier with its own trained head (a base model would get
a random head and score nonsense silently), that `labels:` has one name per output column, and
that each rule's label is one of them. Decoder classifiers (Qwen2, Llama) pool the last token
that is not padding; without a pad token they pad with eos, as DuoGuard's card does, and the
model is told that id, so the pooled token is each row's last real token.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from crossguard_cli.engine.models.devices import resolve_device, resolve_dtype
from crossguard_cli.engine.models.files import (
    MODEL_INPUTS,
    check_model_name,
    is_library_failure,
    load_cached_first,
    load_failure,
    model_limit,
    require_fast_tokenizer,
)
from crossguard_cli.engine.models.nli_torch import LoadedModel, compiled
from crossguard_cli.errors import ModelError, RulesError
from crossguard_cli.rules import ClassifierSpec, RuleSet


@dataclass
class ClassifierModel(LoadedModel):
    """A loaded sequence classifier: the NLI model's scoring surface, plus its columns.

    Attributes:
        spec: the rules file's entry for it.
        labels: the name of each output column (`labels:`, else config.id2label), in order.
        activation: "sigmoid" (each column on its own) or "softmax" (columns sum to 1).
    """

    spec: ClassifierSpec | None = None
    labels: tuple[str, ...] = ()
    activation: str = "softmax"

    def column(self, rule, index: int, ruleset: RuleSet) -> int:
        """The output column `rule` decides on (its label's name, or its index).

        Raises:
            RulesError: no such column; the message lists the model's own labels.
        """
        line = rule.label_line or rule.line
        where = f"{ruleset.source}:{line}" if line else ruleset.source
        field = f"rules[{index}].label"
        known = ", ".join(self.labels)
        if rule.label_index is not None:
            if rule.label_index >= len(self.labels):
                raise RulesError(f"{field}: index {rule.label_index} is out of range: {self.name} has "
                                 f"{len(self.labels)} outputs ({known})", where=where)
            return rule.label_index
        if rule.label in self.labels:
            return self.labels.index(rule.label)
        folded = [name.lower() for name in self.labels]
        if rule.label.lower() in folded and folded.count(rule.label.lower()) == 1:
            return folded.index(rule.label.lower())
        from crossguard_cli.errors import did_you_mean

        raise RulesError(f"{field}: {self.name} has no label {rule.label!r}{did_you_mean(rule.label, self.labels)}; "
                         f"its labels: {known} (or give the column's index)", where=where)


def classifier_path(spec: ClassifierSpec, rules_path: str | None) -> str:
    """`spec.model`, or the folder of that name beside the rules file when there is one."""
    return beside_rules(spec.model, rules_path)


def beside_rules(name: str, rules_path: str | None) -> str:
    """A relative folder named in a rules file is found beside that file, like an include."""
    if rules_path and not os.path.isabs(name) and os.path.isfile(rules_path):
        beside = os.path.join(os.path.dirname(rules_path), name)
        if os.path.isdir(beside):
            return beside
    return name


def load_classifier(spec: ClassifierSpec, ruleset: RuleSet, *, rules_path: str | None = None, device: str = "auto",
                    dtype: str = "auto", max_length: int = 512, compile: bool = False) -> ClassifierModel:
    """Load the classifier `spec` names, checked against the rules that use it.

    Args:
        spec: the `classifiers:` entry.
        ruleset: the rules file (for its source name, the entry's line and the rules' labels).
        rules_path: where the rules file is, so relative folders are found beside it.
        device, dtype, compile: as for the NLI model.
        max_length: tokens per prompt window when the entry sets no `max_length:`.

    Raises:
        ModelError: the model cannot be found or loaded, or is not a trained sequence classifier.
        RulesError: `labels:` does not match the model's outputs, or a rule's label is not one.
    """
    name = classifier_path(spec, rules_path)
    tok_name = beside_rules(spec.tokenizer, rules_path) if spec.tokenizer else name
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    for each in dict.fromkeys((name, tok_name)):
        check_model_name(each)
    try:
        module, info = _load_module(name, spec.revision, torch_dtype)
        tokenizer = _load_tokenizer(tok_name, spec.revision if tok_name == name else None)
    except (ModelError, RulesError):
        raise
    except BaseException as exc:  # noqa: BLE001 - hub, file-format, config and tokenizer errors
        if not is_library_failure(exc):  # Ctrl-C, SIGTERM, exit: not a broken model
            raise
        raise load_failure(name, exc) from None
    line = spec.labels_line or spec.line
    where = f"{ruleset.source}:{line}" if line else ruleset.source
    _check_head(name, module.config, info)
    require_fast_tokenizer(tokenizer, tok_name)
    labels = _labels(spec, module.config, name, where)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ModelError(f"classifier {spec.name!r} ({name}): its tokenizer has neither a pad nor an eos token, so "
                         "prompts cannot be batched; use a tokenizer that has one (tokenizer: in the rules file)")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # DuoGuard's card: pad with eos
    module.config.pad_token_id = pad  # decoder heads pool the last token that is not this id
    module.to(device)
    module.eval()
    limit = model_limit(tokenizer, module.config)
    wanted = spec.max_length or max_length
    names = tuple(n for n in getattr(tokenizer, "model_input_names", MODEL_INPUTS[:2]) if n in MODEL_INPUTS)
    activation = spec.activation or ("sigmoid" if module.config.problem_type == "multi_label_classification"
                                     else "softmax")
    model = ClassifierModel(name=name, tokenizer=tokenizer, module=module, device=module.device,
                            dtype=next(module.parameters()).dtype, label_columns=(), input_names=names,
                            max_length=min(wanted, limit) if limit else wanted,
                            compiled=compiled(module) if compile else None, spec=spec, labels=labels,
                            activation=activation)
    for i, rule in enumerate(ruleset.rules):
        if rule.classifier == spec.name:
            model.column(rule, i, ruleset)  # every rule's label exists, before any prompt is read
    return model


def _load_module(name: str, revision: str | None, torch_dtype):
    from transformers import AutoModelForSequenceClassification

    def load(local_files_only: bool):
        return AutoModelForSequenceClassification.from_pretrained(
            name, revision=revision, dtype=torch_dtype, local_files_only=local_files_only, output_loading_info=True)

    return load_cached_first(load, name, revision)


def _load_tokenizer(name: str, revision: str | None):
    from transformers import AutoTokenizer

    return load_cached_first(lambda local_files_only: AutoTokenizer.from_pretrained(
        name, revision=revision, local_files_only=local_files_only), name, revision)


def _check_head(name: str, config, info: dict) -> None:
    """Refuse a checkpoint without its own classification head (transformers would make a random one)."""
    architectures = list(getattr(config, "architectures", None) or [])
    if architectures and not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise ModelError(f"{name} is not a sequence classifier (its config.json says {', '.join(architectures)}); "
                         "a classifier rule needs a ...ForSequenceClassification checkpoint")
    missing = [k for k in (info or {}).get("missing_keys", ()) if k]
    if missing:
        shown = ", ".join(sorted(missing)[:3]) + (" ..." if len(missing) > 3 else "")
        raise ModelError(f"{name} has no trained classification head (missing weights: {shown}); it would score "
                         "with random weights")


def _labels(spec: ClassifierSpec, config, name: str, where: str) -> tuple[str, ...]:
    n = int(config.num_labels)
    own = tuple(str(v) for _, v in sorted((getattr(config, "id2label", None) or {}).items(), key=lambda kv: int(kv[0])))
    if spec.labels is None:
        return own if len(own) == n else tuple(f"LABEL_{i}" for i in range(n))
    if len(spec.labels) != n:
        raise RulesError(f"classifiers.{spec.name}.labels: lists {len(spec.labels)} names but {name} has {n} "
                         f"outputs (its id2label: {', '.join(own)}); give one name per output, in order", where=where)
    return spec.labels


__all__ = ["ClassifierModel", "beside_rules", "classifier_path", "load_classifier"]
