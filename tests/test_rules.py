"""Rules files: the packaged example, validation errors with FILE:LINE: FIELD, and helpers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from crossguard_cli.errors import RulesError
from crossguard_cli.rules import (
    DEFAULT_RULES_SOURCE,
    Rule,
    RuleSet,
    check_hypothesis_lengths,
    default_rules_path,
    load_rules,
    parse_rules,
    summarize,
)

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "rules.example.yaml"

DUOGUARD_CATEGORIES = (
    "violent-crimes", "non-violent-crimes", "sex-related-crimes", "child-sexual-exploitation",
    "specialized-advice", "privacy", "intellectual-property", "indiscriminate-weapons", "hate",
    "suicide-self-harm", "sexual-content", "jailbreak",
)


@pytest.fixture
def write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write YAML to tmp_path/rules.yaml and load it by the relative name, as a user would."""
    monkeypatch.chdir(tmp_path)

    def _write(text: str, name: str = "rules.yaml") -> RuleSet:
        (tmp_path / name).write_text(textwrap.dedent(text), encoding="utf-8")
        return load_rules(name)

    return _write


@pytest.fixture
def error(write):
    """The one-line error (`WHERE: WHAT`) that loading the YAML raises."""

    def _error(text: str) -> str:
        with pytest.raises(RulesError) as info:
            write(text)
        message = str(info.value)
        assert "\n" not in message
        return message

    return _error


# --- the packaged example ---------------------------------------------------------------------


def test_example_loads_by_path_and_as_default() -> None:
    by_path = load_rules(EXAMPLE)
    default = load_rules(None)
    assert by_path.rules == default.rules
    assert by_path.source == str(EXAMPLE)
    assert default.source == DEFAULT_RULES_SOURCE
    assert default.mode == "guard"
    assert default.model is None  # the model key is commented out: the CLI decides
    assert default.version == 1


def test_example_has_the_duoguard_categories_and_prompt_injection() -> None:
    ruleset = load_rules(None)
    names = [rule.name for rule in ruleset.rules]
    assert names[: len(DUOGUARD_CATEGORIES)] == list(DUOGUARD_CATEGORIES)
    assert "prompt-injection" in names
    for rule in ruleset.rules:
        assert 1 <= len(rule.hypotheses) <= 3, rule.name
        assert rule.label == "entailment"
        assert rule.margin == pytest.approx(0.1)
        assert rule.description
        for hypothesis in rule.hypotheses:
            assert hypothesis.startswith("The prompt "), hypothesis
            assert len(hypothesis.split()) < 25, hypothesis  # far below any model's limit
    assert {r.threshold for r in ruleset.rules if r.name != "child-sexual-exploitation"} == {0.5}


def test_example_documents_every_field() -> None:
    text = default_rules_path().read_text(encoding="utf-8")
    comments = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
    for field in ("version", "model", "mode", "defaults", "threshold", "label", "margin", "name:",
                  "hypothesis:", "hypotheses:", "description:", "guard", "route", "contradiction"):
        assert field in comments, field
    assert "\n# model:" in text  # left commented out


def test_example_contradiction_rule_is_valid_when_uncommented() -> None:
    text = default_rules_path().read_text(encoding="utf-8")
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  # - name: hostile-tone"))
    for i in range(start, len(lines)):
        lines[i] = lines[i].replace("  # ", "  ", 1)
    ruleset = parse_rules("\n".join(lines), "x.yaml")
    rule = ruleset.rules[-1]
    assert (rule.name, rule.label, rule.threshold) == ("hostile-tone", "contradiction", 0.7)


def test_example_symlink_points_at_the_packaged_file() -> None:
    assert EXAMPLE.is_symlink()
    assert os.readlink(EXAMPLE) == "crossguard_cli/data/default_rules.yaml"  # relative: one source
    assert EXAMPLE.resolve() == default_rules_path().resolve()
    assert EXAMPLE.read_bytes() == default_rules_path().read_bytes()


def test_importing_rules_does_not_import_torch() -> None:
    code = "import sys, crossguard_cli.rules; print(sorted({'torch', 'typer', 'rich'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


# --- loading and inheritance ------------------------------------------------------------------


def test_defaults_inheritance(write) -> None:
    ruleset = write("""\
        defaults:
          threshold: 0.7
          label: neutral
          margin: 0.05
        rules:
          - name: a
            hypothesis: A.
          - name: b
            hypothesis: B.
            threshold: 0.9
          - name: c
            hypothesis: C.
            label: contradiction
            margin: 0
        """)
    a, b, c = ruleset.rules
    assert (a.threshold, a.label, a.margin) == (0.7, "neutral", 0.05)
    assert (b.threshold, b.label, b.margin) == (0.9, "neutral", 0.05)
    assert (c.threshold, c.label, c.margin) == (0.7, "contradiction", 0.0)


def test_builtin_defaults(write) -> None:
    ruleset = write("rules:\n  - name: a\n    hypothesis: A.\n")
    assert ruleset == RuleSet(rules=(Rule("a", ("A.",), line=2, hypothesis_lines=(3,),
                                          hypothesis_key="hypothesis"),), source="rules.yaml")
    assert (ruleset.rules[0].threshold, ruleset.rules[0].label, ruleset.rules[0].margin) == (
        0.5, "entailment", 0.0)


def test_values_are_normalised_and_lines_kept(write) -> None:
    ruleset = write("""\
        version: 1
        model: "  some/model  "
        mode: Route
        rules:
          - name: a
            label: ENTAILMENT
            threshold: 1
            description: "  why  "
            hypotheses:
              - First.
              - >
                Folded
                text.
          - name: b
            hypothesis: "  B.  "
        """)
    assert ruleset.mode == "route" and ruleset.model == "some/model"
    a, b = ruleset.rules
    assert a.label == "entailment" and a.threshold == 1.0 and isinstance(a.threshold, float)
    assert a.description == "why"
    assert a.hypotheses == ("First.", "Folded text.")
    assert (a.line, a.hypothesis_lines, a.hypothesis_key) == (5, (10, 11), "hypotheses")
    assert (b.hypotheses, b.hypothesis_lines, b.hypothesis_key) == (("B.",), (15,), "hypothesis")


def test_hypotheses_are_deduplicated_in_file_order(write) -> None:
    ruleset = write("""\
        rules:
          - name: a
            hypotheses: [X., Y.]
          - name: b
            hypotheses: [Z., X.]
        """)
    assert ruleset.hypotheses == ("X.", "Y.", "Z.")


def test_with_threshold_overrides_every_rule(write) -> None:
    ruleset = write("""\
        rules:
          - name: a
            hypothesis: A.
            threshold: 0.9
            margin: 0.2
          - name: b
            hypothesis: B.
        """)
    lowered = ruleset.with_threshold(0.3)
    assert [r.threshold for r in lowered.rules] == [0.3, 0.3]
    assert [r.threshold for r in ruleset.rules] == [0.9, 0.5]  # the original is unchanged
    assert lowered.rules[0].margin == 0.2 and lowered.source == ruleset.source
    with pytest.raises(ValueError):
        ruleset.with_threshold(1.5)


def test_merge_keys_are_not_duplicates(write) -> None:
    ruleset = write("""\
        defaults: &strict {threshold: 0.2, margin: 0.05}
        rules:
          - name: a
            hypothesis: A.
            <<: *strict
            threshold: 0.3
          - name: b
            hypothesis: B.
        """)
    assert [(r.threshold, r.margin) for r in ruleset.rules] == [(0.3, 0.05), (0.2, 0.05)]


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbfrules:\n  - name: a\n    hypothesis: A.\n")
    assert load_rules(path).rules[0].name == "a"


def test_summarize(write) -> None:
    ruleset = write("""\
        rules:
          - name: a
            hypotheses: [X., Y.]
            label: neutral
          - name: b
            hypothesis: B.
            threshold: 0.8
            margin: 0.1
        """)
    assert summarize(ruleset) == [
        {"name": "a", "label": "neutral", "threshold": 0.5, "margin": 0.0, "hypotheses": 2, "classifier": None},
        {"name": "b", "label": "entailment", "threshold": 0.8, "margin": 0.1, "hypotheses": 1, "classifier": None},
    ]


# --- errors: FILE:LINE: FIELD: what to fix ----------------------------------------------------


def test_threshold_error_matches_the_contract(error) -> None:
    assert error("""\
        rules:
          - name: a
            hypothesis: A.
          - name: b
            hypothesis: B.
          - name: c
            threshold: 1.5
            hypothesis: C.
        """) == "rules.yaml:7: rules[2].threshold: must be between 0 and 1, got 1.5"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("-0.1", "must be between 0 and 1, got -0.1"),
        ("1.5", "must be between 0 and 1, got 1.5"),
        ('"high"', "must be a number between 0 and 1, got 'high'"),
        ("true", "must be a number between 0 and 1, got true"),
        ("", "must be a number between 0 and 1, got null"),
        (".nan", "must be between 0 and 1, got nan"),
        ("80", "must be between 0 and 1, got 80; write a probability, e.g. 0.8 for 80%"),
    ],
)
def test_bad_thresholds(error, value: str, expected: str) -> None:
    text = f"rules:\n  - name: a\n    hypothesis: A.\n    threshold: {value}\n"
    assert error(text) == f"rules.yaml:4: rules[0].threshold: {expected}"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", "must be at least 0 and less than 1, got 1"),
        ("-0.5", "must be at least 0 and less than 1, got -0.5"),
        ("false", "must be a number at least 0 and less than 1, got false"),
    ],
)
def test_bad_margins(error, value: str, expected: str) -> None:
    text = f"rules:\n  - name: a\n    hypothesis: A.\n    margin: {value}\n"
    assert error(text) == f"rules.yaml:4: rules[0].margin: {expected}"


def test_bad_defaults_values_name_the_defaults_field(error) -> None:
    assert error("defaults:\n  threshold: 60\nrules:\n  - name: a\n    hypothesis: A.\n") == (
        "rules.yaml:2: defaults.threshold: must be between 0 and 1, got 60; write a probability, "
        "e.g. 0.6 for 60%")
    assert error("defaults:\n  label: neutrl\nrules: [{name: a, hypothesis: A.}]\n") == (
        "rules.yaml:2: defaults.label: must be one of entailment, neutral, contradiction, "
        "got 'neutrl'; did you mean 'neutral'?")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # typo'd keys, at every level, with a suggestion
        ("rules:\n  - name: a\n    hypothesis: A.\n    treshold: 0.3\n",
         "rules.yaml:4: rules[0].treshold: unknown key; did you mean 'threshold'?"),
        ("modl: x\nrules: [{name: a, hypothesis: A.}]\n",
         "rules.yaml:1: modl: unknown key; did you mean 'model'?"),
        ("defaults:\n  treshold: 0.3\nrules: [{name: a, hypothesis: A.}]\n",
         "rules.yaml:2: defaults.treshold: unknown key; did you mean 'threshold'?"),
        ("rules: [{name: a, hypothesis: A.}]\nbanana: 1\n",
         "rules.yaml:2: banana: unknown key; expected one of: version, model, mode, classifiers, defaults, rules"),
        ("threshold: 0.3\nrules: [{name: a, hypothesis: A.}]\n",
         "rules.yaml:1: threshold: unknown key; put it under 'defaults:' or in a rule "
         "(top-level keys: version, model, mode, classifiers, defaults, rules)"),
        # enum values
        ("rules:\n  - name: a\n    hypothesis: A.\n    label: entailmnet\n",
         "rules.yaml:4: rules[0].label: must be one of entailment, neutral, contradiction, "
         "got 'entailmnet'; did you mean 'entailment'?"),
        ("rules:\n  - name: a\n    hypothesis: A.\n    label: 1\n",
         "rules.yaml:4: rules[0].label: must be one of entailment, neutral, contradiction, got 1"),
        ("mode: rout\nrules: [{name: a, hypothesis: A.}]\n",
         "rules.yaml:1: mode: must be one of guard, route, got 'rout'; did you mean 'route'?"),
        ("version: 2\nrules: [{name: a, hypothesis: A.}]\n", "rules.yaml:1: version: must be 1, got 2"),
        ("version: '1'\nrules: [{name: a, hypothesis: A.}]\n", "rules.yaml:1: version: must be 1, got '1'"),
        ("model: ''\nrules: [{name: a, hypothesis: A.}]\n",
         "rules.yaml:1: model: must be a model id or path, got ''; remove the key to use the default model"),
        # duplicate keys and names
        ("rules:\n  - name: a\n    hypothesis: A.\n    threshold: 0.2\n    threshold: 0.9\n",
         "rules.yaml:5: rules[0]: duplicate key 'threshold' (lines 4 and 5); keep one"),
        ("rules: [{name: a, hypothesis: A.}]\nmode: guard\nrules: [{name: b, hypothesis: B.}]\n",
         "rules.yaml:3: duplicate key 'rules' (lines 1 and 3); keep one"),
        ("defaults:\n  margin: 0.1\n  margin: 0.2\nrules: [{name: a, hypothesis: A.}]\n",
         "rules.yaml:3: defaults: duplicate key 'margin' (lines 2 and 3); keep one"),
        ("rules:\n  - name: a\n    hypothesis: A.\n  - name: b\n    hypothesis: B.\n"
         "  - name: a\n    hypothesis: C.\n",
         "rules.yaml:6: rules[2].name: duplicate rule name 'a' (also rules[0] at line 2); "
         "names must be unique"),
        # hypothesis / hypotheses
        ("rules:\n  - name: a\n    hypothesis: A.\n    hypotheses: [B.]\n",
         "rules.yaml:4: rules[0]: has both 'hypothesis' and 'hypotheses'; keep one "
         "(list several under 'hypotheses')"),
        ("rules:\n  - name: a\n    label: neutral\n",
         "rules.yaml:2: rules[0]: missing 'hypothesis' (or 'hypotheses', a list); add a statement "
         "about the prompt, like 'The prompt asks for ...'"),
        ("rules:\n  - name: a\n    hypothesis: ''\n", "rules.yaml:3: rules[0].hypothesis: must not be empty"),
        ("rules:\n  - name: a\n    hypothesis: ' '\n",
         "rules.yaml:3: rules[0].hypothesis: must not be empty"),
        ("rules:\n  - name: a\n    hypothesis:\n", "rules.yaml:3: rules[0].hypothesis: must not be empty"),
        ("rules:\n  - name: a\n    hypothesis: 42\n",
         "rules.yaml:3: rules[0].hypothesis: must be a string, got 42; put it in quotes"),
        ("rules:\n  - name: a\n    hypothesis: [A., B.]\n",
         "rules.yaml:3: rules[0].hypothesis: must be a string; for several, use 'hypotheses:' with a list"),
        ("rules:\n  - name: a\n    hypotheses: []\n",
         "rules.yaml:3: rules[0].hypotheses: must not be empty; add at least one"),
        ("rules:\n  - name: a\n    hypotheses: A.\n",
         "rules.yaml:3: rules[0].hypotheses: must be a list of strings, got 'A.'; "
         "for a single one, use 'hypothesis:'"),
        ("rules:\n  - name: a\n    hypotheses:\n      - A.\n      - ' '\n",
         "rules.yaml:5: rules[0].hypotheses[1]: must not be empty"),
        # names
        ("rules:\n  - hypothesis: A.\n",
         "rules.yaml:2: rules[0]: missing 'name'; give the rule a unique name like 'weapons'"),
        ("rules:\n  - name: Violent Crimes\n    hypothesis: A.\n",
         "rules.yaml:2: rules[0].name: must use only lowercase letters, digits, '-' and '_', "
         "got 'Violent Crimes'; did you mean 'violent-crimes'?"),
        ("rules:\n  - name: 7\n    hypothesis: A.\n",
         "rules.yaml:2: rules[0].name: must use only lowercase letters, digits, '-' and '_', got 7"),
        ("rules:\n  - name: a\n    hypothesis: A.\n    description: [x]\n",
         "rules.yaml:4: rules[0].description: must be a string, got a list; put it in quotes"),
        # shapes
        ("", "rules.yaml:1: no rules: add at least one rule under 'rules'"),
        ("# nothing but a comment\n", "rules.yaml:1: no rules: add at least one rule under 'rules'"),
        ("version: 1\nrules: []\n", "rules.yaml:2: no rules: add at least one rule under 'rules'"),
        ("version: 1\nrules:\n", "rules.yaml:2: no rules: add at least one rule under 'rules'"),
        ("version: 1\n", "rules.yaml:1: no rules: add at least one rule under 'rules'"),
        ("- name: a\n  hypothesis: A.\n",
         "rules.yaml:1: must be a mapping with a 'rules' list at the top level, got a list"),
        ("rules:\n  name: a\n  hypothesis: A.\n",
         "rules.yaml:1: rules: must be a list of rules (each item starts with '- name:'), got a mapping"),
        ("rules:\n  - weapons\n",
         "rules.yaml:2: rules[0]: must be a mapping with 'name' and 'hypothesis', got 'weapons'"),
        ("defaults: 0.5\nrules: [{name: a, hypothesis: A.}]\n",
         "rules.yaml:1: defaults: must be a mapping of threshold, label, margin and abstain, got 0.5"),
    ],
)
def test_errors_name_file_line_and_field(error, text: str, expected: str) -> None:
    assert error(text) == expected


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("rules:\n  - name: a\n    hypothesis: [unclosed\n", 4, "expected ',' or ']'"),
        ("rules:\n  - name: a\n    hypothesis: A.\n   label: x\n", 4, "expected <block end>"),
        ("rules:\n\t- name: a\n", 2, "'\\t'"),
        ("rules:\n  - name: a\n    hypothesis: The prompt asks: how\n", 3,
         "mapping values are not allowed here; put text that contains ': ' in quotes"),
        ("rules: []\n---\nrules: []\n", 2, "expected a single document"),
        ("rules:\n  - name: a\n    hypothesis: \"bell \x07\"\n", 3, "character U+0007 is not allowed"),
    ],
)
def test_yaml_syntax_errors(error, text: str, line: int, problem: str) -> None:
    message = error(text)
    assert message.startswith(f"rules.yaml:{line}: invalid YAML: ")
    assert problem in message


def test_unsafe_tags_are_refused(error, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    message = error(f'rules: !!python/object/apply:os.system ["touch {marker}"]\n')
    assert message.startswith("rules.yaml:1: invalid YAML: could not determine a constructor")
    assert not marker.exists()


def test_unreadable_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RulesError) as info:
        load_rules("missing.yaml")
    assert str(info.value) == "missing.yaml: cannot read rules file: No such file or directory"
    (tmp_path / "adir").mkdir()
    with pytest.raises(RulesError) as info:
        load_rules("adir")
    assert str(info.value).startswith("adir: cannot read rules file: ")
    (tmp_path / "latin1.yaml").write_bytes(b"rules:\n  - name: caf\xe9\n")
    with pytest.raises(RulesError) as info:
        load_rules(Path("latin1.yaml"))
    assert str(info.value) == (
        "latin1.yaml:2: cannot read rules file: not UTF-8 text (byte 0xe9); save it as UTF-8")


# --- hypothesis length ------------------------------------------------------------------------


def _words(text: str) -> int:
    return len(text.split())


def test_check_hypothesis_lengths(write) -> None:
    ruleset = write("""\
        rules:
          - name: a
            hypothesis: one two three
          - name: b
            hypotheses:
              - one two
              - one two three four five
        """)
    check_hypothesis_lengths(ruleset, _words, 5)  # everything fits: no error
    with pytest.raises(RulesError) as info:
        check_hypothesis_lengths(ruleset, _words, 4)
    assert str(info.value) == (
        "rules.yaml:7: rules[1].hypotheses[1]: hypothesis is 5 tokens; at most 4 fit with the "
        "model's max length; shorten it")
    with pytest.raises(RulesError) as info:
        check_hypothesis_lengths(ruleset, _words, 2)
    assert str(info.value).startswith("rules.yaml:3: rules[0].hypothesis: hypothesis is 3 tokens; at most 2")


def test_check_hypothesis_lengths_for_default_rules() -> None:
    ruleset = load_rules(None)
    check_hypothesis_lengths(ruleset, _words, 59)
    with pytest.raises(RulesError) as info:
        check_hypothesis_lengths(ruleset, _words, 3)
    line = ruleset.rules[0].hypothesis_lines[0]
    lines = default_rules_path().read_text(encoding="utf-8").splitlines()
    assert ruleset.rules[0].hypotheses[0] in lines[line - 1]
    assert str(info.value).startswith(f"{DEFAULT_RULES_SOURCE}:{line}: rules[0].hypotheses[0]: ")
