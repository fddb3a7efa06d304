#!/usr/bin/env python3
"""Exactly-once delivery (Kafka transactions) beside at-least-once and kcat, on one private broker.

    SLUICE_BIN=/path/to/release/sluice bench/exactly_once/run.py

Throughput: ROUNDS rounds (default 3), the order of the three pipelines reversed every other
round, each run to a fresh 4-partition topic, after one unmeasured warm-up of each:

  kcat  `kcat -P -K` of the same lines keyed by file name, the settings of bench/kafka/run.py
        (idempotence, acks=all, lz4, murmur2_random, no delivery timeout) and static headers
        named and sized like sluice's (taken from the warm-up's topic); timed by /usr/bin/time.
  alo   the agent: spooldir -> file channel (capacity 2GiB, default fsync) -> Kafka sink,
        key "%{file}", default headers, default delivery (at least once).
  eos   the same with `delivery: exactly_once` (default transaction_interval 100ms), a
        transactional_id of its own per run (the spool files are hard links of the same inodes,
        so a shared id would find the previous run's positions and skip every line).

Sluice runs are timed from the agent's start (files already in the spool, dated a minute back)
until its /metrics shows sluice_sink_events_total = all lines (delivered to Kafka and, for eos,
committed; spooldir's .COMPLETED only says the file channel has them). CPU: user+system from
/proc/PID/stat then; peak RSS: VmHWM. Every topic is counted read_committed with kcat (must be
exactly the input's line count: high watermarks would count transaction markers) and the sluice
topics are checked with `sluice audit --no-duplicates --expect` (each line once, in order).

Latency: an agent per mode (alo, eos, eos, alo: SAMPLES/2 each, same config) on an empty spool;
a file of 10 lines, dated a minute back, is renamed into the spool and timed until a
read_committed kcat consumer (`-o end`, fetch.wait.max.ms=10, so the consumer's polling adds
little) prints its last line; two warm-up samples per agent are not counted.

Input: bench/pipeline/gen.py (plain variant), TOTAL_MB (default 200) MB in FILES (default 6)
files of Loghub lines (SLUICE_CORPUS). Output: OUT (default /tmp/sluice-eos-bench/DATE):
runs.tsv, latency.tsv, results.md, agent logs; INPUT=DIR reuses generated inputs. Nothing is
written into the repository.
"""
import os, re, random, shutil, signal, socket, statistics, subprocess, sys, threading, time, queue
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("SLUICE_BIN", REPO / "target/release/sluice")).resolve()
TOTAL_MB, FILES = os.environ.get("TOTAL_MB", "200"), int(os.environ.get("FILES", "6"))
ROUNDS, SAMPLES = int(os.environ.get("ROUNDS", "3")), int(os.environ.get("SAMPLES", "20"))
CORPUS = os.environ.get("SLUICE_CORPUS", "/work/shared/corpus/loghub")
OUT = Path(os.environ.get("OUT", f"/tmp/sluice-eos-bench/{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"))
KAFKA_DEV = str(REPO / "scripts/kafka-dev")
PARTITIONS, HZ = 4, os.sysconf("SC_CLK_TCK")
KCAT_SETTINGS = ["-X", "enable.idempotence=true", "-X", "acks=all", "-X", "partitioner=murmur2_random",
                 "-X", "message.timeout.ms=0", "-z", "lz4"]


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load():
    return open("/proc/loadavg").read().split()[0]


def metrics(port):
    """The agent's sink counters, {name: value} (0 when not served yet)."""
    import urllib.request
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return {}
    return {m[1]: float(m[2]) for m in re.finditer(r"^(sluice_sink_\w+)\{[^}]*\} (\S+)$", text, re.M)}


def count_committed(topic):
    """Records of the topic a read_committed consumer gets."""
    p = subprocess.run(["kcat", "-C", "-b", BOOT, "-t", topic, "-e", "-q", "-X", "isolation.level=read_committed",
                        "-f", "\n"], capture_output=True, timeout=600)
    return p.stdout.count(b"\n")


def agent_conf(work, topic, mode, port, tid):
    eos = f"      delivery: exactly_once\n      transactional_id: {tid}\n" if mode == "eos" else ""
    (work / "agent.yaml").write_text(f"""bench:
  data_dir: {work}/data
  shutdown_timeout: 30s
  http: 127.0.0.1:{port}
  sources:
    r1: {{ type: spooldir, dir: {work}/spool, channel: c1 }}
  channels:
    c1: {{ type: file, dir: {work}/channel, capacity: 2GiB }}
  sinks:
    k1:
      type: kafka
      channel: c1
      brokers: {BOOT}
      topic: {topic}
      key: "%{{file}}"
      acks: all
      compression: lz4
{eos}""")


def start_agent(work):
    log = open(work / "agent.log", "w")
    return subprocess.Popen([str(BIN), "agent", "-n", "bench", "-f", str(work / "agent.yaml")],
                            stdout=subprocess.DEVNULL, stderr=log)


def stop_agent(proc, work):
    proc.send_signal(signal.SIGTERM)
    if proc.wait(timeout=60) != 0:
        print(f"  agent exited with {proc.returncode}; see {work}/agent.log", file=sys.stderr)


def sluice_run(mode, tag, topic):
    work = OUT / "work" / f"{mode}-{tag}"
    shutil.rmtree(work, ignore_errors=True)
    (work / "spool").mkdir(parents=True)
    for f in NAMES:
        os.link(INPUT / "plain" / f, work / "spool" / f)
    port = free_port()
    agent_conf(work, topic, mode, port, f"bench-eos-{tag}-{random.randrange(1 << 30)}")
    t0, t0_wall = time.monotonic(), time.time()
    proc = start_agent(work)
    while metrics(port).get("sluice_sink_events_total", 0) < LINES:
        if proc.poll() is not None:
            sys.exit(f"{mode} {tag}: the agent exited early; see {work}/agent.log")
        time.sleep(0.025)
    wall = time.monotonic() - t0
    f = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(f[11]) + int(f[12])) / HZ
    rss = int(re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{proc.pid}/status").read_text())[1])
    m = metrics(port)
    stop_agent(proc, work)
    extra = {k: int(m.get(f"sluice_sink_{k}_total", 0)) for k in
             ("batches", "transactions", "skipped", "rollbacks", "retries", "errors")}
    # eos: how long the producer took to be ready (init_transactions, positions read), from the log.
    ready = re.search(r"^(\S+)Z .*exactly-once delivery ready", (work / "agent.log").read_text(), re.M)
    if ready:
        from datetime import datetime, timezone
        at = datetime.fromisoformat(ready[1]).replace(tzinfo=timezone.utc).timestamp()
        extra["ready_s"] = round(at - t0_wall, 3)
    return wall, cpu, rss, extra, work


def kcat_run(tag, topic):
    work = OUT / "work" / f"kcat-{tag}"
    work.mkdir(parents=True, exist_ok=True)
    hdrs = [x for h in KCAT_HEADERS for x in ("-H", h)]
    sh(["/usr/bin/time", "-f", "%e %U %S %M", "-o", str(work / "time"), "kcat", "-P", "-b", BOOT, "-t", topic,
        "-K", "\\x1f", *KCAT_SETTINGS, *hdrs, "-l", str(INPUT / "kcat-input")])
    wall, user, system, rss = open(work / "time").read().split()[-4:]
    return float(wall), float(user) + float(system), int(rss), {}, work


def one_run(mode, tag):
    topic = f"eosb-{mode}-{tag}-{random.randrange(1 << 20)}"
    sh([KAFKA_DEV, "topic", topic, str(PARTITIONS), "--bootstrap", BOOT])
    ld = load()
    wall, cpu, rss, extra, work = kcat_run(tag, topic) if mode == "kcat" else sluice_run(mode, tag, topic)
    got = count_committed(topic)
    audit = "-"
    if mode != "kcat":
        a = subprocess.run([str(BIN), "audit", "-b", BOOT, "-t", topic, "--no-duplicates",
                            "--expect", str(INPUT / "plain")], capture_output=True, text=True)
        (work / "audit.txt").write_text(a.stdout + a.stderr)
        audit = "ok" if a.returncode == 0 else f"FAILED (see {work}/audit.txt)"
    print(f"{tag:6} {mode:4}: {wall:7.3f} s, {LINES / wall:9,.0f} lines/s, cpu {cpu:6.2f} s, rss {rss // 1024:4} MiB, "
          f"{got} records read_committed (expected {LINES}), audit {audit}, load {ld} {extra or ''}", flush=True)
    if got != LINES or audit != "ok" and mode != "kcat":
        sys.exit(f"{mode} {tag}: topic {topic} holds {got} records read_committed, expected {LINES}; audit {audit}; "
                 f"agent log {work}/agent.log")
    return topic, wall, cpu, rss, extra, ld


def latency_block(mode, tag, n):
    """n samples (plus 2 warm-ups) of drop-a-file-to-read_committed-consumer latency, in seconds."""
    topic = f"eosb-lat-{mode}-{tag}-{random.randrange(1 << 20)}"
    sh([KAFKA_DEV, "topic", topic, str(PARTITIONS), "--bootstrap", BOOT])
    work = OUT / "work" / f"lat-{mode}-{tag}"
    shutil.rmtree(work, ignore_errors=True)
    (work / "spool").mkdir(parents=True)
    (work / "stage").mkdir()
    port = free_port()
    agent_conf(work, topic, mode, port, f"bench-eos-lat-{tag}-{random.randrange(1 << 30)}")
    cons = subprocess.Popen(["kcat", "-C", "-b", BOOT, "-t", topic, "-o", "end", "-u", "-q", "-f", "%s\n",
                             "-X", "isolation.level=read_committed", "-X", "fetch.wait.max.ms=10"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    seen = queue.Queue()
    threading.Thread(target=lambda: [seen.put((time.monotonic(), l)) for l in cons.stdout], daemon=True).start()
    time.sleep(3)  # the consumer assigns the partitions at their end
    proc = start_agent(work)
    out = []
    for i in range(n + 2):
        marker = f"lat {mode} {tag} {i} last".encode()
        f = work / "stage" / f"lat-{i}.log"
        f.write_bytes(b"".join(b"lat %s %s %d line %d %s\n" % (mode.encode(), tag.encode(), i, j, b"x" * 100)
                               for j in range(9)) + marker + b"\n")
        old = time.time() - 60
        os.utime(f, (old, old))  # read at once, not after ready_after
        t0 = time.monotonic()
        os.rename(f, work / "spool" / f.name)
        while True:
            t, line = seen.get(timeout=60)
            if line.rstrip(b"\n") == marker:
                break
        if i >= 2:
            out.append(t - t0)
        time.sleep(random.uniform(0.3, 0.6))  # de-phase the drops from the transaction timer
    m = metrics(port)
    stop_agent(proc, work)
    cons.terminate()
    cons.wait()
    got = count_committed(topic)
    if got != (n + 2) * 10:
        sys.exit(f"latency {mode} {tag}: {got} records read_committed, expected {(n + 2) * 10}")
    print(f"latency {mode} {tag}: median {statistics.median(out) * 1e3:.0f} ms over {n}; "
          f"transactions {int(m.get('sluice_sink_transactions_total', 0))}, load {load()}", flush=True)
    return out


def main():
    global BOOT, INPUT, NAMES, LINES, BYTES, KCAT_HEADERS
    OUT.mkdir(parents=True, exist_ok=True)
    INPUT = Path(os.environ.get("INPUT", OUT / "input"))
    if not (INPUT / "expected.env").exists():
        print(f"generating {TOTAL_MB} MB in {FILES} files into {INPUT} ...", flush=True)
        sh([sys.executable, str(REPO / "bench/pipeline/gen.py"), CORPUS, str(INPUT), TOTAL_MB, str(FILES)])
        for v in ("stack", "cri"):  # gen.py writes three variants; only plain is used here
            shutil.rmtree(INPUT / v)
    env = dict(l.split("=") for l in (INPUT / "expected.env").read_text().split())
    LINES, BYTES = int(env["plain_lines"]), int(env["plain_bytes"])
    NAMES = sorted(p.name for p in (INPUT / "plain").glob("*.log"))
    for n in NAMES:
        os.utime(INPUT / "plain" / n, (time.time() - 60,) * 2)
    if not (INPUT / "kcat-input").exists():
        with open(INPUT / "kcat-input.tmp", "wb") as k:
            for n in NAMES:
                for line in open(INPUT / "plain" / n, "rb"):
                    k.write(n.encode() + b"\x1f" + line)
        os.rename(INPUT / "kcat-input.tmp", INPUT / "kcat-input")

    broker = OUT / "broker"
    shutil.rmtree(broker, ignore_errors=True)
    port = free_port()
    sh([KAFKA_DEV, "start", "--dir", str(broker), "--port", str(port), "--owner-pid", str(os.getpid())])
    BOOT = f"127.0.0.1:{port}"
    load0 = open("/proc/loadavg").read().strip()
    setup = (f"{os.cpu_count()} cores, {BIN} ({sh([str(BIN), '--version']).stdout.strip()}), "
             f"{LINES} lines / {BYTES} bytes in {len(NAMES)} files, rounds {ROUNDS}, latency samples {SAMPLES}; "
             f"started {time.strftime('%F %T', time.gmtime())} UTC, load {load0}")
    print(setup, flush=True)
    rows = []
    try:
        # Warm-up (not measured): JIT, page cache; the alo topic gives sluice's header names and sizes.
        KCAT_HEADERS = []
        topic, *_ = one_run("alo", "warm")
        h = next(filter(None, (sh(["kcat", "-C", "-b", BOOT, "-t", topic, "-p", str(p), "-o", "-1", "-c", "1", "-e",
                                   "-q", "-f", "%h"]).stdout.strip() for p in range(PARTITIONS))))  # a late line
        print(f"sluice's headers: {h}")
        KCAT_HEADERS = [f"{k}={'x' * len(v)}" for k, v in (kv.split("=", 1) for kv in h.split(","))]
        print(f"kcat headers: {', '.join(k.split('=')[0] + f'({len(k.split(chr(61))[1])} B)' for k in KCAT_HEADERS)}")
        one_run("kcat", "warm")
        one_run("eos", "warm")
        for r in range(1, ROUNDS + 1):
            order = ["kcat", "alo", "eos"] if r % 2 else ["eos", "alo", "kcat"]
            for mode in order:
                _, wall, cpu, rss, extra, ld = one_run(mode, f"r{r}")
                rows.append((mode, r, wall, cpu, rss, extra, ld))
        lat = {"alo": [], "eos": []}
        for i, mode in enumerate(["alo", "eos", "eos", "alo"]):
            lat[mode] += latency_block(mode, f"h{i}", SAMPLES // 2)
    finally:
        subprocess.run([KAFKA_DEV, "stop", "--dir", str(broker)], capture_output=True)
    load1 = open("/proc/loadavg").read().strip()

    with open(OUT / "runs.tsv", "w") as f:
        f.write("mode\tround\twall_s\tcpu_s\tpeak_rss_kib\tload1\tcounters\n")
        for mode, r, wall, cpu, rss, extra, ld in rows:
            f.write(f"{mode}\t{r}\t{wall:.3f}\t{cpu:.2f}\t{rss}\t{ld}\t{extra}\n")
    with open(OUT / "latency.tsv", "w") as f:
        for mode, xs in lat.items():
            f.write("".join(f"{mode}\t{x:.4f}\n" for x in xs))

    med = lambda mode, key: statistics.median(key(x) for x in rows if x[0] == mode)
    out = [setup, f"finished, load {load1}", "",
           "| pipeline | wall s | lines/s | MB/s | CPU s | CPU s per GB | peak RSS MiB |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for mode in ("kcat", "alo", "eos"):
        out.append(f"| {mode} | {med(mode, lambda x: x[2]):.2f} | {med(mode, lambda x: LINES / x[2]):,.0f} | "
                   f"{med(mode, lambda x: BYTES / x[2] / 1e6):.1f} | {med(mode, lambda x: x[3]):.2f} | "
                   f"{med(mode, lambda x: x[3] / (BYTES / 1e9)):.1f} | {med(mode, lambda x: x[4] / 1024):.0f} |")
    lps = {m: med(m, lambda x: LINES / x[2]) for m in ("kcat", "alo", "eos")}
    by = {(x[0], x[1]): x for x in rows}
    per_round = lambda a, b: [by[(b, r)][2] / by[(a, r)][2] for r in range(1, ROUNDS + 1)]
    out += ["", f"eos/kcat lines/s: {lps['eos'] / lps['kcat']:.2f}x (medians; per round "
                f"{', '.join(f'{x:.2f}' for x in per_round('eos', 'kcat'))}); "
                f"eos/alo: {lps['eos'] / lps['alo']:.2f}x (per round {', '.join(f'{x:.2f}' for x in per_round('eos', 'alo'))}); "
                f"alo/kcat: {lps['alo'] / lps['kcat']:.2f}x"]
    for mode, r, wall, cpu, rss, extra, ld in rows:
        if mode == "eos" and extra.get("transactions"):
            out.append(f"eos round {r}: {extra['transactions']} transactions, {extra['batches']} batches, "
                       f"{extra['batches'] / extra['transactions']:.1f} batches and "
                       f"{LINES / extra['transactions']:,.0f} lines per transaction, "
                       f"{extra['transactions'] / wall:.1f} per s; skipped {extra['skipped']}, rollbacks {extra['rollbacks']}; "
                       f"ready {extra.get('ready_s', 0):.2f} s after start, {LINES / (wall - extra.get('ready_s', 0)):,.0f} "
                       f"lines/s from then on")
    q = lambda xs, p: sorted(xs)[max(0, int(-(-len(xs) * p // 1)) - 1)]  # nearest rank
    out += ["", "| latency (drop 10 lines -> read_committed consumer) | samples | median ms | p90 ms | min ms | max ms |",
            "|---|---:|---:|---:|---:|---:|"]
    for mode, xs in lat.items():
        out.append(f"| {mode} | {len(xs)} | {statistics.median(xs) * 1e3:.0f} | {q(xs, 0.9) * 1e3:.0f} | "
                   f"{min(xs) * 1e3:.0f} | {max(xs) * 1e3:.0f} |")
    (OUT / "results.md").write_text("\n".join(out) + "\n")
    print("\n" + "\n".join(out) + f"\n\nresults in {OUT}")


if __name__ == "__main__":
    main()
