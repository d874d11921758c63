"""`crossguard serve` whose forward passes wait while a gate file exists: a test holds requests in
flight for as long as it needs, and checks the server's state instead of racing its model.

    python tests/gated_serve.py serve ARGS      (with CROSSGUARD_TEST_GATE=PATH in the environment)

Everything else is the real service and the real model; only `logits` waits (the GIL released).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

GATE = Path(os.environ["CROSSGUARD_TEST_GATE"])


def main() -> None:
    import crossguard_cli.engine.models.loader as loader

    load = loader.load_model

    def load_model(*args, **kwargs):
        model = load(*args, **kwargs)
        logits = model.logits

        def gated(*batch):
            while GATE.exists():
                time.sleep(0.005)
            return logits(*batch)

        model.logits = gated
        return model

    loader.load_model = load_model
    from crossguard_cli.cli import main as cli_main

    cli_main(sys.argv[1:])


if __name__ == "__main__":
    main()
