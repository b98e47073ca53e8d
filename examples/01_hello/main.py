"""Main thread and worker exchange greetings (the article's first example).

Run: python examples/01_hello/main.py [thread|subinterpreter|auto]  (or RINGPORT_BACKEND=...)
"""
import os
import sys

from ringport import Worker

backend = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("RINGPORT_BACKEND", "auto")
worker = Worker(os.path.join(os.path.dirname(__file__), "worker.py"), backend=backend)

worker.on("message", lambda message: print(f"Main thread received: {message}"))

worker.post_message("Hello, Worker!")
