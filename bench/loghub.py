"""The Loghub corpus as the benchmarks read it (shared by bench/kafka/run.py and
bench/peers/run.py)."""

import os
import sys
from pathlib import Path

CORPUS = Path(os.environ.get("SLUICE_CORPUS", "/work/shared/corpus/loghub"))


def corpus_lines():
    """Every non-empty line of the corpus's *.log files, in file order, CR stripped; exits
    naming the folder when there is none."""
    lines = []
    for f in sorted(CORPUS.glob("*.log")):
        for raw in f.read_bytes().split(b"\n"):
            line = raw.rstrip(b"\r")
            if line:
                lines.append(line)
    if not lines:
        sys.exit(f"no corpus lines under {CORPUS}")
    return lines
