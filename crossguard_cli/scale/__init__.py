"""`crossguard batch --engine ray`: the same batch job on a Ray cluster, nothing lost, nothing duplicated.

The stages, one module each, in the order data flows:

- `storage`: local paths and object-store URIs (``s3://``, ``gs://``) through pyarrow file systems.
- `inputs`: PATH arguments and globs expanded to files; each file read into chunks of records
  with the file's own line numbers, by batch's own reader.
- `actor`: the Ray Data actor that loads one `Guard` and scores a chunk at a time.
- `formats`: a chunk's output records as JSON lines or a Parquet table.
- `shards`: the output folder, deterministic shard names, write-then-rename.
- `cluster`: importing Ray, checking `--ray-address`, connecting, keeping Ray quiet.
- `job`: the Ray Data pipeline, the tally and the final checks.

Nothing here is imported by `crossguard --help` or by the local `batch` path; Ray is imported
only inside `cluster` and `job`, when a job runs.
"""

from __future__ import annotations
