"""Two workers, each with its own task, answering in parallel.

Run: python examples/04_multiple_workers/main.py [thread|subinterpreter|auto]
"""
import os
import sys

from ringport import Worker

backend = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("RINGPORT_BACKEND", "auto")
script = os.path.join(os.path.dirname(__file__), "worker.py")
worker1 = Worker(script, backend=backend)
worker2 = Worker(script, backend=backend)

worker1.post_message("Task for Worker 1")
worker2.post_message("Task for Worker 2")

worker1.on("message", lambda msg: print(f"Worker 1: {msg}"))
worker2.on("message", lambda msg: print(f"Worker 2: {msg}"))
