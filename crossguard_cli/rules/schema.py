"""Rules files: the schema, loading, and validation with file:line errors.

A rules file is written by hand and read by a guardrail, so a mistake in it must never pass
silently: a typo'd key would otherwise disable a threshold, and a duplicate key would quietly
override one. Every problem is a `RulesError` whose `where` is `FILE:LINE` and whose message
starts with the field path (`rules[2].threshold: ...`), so the CLI can print one line that
says exactly what to fix. Nothing here imports torch: `crossguard validate` must stay fast.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from crossguard_cli.errors import RulesError, did_you_mean
from crossguard_cli.rules.classifiers import ClassifierSpec, check_classifiers, check_nothing_else, check_rule_label
from crossguard_cli.rules.ruleset import DEFAULT_ABSTAIN, DEFAULT_RULES_SOURCE, LABELS, MODES, Rule, RuleSet, summarize
from crossguard_cli.rules.yamlsafe import LineDict, LineList, YamlSyntaxError, from_python, load_yaml

__all__ = [
    "DEFAULT_ABSTAIN", "DEFAULT_RULES_SOURCE", "LABELS", "MODES", "PRESETS", "ClassifierSpec", "Rule", "RuleSet",
    "check_hypothesis_lengths", "default_rules_path", "load_rules", "parse_rules", "preset_path",
    "rules_from_mapping", "summarize",
]

# Packaged rules files usable by name where a rules path is taken (a file of that name wins).
PRESETS = {"default": "default_rules.yaml", "duoguard": "duoguard.yaml", "prompt-guard": "prompt_guard.yaml"}

_TOP_KEYS = ("version", "model", "mode", "classifiers", "defaults", "rules")
_DEFAULT_KEYS = ("threshold", "label", "margin", "abstain")
_RULE_KEYS = ("name", "hypothesis", "hypotheses", "classifier", "label", "threshold", "margin", "abstain",
              "description")
_BUILTIN_DEFAULTS: dict[str, Any] = {"threshold": 0.5, "label": "entailment", "margin": 0.0, "abstain": None}
_NAME_RE = re.compile(r"[a-z0-9_-]+")
_NO_RULES = "no rules: add at least one rule under 'rules'"


def default_rules_path() -> Path:
    """The packaged default rules (the same file as the repository's `rules.example.yaml`)."""
    return Path(__file__).resolve().parents[1] / "data" / PRESETS["default"]


def preset_path(name: str) -> Path | None:
    """The packaged preset called `name`, unless a file or folder of that name exists here."""
    if name not in PRESETS or os.path.exists(name):
        return None
    return Path(__file__).resolve().parents[1] / "data" / PRESETS[name]


def load_rules(path: str | os.PathLike[str] | None) -> RuleSet:
    """Read and validate a rules file; None means the packaged default rules.

    A packaged preset's name (`default`, `duoguard`, `prompt-guard`) reads that preset, unless
    a file of that name exists: the user's file wins.

    Raises:
        RulesError: the file cannot be read, is not UTF-8, or does not validate.
    """
    preset = preset_path(os.fspath(path)) if path is not None else None
    if path is None:
        file, source = default_rules_path(), DEFAULT_RULES_SOURCE
    elif preset is not None:
        file, source = preset, f"<preset {os.fspath(path)}>"
    else:
        file, source = Path(os.fspath(path)), os.fspath(path)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise RulesError(f"cannot read rules file: {exc.strerror or exc}", where=source) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise RulesError(
            f"cannot read rules file: not UTF-8 text (byte 0x{data[exc.start]:02x}); save it as UTF-8",
            where=f"{source}:{line}",
        ) from None
    return parse_rules(text, source)


def parse_rules(text: str, source: str) -> RuleSet:
    """Validate the YAML text of a rules file; `source` names it in error messages.

    Raises:
        RulesError: the first problem, as `source:line` and `field: what to fix`.
    """
    try:
        data, line = load_yaml(text)
    except YamlSyntaxError as exc:
        problem = exc.problem
        if "mapping values are not allowed" in problem:
            problem += "; put text that contains ': ' in quotes"
        where = f"{source}:{exc.line}" if exc.line else source
        raise RulesError(f"invalid YAML: {problem}", where=where) from None
    return _Checker(source).ruleset(data, line)


def rules_from_mapping(data: Any, source: str = "<rules mapping>") -> RuleSet:
    """Validate rules given as Python data (the parsed shape of a rules file), as files are.

    Raises:
        RulesError: the first problem, as `source: field: what to fix` (no line numbers).
    """
    return _Checker(source).ruleset(from_python(data), None)


def check_hypothesis_lengths(ruleset: RuleSet, count_tokens: Callable[[str], int], limit: int,
                             max_length: int | None = None) -> None:
    """Fail on the first hypothesis longer than `limit` tokens.

    Hypotheses are never cut (a cut hypothesis asks a different question), so one that leaves
    no room for the prompt is an error in the rules file, reported at its line.
    """
    for i, rule in enumerate(ruleset.rules):
        for j, hypothesis in enumerate(rule.hypotheses):
            n = count_tokens(hypothesis)
            if n <= limit:
                continue
            key = rule.hypothesis_key
            field = f"rules[{i}].{key}[{j}]" if key == "hypotheses" else f"rules[{i}].{key}"
            line = rule.hypothesis_lines[j] if j < len(rule.hypothesis_lines) else rule.line
            raise RulesError(
                f"{field}: hypothesis is {n} tokens; at most {limit} fit "
                + (f"with --max-length {max_length} (raise it, or shorten the hypothesis)" if max_length
                   else "with the model's max length; shorten it"),
                where=f"{ruleset.source}:{line}" if line else ruleset.source,
            )


def _show(value: Any) -> str:
    """A value as the user wrote it in YAML, for 'got ...' in messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (LineDict, LineList)):
        return "a mapping" if isinstance(value, dict) else "a list"
    return repr(value) if isinstance(value, str) else str(value)


def _did_you_mean(word: Any, choices: Sequence[str]) -> str:
    return did_you_mean(word, choices, list_choices=True)


class _Checker:
    """Validates the loaded YAML; every method raises the first problem as a RulesError."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, line: int | None, field: str, message: str) -> RulesError:
        return RulesError(f"{field}: {message}" if field else message,
                          where=f"{self.source}:{line}" if line else self.source)

    def mapping(self, value: Any, field: str, line: int | None, allowed: Sequence[str] | None,
                what: str) -> LineDict:
        if not isinstance(value, LineDict):
            raise self.error(line, field, f"must be {what}, got {_show(value)}")
        if value.duplicates:
            key, first, again = value.duplicates[0]
            raise self.error(again, field, f"duplicate key '{key}' (lines {first} and {again}); keep one")
        for key in value:
            if allowed is not None and key not in allowed:
                hint = _did_you_mean(key, allowed)
                if not field and key in _DEFAULT_KEYS:
                    hint = f"; put it under 'defaults:' or in a rule (top-level keys: {', '.join(allowed)})"
                name = f"{field}.{key}" if field else str(key)
                raise self.error(value.key_lines[key], name, f"unknown key{hint}")
        return value

    def choice(self, value: Any, field: str, line: int, choices: Sequence[str]) -> str:
        word = value.strip().lower() if isinstance(value, str) else ""
        if word in choices:
            return word
        close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6) if word else []
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise self.error(line, field, f"must be one of {', '.join(choices)}, got {_show(value)}{hint}")

    def probability(self, value: Any, field: str, line: int, *, below_one: bool = False) -> float:
        bounds = "at least 0 and less than 1" if below_one else "between 0 and 1"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(line, field, f"must be a number {bounds}, got {_show(value)}")
        number = float(value)
        if number >= 0.0 and (number < 1.0 if below_one else number <= 1.0):
            return number
        percent = 1 < number <= 100 and number.is_integer()  # 80 most likely meant 80%
        hint = f"; write a probability, e.g. {number / 100:g} for {number:g}%" if percent else ""
        raise self.error(line, field, f"must be {bounds}, got {_show(value)}{hint}")

    def text(self, value: Any, field: str, line: int) -> str:
        if value is None or (isinstance(value, str) and not value.strip()):
            raise self.error(line, field, "must not be empty")
        if not isinstance(value, str):
            raise self.error(line, field, f"must be a string, got {_show(value)}; put it in quotes")
        return value.strip()

    def settings(self, block: LineDict, field: str, inherited: dict[str, Any],
                 keys: Sequence[str] = _DEFAULT_KEYS) -> dict[str, Any]:
        """threshold / label / margin / abstain of `block` (those of `keys`), falling back to `inherited`."""
        out = dict(inherited)
        for key in (k for k in keys if k in block):
            value, path, line = block[key], f"{field}.{key}", block.key_lines[key]
            if key == "label":
                out[key] = self.choice(value, path, line, LABELS)
            elif key == "abstain":
                out[key] = self.probability(value, path, line)
            else:
                out[key] = self.probability(value, path, line, below_one=key == "margin")
        return out

    def ruleset(self, data: Any, line: int) -> RuleSet:
        if data is None:
            raise self.error(line, "", _NO_RULES)
        top = self.mapping(data, "", line, _TOP_KEYS, "a mapping with a 'rules' list at the top level")
        lines = top.key_lines
        version = top.get("version", 1)
        if type(version) is not int or version != 1:
            raise self.error(lines.get("version"), "version", f"must be 1, got {_show(version)}")
        model = top.get("model")
        if "model" in top and (not isinstance(model, str) or not model.strip()):
            raise self.error(lines["model"], "model", f"must be a model id or path, got {_show(model)}; "
                             "remove the key to use the default model")
        mode = self.choice(top["mode"], "mode", lines["mode"], MODES) if "mode" in top else "guard"
        classifiers = check_classifiers(self, top["classifiers"], lines["classifiers"]) if "classifiers" in top \
            else {}
        defaults = dict(_BUILTIN_DEFAULTS)
        if "defaults" in top:
            block = self.mapping(top["defaults"], "defaults", lines["defaults"], _DEFAULT_KEYS,
                                 "a mapping of threshold, label, margin and abstain")
            defaults = self.settings(block, "defaults", defaults)
            defaults["abstain_line"] = block.key_lines.get("abstain")
        items = top.get("rules")
        if items is None or (isinstance(items, LineList) and not items):
            raise self.error(lines.get("rules", line), "", _NO_RULES)
        if not isinstance(items, LineList):
            raise self.error(lines["rules"], "rules", f"must be a list of rules (each item starts "
                             f"with '- name:'), got {_show(items)}")
        seen: dict[str, tuple[int, int]] = {}
        rules = tuple(self.rule(i, item, item_line, defaults, seen, classifiers)
                      for i, (item, item_line) in enumerate(zip(items, items.item_lines, strict=True)))
        return RuleSet(rules=rules, mode=mode, model=model.strip() if model else None, source=self.source,
                       classifiers=tuple(classifiers.values()))

    def rule(self, i: int, item: Any, line: int, defaults: dict[str, Any],
             seen: dict[str, tuple[int, int]], classifiers: dict[str, ClassifierSpec]) -> Rule:
        field = f"rules[{i}]"
        r = self.mapping(item, field, line, _RULE_KEYS, "a mapping with 'name' and 'hypothesis'")
        if "name" not in r:
            raise self.error(line, field, "missing 'name'; give the rule a unique name like 'weapons'")
        name, name_line = r["name"], r.key_lines["name"]
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            fixed = re.sub(r"[^a-z0-9_-]+", "-", str(name).strip().lower()).strip("-")
            hint = f"; did you mean '{fixed}'?" if isinstance(name, str) and fixed else ""
            raise self.error(name_line, f"{field}.name", f"must use only lowercase letters, digits, "
                             f"'-' and '_', got {_show(name)}{hint}")
        if name in seen:
            j, first = seen[name]
            at = f" at line {first}" if first else ""
            raise self.error(name_line, f"{field}.name", f"duplicate rule name '{name}' (also rules[{j}]"
                             f"{at}); names must be unique")
        seen[name] = (i, name_line)
        description = r.get("description")
        if description is not None and not isinstance(description, str):
            raise self.error(r.key_lines["description"], f"{field}.description",
                             f"must be a string, got {_show(description)}; put it in quotes")
        description = description.strip() or None if description else None
        if "classifier" in r:
            return self.classifier_rule(r, field, line, name, description, defaults, classifiers)
        hypotheses = self.hypotheses(r, field, line)
        settings = self.settings(r, field, defaults)
        return Rule(name=name, hypotheses=tuple(h for h, _ in hypotheses),
                    label=settings["label"], threshold=settings["threshold"], margin=settings["margin"],
                    abstain=settings["abstain"], description=description, line=line,
                    abstain_line=r.key_lines.get("abstain") or defaults.get("abstain_line"),
                    hypothesis_lines=tuple(n for _, n in hypotheses),
                    hypothesis_key="hypothesis" if "hypothesis" in r else "hypotheses")

    def classifier_rule(self, r: LineDict, field: str, line: int, name: str, description: str | None,
                        defaults: dict[str, Any], classifiers: dict[str, ClassifierSpec]) -> Rule:
        """A rule on a trained classifier's column: `classifier:` + `label:`, threshold and margin."""
        check_nothing_else(self, r, field)
        which, key_line = r["classifier"], r.key_lines["classifier"]
        if not isinstance(which, str) or which not in classifiers:
            if not classifiers:
                raise self.error(key_line, f"{field}.classifier", f"no classifier {_show(which)}: the file has no "
                                 "'classifiers:' block; name the model there first")
            raise self.error(key_line, f"{field}.classifier", f"unknown classifier {_show(which)}"
                             f"{_did_you_mean(which, list(classifiers))}")
        label, index = check_rule_label(self, r, field, line, classifiers[which])
        settings = self.settings(r, field, defaults, keys=("threshold", "margin"))
        return Rule(name=name, hypotheses=(), label=label, threshold=settings["threshold"],
                    margin=settings["margin"], description=description, line=line, classifier=which,
                    label_index=index, label_line=r.key_lines.get("label"))

    def hypotheses(self, r: LineDict, field: str, line: int) -> list[tuple[str, int]]:
        if "hypothesis" in r and "hypotheses" in r:
            later = max(r.key_lines["hypothesis"] or 0, r.key_lines["hypotheses"] or 0) or None
            raise self.error(later, field, "has both 'hypothesis' and 'hypotheses'; keep one "
                             "(list several under 'hypotheses')")
        if "hypothesis" in r:
            value, key_line = r["hypothesis"], r.key_lines["hypothesis"]
            if isinstance(value, LineList):
                raise self.error(key_line, f"{field}.hypothesis", "must be a string; for several, "
                                 "use 'hypotheses:' with a list")
            return [(self.text(value, f"{field}.hypothesis", key_line), key_line)]
        if "hypotheses" not in r:
            raise self.error(line, field, "missing 'hypothesis' (or 'hypotheses', a list); add a "
                             "statement about the prompt, like 'The prompt asks for ...'")
        value, key_line = r["hypotheses"], r.key_lines["hypotheses"]
        if not isinstance(value, LineList):
            hint = "; for a single one, use 'hypothesis:'" if isinstance(value, str) else ""
            raise self.error(key_line, f"{field}.hypotheses", f"must be a list of strings, got "
                             f"{_show(value)}{hint}")
        if not value:
            raise self.error(key_line, f"{field}.hypotheses", "must not be empty; add at least one")
        return [(self.text(h, f"{field}.hypotheses[{j}]", n), n)
                for j, (h, n) in enumerate(zip(value, value.item_lines, strict=True))]
