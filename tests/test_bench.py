"""Smoke test of the benchmark runner: every benchmark runs with tiny sizes, every result is
verified, and the JSON has the documented shape.  It does not judge speed."""
import json
import os
import subprocess
import sys

import pytest

import ringport
from conftest import SRC_DIR

FAMILIES = {"pingpong", "processData", "1 MiB float64 arrays", "byte strings", "shared counter",
            "wait/notify", "worker start-up", "worker memory", "scaling"}


def run_bench(tmp_path, *extra):
    out = tmp_path / "bench.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC_DIR + os.pathsep + env.get("PYTHONPATH", "")
    # --tiny (undocumented) shrinks --quick further; the cimported loops are built and checked
    # by test_cimport, so they are left out here to keep this test short
    p = subprocess.run([sys.executable, "-m", "ringport.bench", "--quick", "--tiny",
                        "--no-cimport", "--json", str(out), *extra],
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, f"stdout:\n{p.stdout[-4000:]}\nstderr:\n{p.stderr[-4000:]}"
    return p, json.loads(out.read_text())


def test_quick_run_verifies_everything_and_writes_json(tmp_path):
    p, res = run_bench(tmp_path)
    assert res["verified"] is True and res["failures"] == []
    assert res["machine"]["cores"] >= 1 and res["machine"]["cpu"]
    assert res["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert isinstance(res["python"]["free_threaded"], bool)
    assert res["versions"]["ringport"] == ringport.__version__
    assert {b["family"] for b in res["benchmarks"].values()} == FAMILIES
    for bid, b in res["benchmarks"].items():
        assert b["unit"] and b["better"] in ("lower", "higher"), bid
        assert all(isinstance(why, str) and why for why in b["skipped"].values()), bid
        assert set(b["systems"]).isdisjoint(b["skipped"]), bid
        for name, d in b["systems"].items():
            assert d["verified"] is True, (bid, name, d)
            assert d["n"] > 0 and d["repeats"] >= 1, (bid, name, d)
            # RSS growth can come out negative (freed pages); everything else is positive
            assert d["median"] > 0 or bid == "worker-memory", (bid, name, d)
            assert d["unit"] == b["unit"]
            if b["latency"] and d.get("p99") is not None:
                assert d["p99"] >= d["median"] * 0.999
        if b["reference"] is not None:
            assert b["reference"].startswith("ringport")
            assert abs(b["systems"][b["reference"]]["ratio"] - 1.0) < 1e-9
    # ringport itself always runs where it is meant to, whatever else is missing
    for bid in ("pingpong", "processData", "array-transfer", "bytes-1k", "scaling-2"):
        assert any(n.startswith("ringport") for n in res["benchmarks"][bid]["systems"]), bid
    assert "ringport.atomics.add (Python, threads)" in res["benchmarks"]["counter"]["systems"]
    # Node is optional: either it ran or it is skipped with a reason
    for bid, b in res["benchmarks"].items():
        node = [n for n in list(b["systems"]) + list(b["skipped"]) if n.startswith("Node")]
        assert node, bid
    assert "ping-pong round trip" in p.stdout
    if "process" in ringport.available_backends():
        check_process_rows(res)


# every family has its process-worker rows, each compared with its baseline(s) on equal work
PROCESS_ROWS = {
    "pingpong": ("ringport Worker (process)", ["multiprocessing.Pipe (processes)"]),
    "processData": ("ringport Worker (process)", ["multiprocessing.Queue (processes)",
                                                  "faster-fifo (processes)"]),
    "array-copy": ("ringport Worker (process)", ["multiprocessing.Pipe send_bytes (processes)",
                                                 "multiprocessing.Pipe (processes)"]),
    "array-transfer": ("ringport Worker (process)", []),
    "array-share-size": ("ringport Worker (process), 64 MiB",
                         ["ringport Worker (process), 1 MiB"]),
    "bytes-64k": ("ringport Worker (process)", ["multiprocessing.Pipe (processes)"]),
    "counter": ("ringport.atomics.add (Python, Worker process)", []),
    "waitnotify": ("ringport.atomics wait/notify (Python, main <-> Worker process)", []),
    "worker-startup": ("ringport Worker (process)",
                       ["multiprocessing.Process (forkserver)",
                        "ProcessPoolExecutor (forkserver, fresh pool)"]),
    "worker-memory": ("ringport Worker (process)", ["multiprocessing.Process (forkserver)"]),
    "scaling-2": ("ringport Worker (process)", []),
}


def check_process_rows(res):
    bench = res["benchmarks"]
    assert {bench[bid]["family"] for bid in PROCESS_ROWS} == FAMILIES
    for bid, (name, bases) in PROCESS_ROWS.items():
        d = bench[bid]["systems"][name]
        assert d["verified"] and d["median"] > 0 or bid == "worker-memory", (bid, d)
        for base in bases:
            if base in bench[bid]["skipped"]:      # e.g. faster-fifo not installed
                continue
            assert d["vs"][base] > 0, (bid, base, d)
            assert d["vs"][base] == pytest.approx(
                bench[bid]["systems"][base]["median"] / d["median"]
                if bench[bid]["better"] == "lower" else
                d["median"] / bench[bid]["systems"][base]["median"]), (bid, base)
    assert bench["scaling-2"]["systems"]["ringport Worker (process)"]["speedup"] > 0


def test_load_reprints_the_table(tmp_path):
    _, res = run_bench(tmp_path, "--only", "pingpong", "--no-node")
    path = tmp_path / "again.json"
    path.write_text(json.dumps(res))
    env = dict(os.environ, PYTHONPATH=SRC_DIR)
    p = subprocess.run([sys.executable, "-m", "ringport.bench", "--load", str(path)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "ping-pong round trip" in p.stdout and "Node" not in p.stdout
