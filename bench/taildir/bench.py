#!/usr/bin/env python3
"""Benchmark of the taildir source: taildir -> memory channel -> console sink.

Measures, with the release `sluice` binary:
  1. catch-up throughput (lines/s) tailing 1, 100 and 10,000 files;
  2. idle CPU% and RSS with 10,000 idle files followed (and open descriptors);
  3. append-to-channel latency (p50/p99/max) of one file written at 10,000 lines/s while
     10,000 idle files are followed: each line carries its write time, and the console
     sink's output is read back through a pipe.
The baselines run the same measurements with `cat` (raw read) and GNU `tail -F`.

    bench/taildir/run.sh            (builds the release binary, then runs this)
    bench/taildir/bench.py BIN      (BIN: path of the release `sluice` binary)
    bench/taildir/bench.py BIN 1 100    (only the catch-up throughput, on 1 and on 100 files)
"""

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HZ = os.sysconf("SC_CLK_TCK")
PAD = "INFO  [main] com.example.Service - request handled in 12 ms user=alice path=/api/v1/items"


def line(i):
    return f"{i:010d} {PAD}\n"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metric(port, name):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    except OSError:
        return None
    m = re.search(rf"^{name}{{[^}}]*}} (\d+)$", data.decode(), re.M)
    return int(m.group(1)) if m else None


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for l in f:
            if l.startswith("VmRSS:"):
                return int(l.split()[1])
    return 0


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def config(work, pattern, port):
    path = os.path.join(work, "agent.yaml")
    with open(path, "w") as f:
        f.write(f"""
bench:
  data_dir: {work}/data
  http: 127.0.0.1:{port}
  sources:
    r1: {{ type: taildir, channel: c1, paths: ["{pattern}"] }}
  channels:
    c1: {{ type: memory }}
  sinks:
    k1: {{ type: console, channel: c1 }}
""")
    return path


def start(binary, work, pattern, stdout):
    port = free_port()
    conf = config(work, pattern, port)
    err = open(os.path.join(work, "agent.log"), "w")
    p = subprocess.Popen([binary, "agent", "-n", "bench", "-f", conf], stdout=stdout, stderr=err)
    return p, port


def stop(p):
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=60)


def make_files(d, n_files, lines_each):
    os.makedirs(d, exist_ok=True)
    body = "".join(line(i) for i in range(lines_each))
    for k in range(n_files):
        with open(os.path.join(d, f"f{k:05d}.log"), "w") as f:
            f.write(body)


def wait_events(p, port, total, timeout=600):
    end = time.time() + timeout
    while time.time() < end:
        if p.poll() is not None:
            raise RuntimeError("the agent exited")
        n = metric(port, "sluice_source_events_total")
        if n is not None and n >= total:
            return
        time.sleep(0.01)
    raise RuntimeError("timed out")


def throughput(binary, n_files, total_lines):
    with tempfile.TemporaryDirectory() as work:
        logs = os.path.join(work, "logs")
        each = total_lines // n_files
        make_files(logs, n_files, each)
        total = each * n_files
        size = sum(os.path.getsize(os.path.join(logs, f)) for f in os.listdir(logs))
        t0 = time.time()
        subprocess.run(f"cat {logs}/*.log > /dev/null", shell=True, check=True)
        cat_s = time.time() - t0
        with open(os.devnull, "w") as null:
            t0 = time.time()
            p, port = start(binary, work, f"{logs}/*.log", null)
            wait_events(p, port, total)
            secs = time.time() - t0
            cpu = cpu_ticks(p.pid) / HZ
            stop(p)
        print(f"  {n_files:>6} files, {total} lines ({size / 1e6:.0f} MB): {total / secs / 1e6:.2f} M lines/s "
              f"({secs:.2f} s, CPU {cpu:.2f} s); baseline cat (page cache): {cat_s:.2f} s")
        return total / secs


def sample_idle(pid, secs):
    t0, c0 = time.time(), cpu_ticks(pid)
    time.sleep(secs)
    return 100.0 * (cpu_ticks(pid) - c0) / HZ / (time.time() - t0)


def idle(binary, n_files, secs):
    with tempfile.TemporaryDirectory() as work:
        logs = os.path.join(work, "logs")
        make_files(logs, n_files, 10)
        with open(os.devnull, "w") as null:
            p, port = start(binary, work, f"{logs}/*.log", null)
            wait_events(p, port, n_files * 10)
            time.sleep(2)
            cpu = sample_idle(p.pid, secs)
            rss, nfd = rss_kib(p.pid), fds(p.pid)
            stop(p)
            files = sorted(os.path.join(logs, f) for f in os.listdir(logs))
            t = subprocess.Popen(["tail", "-q", "-F", "-n", "0"] + files, stdout=null, stderr=null)
            time.sleep(5)
            tail_cpu = sample_idle(t.pid, secs)
            tail_rss, tail_fd = rss_kib(t.pid), fds(t.pid)
            t.kill()
            t.wait()
        print(f"  {n_files} idle files over {secs} s: CPU {cpu:.2f}%, RSS {rss / 1024:.1f} MiB, {nfd} fds; "
              f"baseline tail -F: CPU {tail_cpu:.2f}%, RSS {tail_rss / 1024:.1f} MiB, {tail_fd} fds")


def latency_run(cmd_out, busy, rate, secs, reader_ready):
    """Writes `rate` lines/s to `busy` for `secs`, reading lines back from `cmd_out`."""
    lat = []
    done = threading.Event()

    def read():
        for raw in cmd_out:
            ts = int(raw.split(b" ", 1)[0])
            lat.append(time.time_ns() - ts)
            if done.is_set() and len(lat) >= written[0]:
                return

    written = [0]
    r = threading.Thread(target=read, daemon=True)
    r.start()
    reader_ready()
    with open(busy, "a", buffering=1) as f:
        t0 = time.time()
        while time.time() - t0 < secs:
            due = int((time.time() - t0) * rate)
            while written[0] < due:
                f.write(f"{time.time_ns()} {PAD}\n")
                written[0] += 1
            time.sleep(0.0005)
    done.set()
    r.join(timeout=30)
    lat.sort()
    n = len(lat)
    pct = lambda q: lat[min(n - 1, int(q * n))] / 1e6
    return n, written[0], pct(0.5), pct(0.99), lat[-1] / 1e6


def latency(binary, n_idle, rate, secs):
    with tempfile.TemporaryDirectory() as work:
        logs = os.path.join(work, "logs")
        make_files(logs, n_idle, 10)
        busy = os.path.join(logs, "busy.log")
        open(busy, "w").close()
        p, port = start(binary, work, f"{logs}/*.log", subprocess.PIPE)
        # The idle files' own lines come first; skip them.
        for _ in range(n_idle * 10):
            p.stdout.readline()
        n, w, p50, p99, mx = latency_run(p.stdout, busy, rate, secs, lambda: None)
        stop(p)
        print(f"  sluice: {w} lines at {rate}/s with {n_idle} idle files: received {n}, "
              f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {mx:.2f} ms")
        busy2 = os.path.join(logs, "busy2.log")
        open(busy2, "w").close()
        t = subprocess.Popen(["stdbuf", "-o0", "tail", "-F", "-n", "0", busy2], stdout=subprocess.PIPE)
        time.sleep(1)
        n, w, p50, p99, mx = latency_run(t.stdout, busy2, rate, secs, lambda: None)
        t.kill()
        print(f"  baseline tail -F (one file): received {n}, p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {mx:.2f} ms")


def main():
    binary = sys.argv[1]
    print("== catch-up throughput (read_from beginning; stdout to /dev/null)")
    if len(sys.argv) > 2:
        for n_files in sys.argv[2:]:
            throughput(binary, int(n_files), 2_000_000)
        return
    throughput(binary, 1, 2_000_000)
    throughput(binary, 100, 2_000_000)
    throughput(binary, 10_000, 2_000_000)
    print("== idle cost")
    idle(binary, 10_000, 30)
    print("== append-to-output latency")
    latency(binary, 10_000, 10_000, 20)


if __name__ == "__main__":
    main()
