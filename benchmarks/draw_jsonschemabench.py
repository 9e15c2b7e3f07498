#!/usr/bin/env python
"""Draw the JSONSchemaBench sample used by `bench_jsonschemabench.py` (run once; the result is committed).

    git clone https://github.com/guidance-ai/jsonschemabench /tmp/jsonschemabench
    python benchmarks/draw_jsonschemabench.py /tmp/jsonschemabench

Draws `PER_SPLIT` schemas from each split below with a fixed seed, among schemas of at most `MAX_CHARS`
characters (so that a prompt quoting the schema fits a 4k context), and writes them with their source
path and the dataset commit to `benchmarks/data/jsonschemabench_sample.json`.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

SPLITS = ("Glaiveai2K", "Github_easy", "Github_medium", "Github_hard", "Kubernetes")
PER_SPLIT = 20
MAX_CHARS = 6000
SEED = 8
OUT = Path(__file__).resolve().parent / "data" / "jsonschemabench_sample.json"


def main(repo: Path) -> None:
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()  # fmt: skip
    rng = random.Random(SEED)
    entries = []
    for split in SPLITS:
        paths = sorted((repo / "data" / split).glob("*.json"))
        rng.shuffle(paths)
        taken = 0
        for path in paths:
            text = path.read_text()
            try:
                schema = json.loads(text)
            except json.JSONDecodeError:
                continue
            if len(json.dumps(schema, separators=(",", ":"))) > MAX_CHARS:
                continue
            entries.append({"split": split, "path": f"data/{split}/{path.name}", "schema": schema})
            taken += 1
            if taken == PER_SPLIT:
                break
    document = {
        "source": "https://github.com/guidance-ai/jsonschemabench",
        "commit": commit,
        "drawn_by": "benchmarks/draw_jsonschemabench.py",
        "seed": SEED,
        "max_chars": MAX_CHARS,
        "schemas": entries,
    }
    OUT.write_text(json.dumps(document, indent=1) + "\n")
    print(f"{len(entries)} schemas written to {OUT}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
