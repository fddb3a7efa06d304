#!/usr/bin/env python3
"""Generates the inputs of bench/pipeline/run.sh from the Loghub samples (never committed).

    gen.py CORPUS_DIR OUT_DIR TOTAL_MB FILES

Writes OUT_DIR/{plain,stack,cri}/app-N.log (FILES files, about TOTAL_MB MB per variant) and
OUT_DIR/expected.env (records each case must deliver, bytes and lines of each variant):

  plain  the corpus lines, CR stripped, empty lines left out, LF-terminated; file i starts at
         a different place in the corpus and wraps around.
  stack  each plain line prefixed with an ISO timestamp `2026-12-01 10:00:00.123 ` (so each
         begins an event for `start: '^\\d{4}-'`); after every 10th line, a Java stack trace
         of 4 to 16 lines (tab-indented `at` frames, sometimes a `Caused by:` and `... N more`).
  cri    each plain line as a CRI record `2026-12-01T10:00:00.123456789Z stdout F MSG`
         (stderr for lines holding ERROR/WARN/FATAL); a line longer than 512 bytes is cut into
         512-byte `P` records ended by an `F` record (as containerd does at 16 KiB).
"""
import os
import random
import re
import sys
from pathlib import Path

corpus_dir, out, total_mb, files = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
per_file = int(total_mb * 1e6 / files)

lines = []
for f in sorted(corpus_dir.glob("*.log")):
    for raw in f.read_bytes().split(b"\n"):
        raw = raw.rstrip(b"\r")
        if raw:
            lines.append(raw)

# The interceptor case's filter (case C): the lines it drops are not expected on the topic.
FILTER = re.compile(rb"^\d\d-\d\d \S+ +\d+ +\d+ [DV] ")

rng = random.Random(42)
CLASSES = [b"com.acme.orders.OrderService", b"com.acme.http.Handler", b"org.apache.kafka.clients.NetworkClient",
           b"io.netty.channel.AbstractChannelHandlerContext", b"java.util.concurrent.ThreadPoolExecutor",
           b"org.springframework.web.servlet.FrameworkServlet", b"com.zaxxer.hikari.pool.HikariPool"]
METHODS = [b"process", b"handle", b"invoke", b"run", b"doFilter", b"getConnection", b"poll", b"apply"]
EXC = [b"java.lang.IllegalStateException", b"java.io.IOException", b"java.sql.SQLTransientConnectionException",
       b"java.util.concurrent.TimeoutException", b"java.lang.NullPointerException"]


def stack_trace(n):
    out = [b"%s: request %d failed: %s" % (rng.choice(EXC), n, rng.choice(METHODS))]
    depth = rng.randint(3, 12)
    for _ in range(depth):
        c = rng.choice(CLASSES)
        out.append(b"\tat %s.%s(%s.java:%d)" % (c, rng.choice(METHODS), c.rsplit(b".", 1)[1], rng.randint(10, 900)))
    if rng.random() < 0.4:
        out.append(b"Caused by: %s: upstream %d" % (rng.choice(EXC), n))
        out.append(b"\tat %s.%s(Native Method)" % (rng.choice(CLASSES), rng.choice(METHODS)))
        out.append(b"\t... %d more" % depth)
    return out


stats = {k: {"bytes": 0, "lines": 0, "records": 0} for k in ("plain", "stack", "cri")}
filtered = 0
for v in stats:
    (out / v).mkdir(parents=True, exist_ok=True)
for i in range(files):
    name = f"app-{i}.log"
    start = (i * 7919) % len(lines)
    # plain
    buf, size, j, picked = [], 0, 0, []
    while size < per_file:
        line = lines[(start + j) % len(lines)]
        j += 1
        picked.append(line)
        buf.append(line + b"\n")
        size += len(line) + 1
        if FILTER.search(line):
            filtered += 1
    (out / "plain" / name).write_bytes(b"".join(buf))
    stats["plain"]["bytes"] += size
    stats["plain"]["lines"] += len(picked)
    stats["plain"]["records"] += len(picked)
    # stack: same target size
    buf, size, j, ms = [], 0, 0, 0
    while size < per_file:
        line = lines[(start + j) % len(lines)]
        j += 1
        ms += rng.randint(1, 40)
        ts = b"2026-12-01 %02d:%02d:%02d.%03d " % ((ms // 3600000) % 24, (ms // 60000) % 60, (ms // 1000) % 60, ms % 1000)
        rec = [ts + line]
        if j % 10 == 0:
            rec += stack_trace(j)
        for r in rec:
            buf.append(r + b"\n")
            size += len(r) + 1
        stats["stack"]["lines"] += len(rec)
        stats["stack"]["records"] += 1
    (out / "stack" / name).write_bytes(b"".join(buf))
    stats["stack"]["bytes"] += size
    # cri: same target size
    buf, size, j, ns = [], 0, 0, 0
    while size < per_file:
        line = lines[(start + j) % len(lines)]
        j += 1
        ns += rng.randint(1000, 40_000_000)
        s = ns // 1_000_000_000
        ts = b"2026-12-01T%02d:%02d:%02d.%09dZ" % ((s // 3600) % 24, (s // 60) % 60, s % 60, ns % 1_000_000_000)
        stream = b"stderr" if re.search(rb"ERROR|WARN|FATAL", line) else b"stdout"
        pieces = [line[k:k + 512] for k in range(0, len(line), 512)]
        for k, p in enumerate(pieces):
            tag = b"F" if k == len(pieces) - 1 else b"P"
            r = b"%s %s %s %s\n" % (ts, stream, tag, p)
            buf.append(r)
            size += len(r)
            stats["cri"]["lines"] += 1
        stats["cri"]["records"] += 1
    (out / "cri" / name).write_bytes(b"".join(buf))
    stats["cri"]["bytes"] += size

with open(out / "expected.env", "w") as f:
    for v, s in stats.items():
        for k, n in s.items():
            f.write(f"{v}_{k}={n}\n")
    # case C: every plain line but the filtered ones
    f.write(f"filtered_records={stats['plain']['records'] - filtered}\n")
print(open(out / "expected.env").read(), end="")
