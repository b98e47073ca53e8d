from typing import Any

from ringport import parent_port


def on_message(message: Any) -> None:
    print(f"Worker received: {message}")
    parent_port.post_message("Hello, Main Thread!")
    parent_port.close()  # done: lets the worker, and then the program, end (Node would wait)


parent_port.on("message", on_message)
