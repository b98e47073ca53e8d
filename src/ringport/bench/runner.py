"""The runner: every benchmark for every system available here, systems interleaved within each
repeat (so drift hits all alike), a table of medians (p99 for latencies) with each system's
ratio to ringport, optional JSON and PNG.  Exit status 1 if any verification failed."""
import argparse
import datetime
import json
import math
import os
import statistics
import sys
import time
import traceback

from ringport.bench.common import Skip, VerifyError, auto_backend, machine_info, node_path

FAMILIES = ("messaging", "shared", "workers", "scaling", "pool", "channels", "ray")

# message counts for a full run; --quick takes a tenth, --count scales them
FULL = {"pingpong": 20000, "interp": 20, "msg": 200000, "array": 400, "bytes": 50000,
        "counter": 1000000, "counter_fast": 10000000, "waitnotify": 20000, "workers": 16,
        "grid": 3000, "pool_noop": 10000, "pool_cpu": 2000, "pool_map": 100000,
        "pool_warm": 2000, "channels": 2000}
QUICK = {"pingpong": 2000, "interp": 5, "msg": 20000, "array": 40, "bytes": 5000,
         "counter": 100000, "counter_fast": 1000000, "waitnotify": 2000, "workers": 8,
         "grid": 1200, "pool_noop": 2000, "pool_cpu": 500, "pool_map": 10000,
         "pool_warm": 2000, "channels": 500}
TINY = {"pingpong": 200, "interp": 3, "msg": 1000, "array": 4, "bytes": 200,
        "counter": 5000, "counter_fast": 50000, "waitnotify": 200, "workers": 2, "grid": 120,
        "pool_noop": 50, "pool_cpu": 8, "pool_map": 200,
        "pool_warm": 20, "channels": 20}
FIXED = ("interp", "workers", "pool_warm")        # not scaled by --count


def parse(argv):
    ap = argparse.ArgumentParser(
        prog="python -m ringport.bench",
        description="ringport against Node.js worker_threads, the stdlib and PyPI, side by side.")
    ap.add_argument("--quick", action="store_true", help="about a minute: smaller counts, 3 repeats")
    ap.add_argument("--json", metavar="PATH", help="write machine-readable results here")
    ap.add_argument("--plot", metavar="PATH", help="write a PNG, one panel per benchmark "
                    "(needs matplotlib)")
    ap.add_argument("--only", metavar="NAME", help="only benchmarks whose id, family or title "
                    "contains NAME (comma-separated for several)")
    ap.add_argument("--system", metavar="NAME", help="only systems whose name contains NAME "
                    "(comma-separated); ringport rows always run")
    ap.add_argument("--repeat", type=int, help="repeats (default 5, --quick 3)")
    ap.add_argument("--count", type=float, default=1.0, help="scale message and op counts")
    ap.add_argument("--size", type=float, default=1.0, help="scale the scaling job's size")
    ap.add_argument("--workers", type=int, default=2, metavar="N",
                    help="workers in each pool of the pool family (default 2)")
    ap.add_argument("--no-node", action="store_true", help="leave Node.js out")
    ap.add_argument("--no-cimport", action="store_true", help="do not build the cimported loops")
    ap.add_argument("--load", metavar="PATH", help="print (and --plot) results from a JSON "
                    "file instead of running")
    ap.add_argument("--markdown", metavar="PATH", help="write the tables as Markdown here")
    ap.add_argument("--list", action="store_true", help="list benchmarks and systems, then exit")
    ap.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)   # smoke test
    return ap.parse_args(argv)


def params(args):
    base = TINY if (args.tiny or os.environ.get("RINGPORT_BENCH_TINY")) else \
        QUICK if args.quick else FULL
    p = {k: (v if k in FIXED else max(2, int(v * args.count))) for k, v in base.items()}
    p["grid"] = max(8, int(base["grid"] * args.size))
    p["cimport"] = not args.no_cimport
    p["pool_workers"] = max(1, args.workers)
    return p


def collect(p, args):
    from ringport.bench import channels, messaging, pool, ray, scaling, shared, workers
    benches = []
    for mod in (messaging, shared, workers, scaling, pool, channels, ray):
        benches.extend(mod.benchmarks(p))
    if args.only:
        keys = [k.strip().lower() for k in args.only.split(",") if k.strip()]
        benches = [b for b in benches if any(k in f"{b.id} {b.family} {b.title}".lower()
                                             for k in keys)]
    for b in benches:
        if args.no_node:
            b.systems = [s for s in b.systems if not s.name.startswith("Node")]
        elif node_path() is None:
            for s in b.systems:
                if s.name.startswith("Node"):
                    s.fn, s.skip = None, "node not on PATH"
        if args.system:
            keys = [k.strip().lower() for k in args.system.split(",")]
            b.systems = [s for s in b.systems if s.name.startswith("ringport")
                         or any(k in s.name.lower() for k in keys)]
    return benches


def reference(bench, names):
    auto = auto_backend()
    if auto and f"ringport Worker ({auto})" in names:
        return f"ringport Worker ({auto})"
    for n in names:
        if n.startswith("ringport"):
            return n
    return None


class Progress:
    """A one-line bar on stderr, only when stderr is a terminal."""

    def __init__(self, total):
        self.total, self.done, self.on = total, 0, sys.stderr.isatty()
        self.t0 = time.monotonic()

    def step(self, label):
        self.done += 1
        if self.on:
            w = 30
            f = int(w * self.done / max(1, self.total))
            el = time.monotonic() - self.t0
            sys.stderr.write(f"\r[{'#' * f}{'.' * (w - f)}] {self.done}/{self.total} "
                             f"{el:5.0f}s {label[:40]:<40}")
            sys.stderr.flush()

    def end(self):
        if self.on:
            sys.stderr.write("\r" + " " * 100 + "\r")
            sys.stderr.flush()


def run(benches, repeat):
    """{bench id: {system: record}}, systems interleaved within each repeat and rotated from one
    repeat to the next so that no system always runs first or after the same neighbour."""
    rec = {b.id: {} for b in benches}
    skipped = {b.id: {s.name: s.skip for s in b.systems if s.skip} for b in benches}
    failures = []
    todo = sum(1 for b in benches for s in b.systems if not s.skip) * repeat
    prog = Progress(todo)
    for r in range(repeat):
        for b in benches:
            live = [s for s in b.systems if not s.skip and s.name not in skipped[b.id]]
            k = r % len(live) if live else 0
            for s in live[k:] + live[:k]:
                prog.step(f"{b.id}: {s.name}")
                if s.name in skipped[b.id]:
                    continue
                e = rec[b.id].setdefault(s.name, {"values": [], "samples": [], "n": 0,
                                                  "verified": True, "notes": [], "errors": []})
                if s.note and s.note not in e["notes"]:
                    e["notes"].append(s.note)
                try:
                    smp = s.fn()
                except Skip as x:
                    skipped[b.id][s.name] = str(x)
                    del rec[b.id][s.name]
                    continue
                except VerifyError as x:
                    e["verified"] = False
                    e["errors"].append(f"VERIFICATION FAILED: {x}")
                    failures.append(f"{b.id} / {s.name}: {x}")
                    prog.end()
                    print(f"!! {b.id} / {s.name}: VERIFICATION FAILED: {x}", file=sys.stderr)
                    continue
                except Exception as x:
                    e["verified"] = False
                    e["errors"].append(f"{type(x).__name__}: {x}")
                    failures.append(f"{b.id} / {s.name}: {type(x).__name__}: {x}")
                    prog.end()
                    print(f"!! {b.id} / {s.name} failed:", file=sys.stderr)
                    traceback.print_exc()
                    continue
                e["values"].append(smp.value)
                e["samples"].extend(smp.samples)
                e["n"] = smp.n
                if smp.note and smp.note not in e["notes"]:
                    e["notes"].append(smp.note)
    prog.end()
    return rec, skipped, failures


def p99(xs):
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, math.ceil(0.99 * len(s)) - 1)]


def summarize(benches, rec, skipped, repeat):
    out = {}
    for b in benches:
        systems = {}
        for name, e in rec[b.id].items():
            vals = e["values"]
            d = {"median": statistics.median(vals) if vals else None, "unit": b.unit,
                 "n": e["n"], "repeats": len(vals), "verified": e["verified"] and bool(vals),
                 "values": vals, "notes": e["notes"]}
            if b.latency:
                # the median of per-iteration samples over all repeats where there are samples
                if e["samples"]:
                    d["median"] = statistics.median(e["samples"])
                    d["p99"] = p99(e["samples"])
                    d["samples_n"] = len(e["samples"])
                else:
                    d["p99"] = None
            if e["errors"]:
                d["errors"] = e["errors"]
            systems[name] = d
        ref = reference(b, [n for n, d in systems.items() if d["median"]])
        for name, d in systems.items():
            r = systems[ref]["median"] if ref else None
            if r and d["median"]:
                d["ratio"] = (d["median"] / r) if b.better == "lower" else (r / d["median"])
            else:
                d["ratio"] = None
        out[b.id] = {"family": b.family, "title": b.title, "unit": b.unit, "better": b.better,
                     "latency": b.latency, "note": b.note, "reference": ref,
                     "systems": systems, "skipped": skipped[b.id]}
    # a row's own baselines (System.base): how many times better it is than each, equal work
    for b in benches:
        systems = out[b.id]["systems"]
        for sy in b.systems:
            d = systems.get(sy.name)
            if d is None or not sy.base:
                continue
            d["vs"] = {}
            for name in sy.base:
                o = systems.get(name)
                if d["median"] and o and o["median"]:
                    d["vs"][name] = (o["median"] / d["median"]) if b.better == "lower" \
                        else (d["median"] / o["median"])
    # scaling: each system's speed-up over its own one-worker time, paired by repeat
    one = out.get("scaling-1")
    for bid, bd in out.items():
        if bd["family"] != "scaling" or one is None:
            continue
        for name, d in bd["systems"].items():
            base = one["systems"].get(name)
            if base and base["values"] and d["values"]:
                pairs = [a / b for a, b in zip(base["values"], d["values"]) if b]
                d["speedup"] = statistics.median(pairs) if pairs else None
    return out


def targets(out, p, python):
    """The issues' targets, checked against a run's summary (pool: issue 11's, in
    ringport.bench.pool; the others in ringport.bench.goals): a list of {bench, system, goal,
    value, min or max, met}; met is None where a side of the comparison did not run.  A goal
    with a unit is an absolute figure, one without a ratio."""
    from ringport.bench import goals, pool
    return pool.targets(out, p) + goals.judge(out, python)


def target_lines(res):
    for t in res.get("targets", []):
        v = "-" if t["value"] is None else f"{fmt(t['value'])} {t['unit']}" if t.get("unit") \
            else f"{t['value']:.2f}x"
        met = "n/a" if t["met"] is None else "met" if t["met"] else "MISSED"
        yield t["system"], t["goal"], v, met


def fmt(v):
    if v is None:
        return "-"
    a = abs(v)
    return f"{v:.0f}" if a >= 1000 else f"{v:.1f}" if a >= 100 else f"{v:.2f}" if a >= 1 \
        else f"{v:.3f}"


def print_table(res, file=sys.stdout):
    m, py, ver = res["machine"], res["python"], res["versions"]
    print(f"{m['cpu']}, {m['cores']} cores; Python {py['version']}"
          f"{' free-threaded' if py['free_threaded'] else ''} (GIL "
          f"{'on' if py['gil_enabled'] else 'off'}); ringport {ver['ringport']}; node "
          f"{ver.get('node') or '-'}; {res['date']}", file=file)
    for bid, b in res["benchmarks"].items():
        ref = b["reference"]
        print(f"\n{b['family']}: {b['title']} ({b['unit']}, {b['better']} is better)"
              + (f"  -- ratio: how many times ringport [{ref}] is better" if ref else ""),
              file=file)
        for name, d in b["systems"].items():
            ratio = d.get("ratio")
            extra = ""
            if "speedup" in d and d["speedup"] is not None and bid != "scaling-1":
                extra += f"  speed-up {d['speedup']:.2f}x"
            for base, r in d.get("vs", {}).items():
                extra += f"  [{r:.2f}x vs {base}]"
            if not d["verified"]:
                extra += "  ** FAILED **"
            p = f" p99 {fmt(d.get('p99')):>8}" if b["latency"] else ""
            rs = "" if (name == ref or ratio is None) else f"  ringport {ratio:.2f}x"
            print(f"  {name:52s} {fmt(d['median']):>10}{p}{rs}{extra}  (n={d['n']}, "
                  f"{d['repeats']} rep)", file=file)
        for name, why in b["skipped"].items():
            print(f"  {name:52s} {'skipped':>10}  {why}", file=file)
    if res.get("targets"):
        print("\ntargets:", file=file)
        for system, goal, v, met in target_lines(res):
            print(f"  {system:36s} {goal:62s} {v:>8}  {met}", file=file)


def markdown(res):
    """The results as Markdown tables (one per benchmark family), for the README and docs."""
    m, py = res["machine"], res["python"]
    out = [f"{m['cpu']}, {m['cores']} cores; Python {py['version']}"
           f"{' free-threaded' if py['free_threaded'] else ''}; node "
           f"{res['versions'].get('node') or '-'}; {res['date']}; repeats "
           f"{res['options']['repeat']}", ""]
    for bid, b in res["benchmarks"].items():
        lat = b["latency"]
        out.append(f"**{b['family']}: {b['title']}** ({b['unit']}, {b['better']} is better)")
        out.append("")
        out.append("| system | median |" + (" p99 |" if lat else "") + " ringport is |")
        out.append("|---|---:|" + ("---:|" if lat else "") + "---:|")
        for name, d in b["systems"].items():
            r = d.get("ratio")
            rs = "reference" if name == b["reference"] else "-" if r is None else f"{r:.2f}x"
            sp = d.get("speedup")
            if sp is not None and bid != "scaling-1":
                rs += f" (speed-up {sp:.2f}x)"
            for base, r in d.get("vs", {}).items():
                rs += f"; {r:.2f}x vs {base}"
            out.append(f"| {name} | {fmt(d['median'])} |" + (f" {fmt(d.get('p99'))} |"
                       if lat else "") + f" {rs} |")
        for name, why in b["skipped"].items():
            out.append(f"| {name} | skipped: {why} |" + (" |" if lat else "") + " |")
        out.append("")
    if res.get("targets"):
        out += ["**targets**", "", "| system | goal | measured | |", "|---|---|---:|---|"]
        out += [f"| {system} | {goal} | {v} | {met} |" for system, goal, v, met
                in target_lines(res)]
        out.append("")
    return "\n".join(out)


def plot(res, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"--plot: matplotlib is not installed for this Python ({sys.executable}); "
              "pip install matplotlib (or ringport[bench]), or run --load RESULTS.json "
              "--plot PATH with a Python that has it", file=sys.stderr)
        return False
    fams = {}
    names = []
    for b in res["benchmarks"].values():
        names += [s for s in b["systems"] if s not in names]
    cmap = plt.get_cmap("tab20")
    color = {s: cmap(i % 20) for i, s in enumerate(names)}    # one colour per system, everywhere
    for bid, b in res["benchmarks"].items():
        fams.setdefault(b["family"], []).append((bid, b))
    n = len(fams)
    cols = 2 if n > 1 else 1
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(8 * cols, 4.2 * rows), squeeze=False)
    for ax, (fam, items) in zip(axes.flat, fams.items()):
        scaling = fam == "scaling"
        systems = []
        for _, b in items:
            for s in b["systems"]:
                if s not in systems:
                    systems.append(s)
        width = 0.8 / max(1, len(systems))
        vals_all = []
        for j, s in enumerate(systems):
            xs, ys = [], []
            for i, (bid, b) in enumerate(items):
                d = b["systems"].get(s)
                v = None
                if d:
                    v = (1.0 if bid == "scaling-1" else d.get("speedup")) if scaling \
                        else d["median"]
                if v:
                    xs.append(i + (j - (len(systems) - 1) / 2) * width)
                    ys.append(v)
            vals_all += ys
            ax.bar(xs, ys, width, label=s, color=color[s])
        ax.set_xticks(range(len(items)))
        ax.set_xticklabels([b["title"] for _, b in items], fontsize=8)
        unit = "speed-up vs 1 worker" if scaling else items[0][1]["unit"]
        better = "higher" if scaling else items[0][1]["better"]
        ax.set_ylabel(f"{unit} ({better} is better)")
        ax.set_title(fam)
        if vals_all and min(vals_all) > 0 and max(vals_all) / min(vals_all) > 30:
            ax.set_yscale("log")
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    py = res["python"]
    fig.suptitle(f"ringport.bench: {res['machine']['cpu']}, {res['machine']['cores']} cores, "
                 f"Python {py['version']}{' free-threaded' if py['free_threaded'] else ''}, "
                 f"{res['date'][:10]}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv=None):
    args = parse(argv)
    if args.load:
        with open(args.load) as f:
            res = json.load(f)
        # a run saved before the issues' goals were judged: judge them now (from its figures
        # alone; the pool's own targets stay as the run printed them)
        if not any("issue" in t for t in res.get("targets", [])):
            from ringport.bench import goals
            res["targets"] = res.get("targets", []) + goals.judge(res["benchmarks"],
                                                                   res.get("python"))
        print_table(res)
        if args.markdown:
            with open(args.markdown, "w") as f:
                f.write(markdown(res))
        if args.plot and not plot(res, args.plot):
            return 2
        return 0 if res.get("verified") else 1
    p = params(args)
    repeat = args.repeat or (1 if (args.tiny or os.environ.get("RINGPORT_BENCH_TINY")) else
                             3 if args.quick else 5)
    benches = collect(p, args)
    if args.list:
        for b in benches:
            print(f"{b.id:16s} {b.family}: {b.title}")
            for s in b.systems:
                print(f"    {s.name}" + (f"  (skipped: {s.skip})" if s.skip else ""))
        return 0
    info = machine_info()
    t0 = time.monotonic()
    rec, skipped, failures = run(benches, repeat)
    res = {"ringport_bench": 1,
           "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
           "argv": sys.argv[1:] if argv is None else list(argv),
           "options": {"quick": args.quick, "repeat": repeat, "count": args.count,
                       "size": args.size, "params": p},
           **info,
           "gil_enabled_at_end": getattr(sys, "_is_gil_enabled", lambda: True)(),
           "seconds": round(time.monotonic() - t0, 1),
           "benchmarks": summarize(benches, rec, skipped, repeat)}
    res["targets"] = targets(res["benchmarks"], p, info["python"])
    res["failures"] = failures
    res["verified"] = not failures and all(d["verified"] for b in res["benchmarks"].values()
                                           for d in b["systems"].values())
    print_table(res)
    if res["gil_enabled_at_end"] != info["python"]["gil_enabled"]:
        print("\nwarning: the GIL was turned on during the run (an extension without "
              "free-threading support was imported)", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(res))
    if args.plot:
        plot(res, args.plot)
    if not res["verified"]:
        print(f"\n{len(failures)} verification failure(s):", file=sys.stderr)
        for x in failures:
            print(f"  {x}", file=sys.stderr)
        return 1
    return 0
