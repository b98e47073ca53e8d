import queue

__all__ = ["DataCloneError", "DecodeError", "Empty", "Full", "PortClosed", "WorkerError", "WorkerTerminated"]

class DataCloneError(TypeError):
    """A value (or something in ``transfer``) cannot be cloned or transferred."""

class DecodeError(ValueError):
    """The bytes of a message are not a valid encoding (corrupt or truncated)."""

class Empty(queue.Empty, TimeoutError):
    """``receive(timeout=...)`` found no message in time."""

class Full(queue.Full, TimeoutError):
    """A bounded port had no room for the message in time."""

class PortClosed(EOFError):
    """The port is closed, or its peer closed it and every earlier message was delivered."""

class WorkerError(RuntimeError):
    """An exception raised in a worker whose type cannot be rebuilt in the parent."""

    type_name: str
    message: str
    traceback: str
    def __init__(self, type_name: str, message: str, traceback: str = "") -> None: ...

class WorkerTerminated(BaseException):
    """Raised inside a worker by ``worker.terminate()`` to unwind it."""
