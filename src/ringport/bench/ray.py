"""Benchmark 10: across Ray nodes.  ringport workers hosted in Ray actors (backend="ray")
against Ray's own ways to move messages: one actor call per message and
``ray.util.queue.Queue``; and ``WorkerPool(backend="ray")`` against Ray tasks.

The cluster is started here, once per run, on this machine: a head node and a second node
(``ray.cluster_utils.Cluster``), each with one CPU.  Every actor and worker a row talks to is
placed on the second node (a custom resource only it has), so every message crosses between two
Ray nodes, as it would between two machines (over loopback TCP here).  Rows that need Ray skip
(with the reason) where it is not installed.  Every row does the same work: the same message
count, the same message, each result checked.
"""
import atexit
import importlib.util
import time

from ringport.bench.common import Bench, Sample, Skip, System, check

FAR = {"resources": {"far": 0.01}}
# the queues' own actors: no CPU asked, so that they are placed at once (on either node)
QOPTS = {"num_cpus": 0}
MSG = {"task": "processData", "payload": [1, 2, 3, 4, 5]}

_cluster = None


def _ray():
    """Ray, connected to this run's two-node cluster (started on first use)."""
    global _cluster
    if importlib.util.find_spec("ray") is None:
        raise Skip("Ray is not installed (pip install 'ringport[ray]')")
    import ray
    if _cluster is None:
        import os
        from ray.cluster_utils import Cluster

        import ringport.ray
        c = Cluster(initialize_head=True,
                    head_node_args={"num_cpus": 1, "include_dashboard": False})
        c.add_node(num_cpus=1, resources={"far": 1})
        src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)
        ringport.ray.init(address=c.address, log_to_driver=False,
                          runtime_env={"env_vars": {"PYTHONPATH": path}})
        c.wait_for_nodes()
        _cluster = c

        def down():
            ray.shutdown()
            c.shutdown()
        atexit.register(down)
    return ray


class _Echo:
    """The baselines' actor: echo, count, and a queue-draining loop."""

    def __init__(self):
        self.count = 0

    def echo(self, x):
        return x

    def take(self, x):
        self.count += x == MSG
        return None

    def counted(self):
        return self.count

    def drain(self, q, n):
        ok = 0
        for _ in range(n):
            ok += q.get() == MSG
        return ok

    def echo_queue(self, qin, qout, n):
        for _ in range(n):
            qout.put(qin.get())
        return n


def _actor():
    ray = _ray()
    return ray.remote(_Echo).options(max_concurrency=2, **FAR).remote()


ECHO_SRC = """
import ringport
p = ringport.parent_port
while True:
    m = p.receive()
    if m is None:
        break
    p.post_message(m)
"""

COUNT_SRC = """
import ringport
p = ringport.parent_port
msg = {"task": "processData", "payload": [1, 2, 3, 4, 5]}
while True:
    n = p.receive()
    if n is None:
        break
    ok = seen = 0
    while seen < n:
        for m in p.receive_many(4096):
            ok += m == msg
            seen += 1
    p.post_message(ok)
"""


def _worker(src):
    import ringport
    _ray()
    w = ringport.Worker(src, eval=True, backend="ray", ray_options=FAR)
    return w


# ------------------------------------------------------------------ ping-pong

def pingpong_ringport(n):
    w = _worker(ECHO_SRC)
    try:
        for i in range(100):   # warm-up: the actor is placed and connected
            w.post_message(i)
            w.receive(300)
        samples = []
        pc = time.perf_counter
        for i in range(n):
            t0 = pc()
            w.post_message(i)
            v = w.receive(60)
            samples.append((pc() - t0) * 1e6)
            check(v == i, f"echo {v!r} for {i}")
        w.post_message(None)
        check(w.join(60) == 0, "the worker's exit code")
    finally:
        w.terminate(30)
    return Sample(sorted(samples)[len(samples) // 2], n, samples)


def pingpong_actor(n):
    ray = _ray()
    a = _actor()
    try:
        for i in range(100):
            ray.get(a.echo.remote(i))
        samples = []
        pc = time.perf_counter
        for i in range(n):
            t0 = pc()
            v = ray.get(a.echo.remote(i))
            samples.append((pc() - t0) * 1e6)
            check(v == i, f"echo {v!r} for {i}")
    finally:
        ray.kill(a)
    return Sample(sorted(samples)[len(samples) // 2], n, samples)


def pingpong_queue(n):
    ray = _ray()
    from ray.util.queue import Queue
    a = _actor()
    qin, qout = Queue(actor_options=QOPTS), Queue(actor_options=QOPTS)
    try:
        done = a.echo_queue.remote(qin, qout, n + 20)
        for i in range(20):
            qin.put(i)
            qout.get(timeout=120)
        samples = []
        pc = time.perf_counter
        for i in range(n):
            t0 = pc()
            qin.put(i)
            v = qout.get(timeout=60)
            samples.append((pc() - t0) * 1e6)
            check(v == i, f"echo {v!r} for {i}")
        ray.get(done, timeout=120)
    finally:
        qin.shutdown()
        qout.shutdown()
        ray.kill(a)
    return Sample(sorted(samples)[len(samples) // 2], n, samples)


# ------------------------------------------------------------------ processData one way

def _count_ringport(n, many):
    w = _worker(COUNT_SRC)
    try:
        w.post_message(1000)   # warm-up: the actor is placed and connected
        for _ in range(1000):
            w.post_message(MSG)
        check(w.receive(300) == 1000, "warm-up count")
        w.post_message(n)
        pc = time.perf_counter
        t0 = pc()
        if many:
            batch = [MSG] * 256
            for _ in range(n // 256):
                w.port.post_many(batch)
            w.port.post_many([MSG] * (n % 256))
        else:
            post = w.post_message
            for _ in range(n):
                post(MSG)
        ok = w.receive(600)
        dt = pc() - t0
        check(ok == n, f"processData: {ok} of {n} counted")
        w.post_message(None)
        check(w.join(60) == 0, "the worker's exit code")
    finally:
        w.terminate(30)
    return Sample(n / dt / 1e3, n)


def processdata_ringport(n):
    return _count_ringport(n, False)


def processdata_ringport_many(n):
    return _count_ringport(n, True)


def processdata_actor(n):
    ray = _ray()
    a = _actor()
    try:
        ray.get([a.take.remote(MSG) for _ in range(100)])
        base = ray.get(a.counted.remote())
        pc = time.perf_counter
        t0 = pc()
        refs = [a.take.remote(MSG) for _ in range(n)]
        ray.get(refs)
        ok = ray.get(a.counted.remote()) - base
        dt = pc() - t0
        check(ok == n, f"processData: {ok} of {n} counted")
    finally:
        ray.kill(a)
    return Sample(n / dt / 1e3, n)


def processdata_queue(n):
    ray = _ray()
    from ray.util.queue import Queue
    a = _actor()
    q = Queue(actor_options=QOPTS)
    try:
        ray.get(a.drain.remote(q, 0))
        pc = time.perf_counter
        t0 = pc()
        done = a.drain.remote(q, n)
        for _ in range(n):
            q.put(MSG)
        ok = ray.get(done, timeout=600)
        dt = pc() - t0
        check(ok == n, f"processData: {ok} of {n} counted")
    finally:
        q.shutdown()
        ray.kill(a)
    return Sample(n / dt / 1e3, n)


# ------------------------------------------------------------------ pools

def pool_ringport(n):
    import ringport
    from ringport.bench.poolfuncs import noop
    _ray()
    with ringport.WorkerPool(backend="ray", max_workers=2, ray_options={"num_cpus": 1}) as pool:
        check(list(pool.map(noop, range(2000))) == list(range(2000)), "warm-up results")
        pc = time.perf_counter
        t0 = pc()
        futs = [pool.submit(noop, i) for i in range(n)]
        res = [f.result(600) for f in futs]
        dt = pc() - t0
    check(res == list(range(n)), "no-op results")
    return Sample(n / dt / 1e3, n)


def pool_ray_tasks(n):
    ray = _ray()
    from ringport.bench.poolfuncs import noop
    task = ray.remote(num_cpus=1)(noop)
    check(ray.get([task.remote(i) for i in range(200)]) == list(range(200)), "warm-up results")
    pc = time.perf_counter
    t0 = pc()
    res = ray.get([task.remote(i) for i in range(n)])
    dt = pc() - t0
    check(res == list(range(n)), "no-op results")
    return Sample(n / dt / 1e3, n)


RP = "ringport Worker (ray)"
RP_MANY = "ringport Worker (ray), post_many"
ACTOR = "Ray actor call per message"
QUEUE = "ray.util.queue.Queue"


def benchmarks(p):
    n_pp = max(20, p["pingpong"] // 20)
    n_msg = max(100, p["msg"] // 10)
    n_pool = max(50, p["pool_noop"])
    lay = "driver on the head node, the worker or actor on a second Ray node (same machine)"
    return [
        Bench("ray-pingpong", "ray", "ping-pong across Ray nodes", "us", "lower", [
            System(RP, lambda: pingpong_ringport(n_pp), base=(ACTOR, QUEUE)),
            System(ACTOR, lambda: pingpong_actor(n_pp)),
            System(QUEUE, lambda: pingpong_queue(n_pp)),
        ], latency=True, note=f"{n_pp} round trips of an int; {lay}"),
        Bench("ray-processData", "ray", "processData one way across Ray nodes", "k msg/s",
              "higher", [
                  System(RP, lambda: processdata_ringport(n_msg), base=(ACTOR, QUEUE)),
                  System(RP_MANY, lambda: processdata_ringport_many(n_msg), base=(ACTOR, QUEUE)),
                  System(ACTOR, lambda: processdata_actor(n_msg)),
                  System(QUEUE, lambda: processdata_queue(n_msg)),
              ], note=f"{n_msg} messages {MSG} in every row, each counted by the receiver; "
                      f"{lay}"),
        Bench("ray-pool-noop", "ray", "no-op tasks on a two-node Ray cluster", "k tasks/s",
              "higher", [
                  System("ringport WorkerPool (ray)", lambda: pool_ringport(n_pool),
                         base=("Ray tasks",)),
                  System("Ray tasks", lambda: pool_ray_tasks(n_pool)),
              ], note=f"{n_pool} tasks x -> x in each row: the pool's 2 workers (one per node) "
                      f"against Ray tasks of num_cpus=1 (one at a time per node)"),
    ]
