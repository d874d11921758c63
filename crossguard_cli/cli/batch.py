"""`crossguard batch [PATH ...]`: one output record per input record, in order, flushed per group."""

from __future__ import annotations

import sys
import time
from contextlib import closing
from typing import Annotated

import typer

from crossguard_cli.cli.options import FieldOpt, IdFieldOpt, choice, engine_options, within
from crossguard_cli.engine.options import EngineOptions

ENGINES = ("local", "ray")


@engine_options
def batch(
    paths: Annotated[list[str] | None, typer.Argument(metavar="PATH", help="Files to read in order; - or none: stdin.",
                                                       show_default=False)] = None,
    input_format: Annotated[str, typer.Option(
        "--input-format", callback=choice("--input-format", ("auto", "text", "jsonl")), metavar="FORMAT",
        rich_help_panel="Input", help="auto (by extension, else content), text or jsonl.")] = "auto",
    field: FieldOpt = None,
    id_field: IdFieldOpt = None,
    fmt: Annotated[str | None, typer.Option(
        "--format", "-f", callback=choice("--format", ("table", "jsonl", "csv")), metavar="FORMAT",
        rich_help_panel="Output", help="table, jsonl or csv. [default: table on a terminal, else jsonl]")] = None,
    on_error: Annotated[str, typer.Option(
        "--on-error", callback=choice("--on-error", ("continue", "abort")), metavar="WHAT", rich_help_panel="Output",
        help="continue: error records and go on; abort: stop at the first.")] = "continue",
    exit_zero: Annotated[bool, typer.Option(
        "--exit-zero", rich_help_panel="Output", help="Exit 0 even when a record is flagged.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", rich_help_panel="Output",
                                        help="No summary line on stderr.")] = False,
    engine_kind: Annotated[str, typer.Option(
        "--engine", callback=choice("--engine", ENGINES), metavar="ENGINE", rich_help_panel="Ray",
        help="local: score here, records on stdout; ray: a Ray Data job writing shards to --output.")] = "local",
    output: Annotated[str | None, typer.Option(
        "--output", metavar="DIR", rich_help_panel="Ray",
        help="Folder or URI (s3://, gs://) for the shards of --engine ray; must be empty or new.")] = None,
    output_format: Annotated[str, typer.Option(
        "--output-format", callback=choice("--output-format", ("jsonl", "parquet")), metavar="FORMAT",
        rich_help_panel="Ray", help="Shard format: jsonl (batch's records) or parquet.")] = "jsonl",
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", rich_help_panel="Ray", help="Delete what --output holds before the job writes.")] = False,
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", envvar="RAY_ADDRESS", metavar="ADDRESS", rich_help_panel="Ray",
        help="Ray cluster: HOST:6379, ray://HOST:10001 or auto. [default: a local Ray]")] = None,
    ray_actors: Annotated[str | None, typer.Option(
        "--ray-actors", metavar="N|MIN,MAX", rich_help_panel="Ray",
        help="Scoring actors, one model each: N, or MIN,MAX to autoscale. [default: as many as the cluster fits]"
    )] = None,
    ray_gpus: Annotated[float | None, typer.Option(
        "--ray-gpus-per-actor", metavar="G", rich_help_panel="Ray",
        help="GPUs per actor (0.5: two actors share one). [default: 1 when the cluster has GPUs, else 0]")] = None,
    ray_cpus: Annotated[float, typer.Option(
        "--ray-cpus-per-actor", metavar="C", rich_help_panel="Ray",
        help="CPUs per actor (a CPU actor's torch threads).")] = 1.0,
    ray_shard_records: Annotated[int, typer.Option(
        "--ray-records-per-shard", callback=within("--ray-records-per-shard", 1), metavar="N", rich_help_panel="Ray",
        help="Records per shard, and per actor call (>= 1).")] = 1000,
    *,
    engine: EngineOptions,
) -> int:
    """Score every record of each PATH (or stdin), one output record per input record, in order."""
    if engine_kind == "ray":  # hand off before anything loads a model here
        from crossguard_cli.cli.batch_ray import run_on_ray

        return run_on_ray(paths or [], engine=engine, output=output, output_format=output_format,
                          overwrite=overwrite, address=ray_address, actors=ray_actors, gpus=ray_gpus, cpus=ray_cpus,
                          records_per_shard=ray_shard_records, input_format=input_format, field=field,
                          id_field=id_field, fmt=fmt, on_error=on_error, exit_zero=exit_zero, quiet=quiet)
    ray_only = {"--output": output is not None, "--output-format": output_format != "jsonl", "--overwrite": overwrite,
                "--ray-actors": ray_actors is not None, "--ray-gpus-per-actor": ray_gpus is not None,
                "--ray-cpus-per-actor": ray_cpus != 1.0, "--ray-records-per-shard": ray_shard_records != 1000}
    if any(ray_only.values()):  # RAY_ADDRESS alone is fine: many shells export it for other tools
        from crossguard_cli.errors import UsageError

        given = ", ".join(flag for flag, is_given in ray_only.items() if is_given)
        raise UsageError(f"{given}: only with --engine ray; the local engine writes records to stdout")
    from crossguard_cli.api import Guard
    from crossguard_cli.cli.console import console, drop_stdout, machine_stdout, private_stdin
    from crossguard_cli.cli.progress import Progress
    from crossguard_cli.engine.results import Tally
    from crossguard_cli.errors import OutputError
    from crossguard_cli.records.inputs import read_records
    from crossguard_cli.records.writers import make_writer

    paths = paths or ["-"]
    stdin = private_stdin() if "-" in paths else None
    records = read_records(paths, input_format=input_format, field=field, id_field=id_field, stdin=stdin)
    guard = Guard.from_options(engine)
    fmt = fmt or ("table" if sys.stdout.isatty() else "jsonl")
    start = time.monotonic()
    tally = Tally()
    with Progress(console(stderr=True), enabled=sys.stderr.isatty() and not quiet) as bar:
        try:
            if fmt == "table":
                from crossguard_cli.cli.render import TableWriter

                # The table on the terminal that shows the bar goes through the bar's console, above it.
                on_screen = bar.enabled and sys.stdout.isatty()
                writer = TableWriter(bar.console if on_screen else console(), guard.rules)
            else:
                writer = make_writer(fmt, machine_stdout(), guard.rules, guard.abstains)
            with closing(guard.stream_groups(records)) as groups:  # stops the reader if we stop early
                for group in groups:
                    if _write_group(group, writer, tally, bar, abort=on_error == "abort"):
                        break
            writer.close()
        except BrokenPipeError:
            raise
        except OSError as exc:  # disk full, a closed stream: one line, and stdout is given up
            drop_stdout()
            raise OutputError(f"cannot write results: {exc.strerror or exc}", where="stdout") from None
    if not quiet:
        sys.stderr.write(tally.summary(time.monotonic() - start) + "\n")
    return tally.exit_code(exit_zero)


def _write_group(group, writer, tally, bar, *, abort: bool) -> bool:
    """Write one scored group and flush it; True when `--on-error abort` must stop the run here."""
    from crossguard_cli.cli.signals import whole_lines
    from crossguard_cli.records.writers import where

    with whole_lines():  # Ctrl-C / SIGTERM wait until the group is written whole
        for result in group:
            out = result.to_dict()
            tally.add(out)
            writer.write(out)
            if out["status"] == "error":
                bar.line(f"crossguard: error: {where(out)}: {out['error']}")
                if abort:
                    writer.flush()
                    return True
        writer.flush()
    bar.update(tally)
    return False
