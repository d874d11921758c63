"""Is bf16 worth it on this CPU? fp32 against bf16 forward passes of the modernbert-150m shape.

    python benchmarks/bf16_check.py

Two passes each of 8 pairs x 160 tokens, random weights (std 0.02), torch's own CPU kernels. On a CPU
without native bf16 matmuls (no AVX512-BF16, no AMX) torch emulates bf16 and the ratio shows it:
this is why `--dtype auto` reads the CPU's flags before it picks bf16.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _workload as work  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForSequenceClassification  # noqa: E402

from crossguard_cli.engine.models.loader import quiet_libraries  # noqa: E402

quiet_libraries()
folder = work.model_folder("modernbert-150m", work.ROOT / ".bench")
rates = {}
ids = torch.randint(1000, 20000, (8, 160))
mask = torch.ones_like(ids)
for dtype in (torch.float32, torch.bfloat16, torch.float32, torch.bfloat16):
    m = AutoModelForSequenceClassification.from_pretrained(str(folder), dtype=dtype).eval()
    with torch.inference_mode():
        m(input_ids=ids[:1, :32], attention_mask=mask[:1, :32])
        t = time.perf_counter()
        m(input_ids=ids, attention_mask=mask)
        s = time.perf_counter() - t
    rates.setdefault(dtype, []).append(8 * 160 / s)
    print(f"{dtype}: {s:.2f} s for 8 x 160 tokens ({8 * 160 / s:.0f} tokens/s)", flush=True)
best = {dtype: max(r) for dtype, r in rates.items()}
print(f"bf16 / fp32 (best of 2 each): {best[torch.bfloat16] / best[torch.float32]:.2f}x; "
      f"torch {torch.__version__}, {torch.get_num_threads()} threads")
