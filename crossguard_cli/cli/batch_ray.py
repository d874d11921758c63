"""`crossguard batch --engine ray`: check the option combinations, hand off to the Ray job, report.

Everything that can be refused without a cluster is refused here, before Ray is imported and
before any model loads: options that only mean something on stdout, stdin as input, a missing
`--output`, a malformed `--ray-actors`. The job itself lives in `crossguard_cli.scale`.
"""

from __future__ import annotations

import sys

from crossguard_cli.engine.options import EngineOptions
from crossguard_cli.errors import UsageError


def run_on_ray(paths: list[str], *, engine: EngineOptions, output: str | None, output_format: str, overwrite: bool,
               address: str | None, actors: str | None, gpus: float | None, cpus: float, records_per_shard: int,
               input_format: str, field: str | None, id_field: str | None, fmt: str | None, on_error: str,
               exit_zero: bool, quiet: bool) -> int:
    """Run the job and print batch's summary line; the exit status is batch's (0, 1 or 2)."""
    _check(paths, output=output, fmt=fmt, on_error=on_error, input_format=input_format, field=field,
           id_field=id_field, gpus=gpus, cpus=cpus)
    from crossguard_cli.scale import job
    from crossguard_cli.scale.inputs import ReadOptions

    spec = job.JobSpec(
        paths=tuple(paths), output=output or "", engine=engine, output_format=output_format, overwrite=overwrite,
        read=ReadOptions(input_format, field, id_field, records_per_shard), address=address or None,
        actors=parse_actors(actors), gpus_per_actor=gpus, cpus_per_actor=cpus, progress=job.progress_wanted(quiet))
    from crossguard_cli.cli.console import error_line

    result = job.run(spec, on_error=error_line)  # an error record, as batch reports one on stderr
    if not quiet:
        sys.stderr.write(result.tally.summary(result.seconds) + "\n")
        sys.stderr.flush()
    return result.tally.exit_code(exit_zero)


def parse_actors(value: str | None) -> tuple[int, int] | None:
    """``N`` -> (N, N); ``MIN,MAX`` -> (MIN, MAX), an autoscaling pool; None: the job decides."""
    if value is None:
        return None
    parts = [part.strip() for part in value.split(",")]
    try:
        numbers = [int(part) for part in parts]
    except ValueError:
        numbers = []
    if len(numbers) == 1:
        numbers *= 2
    if len(numbers) != 2 or not 1 <= numbers[0] <= numbers[1]:
        raise UsageError(f"expected N or MIN,MAX with 1 <= MIN <= MAX, got {value!r}", where="--ray-actors")
    return numbers[0], numbers[1]


def _check(paths: list[str], *, output: str | None, fmt: str | None, on_error: str, input_format: str,
           field: str | None, id_field: str | None, gpus: float | None, cpus: float) -> None:
    if not paths or "-" in paths:
        raise UsageError("--engine ray reads files, globs or URIs (s3://, gs://), not stdin; give PATHs")
    if not output:
        raise UsageError("--engine ray writes shards to a folder: give --output DIR (a path, s3:// or gs://)")
    if fmt is not None:
        raise UsageError("--format is for records on stdout; with --engine ray use --output-format jsonl|parquet")
    if on_error == "abort":
        raise UsageError("--on-error abort needs --engine local: a Ray job has no 'first' error to stop at")
    if input_format == "text" and (field is not None or id_field is not None):
        raise UsageError("--field and --id-field apply to JSONL input only; use --input-format jsonl")
    if gpus is not None and not gpus >= 0:
        raise UsageError(f"must be 0 or more, got {gpus:g}", where="--ray-gpus-per-actor")
    if not cpus > 0:
        raise UsageError(f"must be more than 0, got {cpus:g}", where="--ray-cpus-per-actor")


__all__ = ["parse_actors", "run_on_ray"]
