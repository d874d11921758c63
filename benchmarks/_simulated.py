"""A simulated GPU: a backend whose forward pass sleeps for a time proportional to its padded tokens.

It shows on a CPU whether crossguard's host side (reading, tokenising, pair assembly, padding,
softmax, output) can keep a fast device busy. `time.sleep` releases the GIL, as a CUDA forward
pass does while the GPU works, so Python threads that prepare the next batch run meanwhile;
the sleep is synchronous, so nothing is gained by launching work and returning early (a real
CUDA launch returns before the GPU finishes; this device does not, which is the harder case).

    python benchmarks/_simulated.py RATE -- batch --model FOLDER FILE.jsonl

runs `crossguard batch ...` in this process with every model load replaced by a
`SimulatedDevice` of RATE padded tokens per second (0: a zero-time device), using the model
folder's real tokenizer, and writes to $CROSSGUARD_SIM_STATS (JSON) the device's busy time and
`scoring_s`: the wall clock from the model being loaded to the end (reading, scoring, writing).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class SimulatedDevice:
    """The `Scorer`'s model surface, with a forward pass that sleeps `padded tokens / rate` seconds.

    Attributes:
        tokenizer: a real fast tokenizer (tokenising is host work, and is measured).
        rate: padded tokens per second the device processes; 0 for a zero-time device.
        batching: (pairs, padded tokens) per batch: the CUDA defaults.
        busy: seconds the device spent in forward passes so far.
    """

    name: str
    tokenizer: Any
    rate: float
    max_length: int = 512
    label_columns: tuple[int, int, int] = (0, 1, 2)
    input_names: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")
    dtype: str = "simulated"
    device: str = "simulated-gpu"
    batching: tuple[int, int] = (1024, 131072)
    busy: float = 0.0
    calls: list = field(default_factory=list)

    @property
    def uses_token_types(self) -> bool:
        return "token_type_ids" in self.input_names

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray) -> np.ndarray:
        """Sleep for the batch (the GIL is released), then logits that depend on the input a little."""
        if self.rate:
            seconds = input_ids.size / self.rate
            time.sleep(seconds)
            self.busy += seconds
        self.calls.append(input_ids.shape)
        last = input_ids[:, -1].astype(np.float32)  # a pad or the row's last token: cheap, varied
        return np.stack([np.sin(last), np.cos(last), np.sin(0.5 * last)], axis=1)


def simulated_loader(rate: float):
    """A `load_model` replacement: the folder's real tokenizer and max length, a simulated device."""
    from transformers import AutoTokenizer

    def load_model(name: str, *, max_length: int = 512, **_: Any) -> SimulatedDevice:
        tokenizer = AutoTokenizer.from_pretrained(name)
        names = tuple(getattr(tokenizer, "model_input_names", ("input_ids", "attention_mask")))
        return SimulatedDevice(name, tokenizer, rate, max_length=max_length, input_names=names)

    return load_model


def main(argv: list[str]) -> None:
    rate = float(argv[0])
    args = argv[2:] if len(argv) > 1 and argv[1] == "--" else argv[1:]
    import crossguard_cli.engine.models.loader as loader

    made: list[SimulatedDevice] = []
    load = simulated_loader(rate)

    loaded: list[float] = []

    def load_and_keep(name: str, **kwargs: Any) -> SimulatedDevice:
        made.append(load(name, **kwargs))
        loaded.append(time.perf_counter())  # startup (imports, rules, model) ends here
        return made[-1]

    loader.load_model = load_and_keep
    from crossguard_cli.cli import main as cli_main

    start = time.perf_counter()
    code = 0
    try:
        cli_main(args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 2
    finally:
        target = os.environ.get("CROSSGUARD_SIM_STATS")
        if target:
            with open(target, "w") as f:
                json.dump({"busy_s": sum(m.busy for m in made), "batches": sum(len(m.calls) for m in made),
                           "pairs": sum(s[0] for m in made for s in m.calls),
                           "padded_tokens": sum(int(np.prod(s)) for m in made for s in m.calls),
                           "process_s": time.perf_counter() - start,
                           "scoring_s": time.perf_counter() - loaded[0] if loaded else None}, f)
    sys.exit(code)


if __name__ == "__main__":
    main(sys.argv[1:])
