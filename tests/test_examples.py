"""The seed examples and the demo, run as programs on every available backend."""
import os
import subprocess
import sys

import ringport

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")


def run_example(path, backend):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(ringport.__file__))
    env["PYTHONUNBUFFERED"] = "1"  # worker and main print to one stdout: keep their order
    r = subprocess.run([sys.executable, os.path.join(EXAMPLES, path), backend],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    return r.stdout.splitlines()


def test_01_hello(backend):
    assert run_example("01_hello/main.py", backend) == [
        "Worker received: Hello, Worker!",
        "Main thread received: Hello, Main Thread!",
    ]


def test_02_process_data(backend):
    assert run_example("02_process_data/main.py", backend) == [
        "Worker processing: [1, 2, 3, 4, 5]",
        "Main thread received: {'result': [2, 4, 6, 8, 10]}",
    ]


def test_03_shared_memory(backend):
    assert run_example("03_shared_memory/main.py", backend) == [
        "Main thread received: Memory updated! int_array[0] = 42",
    ]


def test_04_multiple_workers(backend):
    assert sorted(run_example("04_multiple_workers/main.py", backend)) == [
        "Worker 1: Task for Worker 1 done",
        "Worker 2: Task for Worker 2 done",
    ]


def test_demo(backend):
    out = "\n".join(run_example("demo.py", backend))
    assert f"using '{backend}'" in out
    assert "round trip of" in out
    assert "echo worker exit code: 0" in out
    assert "broadcast seen by worker" in out
    assert "'error' event: ValueError: something went wrong in the worker" in out
    assert out.endswith("'exit' event: code 1")


def test_05_pool(backend):
    assert run_example("05_pool/main.py", backend) == [
        "primes below 10**k: [4, 25, 168, 1229]",
        "as completed, sorted: [(20000, 2262), (30000, 3245), (50000, 5133)]",
        "task raised TypeError",
        "tasks completed: 8",
    ]
