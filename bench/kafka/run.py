#!/usr/bin/env python3
"""Kafka sink benchmark: spooldir -> memory channel -> Kafka with the real `sluice` binary,
beside `kcat -P` producing the same lines with the same settings, against one local broker.

    bench/kafka/run.py [--lines N] [--files F] [--runs R] [--apis]

It starts a private broker with scripts/kafka-dev, makes F spool files of N lines in all from
the Loghub corpus (LF line ends), and for each of R rounds runs, on fresh 4-partition topics:

  sluice   the agent (release build) with the spool files already in its spool folder; timed
           from its start until every file is renamed .COMPLETED (every line acknowledged by
           Kafka and committed); CPU is the process's user+system time at that moment.
  kcat     `kcat -P -l` on one file holding the same lines, each prefixed with its file name as
           the key (-K), with the same librdkafka settings (idempotence, acks=all, lz4,
           murmur2_random); timed by /usr/bin/time (kcat waits for every delivery report).

Two pairings: `headers` (sluice's default path and offset headers; kcat sends two static
headers of the same sizes) and `plain` (sluice with `headers: []`, kcat without -H).
Every run's topic is checked to hold exactly N records. SLUICE_SINK_OPTIONS adds sink options
(`;`-separated YAML lines, e.g. `batch_size: 5000; batches_in_flight: 16`) for experiments;
SLUICE_PRELOAD sets LD_PRELOAD for sluice only (to try another malloc). With --apis it also runs the
producer_apis example (the sink's producer against rdkafka's ThreadedProducer and
FutureProducer). SLUICE_BIN and PRODUCER_APIS pick pre-built binaries instead of building them.
Results (medians) are printed as a Markdown table and written to bench/out/kafka/results.md
(BENCH_OUT: another folder).
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
from loghub import CORPUS, corpus_lines  # noqa: E402 (the shared corpus reader)
OUT = Path(os.environ.get("BENCH_OUT", REPO / "bench" / "out" / "kafka"))
PARTITIONS = 4
CLK_TCK = os.sysconf("SC_CLK_TCK")
KCAT_SETTINGS = [
    "-X", "enable.idempotence=true", "-X", "acks=all", "-X", "partitioner=murmur2_random",
    "-X", "message.timeout.ms=0", "-z", "lz4",
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def make_inputs(total, files, gen):
    """F spool files of total/F lines each, and kcat's key-prefixed input of the same lines."""
    gen.mkdir(parents=True, exist_ok=True)
    stamp = gen / "stamp"
    want = f"{total} {files}"
    names = [f"app-{i}.log" for i in range(files)]
    if stamp.exists() and stamp.read_text() == want:
        return names, int((gen / "bytes").read_text())
    corpus = corpus_lines()
    per_file = total // files
    payload = 0
    with open(gen / "kcat-input", "wb") as kin:
        for i, name in enumerate(names):
            start = (i * 7919) % len(corpus)
            with open(gen / name, "wb") as out:
                for j in range(per_file):
                    line = corpus[(start + j) % len(corpus)]
                    payload += len(line)
                    out.write(line + b"\n")
                    kin.write(name.encode() + b"\x1f" + line + b"\n")
    (gen / "bytes").write_text(str(payload))
    stamp.write_text(want)
    return names, payload


def topic_records(bootstrap, topic):
    """The records in a fresh topic: the sum over partitions of the last offset + 1."""
    total = 0
    for p in range(PARTITIONS):
        r = subprocess.run(
            ["kcat", "-C", "-b", bootstrap, "-t", topic, "-p", str(p), "-o", "-1", "-c", "1",
             "-e", "-q", "-f", "%o\n"],
            text=True, capture_output=True, timeout=60)
        last = r.stdout.strip()
        total += int(last) + 1 if last else 0
    return total


def create_topic(bootstrap, topic):
    run([str(REPO / "scripts/kafka-dev"), "topic", topic, str(PARTITIONS), "--bootstrap", bootstrap])


def sluice_run(bin_path, bootstrap, topic, names, gen, work, headers):
    shutil.rmtree(work, ignore_errors=True)
    spool, data = work / "spool", work / "data"
    spool.mkdir(parents=True)
    for n in names:
        os.link(gen / n, spool / n)
    header_opt = "" if headers else "      headers: []\n"
    # Extra sink options for tuning experiments, e.g. SLUICE_SINK_OPTIONS='batch_size: 5000'.
    for opt in filter(None, os.environ.get("SLUICE_SINK_OPTIONS", "").split(";")):
        header_opt += f"      {opt.strip()}\n"
    conf = work / "bench.yaml"
    conf.write_text(
        f"""bench:
  data_dir: {data}
  shutdown_timeout: 30s
  sources:
    r1: {{ type: spooldir, dir: {spool}, channel: c1 }}
  channels:
    c1: {{ type: memory }}
  sinks:
    k1:
      type: kafka
      channel: c1
      brokers: {bootstrap}
      topic: {topic}
{header_opt}""")
    log = open(work / "agent.log", "w")
    t0 = time.monotonic()
    env = dict(os.environ)
    if os.environ.get("SLUICE_PRELOAD"):
        # An allocator to try for sluice only, e.g. /usr/lib/x86_64-linux-gnu/libjemalloc.so.2.
        env["LD_PRELOAD"] = os.environ["SLUICE_PRELOAD"]
    proc = subprocess.Popen([str(bin_path), "agent", "-n", "bench", "-f", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=log, env=env)
    while True:
        done = sum(1 for p in spool.iterdir() if p.name.endswith(".COMPLETED"))
        if done == len(names):
            break
        if proc.poll() is not None:
            sys.exit(f"sluice exited early; see {work / 'agent.log'}")
        time.sleep(0.02)
    wall = time.monotonic() - t0
    fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    proc.send_signal(signal.SIGTERM)
    if proc.wait(timeout=60) != 0:
        sys.exit(f"sluice exited with {proc.returncode}; see {work / 'agent.log'}")
    return wall, cpu


def kcat_run(bootstrap, topic, gen, work, headers):
    work.mkdir(parents=True, exist_ok=True)
    timing = work / "kcat.time"
    cmd = ["/usr/bin/time", "-f", "%e %U %S", "-o", str(timing),
           "kcat", "-P", "-b", bootstrap, "-t", topic, "-K", "\\x1f", *KCAT_SETTINGS]
    if headers:
        # The same sizes as sluice's headers: the spool file's path, an offset of 9 digits.
        cmd += ["-H", f"path={work.parent / 'sluice' / 'spool' / 'app-0.log'}", "-H", "offset=123456789"]
    cmd += ["-l", str(gen / "kcat-input")]
    run(cmd)
    wall, user, system = (float(x) for x in timing.read_text().split()[-3:])
    return wall, user + system


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    kcat_v = subprocess.run(["kcat", "-V"], text=True, capture_output=True).stdout
    librdkafka = next((l.strip() for l in kcat_v.splitlines() if "librdkafka" in l), "?")
    return f"{os.cpu_count()} cores ({cpu}), kcat with {librdkafka}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=3_000_000)
    ap.add_argument("--files", type=int, default=6)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--apis", action="store_true")
    args = ap.parse_args()

    if os.environ.get("SLUICE_BIN"):
        bin_path = Path(os.environ["SLUICE_BIN"]).resolve()
    else:
        print("building sluice (release)...", flush=True)
        run(["cargo", "build", "--release", "-p", "sluice-agent", "--bin", "sluice"], cwd=REPO)
        bin_path = REPO / "target/release/sluice"
    if os.environ.get("PRODUCER_APIS"):
        apis_path = Path(os.environ["PRODUCER_APIS"]).resolve()
    else:
        apis_path = REPO / "target/release/examples/producer_apis"
        if args.apis:
            run(["cargo", "build", "--release", "-p", "sluice-sinks", "--example", "producer_apis"], cwd=REPO)
    OUT.mkdir(parents=True, exist_ok=True)
    names, payload = make_inputs(args.lines, args.files, OUT / "input")
    lines = (args.lines // args.files) * args.files

    broker_dir = OUT / "broker"
    shutil.rmtree(broker_dir, ignore_errors=True)
    port = free_port()
    run([str(REPO / "scripts/kafka-dev"), "start", "--dir", str(broker_dir), "--port", str(port),
         "--owner-pid", str(os.getpid())])
    bootstrap = f"127.0.0.1:{port}"
    results = {}
    load_before = os.getloadavg()
    try:
        if args.apis:
            create_topic(bootstrap, "bench-apis")
            for mode in ["sink", "threaded", "future"] * args.runs:
                r = run([str(apis_path), mode, bootstrap,
                         "bench-apis", "2000000", str(CORPUS)])
                rec = json.loads(r.stdout.strip().splitlines()[-1])
                results.setdefault(("apis", mode), []).append((rec["wall_s"], rec["cpu_s"], rec["records"]))
                print(json.dumps(rec), flush=True)
        # Warm the broker up (JIT, page cache) before anything is measured.
        create_topic(bootstrap, "bench-warmup")
        kcat_run(bootstrap, "bench-warmup", OUT / "input", OUT / "work" / "kcat", True)
        for i in range(args.runs):
            for pairing in ["headers", "plain"]:
                headers = pairing == "headers"
                # Alternate which tool goes first, so that neither always meets a fresher broker.
                for tool in ["sluice", "kcat"] if i % 2 == 0 else ["kcat", "sluice"]:
                    topic = f"bench-{tool}-{pairing}-{i}"
                    create_topic(bootstrap, topic)
                    work = OUT / "work" / tool
                    if tool == "sluice":
                        wall, cpu = sluice_run(bin_path, bootstrap, topic, names, OUT / "input", work, headers)
                    else:
                        wall, cpu = kcat_run(bootstrap, topic, OUT / "input", work, headers)
                    got = topic_records(bootstrap, topic)
                    if got != lines:
                        sys.exit(f"{topic}: {got} records, expected {lines}")
                    results.setdefault((pairing, tool), []).append((wall, cpu, lines))
                    print(f"round {i} {pairing:7} {tool:6}: {wall:6.2f} s, {lines / wall:9.0f} lines/s, "
                          f"{payload / wall / 1e6:6.1f} MB/s, cpu {cpu:5.2f} s", flush=True)
    finally:
        subprocess.run([str(REPO / "scripts/kafka-dev"), "stop", "--dir", str(broker_dir)], capture_output=True)
    load_after = os.getloadavg()

    def med(key, i):
        return statistics.median(r[i] for r in results[key])

    rows = [
        f"Machine: {machine()}. Load average before/after: "
        f"{load_before[0]:.2f} / {load_after[0]:.2f}.",
        f"Input: {lines} lines, {payload / 1e6:.1f} MB of line bodies, {args.files} files; "
        f"topics of {PARTITIONS} partitions; medians of {args.runs} runs.",
        "",
        "| pairing | tool | lines/s | MB/s | CPU s per GB | throughput vs kcat |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for pairing in ["headers", "plain"]:
        kcat_wall = med((pairing, "kcat"), 0)
        for tool in ["sluice", "kcat"]:
            wall, cpu = med((pairing, tool), 0), med((pairing, tool), 1)
            rows.append(f"| {pairing} | {tool} | {lines / wall:,.0f} | {payload / wall / 1e6:.1f} | "
                        f"{cpu / (payload / 1e9):.1f} | {kcat_wall / wall:.2f}x |")
    if args.apis:
        rows += ["", "| producer API (2M records) | records/s | CPU ns per record |", "|---|---:|---:|"]
        for mode in ["sink", "threaded", "future"]:
            wall, cpu, n = med(("apis", mode), 0), med(("apis", mode), 1), results[("apis", mode)][0][2]
            rows.append(f"| {mode} | {n / wall:,.0f} | {cpu * 1e9 / n:,.0f} |")
    table = "\n".join(rows)
    (OUT / "results.md").write_text(table + "\n")
    print("\n" + table)


if __name__ == "__main__":
    main()
