"""The engine: model loading, backends, pairs and windows, scoring, decisions, output records.

Nothing here imports typer, rich or a web framework; torch is imported only by the code that
runs a model. Front ends reach the engine through `crossguard_cli.api.Guard`.
"""
