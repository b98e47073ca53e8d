from typing import Any

from ringport import parent_port


def on_message(message: Any) -> None:
    print("Worker processing:", message["payload"])
    parent_port.post_message({"result": [num * 2 for num in message["payload"]]})
    parent_port.close()


parent_port.on("message", on_message)
