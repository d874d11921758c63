"""From a rules file and the engine options to a ready scorer: which models, loaded once each.

The NLI model is loaded only when some rule has a hypothesis; each classifier only when some
rule names it. Models already loaded (a Guard reloading its rules) are reused by what defines
them, so a rules reload that keeps its models loads nothing. Every check that needs a model
(labels, hypothesis lengths, `abstain` without abstention heads) runs here, before any prompt.
"""

from __future__ import annotations

from typing import Any

from crossguard_cli.engine.options import EngineOptions
from crossguard_cli.errors import RulesError
from crossguard_cli.rules import ClassifierSpec, RuleSet


def nli_key(name: str, options: EngineOptions) -> tuple:
    return ("nli", name, options.revision, options.encoder)


def classifier_key(spec: ClassifierSpec, rules_path: str | None) -> tuple:
    from crossguard_cli.engine.models.classifier import beside_rules, classifier_path

    tokenizer = beside_rules(spec.tokenizer, rules_path) if spec.tokenizer else None
    return ("classifier", classifier_path(spec, rules_path), tokenizer, spec.revision, spec.activation, spec.labels,
            spec.max_length)


def build_scorer(ruleset: RuleSet, options: EngineOptions, loaded: dict[tuple, Any] | None = None):
    """A scorer for `ruleset`: the NLI `Scorer`, one `ClassifierScorer`, or an `Ensemble` of them.

    Args:
        ruleset: the rules (already validated).
        options: the engine options (`options.rules` is the rules file's path, for relative folders).
        loaded: models by key, reused and extended in place (pass the same dict to share models).

    Returns:
        (scorer, the name of the NLI model or None when none is needed).
    """
    from crossguard_cli.engine.classify import ClassifierScorer
    from crossguard_cli.engine.ensemble import Ensemble
    from crossguard_cli.engine.models.loader import load_model, model_name
    from crossguard_cli.engine.scorer import Scorer

    loaded = {} if loaded is None else loaded
    common = dict(long_input=options.long_input, max_chars=options.max_chars, batch_size=options.batch_size)
    parts = []
    nli_name = None
    nli_rules = ruleset.nli_rules
    if nli_rules:
        nli_name = model_name(options.model, ruleset, options.rules)
        key = nli_key(nli_name, options)
        if key not in loaded:
            loaded[key] = load_model(nli_name, backend=options.backend, revision=options.revision,
                                     device=options.device, dtype=options.dtype, max_length=options.max_length,
                                     compile=options.compile, encoder=options.encoder)
        model = loaded[key]
        _check_abstain(ruleset, model)
        parts.append(Scorer(model, ruleset.subset(nli_rules), **common))
    for spec in ruleset.used_classifiers:
        key = classifier_key(spec, options.rules)
        if key not in loaded:
            from crossguard_cli.engine.models.classifier import load_classifier

            loaded[key] = load_classifier(spec, ruleset, rules_path=options.rules, device=options.device,
                                          dtype=options.dtype, max_length=options.max_length,
                                          compile=options.compile)
        model = loaded[key]
        mine = [(i, r) for i, r in enumerate(ruleset.rules) if r.classifier == spec.name]
        columns = [model.column(r, i, ruleset) for i, r in mine]
        parts.append(ClassifierScorer(model, ruleset.subset([r for _, r in mine]), columns, **common))
    scorer = parts[0] if len(parts) == 1 else Ensemble(ruleset, _in_file_order(ruleset, parts))
    return scorer, nli_name


def _in_file_order(ruleset: RuleSet, parts: list) -> list:
    """Parts ordered by their first rule's place in the file (the NLI part first on a tie)."""
    first = {r.name: i for i, r in enumerate(ruleset.rules)}
    return sorted(parts, key=lambda p: first[p.ruleset.rules[0].name])


def _check_abstain(ruleset: RuleSet, model) -> None:
    """`abstain:` set for a model without abstention heads would be silently ignored: refuse it."""
    if getattr(model, "abstain_columns", None):
        return
    for i, rule in enumerate(ruleset.rules):
        if rule.abstain is not None and rule.classifier is None:
            line = rule.abstain_line or rule.line
            where = f"{ruleset.source}:{line}" if line else ruleset.source
            raise RulesError(f"rules[{i}].abstain: model {model.name} has no abstention heads, so a rule cannot "
                             "abstain; remove 'abstain' (or use a learned-abstention model)", where=where)


def inherit_budget(new, old) -> None:
    """Budgets that `old`'s scorers reduced after running out of memory hold for the same models in `new`."""
    old_parts = getattr(old, "parts", [old])
    for part in getattr(new, "parts", [new]):
        for before in old_parts:
            if before.model is part.model:
                part.batch_size = min(part.batch_size, before.batch_size)
                part.batch_tokens = min(part.batch_tokens, before.batch_tokens)


__all__ = ["build_scorer", "classifier_key", "inherit_budget", "nli_key"]

