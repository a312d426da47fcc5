#!/usr/bin/python3
"""What metrics collection costs: pgbench through pgmux (transaction pooling) with the metrics
endpoint off and with it on and scraped every second, in the same run, alternating target by
target (off, on, [baseline,] off, on, ...), medians reported. `make bench-metrics`.

Counters are always collected (the admin console's SHOW STATS reads them too); "off" is
metrics_port = 0, "on" adds the HTTP listener and a scraper. Set BENCH_PGMUX_BASELINE to
another pgmux binary (e.g. one built from before the counters existed) to run it as a third
target, and then also compare instructions per transaction (callgrind, 1 client, 1 worker,
difference of N and N/5 pgbench -S transactions; BENCH_METRICS_CALLGRIND = N, 5000; 0 = skip):
unlike tps on a shared machine, that number does not move with the neighbours' load.
Uses tests/bench/bench.py's cluster set-up; settings:
  BENCH_METRICS_TIME (10), BENCH_METRICS_REPS (3), BENCH_METRICS_CLIENTS (50),
  BENCH_JOBS (2), BENCH_SCALE (10), BENCH_POOL_SIZE (20), BENCH_PGMUX_WORKERS (0 = CPUs),
  BENCH_PGMUX (build/release/pgmux), BENCH_PGMUX_BASELINE (unset).
"""
import os
import re
import socket
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (same directory)


def scrape(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    if not data.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"scrape failed: {data[:200]!r}")
    return len(data)


class Scraper:
    """GET /metrics every interval seconds until stopped; counts scrapes and their duration."""

    def __init__(self, port, interval=1.0):
        self.port, self.interval = port, interval
        self.n, self.seconds, self.size, self.error = 0, [], 0, None
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                self.size = scrape(self.port)
            except Exception as e:  # reported by stop()
                self.error = e
                return
            self.seconds.append(time.monotonic() - t0)
            self.n += 1
            self._stop.wait(self.interval)

    def stop(self):
        self._stop.set()
        self._t.join(10)
        if self.error:
            raise self.error


def instructions(b, binary, n, label):
    """Instructions per pgbench -S transaction of binary under callgrind."""
    saved = bench.ENV["BENCH_PGMUX"]
    bench.ENV["BENCH_PGMUX"] = binary
    totals = []
    try:
        for txns in (n // 5, n):
            outf = os.path.join(b.tmp, f"callgrind-{label}-{txns}.out")
            vg = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={outf}"]
            p, port = b.start_pgmux("callgrind", workers=1, valgrind=vg)
            r = b.pgbench("callgrind", ["-S"], 1, txns=txns, port=port)
            bench.stop(p, timeout=60)
            if r["error"]:
                raise RuntimeError("callgrind run: " + r["error"])
            with open(outf) as f:
                m = re.search(r"^(?:summary|totals): (\d+)", f.read(), re.M)
            totals.append(int(m.group(1)))
    finally:
        bench.ENV["BENCH_PGMUX"] = saved
    return (totals[1] - totals[0]) / (n - n // 5)


def main():
    secs = int(bench.env("BENCH_METRICS_TIME", 10))
    reps = int(bench.env("BENCH_METRICS_REPS", 3))
    clients = int(bench.env("BENCH_METRICS_CLIENTS", 50))
    baseline = os.environ.get("BENCH_PGMUX_BASELINE")
    bench.raise_nofile()
    b = bench.Bench(smoke=False)
    b.pool_mode = "transaction"
    try:
        b.start_cluster()
        metrics_port = bench.free_port()
        orig_ini = b.pgmux_ini

        def ini_with_metrics(name, *a, **kw):
            path = orig_ini(name, *a, **kw)
            if name == "on":
                with open(path) as f:
                    text = f.read()
                text = text.replace("[pgmux]\n", f"[pgmux]\nmetrics_port = {metrics_port}\n", 1)
                with open(path, "w") as f:
                    f.write(text)
            return path

        b.pgmux_ini = ini_with_metrics
        targets = ["off", "on"]
        b.procs["off"], b.ports["off"] = b.start_pgmux("off")
        b.procs["on"], b.ports["on"] = b.start_pgmux("on")
        if baseline:
            saved = bench.ENV["BENCH_PGMUX"]
            bench.ENV["BENCH_PGMUX"] = baseline
            b.procs["baseline"], b.ports["baseline"] = b.start_pgmux("baseline")
            bench.ENV["BENCH_PGMUX"] = saved
            targets.append("baseline")
        scrape(metrics_port)  # the endpoint answers before we measure
        tps = {t: [] for t in targets}
        scrapes = []
        for rep in range(reps):
            for t in targets:
                sc = Scraper(metrics_port) if t == "on" else None
                r = b.pgbench(t, ["-S"], clients, seconds=secs)
                if sc:
                    sc.stop()
                    scrapes.append(sc)
                if r["error"] or not r["tps"]:
                    raise RuntimeError(f"{t}: {r['error']}\n{r['out']}{r['err']}")
                tps[t].append(r["tps"])
                bench.log(f"run {rep + 1}/{reps} {t}: {r['tps']:.0f} tps"
                          + (f", {sc.n} scrapes" if sc else ""))
        med = {t: statistics.median(v) for t, v in tps.items()}
        n_scrapes = sum(s.n for s in scrapes)
        durs = sorted(d for s in scrapes for d in s.seconds)
        print(f"pgbench -S -c {clients} -j {bench.ENV['BENCH_JOBS']} -T {secs}, pgmux transaction "
              f"pooling, {reps} alternating runs per target, {os.cpu_count()} CPUs")
        for t in targets:
            runs = ", ".join(f"{x:.0f}" for x in tps[t])
            print(f"  {t:9s} median {med[t]:8.0f} tps  (runs: {runs})")
        print(f"  on/off ratio {med['on'] / med['off']:.3f}"
              + (f", off/baseline {med['off'] / med['baseline']:.3f}" if baseline else ""))
        print(f"  {n_scrapes} scrapes of {scrapes[-1].size} bytes while 'on' ran, median "
              f"{statistics.median(durs) * 1000:.1f} ms each")
        n = int(bench.env("BENCH_METRICS_CALLGRIND", 5000))
        if baseline and n > 0:
            cur = instructions(b, bench.ENV["BENCH_PGMUX"], n, "current")
            base = instructions(b, baseline, n, "baseline")
            print(f"  instructions per transaction (callgrind, 1 client): {cur:.0f} with counters, "
                  f"{base:.0f} baseline, +{cur - base:.0f} ({(cur / base - 1) * 100:.1f}%)")
        return 0
    except RuntimeError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 1
    finally:
        b.cleanup()


if __name__ == "__main__":
    sys.exit(main())
