#!/usr/bin/env python3
"""Sluice beside its peers: kcat, Apache Flume 1.11 and rsyslog (omkafka), shipping the same
lines into one private Kafka broker with equivalent producer settings.

    bench/peers/run.py [--mb 1000] [--files 8] [--runs 3] [--only kcat,sluice-mem,...]

See bench/peers/README.md for what is measured and how; RESULTS.md holds the last full run.
Python 3 standard library only. Everything generated goes to bench/out/peers/ (PEERS_OUT).
"""

import argparse
import bisect
import datetime
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
from loghub import CORPUS, corpus_lines  # noqa: E402 (the shared corpus reader)
HERE = REPO / "bench" / "peers"
OUT = Path(os.environ.get("PEERS_OUT", REPO / "bench" / "out" / "peers"))
KAFKA_DEV = str(REPO / "scripts" / "kafka-dev")
FLUME_DEV = str(REPO / "scripts" / "flume-dev")
FLUME_CACHE = Path(os.environ.get("SLUICE_FLUME_CACHE", REPO / ".cache" / "flume"))
PARTITIONS = 4
CLK_TCK = os.sysconf("SC_CLK_TCK")
POLL = 0.1  # seconds between two looks at the topic's end offsets
FLUME_HEAP = "1g"
FLUME_BATCH = 2000  # Flume's sink batch (flumeBatchSize) = Sluice's Kafka sink batch_size default
SOURCE_BATCH = 1000  # source batch of every agent (Sluice's spooldir/taildir default)
FLUME_MEM_CAPACITY = 100000  # Flume memory channel capacity (events)
FLUME_MEM_TXN = 10000  # and its transactionCapacity
WARM_LINE = b"warm-up line: the pipeline is up\n"

# Producer settings shared by every tool, in librdkafka's names (kcat, rsyslog's omkafka, Sluice)
# and the Java client's (Flume). librdkafka's batch.size default is 1000000; the Java client's
# is 16384, raised to the same 1000000 for Flume.
RDKAFKA = {"enable.idempotence": "true", "acks": "all", "compression.codec": "lz4",
           "linger.ms": "5", "partitioner": "murmur2_random", "message.timeout.ms": "0"}
JAVA_PRODUCER = {"acks": "all", "enable.idempotence": "true", "compression.type": "lz4",
                 "linger.ms": "5", "batch.size": "1000000",
                 "max.in.flight.requests.per.connection": "5"}

PIPELINES = {
    # name: (kind, description)
    "kcat": ("baseline", "kcat -P -K (librdkafka), one process, lines key-prefixed"),
    "kcat-headers": ("baseline", "kcat -P -K with three static -H record headers the sizes of Sluice's "
                                 "default `path`, `offset` and `fid`"),
    "sluice-mem": ("mem", "Sluice spooldir -> memory channel -> Kafka"),
    "sluice-mem-headers": ("mem", "Sluice spooldir -> memory channel -> Kafka with its default record "
                                  "headers (`path`, `offset`, `fid`)"),
    "sluice-file": ("file", "Sluice spooldir -> file channel (fsync: always) -> Kafka"),
    "sluice-eos": ("file", "Sluice spooldir -> file channel -> Kafka, delivery: exactly_once"),
    "sluice-tail": ("tail", "Sluice taildir (files written while tailed) -> file channel -> Kafka"),
    "flume-mem": ("mem", "Flume spooldir -> memory channel -> KafkaSink"),
    "flume-file": ("file", "Flume spooldir -> file channel -> KafkaSink"),
    "flume-tail": ("tail", "Flume TAILDIR (files written while tailed) -> file channel -> KafkaSink"),
    "rsyslog-tail": ("tail", "rsyslog imfile (files written while tailed) -> omkafka"),
}
FLUME_OF_KIND = {"mem": "flume-mem", "file": "flume-file", "tail": "flume-tail"}


def kcat_of(pl):
    """The kcat a pipeline is compared with: the one sending record headers for those that do."""
    return "kcat-headers" if pl.endswith("-headers") else "kcat"


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# Kafka, spoken directly: ListOffsets v1 (the end offset of each partition), cheap enough to ask
# ten times a second while a tool runs (a kcat process per look would cost CPU on 2 cores).

def _kstr(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def end_offsets(bootstrap, topic):
    host, port = bootstrap.rsplit(":", 1)
    body = struct.pack(">ii", -1, 1) + _kstr(topic) + struct.pack(">i", PARTITIONS)
    for p in range(PARTITIONS):
        body += struct.pack(">iq", p, -1)  # -1: the latest offset (high watermark)
    req = struct.pack(">hhi", 2, 1, 1) + _kstr("sluice-peers-bench") + body
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(struct.pack(">i", len(req)) + req)

        def recv(n):
            buf = b""
            while len(buf) < n:
                chunk = s.recv(n - len(buf))
                if not chunk:
                    raise OSError("broker closed the connection")
                buf += chunk
            return buf

        data = recv(struct.unpack(">i", recv(4))[0])
    pos, total = 8, 0  # correlation id, topic count (1)
    pos += 2 + struct.unpack_from(">h", data, pos)[0]
    for _ in range(struct.unpack_from(">i", data, pos)[0]):
        part, err, _ts, off = struct.unpack_from(">ihqq", data, pos + 4)
        pos += 22
        if err:
            raise OSError(f"ListOffsets: error {err} on {topic}/{part}")
        total += off
    return total


def create_topic(bootstrap, topic):
    # LogAppendTime: every record carries the broker's time of appending it, the tools' own
    # CreateTime meaning different things (Sluice: read time; Java and librdkafka: produce call).
    sh([KAFKA_DEV, "topic", topic, str(PARTITIONS), "--bootstrap", bootstrap,
        "--config", "message.timestamp.type=LogAppendTime"])


def read_topic(bootstrap, topic, fmt):
    """A kcat consumer of the whole topic (read_committed), yielding its output lines."""
    p = subprocess.Popen(["kcat", "-C", "-b", bootstrap, "-t", topic, "-e", "-q", "-u",
                          "-X", "isolation.level=read_committed", "-f", fmt],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for line in p.stdout:
        yield line
    if p.wait() != 0:
        raise RuntimeError(f"kcat -C {topic}: {p.stderr.read().decode(errors='replace')[-500:]}")


# ---------------------------------------------------------------------------------------------
# Processes: CPU and peak RSS of a process and its descendants, from /proc.

def _stat(pid):
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(f[1]), (int(f[11]) + int(f[12])) / CLK_TCK  # ppid, user+system seconds
    except (OSError, IndexError, ValueError):
        return None, 0.0


def tree(pid):
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            ppid, _ = _stat(d)
            if ppid is not None:
                kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def tree_usage(pid):
    """(cpu seconds, peak RSS KiB) summed over the process tree."""
    cpu, hwm = 0.0, 0
    for p in tree(pid):
        cpu += _stat(p)[1]
        try:
            m = re.search(r"VmHWM:\s+(\d+)", Path(f"/proc/{p}/status").read_text())
            hwm += int(m[1]) if m else 0
        except OSError:
            pass
    return cpu, hwm


def stop(proc, timeout=60):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------------------------
# Input

def make_inputs(mb, files):
    """FILES files of MB/FILES MB of Loghub lines (bench/pipeline/gen.py's plain variant: CR
    stripped, empty lines left out, LF-terminated, file i starting at line i*7919 of the corpus),
    and kcat's input: the same lines, each prefixed with its file's name and \\x1f."""
    gen = OUT / f"input-{mb}mb-{files}f"
    meta_path = gen / "meta.json"
    if meta_path.exists():
        return gen, json.loads(meta_path.read_text())
    log(f"generating {mb} MB in {files} files into {gen} ...")
    shutil.rmtree(gen, ignore_errors=True)
    gen.mkdir(parents=True)
    corpus = corpus_lines()
    per_file = int(mb * 1e6 / files)
    meta = {"files": {}, "corpus": str(CORPUS)}
    with open(gen / "kcat-input", "wb") as kin:
        for i in range(files):
            name = f"app-{i}.log"
            start, size, n, buf, kbuf = (i * 7919) % len(corpus), 0, 0, [], []
            prefix = name.encode() + b"\x1f"
            while size < per_file:
                line = corpus[(start + n) % len(corpus)]
                n += 1
                buf.append(line + b"\n")
                kbuf.append(prefix + line + b"\n")
                size += len(line) + 1
            (gen / name).write_bytes(b"".join(buf))
            kin.write(b"".join(kbuf))
            meta["files"][name] = {"lines": n, "bytes": size, "body_bytes": size - n}
    # Finished long ago: a spooldir takes a file dropped in at once.
    old = time.time() - 120
    for f in gen.iterdir():
        os.utime(f, (old, old))
    meta_path.write_text(json.dumps(meta, indent=1))
    return gen, meta


WRITER = r"""
import os, sys, time
srcs, dst, rate, chunk, out = sys.argv[1].split(","), sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
ins = [open(s, "rb") for s in srcs]
fds = [os.open(os.path.join(dst, os.path.basename(s)), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) for s in srcs]
rest, lines, log, done, written = [b""] * len(srcs), [0] * len(srcs), [], 0, 0
t0 = time.time()
while done < len(srcs):
    done = 0
    for i, f in enumerate(ins):
        data = f.read(chunk) if f else b""
        if not data:
            done += 1
            continue
        data = rest[i] + data
        cut = data.rfind(b"\n") + 1
        rest[i] = data[cut:]
        if cut:
            os.write(fds[i], data[:cut])
            lines[i] += data.count(b"\n", 0, cut)
            now = time.time()
            log.append(f"{i}\t{lines[i]}\t{now:.6f}\n")
            written += cut
            if rate > 0:
                ahead = t0 + written / rate - now
                if ahead > 0:
                    time.sleep(ahead)
with open(out, "w") as f:
    f.write("".join(log))
"""


# ---------------------------------------------------------------------------------------------
# Configurations

def sluice_conf(pl, work, bootstrap, topic, http_port, memory_opts=(), sink_opts=()):
    """The agent's YAML; MEMORY_OPTS (`key: value` each) go into the memory channel's map and
    SINK_OPTS (`key: value` each) under the Kafka sink (--sluice-memory, --sluice-sink)."""
    if pl == "sluice-tail":
        source = f"{{ type: taildir, paths: ['{work}/tail/*.log'], channel: c1 }}"
        key = '"%{path}"'  # the full path, as Flume's TAILDIR fileHeader and rsyslog's filename
    else:
        source = f"{{ type: spooldir, dir: {work}/spool, channel: c1 }}"
        key = '"%{file}"'
    memory = "{ type: memory" + "".join(f", {o}" for o in memory_opts) + " }"
    channel = memory if pl.startswith("sluice-mem") else \
        f"{{ type: file, dir: {work}/channel, capacity: 2GiB, fsync: always }}"
    # no record headers, like the other tools, except where Sluice's defaults are measured
    headers = "" if pl.endswith("-headers") else "      headers: []\n"
    extra = "".join(f"      {o}\n" for o in sink_opts)
    eos = ""
    if pl == "sluice-eos":
        eos = (f"      delivery: exactly_once\n"
               f"      transactional_id: peers-{random.randrange(1 << 40):x}\n")
    return f"""bench:
  data_dir: {work}/data
  shutdown_timeout: 30s
  http: 127.0.0.1:{http_port}
  sources:
    r1: {source}
  channels:
    c1: {channel}
  sinks:
    k1:
      type: kafka
      channel: c1
      brokers: {bootstrap}
      topic: {topic}
      key: {key}
{headers}      acks: all
      compression: lz4
      producer: {{ linger.ms: 5 }}
{eos}{extra}"""


def flume_conf(pl, work, bootstrap, topic):
    lines = ["a1.sources = r1", "a1.channels = c1", "a1.sinks = k1"]
    src = "a1.sources.r1."
    if pl == "flume-tail":
        lines += [f"{src}type = TAILDIR", f"{src}positionFile = {work}/taildir_position.json",
                  f"{src}filegroups = f1", f"{src}filegroups.f1 = {work}/tail/.*\\\\.log",
                  f"{src}fileHeader = true", f"{src}fileHeaderKey = key"]
    else:
        lines += [f"{src}type = spooldir", f"{src}spoolDir = {work}/spool",
                  f"{src}basenameHeader = true", f"{src}basenameHeaderKey = key",
                  # the default 2048 would cut the corpus's longest lines (2521 bytes) in two
                  f"{src}deserializer.maxLineLength = 1048576"]
    lines += [f"{src}channels = c1", f"{src}batchSize = {SOURCE_BATCH}"]
    ch = "a1.channels.c1."
    if pl == "flume-mem":
        lines += [f"{ch}type = memory", f"{ch}capacity = {FLUME_MEM_CAPACITY}",
                  f"{ch}transactionCapacity = {FLUME_MEM_TXN}"]
    else:
        lines += [f"{ch}type = file", f"{ch}checkpointDir = {work}/channel/checkpoint",
                  f"{ch}dataDirs = {work}/channel/data", f"{ch}capacity = 10000000",
                  f"{ch}transactionCapacity = 10000"]
    sk = "a1.sinks.k1."
    lines += [f"{sk}type = org.apache.flume.sink.kafka.KafkaSink", f"{sk}channel = c1",
              f"{sk}kafka.bootstrap.servers = {bootstrap}", f"{sk}kafka.topic = {topic}",
              f"{sk}flumeBatchSize = {FLUME_BATCH}"]
    lines += [f"{sk}kafka.producer.{k} = {v}" for k, v in JAVA_PRODUCER.items()]
    return "\n".join(lines) + "\n"


def rsyslog_conf(work, bootstrap, topic):
    conf = [f'{k}={v}' for k, v in RDKAFKA.items() if k != "partitioner"]
    return f"""global(workDirectory="{work}/state" maxMessageSize="64k")
module(load="imfile" mode="inotify")
module(load="omkafka")
template(name="line" type="string" string="%rawmsg%")
template(name="fkey" type="string" string="%$!metadata!filename%")
ruleset(name="kafka") {{
  action(type="omkafka" broker=["{bootstrap}"] topic="{topic}" template="line"
         dynaKey="on" key="fkey" partitions.auto="on"
         confParam={json.dumps(conf)}
         topicConfParam=["partitioner=murmur2_random"])
}}
input(type="imfile" file="{work}/tail/*.log" tag="peers" addMetadata="on" ruleset="kafka")
"""


# ---------------------------------------------------------------------------------------------
# Runs

class Ctx:
    pass


def metric(port, name):
    """The sum of a metric's series on a Sluice agent's /metrics (0 when it cannot be read)."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return 0
    return sum(float(m[1]) for m in re.finditer(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", text, re.M))


def sink_events(port):
    return metric(port, "sluice_sink_events_total")


def wait_delivered(ctx, proc, delivered, expected, what):
    """Polls delivered() until it reaches expected; raises when the process exits or nothing
    moves for --stall seconds."""
    last, last_change, err = -1, time.monotonic(), None
    while True:
        try:
            got = delivered()
        except OSError as e:  # a partition without its leader yet (a new topic), a busy broker
            got = max(last, 0)
            err = e
        now = time.monotonic()
        if got >= expected:
            return now
        if got != last:
            last, last_change = got, now
        elif now - last_change > ctx.args.stall:
            raise RuntimeError(f"{what}: stalled at {got} of {expected} records for {ctx.args.stall} s"
                               + (f" (last error: {err})" if err else ""))
        if proc is not None and proc.poll() is not None and proc.returncode != 0:
            raise RuntimeError(f"{what}: the process exited with {proc.returncode}")
        time.sleep(POLL)


def check_topic(ctx, topic, expected, tail_log=None, work=None):
    """Every record of the topic, read back (read_committed): the count and value bytes per key
    must equal each file's lines and bytes. For tailing runs, also each line's latency: the
    record's LogAppendTime minus the time the writer had written that line (records of one key
    are in one partition in file order, so the n-th record of a key is the file's n-th line)."""
    counts, sizes, lat = {}, {}, []
    hdr_n, hdr_b = 0, 0  # record headers: how many, and the bytes of their names and values
    marks = {}
    if tail_log:
        names = ctx.names
        for row in open(tail_log):
            i, n, t = row.split("\t")
            m = marks.setdefault(names[int(i)], ([], []))
            m[0].append(int(n))
            m[1].append(float(t))
    for row in read_topic(ctx.bootstrap, topic, "%k\t%S\t%T\t%h\n"):
        k, s, t, h = row.rstrip(b"\n").rsplit(b"\t", 3)
        if h:  # "n=v,n=v" (none of these headers holds a comma)
            hs = h.split(b",")
            hdr_n += len(hs)
            hdr_b += len(h) - 2 * len(hs) + 1  # less the '=' and ','
        k = os.path.basename(k.decode(errors="replace"))
        n = counts.get(k, 0) + 1
        counts[k] = n
        sizes[k] = sizes.get(k, 0) + int(s)
        if tail_log and k in marks:
            cum, times = marks[k]
            j = bisect.bisect_left(cum, n)
            if j < len(times):
                lat.append(int(t) / 1000 - times[j])
    want = {k: (v["lines"], v["body_bytes"]) for k, v in ctx.meta["files"].items()}
    want.update(expected.get("extra", {}))
    if ctx.args.break_check:  # one line more expected of the first file than it has
        first = ctx.names[0]
        want[first] = (want[first][0] + 1, want[first][1])
    got = {k: (counts[k], sizes[k]) for k in counts}
    problems = [f"{k}: {got.get(k, (0, 0))[0]} records / {got.get(k, (0, 0))[1]} B, "
                f"expected {w[0]} / {w[1]} B" for k, w in sorted(want.items()) if got.get(k) != w]
    problems += [f"unexpected key {k!r}: {got[k][0]} records" for k in sorted(got) if k not in want]
    latency = None
    if lat:
        lat.sort()
        latency = (lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))])
    if work is not None and problems:
        (work / "check-failures.txt").write_text("\n".join(problems) + "\n")
    records = sum(counts.values())
    headers = (hdr_n / records, hdr_b / records) if records else (0, 0)
    return problems, latency, headers


def kcat_headers(ctx):
    """Static headers of the sizes Sluice's default headers have in sluice-mem-headers, for
    kcat -H: `path`, the spooled file's full path; `offset`, a line's byte offset in decimal,
    with as many digits as the input's lines have on average; `fid`, DEV:INO:16 hex digits of
    the input file (the spool gets hard links: the same inode)."""
    first = ctx.names[0]
    path = OUT / "work" / "sluice-mem-headers" / "spool" / first
    digits, lines = 0, 0
    for n in ctx.names:
        data = (ctx.gen / n).read_bytes()
        # line starts: 0 and every LF but the last; those from 10^(d-1) on have d digits or more
        total = data.count(b"\n")
        lines += total
        digits += total  # every offset has at least one digit
        lo = 10
        while lo < len(data):
            digits += data.count(b"\n", lo - 1, len(data) - 1)  # starts at offsets >= lo
            lo *= 10
    mean = digits / lines
    offset = "9" * max(1, round(mean))
    st = (ctx.gen / first).stat()
    fid = f"{st.st_dev}:{st.st_ino}:{0:016x}"
    return [("path", str(path)), ("offset", offset), ("fid", fid)], mean


def run_kcat(ctx, pl, topic, work):
    cmd = ["kcat", "-P", "-b", ctx.bootstrap, "-t", topic, "-K", "\\x1f", "-z", "lz4"]
    for k, v in RDKAFKA.items():
        if k != "compression.codec":
            cmd += ["-X", f"{k}={v}"]
    if pl == "kcat-headers":
        for k, v in ctx.kcat_headers:
            cmd += ["-H", f"{k}={v}"]
    cmd += ["-l", str(ctx.gen / "kcat-input")]
    (work / "cmd.txt").write_text(" ".join(cmd) + "\n")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(work / "kcat.log", "w"))
    state = {}

    def reap(flags):
        # kcat's CPU and peak RSS come from its exit (wait4's rusage), so it is reaped here
        pid, status, ru = os.wait4(proc.pid, flags)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            state["ru"] = (ru.ru_utime + ru.ru_stime, ru.ru_maxrss)
            if proc.returncode != 0:
                raise RuntimeError(f"kcat exited with {proc.returncode}; see {work / 'kcat.log'}")

    def delivered():
        if "ru" not in state:
            reap(os.WNOHANG)
        return end_offsets(ctx.bootstrap, topic)
    try:
        t_end = wait_delivered(ctx, None, delivered, ctx.total_lines, "kcat")
        deadline = time.monotonic() + 120
        while "ru" not in state and time.monotonic() < deadline:
            reap(os.WNOHANG)
            time.sleep(0.02)
    finally:
        if "ru" not in state:
            proc.kill()
            reap(0)
    return {"wall": t_end - t0, "cpu": state["ru"][0], "rss": state["ru"][1]}


def start_agent(ctx, pl, work, topic):
    """Starts the agent of a pipeline; returns (Popen, delivered-callable, Sluice's http port)."""
    logf = open(work / "agent.log", "w")
    port = None
    if pl.startswith("sluice"):
        port = free_port()
        conf = work / "agent.yaml"
        conf.write_text(sluice_conf(pl, work, ctx.bootstrap, topic, port,
                                    ctx.args.sluice_memory, ctx.args.sluice_sink))
        cmd = [str(ctx.sluice), "agent", "-n", "bench", "-f", str(conf)]
        if pl == "sluice-eos":
            # end offsets would count transaction markers: the sink's own count of committed lines
            delivered = lambda: sink_events(port)  # noqa: E731
        else:
            delivered = lambda: end_offsets(ctx.bootstrap, topic)  # noqa: E731
    elif pl.startswith("flume"):
        conf = work / "agent.properties"
        conf.write_text(flume_conf(pl, work, ctx.bootstrap, topic))
        java = str(Path(os.environ["JAVA_HOME"]) / "bin" / "java") if os.environ.get("JAVA_HOME") else "java"
        cmd = [java, f"-Xms{FLUME_HEAP}", f"-Xmx{FLUME_HEAP}", "-XX:+UseG1GC", "-XX:-UsePerfData",
               "-Djava.awt.headless=true", f"-Dlog4j.configurationFile={FLUME_CACHE / 'log4j2-console.xml'}",
               "-cp", f"{FLUME_CACHE / 'libs'}/*", "org.apache.flume.node.Application",
               "--no-reload-conf", "-n", "a1", "-f", str(conf)]
        delivered = lambda: end_offsets(ctx.bootstrap, topic)  # noqa: E731
    else:
        (work / "state").mkdir()
        conf = work / "rsyslog.conf"
        conf.write_text(rsyslog_conf(work, ctx.bootstrap, topic))
        cmd = ["rsyslogd", "-n", "-f", str(conf), "-i", str(work / "rsyslogd.pid")]
        delivered = lambda: end_offsets(ctx.bootstrap, topic)  # noqa: E731
    (work / "cmd.txt").write_text(" ".join(cmd) + "\n")
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, cwd=work)
    return proc, delivered, port


def run_agent(ctx, pl, topic, work):
    tail = pl.endswith("-tail")
    feed = work / ("tail" if tail else "spool")
    feed.mkdir()
    proc, delivered, port = start_agent(ctx, pl, work, topic)
    channel = None
    writer = None
    try:
        # Warm-up: one line in a file of its own, until it is in Kafka: the agent is up.
        tmp = work / ".warm.tmp"
        tmp.write_bytes(WARM_LINE)
        old = time.time() - 120
        os.utime(tmp, (old, old))
        os.rename(tmp, feed / "warm.log")
        wait_delivered(ctx, proc, delivered, 1, f"{pl} warm-up")
        if port:  # the channel's capacity as the agent has it (defaults included)
            channel = (metric(port, "sluice_channel_capacity_events"),
                       metric(port, "sluice_channel_capacity_bytes"))
        cpu0, _ = tree_usage(proc.pid)
        t0 = time.monotonic()
        if tail:
            srcs = ",".join(str(ctx.gen / n) for n in ctx.names)
            writer = subprocess.Popen([sys.executable, "-c", WRITER, srcs, str(feed),
                                       str(ctx.args.tail_rate * 1e6), str(64 * 1024), str(work / "writes.tsv")])
        else:
            for n in ctx.names:  # hard links: each file appears whole, already old
                os.link(ctx.gen / n, feed / n)
        t_end = wait_delivered(ctx, proc, delivered, ctx.total_lines + 1, pl)
        cpu1, rss = tree_usage(proc.pid)
        if writer is not None and writer.wait(timeout=600) != 0:
            raise RuntimeError("the writer failed")
    finally:
        stop(proc)
        if writer is not None and writer.poll() is None:
            writer.kill()
    return {"wall": t_end - t0, "cpu": cpu1 - cpu0, "rss": rss, "channel": channel,
            "tail_log": work / "writes.tsv" if tail else None}


def one_run(ctx, pl, rnd):
    work = OUT / "work" / pl
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    topic = f"peers-{pl}-{ctx.stamp}-r{rnd}"
    create_topic(ctx.bootstrap, topic)
    rec = {"pipeline": pl, "round": rnd, "topic": topic, "status": "ok", "note": "",
           "wall": float("nan"), "cpu": float("nan"), "rss": 0, "p50": None, "p99": None,
           "channel": None, "hdr_n": 0, "hdr_b": 0,
           "load1": os.getloadavg()[0]}
    try:
        r = run_kcat(ctx, pl, topic, work) if pl.startswith("kcat") else run_agent(ctx, pl, topic, work)
        rec.update(wall=r["wall"], cpu=r["cpu"], rss=r["rss"], channel=r.get("channel"))
        extra = {} if pl.startswith("kcat") else {"extra": {"warm.log": (1, len(WARM_LINE) - 1)}}
        problems, latency, headers = check_topic(ctx, topic, extra, r.get("tail_log"), work)
        if latency:
            rec["p50"], rec["p99"] = latency
        rec["hdr_n"], rec["hdr_b"] = headers
        if headers[0]:
            rec["note"] = f"record headers: {headers[0]:.2f} per record, {headers[1]:.1f} B (names and values)"
        if problems:
            rec["status"] = "FAILED"
            rec["note"] = f"topic check: {problems[0]}" + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else "")
    except Exception as e:  # a failed run is recorded and the benchmark goes on
        rec["status"], rec["note"] = "FAILED", str(e)[:300]
    finally:
        # channel data and the spool's hard links are not needed any more; logs are kept
        for d in ("channel", "data", "spool", "tail", "state"):
            shutil.rmtree(work / d, ignore_errors=True)
    return rec


# ---------------------------------------------------------------------------------------------
# Report

def versions(ctx, wanted):
    v = {}
    if ctx.sluice is not None:
        v["sluice"] = sh([str(ctx.sluice), "--version"]).stdout.strip()
        lock = (REPO / "Cargo.lock").read_text()
        m = re.search(r'name = "rdkafka-sys"\nversion = "[^"]*\+([^"]+)"', lock)
        v["sluice"] += f" (bundled librdkafka {m[1]})" if m else ""
    kv = subprocess.run(["kcat", "-V"], text=True, capture_output=True).stdout
    m = re.search(r"Version (\S+)", kv)
    lib = re.search(r"librdkafka (\d\S*)", kv)
    v["kcat"] = f"kcat {m[1] if m else '?'} (librdkafka {lib[1] if lib else '?'})"
    if any(p.startswith("flume") for p in wanted):
        jv = subprocess.run(["java", "-version"], text=True, capture_output=True).stderr.splitlines()
        kc = sorted(p.name for p in (FLUME_CACHE / "libs").glob("kafka-clients-*.jar"))
        v["flume"] = (f"Apache Flume 1.11.0 ({', '.join(kc)}), {jv[0] if jv else 'java ?'}, "
                      f"heap -Xms{FLUME_HEAP} -Xmx{FLUME_HEAP}, G1")
    if "rsyslog-tail" in wanted:
        rv = subprocess.run(["rsyslogd", "-v"], text=True, capture_output=True).stdout.splitlines()
        lib = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "librdkafka1"], text=True,
                             capture_output=True).stdout
        rv = re.sub(r"\s+", " ", rv[0].split(" compiled")[0]) if rv else "rsyslogd ?"
        v["rsyslog"] = f"{rv} with omkafka (Debian librdkafka1 {lib or '?'})"
    kafka = sorted(p.name for p in (Path(os.environ.get("SLUICE_KAFKA_CACHE", REPO / ".cache" / "kafka")) / "libs").glob("kafka_*.jar"))
    v["kafka"] = f"Apache Kafka broker ({', '.join(kafka) or 'scripts/kafka-dev'}), one node, KRaft"
    return v


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
    nproc = sh(["nproc"]).stdout.strip()
    return f"{cpu}, nproc {nproc}, {mem / 1048576:.1f} GiB RAM, {os.uname().sysname} {os.uname().release}"


def fmt_int(x):
    return f"{x:,.0f}"


def summarize(ctx, records):
    gb = ctx.total_bytes / 1e9
    rows = {}
    for pl in ctx.pipelines:
        ok = [r for r in records if r["pipeline"] == pl and r["status"] == "ok"]
        n_all = sum(1 for r in records if r["pipeline"] == pl)
        if not ok:
            rows[pl] = {"ok": 0, "n": n_all}
            continue
        wall = statistics.median(r["wall"] for r in ok)
        cpu = statistics.median(r["cpu"] for r in ok)
        rss = statistics.median(r["rss"] for r in ok)
        # VmHWM and ru_maxrss are in KiB: RSS is given in MiB
        row = {"ok": len(ok), "n": n_all, "wall": wall, "lps": ctx.total_lines / wall,
               "mbps": ctx.total_bytes / 1e6 / wall, "cpu_gb": cpu / gb, "rss_mib": rss / 1024,
               "rss_max_mib": max(r["rss"] for r in ok) / 1024,
               "hdr_b": statistics.median(r["hdr_b"] for r in ok)}
        lat = [r for r in ok if r["p50"] is not None]
        if lat:
            row["p50"] = statistics.median(r["p50"] for r in lat)
            row["p99"] = statistics.median(r["p99"] for r in lat)
        rows[pl] = row
    return rows


def ratio(a, b, key):
    if not a or not b or key not in a or key not in b or not b[key]:
        return "–"
    return f"{a[key] / b[key]:.2f}×"


def sink_defaults():
    """The Kafka sink's batch_size and batches_in_flight defaults as docs/kafka.md states them
    (the agent does not show them); None where the table cannot be read."""
    try:
        text = (REPO / "docs" / "kafka.md").read_text()
    except OSError:
        return None, None
    got = [re.search(rf"^\| `{k}` \| `(\d+)` \|", text, re.M) for k in ("batch_size", "batches_in_flight")]
    return tuple(int(m[1]) if m else None for m in got)


def mib(n):
    return f"{n / 1048576:g} MiB" if n % 1048576 == 0 else f"{n:,.0f} B"


def targets(rows):
    """Issue 14's targets, each with the measured figure: (target, verdict, figure) rows."""
    out = []

    def have(*pls):
        return all(rows.get(p, {}).get("ok") for p in pls)

    def verdict(ok):
        return "met" if ok else "**not met**"

    unit = {"lps": ("{:,.0f}", " lines/s"), "cpu_gb": ("{:.1f}", " CPU s/GB"), "rss_mib": ("{:.0f}", " MiB")}

    def compare(pl, base, key, ok, what):
        if have(pl, base):
            x = rows[pl][key] / rows[base][key]
            f, u = unit[key]
            out.append((what, verdict(ok(x)),
                        f"{x:.2f}× ({pl} {f.format(rows[pl][key])}{u}, {base} {f.format(rows[base][key])})"))

    def at_least(pl, base, key, want, what):
        compare(pl, base, key, lambda x: x >= want, what)

    def at_most(pl, base, key, want, what):
        compare(pl, base, key, lambda x: x <= want, what)

    at_least("sluice-mem", "kcat", "lps", 1.0, "lines/s ≥ 1.0× kcat, memory channel")
    at_least("sluice-mem-headers", "kcat-headers", "lps", 1.0,
             "lines/s ≥ 1.0× kcat, memory channel, both with headers (for reference)")
    at_least("sluice-file", "kcat", "lps", 0.9, "lines/s ≥ 0.9× kcat, file channel (fsync always)")
    at_most("sluice-mem-headers", "kcat-headers", "cpu_gb", 1.0,
            "CPU/GB ≤ kcat's with the default headers on (sluice-mem-headers vs kcat-headers)")
    at_most("sluice-mem", "kcat", "cpu_gb", 1.0, "CPU/GB ≤ kcat's, both without headers (for reference)")
    for pl in [p for p in rows if p.startswith("sluice")]:
        fl = FLUME_OF_KIND.get(PIPELINES[pl][0])
        at_least(pl, fl, "lps", 10, f"lines/s ≥ 10× Flume's: {pl}")
    for pl in [p for p in rows if p.startswith("sluice")]:
        fl = FLUME_OF_KIND.get(PIPELINES[pl][0])
        at_most(pl, fl, "cpu_gb", 0.1, f"CPU/GB ≤ 1/10 of Flume's: {pl}")
        at_most(pl, fl, "rss_mib", 0.1, f"peak RSS ≤ 1/10 of Flume's: {pl}")
    for pl in [p for p in rows if p.startswith("sluice")]:
        cap = 32 if PIPELINES[pl][0] == "mem" else 48
        if have(pl):
            r = rows[pl]
            out.append((f"peak RSS ≤ {cap} MiB ({'memory' if cap == 32 else 'file'} channel): {pl}",
                        verdict(r["rss_mib"] <= cap),
                        f"{r['rss_mib']:.1f} MiB median, {r['rss_max_mib']:.1f} MiB the highest run"))
    at_least("sluice-tail", "sluice-file", "lps", 0.9, "taildir ≥ 0.9× spooldir, same bytes (sluice-tail vs sluice-file)")
    return out


def write_report(ctx, records, rows, started, finished, chart):
    v = ctx.versions
    args = ctx.args
    L = []
    L.append("# Sluice beside kcat, Flume and rsyslog: shipping log files into Kafka\n")
    L.append(f"Made by `{ctx.command}` on {started:%Y-%m-%d} ({started:%H:%M}–{finished:%H:%M} UTC, "
             f"{(finished - started).total_seconds() / 60:.0f} min). Rerun it to refresh this page; "
             "how it measures is in [README.md](README.md).\n")
    L.append("## Setup\n")
    L.append(f"- Machine: {machine()}. Load average (1 min) at the start of each run: "
             f"{min(r['load1'] for r in records):.2f} to {max(r['load1'] for r in records):.2f}; "
             "the machine is shared, so figures move by 10–20 % between runs.")
    L.append(f"- Input: {ctx.total_lines:,} Loghub lines (`{CORPUS}`), {ctx.total_bytes / 1e6:,.0f} MB "
             f"with line ends, in {len(ctx.names)} files; MB/s and CPU s/GB count these bytes.")
    L.append(f"- {args.runs} round(s), the pipelines in a rotated order each round: {', '.join(ctx.pipelines)}; "
             "medians of the runs that passed the topic check.")
    L.append(f"- Broker: {v['kafka']}; each run to a fresh topic of {PARTITIONS} partitions "
             "(`message.timestamp.type=LogAppendTime`).")
    for k in ("sluice", "kcat", "flume", "rsyslog"):
        if k in v:
            L.append(f"- {k}: {v[k]}")
    hdr = ""
    if getattr(ctx, "kcat_headers", None):
        hdr = (" kcat-headers sends " + ", ".join(f"`{k}` ({len(val)} B)" for k, val in ctx.kcat_headers)
               + f", the sizes of Sluice's defaults in sluice-mem-headers (its lines' offsets have "
               f"{ctx.offset_digits:.2f} digits on average)")
    L.append("- Producer settings, all tools: acks=all, idempotence on, lz4, linger 5 ms, key = the "
             "file's name (spooldir: base name; tailing: full path), murmur2 partitioning "
             "(Java's default / librdkafka's `murmur2_random`), no record headers except in the "
             f"`-headers` pipelines.{hdr}{'.' if hdr else ''} librdkafka's "
             "`batch.size` default (1 MB) also set for Flume's Java producer (default 16 KB).")
    batch, in_flight = sink_defaults()
    sink = (f"Sluice's Kafka sink {batch if batch else '?'} events with {in_flight if in_flight else '?'} "
            "batches in flight (its defaults, as docs/kafka.md states them)")
    if args.sluice_sink:
        sink = ("Sluice's Kafka sink with " + ", ".join(f"`{o}`" for o in args.sluice_sink)
                + f" (`--sluice-sink`), its other settings the defaults (batches of {batch} events, "
                f"{in_flight} in flight)")
    caps = [r["channel"] for r in records if r["pipeline"].startswith("sluice-mem") and r.get("channel")]
    how = ", ".join(f"`--sluice-memory '{o}'`" for o in args.sluice_memory) or "defaults"
    mem = ("Sluice memory " + f"{caps[0][0]:,.0f} events / {mib(caps[0][1])}" if caps else "Sluice memory ?") + \
        f" ({how}, as the agent's /metrics gives them)"
    L.append(f"- Batches: every source {SOURCE_BATCH} lines; {sink}, "
             f"Flume's `flumeBatchSize` {FLUME_BATCH}; channels: {mem}, Flume memory "
             f"{FLUME_MEM_CAPACITY:,} events (transactionCapacity {FLUME_MEM_TXN:,}); Sluice file channel "
             "2 GiB, fsync always; Flume file channel 10 M events, fsync per transaction (its default).")
    tr = "full speed" if not args.tail_rate else f"{args.tail_rate} MB/s"
    L.append(f"- Tailing pipelines: a writer appends the input files at {tr} (64 KiB line-aligned "
             "chunks, round robin over the files) while the agent tails them.")
    L.append("- Peak RSS in MiB (2^20 bytes): `VmHWM` and `ru_maxrss` are in KiB.\n")
    L.append("## Results (medians)\n")
    L.append("| pipeline | runs ok | wall s | lines/s | MB/s | CPU s/GB | peak RSS MiB | "
             "latency p50 / p99 s | lines/s vs kcat | CPU/GB vs kcat | lines/s vs Flume | CPU/GB vs Flume |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for pl in ctx.pipelines:
        r = rows[pl]
        if not r.get("ok"):
            L.append(f"| {pl} | **0 of {r['n']} (FAILED)** | – | – | – | – | – | – | – | – | – | – |")
            continue
        kc = rows.get(kcat_of(pl))
        fl = rows.get(FLUME_OF_KIND.get(PIPELINES[pl][0], ""))
        lat = f"{r['p50']:.2f} / {r['p99']:.2f}" if "p50" in r else "–"
        L.append(f"| {pl} | {r['ok']} of {r['n']} | {r['wall']:.1f} | {fmt_int(r['lps'])} | {r['mbps']:.1f} | "
                 f"{r['cpu_gb']:.1f} | {r['rss_mib']:.0f} | {lat} | {ratio(r, kc, 'lps')} | "
                 f"{ratio(r, kc, 'cpu_gb')} | "
                 f"{ratio(r, fl, 'lps') if fl is not r else '1.00×'} | "
                 f"{ratio(r, fl, 'cpu_gb') if fl is not r else '1.00×'} |")
    L.append("")
    L.append("\"vs kcat\" compares with `kcat`, and the `-headers` pipelines with `kcat-headers`. "
             "\"vs Flume\" compares with Flume's pipeline of the same kind (memory channel, file channel, "
             "tailing; `sluice-eos` with `flume-file`, `rsyslog-tail` with `flume-tail`); Flume sends no "
             "record headers, `sluice-mem-headers` does.\n")
    tg = targets(rows)
    if tg:
        L.append("## Targets (issue 14)\n")
        L.append("| target | | measured (medians) |")
        L.append("|---|---|---|")
        for what, ok, fig in tg:
            L.append(f"| {what} | {ok} | {fig} |")
        L.append("")
    if chart:
        L.append("![lines/s, CPU s per GB and peak RSS per pipeline](results.png)\n")
    L.append("Pipelines:\n")
    for pl in ctx.pipelines:
        L.append(f"- `{pl}`: {PIPELINES[pl][1]}")
    L.append("")
    L.append("## Every run\n")
    L.append("| round | pipeline | status | wall s | CPU s | peak RSS MiB | p50 / p99 s | load | note |")
    L.append("|---:|---|---|---:|---:|---:|---:|---:|---|")
    for r in records:
        lat = f"{r['p50']:.2f} / {r['p99']:.2f}" if r["p50"] is not None else "–"
        L.append(f"| {r['round']} | {r['pipeline']} | {r['status']} | {r['wall']:.1f} | {r['cpu']:.1f} | "
                 f"{r['rss'] / 1024:.0f} | {lat} | {r['load1']:.2f} | {r['note'].replace('|', '/')} |")
    L.append("")
    return "\n".join(L) + "\n"


def draw_chart(ctx, rows, png):
    """Three panels (lines/s, CPU s/GB, peak RSS MiB) drawn by gnuplot; False when not drawn."""
    if not shutil.which("gnuplot"):
        log("gnuplot not found (scripts/install-deps --bench installs it): no chart")
        return False
    okp = [pl for pl in ctx.pipelines if rows[pl].get("ok")]
    if not okp:
        return False
    dat = OUT / "chart.dat"
    with open(dat, "w") as f:
        for i, pl in enumerate(okp):
            r = rows[pl]
            color = {"kcat": 0x888888, "sluice": 0x1f77b4, "flume": 0xd62728, "rsyslog": 0x2ca02c}[pl.split("-")[0]]
            f.write(f"{i} \"{pl}\" {r['lps'] / 1e3:.1f} {r['cpu_gb']:.2f} {r['rss_mib']:.1f} {color}\n")
    gp = OUT / "chart.gp"
    title = f"{ctx.total_bytes / 1e9:.2f} GB of log lines into Kafka, medians of {ctx.args.runs} run(s)"
    panels = [("thousand lines/s (higher is better)", 3, "%.0f"),
              ("CPU seconds per GB (lower is better)", 4, "%.1f"),
              ("peak RSS, MiB (lower is better)", 5, "%.0f")]
    body = [f"set terminal pngcairo size 900,860 font 'DejaVu Sans,9'", f"set output '{png}'",
            f"set multiplot layout 3,1 title '{title}' font ',11'",
            "set style fill solid 0.85 noborder", "set boxwidth 0.7", "unset key",
            "set grid ytics lc rgb '#dddddd'", f"set xrange [-0.6:{len(okp) - 0.4}]",
            "set xtics rotate by 20 right",  # a dozen names do not fit side by side
            "set yrange [0:*]", "set offsets 0,0,graph 0.15,0"]
    for label, col, fmt in panels:
        body += [f"set title '{label}'",
                 f"plot '{dat}' using 1:{col}:6:xtic(2) with boxes lc rgb variable, "
                 f"'' using 1:{col}:(sprintf('{fmt}', ${col})) with labels offset 0,0.7 font ',8'"]
    body.append("unset multiplot")
    gp.write_text("\n".join(body) + "\n")
    r = subprocess.run(["gnuplot", str(gp)], capture_output=True, text=True)
    if r.returncode != 0:
        log(f"gnuplot failed: {r.stderr[-500:]}")
        return False
    return True


# ---------------------------------------------------------------------------------------------

def ensure_tools(wanted, no_install):
    need = []
    if not shutil.which("kcat"):
        need.append("kcat")
    if "rsyslog-tail" in wanted and not (shutil.which("rsyslogd") and list(Path("/usr/lib").glob("*/rsyslog/omkafka.so"))):
        need.append("rsyslog-kafka")
    if not shutil.which("gnuplot"):
        need.append("gnuplot")
    if need:
        if no_install:
            log(f"missing {', '.join(need)}; --no-install given, going on without")
        else:
            log(f"missing {', '.join(need)}: scripts/install-deps --bench")
            subprocess.run([str(REPO / "scripts" / "install-deps"), "--bench"], check=True)
    if not shutil.which("kcat"):
        sys.exit("kcat is needed (scripts/install-deps --bench)")
    if "rsyslog-tail" in wanted and not shutil.which("rsyslogd"):
        log("rsyslogd not available: rsyslog-tail left out")
        wanted.remove("rsyslog-tail")


def sluice_binary():
    if os.environ.get("SLUICE_BIN"):
        return Path(os.environ["SLUICE_BIN"]).resolve()
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    log(f"building sluice (cargo build --release -p sluice-agent, target {target}) ...")
    subprocess.run(["cargo", "build", "--release", "-p", "sluice-agent"], cwd=REPO, check=True,
                   env=dict(os.environ, CARGO_TARGET_DIR=str(target)))
    return target / "release" / "sluice"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=1000, help="input size in MB (default 1000)")
    ap.add_argument("--files", type=int, default=8, help="input files (default 8)")
    ap.add_argument("--runs", type=int, default=3, help="rounds (default 3)")
    ap.add_argument("--only", default=",".join(PIPELINES),
                    help=f"comma-separated pipelines (default all: {','.join(PIPELINES)})")
    ap.add_argument("--tail-rate", type=float, default=0,
                    help="MB/s the tailing pipelines' writer appends at (default 0: full speed)")
    ap.add_argument("--stall", type=float, default=180,
                    help="a run fails when no record arrives for this many seconds (default 180)")
    ap.add_argument("--results", default=str(HERE),
                    help="where RESULTS.md and results.png go (default bench/peers/)")
    ap.add_argument("--no-install", action="store_true", help="never run scripts/install-deps --bench")
    ap.add_argument("--sluice-memory", action="append", default=[], metavar="'KEY: VALUE'",
                    help="a setting of the memory channel of the sluice-mem pipelines, e.g. "
                         "'capacity: 16000' (repeatable; default: the agent's defaults)")
    ap.add_argument("--sluice-sink", action="append", default=[], metavar="'KEY: VALUE'",
                    help="a setting of every Sluice pipeline's Kafka sink, e.g. 'batches_in_flight: 16' "
                         "(repeatable; default: the sink's defaults)")
    ap.add_argument("--break-check", action="store_true",
                    help="expect one line more of the first file than it has, so that every topic check "
                         "must fail (to see that a lossy run is caught)")
    args = ap.parse_args()
    for o in args.sluice_memory + args.sluice_sink:
        if not re.fullmatch(r"[a-z_.]+: [^\n{}]+", o):
            ap.error(f"--sluice-memory/--sluice-sink take 'key: value' (e.g. 'capacity: 16000'), not {o!r}")
    wanted = [p.strip() for p in args.only.split(",") if p.strip()]
    bad = [p for p in wanted if p not in PIPELINES]
    if bad:
        sys.exit(f"unknown pipeline(s) {bad}; known: {', '.join(PIPELINES)}")

    ctx = Ctx()
    ctx.args = args
    ctx.command = "bench/peers/run.py " + shlex.join(sys.argv[1:])
    ensure_tools(wanted, args.no_install)
    ctx.pipelines = wanted
    sh([KAFKA_DEV, "fetch"])
    if any(p.startswith("flume") for p in wanted):
        sh([FLUME_DEV, "fetch"])
    ctx.sluice = sluice_binary() if any(p.startswith("sluice") for p in wanted) else None
    OUT.mkdir(parents=True, exist_ok=True)
    ctx.gen, ctx.meta = make_inputs(args.mb, args.files)
    ctx.names = sorted(ctx.meta["files"], key=lambda n: int(n.split("-")[1].split(".")[0]))
    ctx.total_lines = sum(f["lines"] for f in ctx.meta["files"].values())
    ctx.total_bytes = sum(f["bytes"] for f in ctx.meta["files"].values())
    ctx.stamp = time.strftime("%H%M%S")
    if "kcat-headers" in wanted:
        ctx.kcat_headers, ctx.offset_digits = kcat_headers(ctx)

    broker = OUT / "broker"
    shutil.rmtree(broker, ignore_errors=True)
    port = free_port()
    log("starting the broker (scripts/kafka-dev) ...")
    sh([KAFKA_DEV, "start", "--dir", str(broker), "--port", str(port), "--owner-pid", str(os.getpid())])
    ctx.bootstrap = f"127.0.0.1:{port}"
    ctx.versions = versions(ctx, wanted)
    started = datetime.datetime.now(datetime.timezone.utc)
    log(f"input {ctx.total_lines:,} lines, {ctx.total_bytes / 1e6:,.0f} MB in {len(ctx.names)} files; "
        f"pipelines {', '.join(wanted)}; {args.runs} round(s)")
    records = []
    runs_tsv = OUT / "runs.tsv"
    with open(runs_tsv, "w") as f:
        f.write("round\tpipeline\tstatus\twall_s\tcpu_s\tpeak_rss_kib\tp50_s\tp99_s\tload1\tnote\n")
    try:
        # Warm the broker up (JIT, page cache) before anything is measured.
        create_topic(ctx.bootstrap, "peers-warmup")
        sh(["kcat", "-P", "-b", ctx.bootstrap, "-t", "peers-warmup", "-K", "\\x1f", "-l",
            str(ctx.gen / "kcat-input")] if args.mb <= 200 else
           ["sh", "-c", f"head -c 200000000 '{ctx.gen / 'kcat-input'}' | kcat -P -b {ctx.bootstrap} "
                        f"-t peers-warmup -K '\\x1f'"])
        for rnd in range(args.runs):
            k = rnd % len(wanted)
            order = wanted[k:] + wanted[:k]  # rotated each round: nobody always goes first
            for pl in order:
                log(f"round {rnd} {pl} ...")
                rec = one_run(ctx, pl, rnd)
                records.append(rec)
                with open(runs_tsv, "a") as f:
                    f.write("\t".join(str(rec[k]) for k in ("round", "pipeline", "status", "wall", "cpu", "rss",
                                                            "p50", "p99", "load1", "note")) + "\n")
                lat = f", latency p50 {rec['p50']:.2f} s p99 {rec['p99']:.2f} s" if rec["p50"] is not None else ""
                log(f"round {rnd} {pl}: {rec['status']} {rec['wall']:.1f} s, "
                    f"{ctx.total_lines / rec['wall']:,.0f} lines/s, cpu {rec['cpu']:.1f} s, "
                    f"rss {rec['rss'] / 1024:.0f} MiB{lat} {rec['note']}")
    finally:
        subprocess.run([KAFKA_DEV, "stop", "--dir", str(broker)], capture_output=True)
    finished = datetime.datetime.now(datetime.timezone.utc)
    rows = summarize(ctx, records)
    res = Path(args.results)
    res.mkdir(parents=True, exist_ok=True)
    chart = draw_chart(ctx, rows, res / "results.png")
    text = write_report(ctx, records, rows, started, finished, chart)
    (res / "RESULTS.md").write_text(text)
    (OUT / "RESULTS.md").write_text(text)
    log(f"wrote {res / 'RESULTS.md'}" + (f" and {res / 'results.png'}" if chart else ""))
    print(text.split("## Results (medians)")[1].split("Pipelines:")[0])
    failed = [r for r in records if r["status"] != "ok"]
    if failed:
        log(f"{len(failed)} run(s) FAILED: see the table and {OUT / 'work'}/<pipeline>/")
        sys.exit(1)


if __name__ == "__main__":
    main()
