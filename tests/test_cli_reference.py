"""docs/cli.md, the CLI reference, is the real `--help` of every command, kept in step by this test.

After changing an option, regenerate the reference with:

    python tests/test_cli_reference.py --update
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI_DOC = ROOT / "docs" / "cli.md"
COMMANDS = ([], ["check"], ["batch"], ["validate"], ["eval"], ["serve"])
BEGIN, END = "<!-- cli-reference:begin -->", "<!-- cli-reference:end -->"


def help_text(args: list[str]) -> str:
    env = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}
    proc = subprocess.run([sys.executable, "-m", "crossguard_cli", *args, "--help"], capture_output=True,
                          text=True, env=env, timeout=60, check=True)
    return proc.stdout.rstrip()


def reference() -> str:
    parts = [BEGIN]
    for args in COMMANDS:
        parts += [f"## `crossguard {' '.join([*args, '--help'])}`", "", "```text", help_text(args), "```", ""]
    parts.append(END)
    return "\n".join(parts)


def test_cli_reference_matches_help():
    text = CLI_DOC.read_text(encoding="utf-8")
    found = re.search(re.escape(BEGIN) + ".*?" + re.escape(END), text, flags=re.S)
    assert found, "docs/cli.md has no CLI reference block"
    assert found.group(0) == reference(), \
        "docs/cli.md CLI reference is stale: python tests/test_cli_reference.py --update"


def test_readme_links_the_cli_reference():
    assert "(docs/cli.md)" in (ROOT / "README.md").read_text(encoding="utf-8")


if __name__ == "__main__" and "--update" in sys.argv:
    text = CLI_DOC.read_text(encoding="utf-8")
    new = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: reference(), text, flags=re.S)
    CLI_DOC.write_text(new, encoding="utf-8")
    print("docs/cli.md CLI reference updated")
