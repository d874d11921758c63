"""Where the host's `prepare` step spends its time: normalising, tokenising, planning pairs.

    python benchmarks/prepare_stages.py --repeat 2

The work of bench_simulated.py (the 1,680 real prompts, copies made unique, the 32 default
hypotheses, bert-base-uncased's vocabulary), in groups of 1,024; microseconds per pair.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _simulated as sim  # noqa: E402
import _workload as work  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=2, help="copies of the 1,680 prompts")
    args = parser.parse_args()
    from crossguard_cli.engine.models.loader import quiet_libraries
    from crossguard_cli.engine.scorer import Scorer
    from crossguard_cli.records.text import normalize_text
    from crossguard_cli.rules import load_rules

    quiet_libraries()
    scorer = Scorer(sim.simulated_loader(0)(str(work.model_folder("tiny", work.ROOT / ".bench"))), load_rules(None))
    prompts = [p if r == 0 else f"{p} ({r})" for r in range(args.repeat) for p in work.real_prompts(1680)]
    pairs = len(prompts) * len(scorer.hypotheses)
    print("| pass | normalise us/pair | tokenise us/pair | plan us/pair | tokens/prompt |\n|---|---|---|---|---|")
    for n in range(2):
        t0 = time.perf_counter()
        norm = [normalize_text(p) for p in prompts]
        t1 = time.perf_counter()
        ids = [i for at in range(0, len(norm), 1024) for i in scorer._encode(norm[at : at + 1024])]
        t2 = time.perf_counter()
        for at in range(0, len(ids), 1024):
            scorer.assembler.plan(ids[at : at + 1024])
        t3 = time.perf_counter()
        print(f"| {n + 1} | {1e6 * (t1 - t0) / pairs:.2f} | {1e6 * (t2 - t1) / pairs:.2f} | "
              f"{1e6 * (t3 - t2) / pairs:.2f} | {sum(map(len, ids)) / len(ids):.0f} |")


if __name__ == "__main__":
    main()
