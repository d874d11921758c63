"""The command-line front end: a thin Typer layer over `Guard` (see app.py)."""

from __future__ import annotations

from crossguard_cli.cli.app import app, main

__all__ = ["app", "main"]
