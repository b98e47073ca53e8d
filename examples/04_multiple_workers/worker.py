from typing import Any

from ringport import parent_port


def on_message(task: Any) -> None:
    parent_port.post_message(f"{task} done")
    parent_port.close()


parent_port.on("message", on_message)
