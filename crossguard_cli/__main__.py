"""`python -m crossguard_cli` is the same program as `crossguard`."""

from __future__ import annotations

from crossguard_cli.cli import main

if __name__ == "__main__":
    main()
