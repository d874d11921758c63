"""The README's CLI reference is the real `--help` of every command, kept in step by this test.

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
README = ROOT / "README.md"
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
        parts += [f"### `crossguard {' '.join([*args, '--help'])}`", "", "```text", help_text(args), "```", ""]
    parts.append(END)
    return "\n".join(parts)


def test_readme_cli_reference_matches_help():
    text = README.read_text(encoding="utf-8")
    found = re.search(re.escape(BEGIN) + ".*?" + re.escape(END), text, flags=re.S)
    assert found, "README.md has no CLI reference block"
    assert found.group(0) == reference(), "README CLI reference is stale: python tests/test_cli_reference.py --update"


if __name__ == "__main__" and "--update" in sys.argv:
    text = README.read_text(encoding="utf-8")
    new = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: reference(), text, flags=re.S)
    README.write_text(new, encoding="utf-8")
    print("README.md CLI reference updated")
