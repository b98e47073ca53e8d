"""Structured data in both directions: the worker doubles a payload.

Run: python examples/02_process_data/main.py [thread|subinterpreter|auto]
"""
import os
import sys

from ringport import Worker

backend = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("RINGPORT_BACKEND", "auto")
worker = Worker(os.path.join(os.path.dirname(__file__), "worker.py"), backend=backend)

worker.on("message", lambda message: print("Main thread received:", message))

worker.post_message({"task": "processData", "payload": [1, 2, 3, 4, 5]})
