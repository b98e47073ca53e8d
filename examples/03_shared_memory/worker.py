from typing import Any

from ringport import Int32Array, parent_port


def on_message(message: Any) -> None:
    int_array = Int32Array(message["buffer"])
    int_array[0] = 42
    parent_port.post_message("Memory updated!")
    parent_port.close()


parent_port.on("message", on_message)
