"""ringport's exceptions.  They subclass the stdlib ones a user would reach for."""
import queue

__all__ = ["DataCloneError", "DecodeError", "Empty", "Full", "PortClosed", "WorkerError", "WorkerTerminated"]


class DataCloneError(TypeError):
    """A value (or something in ``transfer``) cannot be cloned or transferred.

    Raised by ``post_message`` itself; nothing was sent and the port stays usable.
    """


class DecodeError(ValueError):
    """The bytes of a message are not a valid encoding (corrupt or truncated)."""


class Empty(queue.Empty, TimeoutError):
    """``receive(timeout=...)`` found no message in time."""


class Full(queue.Full, TimeoutError):
    """A bounded port had no room for the message in time."""


class PortClosed(EOFError):
    """The port is closed, or its peer closed it and every earlier message was delivered."""


class WorkerError(RuntimeError):
    """An exception raised in a worker whose type cannot be rebuilt in the parent.

    ``type_name``, ``message`` and ``traceback`` (the worker's formatted traceback) describe it.
    """

    def __init__(self, type_name, message, traceback=""):
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.traceback = traceback

    def __reduce__(self):
        return (type(self), (self.type_name, self.message, self.traceback))


class WorkerTerminated(BaseException):
    """Raised inside a worker by ``worker.terminate()`` to unwind it (like SystemExit, it is not
    an Exception, so ``except Exception`` in the worker does not swallow it)."""
