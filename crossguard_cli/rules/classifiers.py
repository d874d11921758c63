"""The `classifiers:` block of a rules file: trained sequence classifiers by a short name.

A team that already trusts one trained guard (DuoGuard, a prompt-injection model) names it
here once, and rules pick one of its output columns with `classifier:` + `label:`. What can
be checked without the model is checked here (names, activation, a `labels:` list without
repeats, a rule's label against that list); what needs the model (the label exists, the
column count, that it is a sequence classifier at all) is checked when it loads, still
before any prompt is read. Nothing here imports torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from crossguard_cli.rules.yamlsafe import LineDict, LineList

if TYPE_CHECKING:  # the checker is schema.py's; imported for types only (no circle at run time)
    from crossguard_cli.rules.schema import _Checker

ACTIVATIONS = ("sigmoid", "softmax")
_SPEC_KEYS = ("model", "tokenizer", "revision", "activation", "labels", "max_length", "description")
_NAME_RE = re.compile(r"[a-z0-9_-]+")


@dataclass(frozen=True)
class ClassifierSpec:
    """One trained classifier of a rules file, as written (the model is loaded later).

    Attributes:
        name: the short name rules refer to.
        model: hub id or folder (a relative folder is found beside the rules file).
        tokenizer: hub id or folder of the tokenizer, when the model's own repo has none.
        revision: hub branch, tag or commit of `model`.
        activation: "sigmoid" or "softmax"; None: from the config's problem_type.
        labels: names of the output columns, overriding config.id2label (count must match).
        max_length: tokens per prompt window, capped by the model (None: --max-length).
        line: where the spec starts in the rules file.
    """

    name: str
    model: str
    tokenizer: str | None = None
    revision: str | None = None
    activation: str | None = None
    labels: tuple[str, ...] | None = None
    max_length: int | None = None
    description: str | None = None
    line: int | None = None
    labels_line: int | None = None


def check_classifiers(checker: _Checker, value: Any, line: int | None) -> dict[str, ClassifierSpec]:
    """The validated `classifiers:` mapping, name -> spec, in file order."""
    block = checker.mapping(value, "classifiers", line, None, "a mapping of short names to classifiers "
                            "(each with a 'model:')")
    specs: dict[str, ClassifierSpec] = {}
    for name, spec in block.items():
        where = block.key_lines[name]
        field = f"classifiers.{name}"
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise checker.error(where, field, "a classifier's name must use only lowercase letters, digits, "
                                f"'-' and '_', got {name!r}")
        specs[name] = _spec(checker, name, spec, where, field)
    return specs


def _spec(checker: _Checker, name: str, value: Any, line: int, field: str) -> ClassifierSpec:
    s = checker.mapping(value, field, line, _SPEC_KEYS, "a mapping with 'model:' (a hub id or folder)")
    lines = s.key_lines
    if "model" not in s:
        raise checker.error(line, field, "missing 'model'; give a hub id like DuoGuard/DuoGuard-0.5B or a folder")
    text = {key: checker.text(s[key], f"{field}.{key}", lines[key])
            for key in ("model", "tokenizer", "revision", "description") if key in s}
    activation = None
    if "activation" in s:
        activation = checker.choice(s["activation"], f"{field}.activation", lines["activation"], ACTIVATIONS)
    labels = None
    if "labels" in s:
        labels = _labels(checker, s["labels"], f"{field}.labels", lines["labels"])
    max_length = None
    if "max_length" in s:
        max_length = s["max_length"]
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 8:
            raise checker.error(lines["max_length"], f"{field}.max_length",
                                f"must be a whole number of tokens, at least 8, got {max_length!r}")
    return ClassifierSpec(name=name, model=text["model"], tokenizer=text.get("tokenizer"),
                          revision=text.get("revision"), activation=activation, labels=labels,
                          max_length=max_length, description=text.get("description"), line=line,
                          labels_line=lines.get("labels"))


def _labels(checker: _Checker, value: Any, field: str, line: int) -> tuple[str, ...]:
    if not isinstance(value, LineList) or not value:
        raise checker.error(line, field, "must be a non-empty list of column names, in the model's output order")
    names: list[str] = []
    for j, (item, item_line) in enumerate(zip(value, value.item_lines, strict=True)):
        label = checker.text(item if not isinstance(item, (int, float)) or isinstance(item, bool) else str(item),
                             f"{field}[{j}]", item_line)
        if label in names:
            raise checker.error(item_line, f"{field}[{j}]", f"duplicate label {label!r} (also {field}"
                                f"[{names.index(label)}]); each column needs its own name")
        names.append(label)
    return tuple(names)


def check_rule_label(checker: _Checker, r: LineDict, field: str, line: int,
                     spec: ClassifierSpec) -> tuple[str, int | None]:
    """A classifier rule's `label:`: a column name, or its 0-based index. Returns (name, index).

    The index is None for a name; a name is matched against the model's labels at load, or
    here already when the spec lists `labels:`.
    """
    if "label" not in r:
        hint = f" (one of {', '.join(spec.labels)})" if spec.labels else ""
        raise checker.error(line, field, f"missing 'label': a classifier rule names the output column it "
                            f"decides on{hint}, or its index")
    value, key_line = r["label"], r.key_lines["label"]
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0 or (spec.labels is not None and value >= len(spec.labels)):
            count = f"{len(spec.labels)} labels" if spec.labels else "columns"
            raise checker.error(key_line, f"{field}.label", f"index {value} is out of range: classifier "
                                f"'{spec.name}' has {count} (counting from 0)")
        return (spec.labels[value] if spec.labels else str(value)), value
    label = checker.text(value, f"{field}.label", key_line)
    if spec.labels is not None and label not in spec.labels:
        from crossguard_cli.errors import did_you_mean

        raise checker.error(key_line, f"{field}.label", f"classifier '{spec.name}' has no label {label!r}"
                            f"{did_you_mean(label, spec.labels, list_choices=True)}")
    return label, None


def check_nothing_else(checker: _Checker, r: LineDict, field: str) -> None:
    """A rule is an NLI rule or a classifier rule, never both."""
    for key in ("hypothesis", "hypotheses"):
        if key in r:
            raise checker.error(r.key_lines[key], f"{field}.{key}", "a rule has either 'classifier' + 'label' "
                                "or a hypothesis, never both; split it into two rules")
    if "abstain" in r:
        raise checker.error(r.key_lines["abstain"], f"{field}.abstain", "applies to NLI rules of a model with "
                            "abstention heads, not to classifier rules; remove it")


__all__ = ["ACTIVATIONS", "ClassifierSpec", "check_classifiers", "check_nothing_else", "check_rule_label"]
