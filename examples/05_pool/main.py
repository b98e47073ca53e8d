"""A pool of warm workers running many tasks: python examples/05_pool/main.py [backend]"""
import concurrent.futures
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ringport  # noqa: E402
from tasks import count_primes  # noqa: E402

backend = sys.argv[1] if len(sys.argv) > 1 else "auto"

with ringport.WorkerPool(max_workers=2, backend=backend) as pool:
    # map: results in order
    print("primes below 10**k:", list(pool.map(count_primes, [10, 100, 1000, 10000])))
    # submit: futures, completed in any order
    futures = {pool.submit(count_primes, n): n for n in (50_000, 20_000, 30_000)}
    done = sorted((futures[f], f.result()) for f in concurrent.futures.as_completed(futures))
    print("as completed, sorted:", done)
    # a task that raises: its exception comes back through the future
    try:
        pool.submit(count_primes, "ten").result()  # type: ignore[arg-type]  # (on purpose)
    except TypeError:
        print("task raised TypeError")
    print("tasks completed:", pool.completed)
