"""The Ray job behind `crossguard batch --engine ray`: files -> chunks -> actors -> shards -> a tally.

The pipeline is three Ray Data stages:

1. `from_items`: one row per input file (globs already expanded, in argument order);
2. `map_batches(read_files)`: tasks that read a whole file each, with batch's reader, and yield
   one row per chunk of `records_per_shard` records (the file's own line numbers inside);
3. `map_batches(ScoreChunks)`: a pool of actors, one model load each, that score a chunk and
   write it as one shard, returning its counts.

Every block holds one row (`target_max_block_size` is set to its minimum for this dataset),
so chunks spread over all actors instead of riding together in one block to one actor.

The driver adds up the counts, one row per chunk, and checks the result before it says it is
done: every file's chunks 0..last arrived, each counted once (a repeated row, should Ray ever
deliver one, replaces the first instead of adding to it), and the folder holds exactly the
shards written. Reading tasks ask for no CPU: they are light, and must run beside actors that
take every CPU of a small machine (on a 2-CPU laptop, 2 actors x 1 CPU would starve them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from crossguard_cli.engine.options import EngineOptions
from crossguard_cli.engine.results import Tally
from crossguard_cli.errors import CrossguardError, UsageError
from crossguard_cli.scale import cluster, inputs, shards
from crossguard_cli.scale.actor import COUNTS, ScoreChunks

DIE_ONCE_ENV = "CROSSGUARD_TEST_RAY_DIE_ONCE"  # tests only: see actor.py


@dataclass(frozen=True)
class JobSpec:
    """Everything a Ray batch job needs; built by the CLI from its options.

    Attributes:
        paths: PATH arguments: local paths, URIs, globs of either.
        output: the output folder as given (`--output`).
        actors: (min, max) actor pool size; None: as many as the cluster fits now.
        gpus_per_actor: None: 1 when the cluster has GPUs, else 0.
    """

    paths: tuple[str, ...]
    output: str
    engine: EngineOptions
    output_format: str = "jsonl"
    overwrite: bool = False
    read: inputs.ReadOptions = inputs.ReadOptions()
    address: str | None = None
    actors: tuple[int, int] | None = None
    gpus_per_actor: float | None = None
    cpus_per_actor: float = 1.0
    progress: bool = False


@dataclass
class JobResult:
    tally: Tally
    seconds: float
    shards: int


def run(spec: JobSpec, on_error: Callable[[str], None] | None = None) -> JobResult:
    """Run the job to the end; `on_error` gets "source:line: message" for each error record.

    Checks that need no cluster (rules, inputs, output folder) run before Ray is touched.

    Raises:
        CrossguardError: a usage, rules, input, output or cluster problem, as one line.
    """
    from crossguard_cli.api import resolve_rules

    ruleset = resolve_rules(spec.engine.rules, spec.engine.threshold)
    options = _portable(spec.engine, ruleset)
    ruleset = _portable_rules(ruleset, spec.engine.rules)
    files = inputs.expand(spec.paths)
    output = shards.output_spec(spec.output, spec.output_format)
    shards.check_empty(output, spec.output, overwrite=spec.overwrite)
    with cluster.connected(spec.address, progress=spec.progress) as ray:
        resources = ray.cluster_resources()
        gpus = spec.gpus_per_actor if spec.gpus_per_actor is not None else (1.0 if resources.get("GPU") else 0.0)
        low, high = spec.actors or (_fits(resources, gpus, spec.cpus_per_actor),) * 2
        shards.prepare(output, spec.output, overwrite=spec.overwrite)
        start = time.monotonic()
        rows = _dataset(ray, files, spec, options, ruleset, output, (low, high), gpus)
        counts = _collect(rows, on_error)
        seconds = time.monotonic() - start
    _check_complete(files, counts)
    tally = Tally()
    for row in counts.values():
        tally = tally.merge(Tally(**{key: row[key] for key in COUNTS}))
    written = {row["shard"] for row in counts.values() if row["shard"]}
    shards.finish(output, spec.output, written, dataclasses.asdict(tally))
    return JobResult(tally, seconds, len(written))


def _portable(engine: EngineOptions, ruleset) -> EngineOptions:
    """Options that mean the same on every node: the model resolved here, a local folder made absolute.

    The rules travel as the loaded `RuleSet`, so workers never read the rules file.
    """
    from crossguard_cli.engine.models.loader import model_name

    name = model_name(engine.model, ruleset, engine.rules)
    if os.path.isdir(name):
        name = os.path.abspath(name)
    encoder = engine.encoder
    if encoder and os.path.isdir(encoder):
        encoder = os.path.abspath(encoder)
    return engine.replace(model=name, rules=None, encoder=encoder)


def _portable_rules(ruleset, rules_path: str | None):
    """The rules with each classifier's local folders made absolute (workers never see the rules file)."""
    import dataclasses

    from crossguard_cli.engine.models.classifier import beside_rules

    def absolute(name: str | None) -> str | None:
        if name is None:
            return None
        found = beside_rules(name, rules_path)
        return os.path.abspath(found) if os.path.isdir(found) else name

    specs = tuple(dataclasses.replace(c, model=absolute(c.model), tokenizer=absolute(c.tokenizer))
                  for c in ruleset.classifiers)
    return dataclasses.replace(ruleset, classifiers=specs)


def _fits(resources: dict[str, float], gpus: float, cpus: float) -> int:
    """How many actors the cluster holds now, by GPUs when actors take GPUs, else by CPUs."""
    have, each, what = (resources.get("GPU", 0.0), gpus, "GPUs") if gpus else (resources.get("CPU", 0.0), cpus, "CPUs")
    fits = math.floor(have / each + 1e-9)
    if fits < 1:
        flag = "--ray-gpus-per-actor" if gpus else "--ray-cpus-per-actor"
        raise UsageError(f"the cluster has {have:g} {what}, too few for one actor with {each:g}; lower it, "
                         "or add nodes", where=flag)
    return fits


def _dataset(ray, files, spec: JobSpec, options, ruleset, output, actors: tuple[int, int], gpus: float):
    """The pipeline of the module docstring, as an iterator of count rows (it runs as it is consumed)."""
    context = ray.data.DataContext.get_current()
    saved = (context.target_max_block_size, context.enable_progress_bars)
    context.target_max_block_size = 1  # one row per block: see the module docstring
    context.enable_progress_bars = spec.progress
    try:
        ds = ray.data.from_items(inputs.file_rows(files))
        ds = ds.map_batches(inputs.read_files, batch_size=1, batch_format="pyarrow", num_cpus=0,
                            fn_kwargs={"options": spec.read},
                            compute=ray.data.TaskPoolStrategy(size=max(1, min(len(files), 2 * actors[1]))))
        low, high = actors
        pool = ray.data.ActorPoolStrategy(size=low) if low == high else \
            ray.data.ActorPoolStrategy(min_size=low, max_size=high)
        ds = ds.map_batches(ScoreChunks, batch_size=1, batch_format="pyarrow", compute=pool,
                            num_cpus=spec.cpus_per_actor, num_gpus=gpus or None,
                            fn_constructor_kwargs={"options": options, "ruleset": ruleset, "output": output,
                                                   "die_once": os.environ.get(DIE_ONCE_ENV) or None})
    finally:
        context.target_max_block_size, context.enable_progress_bars = saved
    return ds.iter_rows()


def _collect(rows, on_error: Callable[[str], None] | None) -> dict[tuple[int, int], dict[str, Any]]:
    """Count rows keyed by (file, chunk): a repeated row replaces, never adds."""
    counts: dict[tuple[int, int], dict[str, Any]] = {}
    try:
        for row in rows:
            key = (row["file"], row["chunk"])
            if on_error is not None and key not in counts:
                for line in row["error_lines"]:
                    on_error(line)
            counts[key] = row
    except CrossguardError:
        raise
    except Exception as exc:  # noqa: BLE001 - a Ray failure: one line, with our own error when it is ours
        raise _job_error(exc) from None
    return counts


def _check_complete(files: list[inputs.InputFile], counts: dict[tuple[int, int], dict[str, Any]]) -> None:
    """Every file's chunks 0..last came back (a lost chunk would be a lost record)."""
    last = {file: chunk for (file, chunk), row in counts.items() if row["last"]}
    for f in files:
        if f.index not in last or any((f.index, c) not in counts for c in range(last[f.index] + 1)):
            raise cluster.ClusterError(f"the job lost records of {f.source} (chunks missing); run it again "
                                       "with --overwrite")


def _job_error(exc: BaseException) -> CrossguardError:
    """Ray wraps what an actor raised (a model that will not load...): find our own error inside."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        cur = stack.pop()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, CrossguardError):
            return cur
        stack += [cur.__cause__, cur.__context__, getattr(cur, "cause", None)]
        as_instance = getattr(cur, "as_instanceof_cause", None)
        if callable(as_instance):
            with contextlib.suppress(Exception):  # best effort unwrapping
                stack.append(as_instance())
    ours = _error_in_text(str(exc))  # an actor's __init__ failed: Ray keeps only its traceback's text
    if ours is not None:
        return ours
    text = " ".join(str(exc).split())
    return cluster.ClusterError(f"the Ray job failed: {type(exc).__name__}: {text[:400]}")


def _error_in_text(text: str) -> CrossguardError | None:
    """The last "ModelError: message" line of a remote traceback, as that error; None without one."""
    kinds: dict[str, type[CrossguardError]] = {}
    pending: list[type[CrossguardError]] = [CrossguardError]
    while pending:
        kind = pending.pop()
        kinds[kind.__name__] = kind
        pending += kind.__subclasses__()
    names = "|".join(re.escape(name) for name in kinds)
    found = re.findall(rf"^(?:[\w.]+\.)?({names}): (.+)$", text, flags=re.M)
    if not found:
        return None
    name, message = found[-1]
    return kinds[name](message)


def progress_wanted(quiet: bool) -> bool:
    """Ray Data's progress bars: on a terminal only."""
    return sys.stderr.isatty() and not quiet


__all__ = ["DIE_ONCE_ENV", "JobResult", "JobSpec", "progress_wanted", "run"]
