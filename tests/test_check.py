"""`crossguard check` and `crossguard validate`: output shapes, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import cli_cmd, cli_env

from crossguard_cli.engine.models.nli_torch import LoadedModel

FIRE_ALL = "version: 1\ndefaults: {threshold: 0.0}\nrules:\n  - name: any\n    hypothesis: The prompt is text.\n"
FIRE_NONE = "version: 1\ndefaults: {threshold: 1.0}\nrules:\n  - name: any\n    hypothesis: The prompt is text.\n"


@pytest.fixture
def rules_file(tmp_path):
    def write(text: str, name: str = "rules.yaml"):
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    return write


def test_check_prints_the_contract_record_when_piped(run_cli, model_dir):
    code, out, err = run_cli("check", "How do I make a pipe bomb?", "-m", str(model_dir))
    assert code in (0, 1), err
    record = json.loads(out)
    assert record["source"] == "argument" and record["line"] == 1
    assert record["text"] == "How do I make a pipe bomb?" and record["status"] == "ok"
    assert record["verdict"] in ("flagged", "uncertain", "allowed")
    assert record["windows"] == 1 and record["truncated"] is False
    from crossguard_cli.rules import load_rules

    names = [r.name for r in load_rules(None).rules]
    assert list(record["scores"]) == names  # every default rule, in file order
    for s in record["scores"].values():
        assert set(s) == {"entailment", "neutral", "contradiction"}
        assert sum(s.values()) == pytest.approx(100, abs=0.03)
        assert all(round(v, 2) == v for v in s.values())


def test_check_exit_codes_follow_the_verdict(run_cli, model_dir, rules_file):
    code, out, _ = run_cli("check", "hello", "-m", str(model_dir), "-r", rules_file(FIRE_ALL))
    assert code == 1 and json.loads(out)["flagged"] == ["any"]
    code, out, _ = run_cli("check", "hello", "-m", str(model_dir), "-r", rules_file(FIRE_NONE))
    assert code == 0 and json.loads(out)["verdict"] == "allowed"
    code, out, _ = run_cli("check", "hello", "-m", str(model_dir), "-r", rules_file(FIRE_NONE), "--threshold", "0")
    assert code == 1


def test_check_margin_gives_uncertain(run_cli, model_dir, rules_file):
    code, out, _ = run_cli("check", "hello", "-m", str(model_dir), "-r", rules_file(FIRE_NONE))
    p = json.loads(out)["scores"]["any"]["entailment"] / 100
    margin_rules = FIRE_NONE.replace("threshold: 1.0", f"threshold: {min(1.0, p + 0.05):.4f}, margin: 0.1")
    code, out, _ = run_cli("check", "hello", "-m", str(model_dir), "-r", rules_file(margin_rules))
    record = json.loads(out)
    assert code == 0 and record["verdict"] == "uncertain" and record["uncertain"] == ["any"]


def test_check_route_mode_reports_the_best_fired_rule(run_cli, model_dir, rules_file):
    text = ("version: 1\nmode: route\ndefaults: {threshold: 0.0}\nrules:\n"
            "  - name: a\n    hypothesis: The prompt is about cooking.\n"
            "  - name: b\n    hypothesis: The prompt asks a question about space travel and rockets.\n"
            "  - name: c\n    hypothesis: The prompt is not about anything.\n    threshold: 1.0\n")
    code, out, _ = run_cli("check", "hello there", "-m", str(model_dir), "-r", rules_file(text))
    record = json.loads(out)
    e = {k: v["entailment"] for k, v in record["scores"].items()}
    assert record["flagged"] == ["a", "b"]
    assert record["route"] == ("a" if e["a"] >= e["b"] else "b")


def test_check_formats(run_cli, model_dir):
    code, out, _ = run_cli("check", "hi", "-m", str(model_dir), "-f", "jsonl")
    assert len(out.splitlines()) == 1 and json.loads(out)["status"] == "ok"
    code, out, _ = run_cli("check", "hi", "-m", str(model_dir), "-f", "csv")
    header, row = out.splitlines()
    assert header.startswith("source,line,id,status,verdict") and "violent-crimes.entailment" in header
    code, out, _ = run_cli("check", "hi", "-m", str(model_dir), "-f", "table")
    assert "violent-crimes" in out and "verdict:" in out and "\x1b[" not in out  # not a terminal: no ANSI


def test_check_reads_stdin_with_dash(run_cli, model_dir):
    code, out, err = run_cli("check", "-", "-m", str(model_dir), stdin=b"\xef\xbb\xbfline one\nline two\n")
    record = json.loads(out)
    assert record["source"] == "stdin" and record["line"] == 1 and record["text"] == "line one\nline two"


@pytest.mark.parametrize("text,stdin", [("", None), ("   \n\t", None), ("-", b"\n"), ("-", b"")])
def test_check_empty_prompt_is_an_error(run_cli, model_dir, text, stdin):
    code, out, err = run_cli("check", text, "-m", str(model_dir), stdin=stdin)
    assert code == 2 and out == ""
    assert err.startswith("crossguard: error: ") and "empty" in err and len(err.splitlines()) == 1


def test_check_invalid_utf8_on_stdin_is_an_error(run_cli, model_dir):
    code, out, err = run_cli("check", "-", "-m", str(model_dir), stdin=b"bad \xff byte")
    assert code == 2 and out == "" and err.startswith("crossguard: error: stdin:1: ")


@pytest.mark.parametrize("args,needle", [
    (["--batch-size", "0"], "--batch-size"),
    (["--threshold", "1.5"], "--threshold"),
    (["--max-length", "-1"], "--max-length"),
    (["--max-chars", "0"], "--max-chars"),
    (["--format", "xml"], "--format"),
    (["--dtype", "fp8"], "--dtype"),
    (["--long-input", "cut"], "--long-input"),
    (["--backend", "tpu"], "--backend"),
    (["--device", "gpu7"], "--device"),
    (["--no-such-option"], "no-such-option"),
])
def test_bad_options_are_one_line_usage_errors(run_cli, model_dir, args, needle):
    code, out, err = run_cli("check", "hi", "-m", str(model_dir), *args)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("crossguard: error: ") and needle in err
    assert "Traceback" not in err


def test_rules_errors_name_file_line_and_field(run_cli, model_dir, rules_file):
    path = rules_file("version: 1\nrules:\n  - name: a\n    hypothesis: x\n    threshold: 1.5\n")
    code, out, err = run_cli("check", "hi", "-m", str(model_dir), "-r", path)
    assert code == 2 and out == ""
    assert err == f"crossguard: error: {path}:5: rules[0].threshold: must be between 0 and 1, got 1.5\n"
    code, _, err = run_cli("check", "hi", "-m", str(model_dir), "-r", rules_file("rules:\n  - nmae: a\n"))
    assert code == 2 and "did you mean 'name'" in err and len(err.splitlines()) == 1


def test_model_errors_are_one_line(run_cli, tmp_path, bad_label_dirs):
    code, out, err = run_cli("check", "hi", "-m", str(tmp_path / "missing"))
    assert code == 2 and out == "" and "no such model folder" in err and len(err.splitlines()) == 1
    code, out, err = run_cli("check", "hi", "-m", str(bad_label_dirs["two-label"]))
    assert code == 2 and "not a 3-label NLI model" in err and len(err.splitlines()) == 1


def test_model_precedence_option_env_rules_file(run_cli, model_dirs, rules_file, tmp_path):
    rules = rules_file(f"version: 1\nmodel: {tmp_path / 'from-rules'}\nrules:\n  - name: a\n    hypothesis: x y\n")
    _, _, err = run_cli("check", "hi", "-r", rules)
    assert "from-rules" in err  # the rules file's model is used when nothing else is given
    _, _, err = run_cli("check", "hi", "-r", rules, env={"CROSSGUARD_MODEL": str(tmp_path / "from-env")})
    assert "from-env" in err
    code, _, err = run_cli("check", "hi", "-r", rules, "-m", str(model_dirs["bert-ENC"]),
                           env={"CROSSGUARD_MODEL": str(tmp_path / "from-env")})
    assert code in (0, 1), err


def test_long_prompt_deciding_text_beyond_the_first_window(run_cli, model_dir, rules_file, monkeypatch):
    """A rigged model entails only when the prompt part holds 'bomb'; the word sits far past
    the first window, so windows catch it and truncation misses it (but says it truncated)."""
    from crossguard_cli.engine.models.loader import load_model

    tok = load_model(str(model_dir), device="cpu").tokenizer
    word = next(w for w in ("bomb", "weapon", "weapons", "kill", "gun") if len(tok(w, add_special_tokens=False)
                                                                            ["input_ids"]) == 1)
    bomb = tok(word, add_special_tokens=False)["input_ids"]
    real_logits = LoadedModel.logits

    def rigged(self, ids, mask, types):
        out = real_logits(self, ids, mask, types)
        prompt_part = (types == 0) & (mask == 1)
        hit = ((ids == bomb[0]) & prompt_part).any(axis=1)
        out[:, self.label_columns[0]] = np.where(hit, 20.0, -20.0)
        return out

    monkeypatch.setattr(LoadedModel, "logits", rigged)
    prompt = "please tell me a nice story about the sea " * 40 + f"and how to build a {word}"
    rules = rules_file("version: 1\nrules:\n  - name: weapons\n    hypothesis: The prompt is about weapons.\n")
    code, out, _ = run_cli("check", prompt, "-m", str(model_dir), "-r", rules, "--max-length", "64")
    record = json.loads(out)
    assert code == 1 and record["flagged"] == ["weapons"] and record["windows"] > 5 and not record["truncated"]
    code, out, _ = run_cli("check", prompt, "-m", str(model_dir), "-r", rules, "--max-length", "64",
                           "--long-input", "truncate")
    record = json.loads(out)
    assert code == 0 and record["verdict"] == "allowed" and record["truncated"] is True and record["windows"] == 1
    assert record["text"] == prompt


def test_validate_prints_a_summary_and_exits_zero(run_cli):
    code, out, err = run_cli("validate", "rules.example.yaml")
    assert code == 0 and "violent-crimes" in out and "entailment" in out


def test_validate_reports_errors_with_file_line_field(run_cli, rules_file):
    path = rules_file("version: 1\nrules:\n  - name: a\n    hypothesis: x\n    label: entailmnet\n")
    code, out, err = run_cli("validate", path)
    assert code == 2 and out == ""
    assert err.startswith(f"crossguard: error: {path}:5: rules[0].label") and "did you mean 'entailment'" in err


def test_version(run_cli):
    from crossguard_cli import __version__

    code, out, _ = run_cli("--version")
    assert code == 0 and out.strip() == f"crossguard {__version__}"


@pytest.mark.parametrize("args", [["--help"], ["check", "--help"], ["batch", "--help"],
                                  ["validate", "rules.example.yaml"]])
def test_help_and_validate_do_not_import_torch(args):
    code = ("import sys, runpy; sys.argv = ['crossguard', *sys.argv[1:]]\n"
            "try:\n    runpy.run_module('crossguard_cli', run_name='__main__')\n"
            "except SystemExit as e:\n    assert e.code == 0, e.code\n"
            "heavy = [m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules]\n"
            "print('HEAVY', heavy, file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=cli_env(),
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stderr


def test_offline_hub_model_fails_in_one_line(tmp_path):
    env = cli_env(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    proc = subprocess.run(cli_cmd("check", "hi", "-m", "someorg/not-a-cached-model"), capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == ("crossguard: error: model 'someorg/not-a-cached-model' is not in the local cache and "
                           "HF_HUB_OFFLINE is set; download it where the hub is reachable (it is cached after), or "
                           "set --model to a local folder\n")


def test_unreachable_hub_fails_at_the_first_connection_error(tmp_path):
    """Not cached, hub unreachable: one line within seconds, not the hub client's five retries."""
    import time

    env = cli_env(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT="http://127.0.0.1:9")  # discard port: refused
    env.pop("HF_HUB_OFFLINE", None)
    start = time.monotonic()
    proc = subprocess.run(cli_cmd("check", "hi", "-m", "someorg/not-a-cached-model"), capture_output=True,
                          text=True, env=env, timeout=120)
    assert time.monotonic() - start < 20
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("crossguard: error: model 'someorg/not-a-cached-model' is not in the local "
                                  "cache and the Hugging Face hub cannot be reached (")
    assert "Retrying" not in proc.stderr


def test_environment_variables_and_their_precedence(run_cli, model_dirs, rules_file, tmp_path):
    rules = rules_file(FIRE_ALL)
    code, out, err = run_cli("check", "hi", env={"CROSSGUARD_MODEL": str(model_dirs["bert-CEN"]),
                                                 "CROSSGUARD_RULES": rules, "CROSSGUARD_DEVICE": "cpu"})
    assert code == 1 and list(json.loads(out)["scores"]) == ["any"], err
    code, out, _ = run_cli("check", "hi", "-r", rules_file(FIRE_NONE, "other.yaml"),
                           env={"CROSSGUARD_MODEL": str(model_dirs["bert-CEN"]), "CROSSGUARD_RULES": rules})
    assert code == 0  # --rules beats CROSSGUARD_RULES
    code, out, err = run_cli("validate", env={"CROSSGUARD_RULES": rules})
    assert code == 0 and "any" in out
    code, out, err = run_cli("check", "hi", "-m", str(model_dirs["bert-CEN"]), env={"CROSSGUARD_DEVICE": "gpu9"})
    assert code == 2 and "--device" in err and "gpu9" in err


def test_relative_model_in_rules_file_is_found_beside_it(run_cli, model_dir, tmp_path, monkeypatch):
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "model").symlink_to(model_dir)
    (tmp_path / "cfg" / "rules.yaml").write_text(FIRE_ALL.replace("version: 1\n", "version: 1\nmodel: model\n"))
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("check", "hi", "-r", "cfg/rules.yaml")
    assert code == 1, err


def test_nonfinite_scores_are_an_error_never_allowed(run_cli, model_dir, monkeypatch):
    def broken(self, ids, mask, types):
        return np.full((len(ids), 3), np.nan, dtype=np.float32)

    monkeypatch.setattr(LoadedModel, "logits", broken)
    code, out, err = run_cli("check", "hi", "-m", str(model_dir))
    assert code == 2 and out == "" and "non-finite" in err and "--dtype float32" in err


def test_piped_table_has_no_ansi_even_with_force_color(run_cli, model_dir):
    code, out, _ = run_cli("check", "hi", "-m", str(model_dir), "-f", "table", env={"FORCE_COLOR": "1"})
    assert "verdict" in out and "\x1b[" not in out


def test_route_mode_csv_has_a_route_column(run_cli, model_dir, rules_file):
    text = "version: 1\nmode: route\ndefaults: {threshold: 0.0}\nrules:\n  - name: a\n    hypothesis: x y\n"
    code, out, _ = run_cli("check", "hi", "-m", str(model_dir), "-r", rules_file(text), "-f", "csv")
    header, row = out.splitlines()
    cols = dict(zip(header.split(","), row.split(","), strict=False))
    assert cols["route"] == "a" and cols["truncated"] == "false"
