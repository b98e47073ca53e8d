"""Shared memory: the worker writes 42 into an Int32Array over a SharedArrayBuffer that the
main thread sees without any copy.

Run: python examples/03_shared_memory/main.py [thread|subinterpreter|auto]
"""
import os
import sys

from ringport import Int32Array, SharedArrayBuffer, Worker

backend = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("RINGPORT_BACKEND", "auto")
worker = Worker(os.path.join(os.path.dirname(__file__), "worker.py"), backend=backend)

shared_buffer = SharedArrayBuffer(1024)
int_array = Int32Array(shared_buffer)


def on_message(message: str) -> None:
    print(f"Main thread received: {message} int_array[0] = {int_array[0]}")


worker.on("message", on_message)
worker.post_message({"buffer": shared_buffer})
