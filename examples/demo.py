"""A short tour of ringport: workers, events, a channel passed to a worker, broadcast, and how
long a round trip takes.

Run: python examples/demo.py [thread|subinterpreter|auto]   (or RINGPORT_BACKEND=...)
"""
import os
import statistics
import sys
import threading
import time

import ringport
from ringport import BroadcastChannel, MessageChannel, Worker

ECHO = """
import ringport
for msg in ringport.parent_port:          # until the parent closes the port
    ringport.parent_port.post_message(msg)
"""

SIDE_CHANNEL = """
import ringport
port = ringport.worker_data["port"]
port.post_message(f"hello through a transferred port from worker {ringport.thread_id}")
with ringport.BroadcastChannel("news") as news:
    port.post_message("listening")
    port.post_message(f"broadcast seen by worker {ringport.thread_id}: {news.receive()}")
"""


def main() -> None:
    backend = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("RINGPORT_BACKEND", "auto")
    print(f"Python {sys.version.split()[0]}; backends here: {ringport.available_backends()}; "
          f"using {backend!r}")

    # 1. a worker that echoes, with Node-style events
    t0 = time.perf_counter()
    echo = Worker(ECHO, eval=True, backend=backend, name="echo")
    online = threading.Event()
    echo.on("online", online.set)
    online.wait(30)
    print(f"echo worker {echo.thread_id} ({echo.backend}) online after "
          f"{(time.perf_counter() - t0) * 1e3:.1f} ms")

    # 2. round trips: post, then block on the answer
    payload = {"task": "processData", "payload": [1, 2, 3, 4, 5]}
    times = []
    for _ in range(2000):
        t = time.perf_counter()
        echo.post_message(payload)
        echo.receive()
        times.append(time.perf_counter() - t)
    print(f"round trip of {payload}: median {statistics.median(times) * 1e6:.1f} us")
    echo.port.close()
    print(f"echo worker exit code: {echo.join(30)}")

    # 3. a port moved into a second worker, and a broadcast to it
    ch = MessageChannel()
    side = Worker(SIDE_CHANNEL, eval=True, backend=backend, worker_data={"port": ch.port2},
                  transfer=[ch.port2])
    print(ch.port1.receive(timeout=30))
    assert ch.port1.receive(timeout=30) == "listening"
    with BroadcastChannel("news") as news:
        news.post_message("ringport works")
    print(ch.port1.receive(timeout=30))
    print(f"second worker exit code: {side.join(30)}")

    # 4. errors come back as exceptions of their own type
    failing = Worker("raise ValueError('something went wrong in the worker')", eval=True,
                     backend=backend)
    failing.on("error", lambda e: print(f"'error' event: {type(e).__name__}: {e}"))
    failing.on("exit", lambda code: print(f"'exit' event: code {code}"))


if __name__ == "__main__":
    main()
