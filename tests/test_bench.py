"""Smoke test of the benchmark runner: every benchmark runs with tiny sizes, every result is
verified, and the JSON has the documented shape.  It does not judge speed."""
import json
import os
import subprocess
import sys

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


def test_load_reprints_the_table(tmp_path):
    _, res = run_bench(tmp_path, "--only", "pingpong", "--no-node")
    path = tmp_path / "again.json"
    path.write_text(json.dumps(res))
    env = dict(os.environ, PYTHONPATH=SRC_DIR)
    p = subprocess.run([sys.executable, "-m", "ringport.bench", "--load", str(path)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "ping-pong round trip" in p.stdout and "Node" not in p.stdout
