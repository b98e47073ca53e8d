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


# ---------------------------------------------------------------------------- worker error reports
#
# A worker's uncaught exception crosses to its parent as a report (a dict that the codec can
# carry): the exception object itself for the thread backend (same interpreter), else its
# pickle, plus its type, message and formatted traceback for when it cannot be rebuilt.

_OWN_FILES = ("_bootstrap.py", "_loop.py", "_worker.py", "_worker.pxi")
_local_errors = {}  # thread backend: the worker's exception object itself, by thread id


def error_report(exc, backend, thread_id=None):
    """What the parent needs to rebuild exc (see rebuild_error)."""
    import traceback
    tb = whole = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.endswith(_OWN_FILES):
        tb = tb.tb_next  # ringport's own frames above the worker's code say nothing useful
    if tb is not None:
        exc.__traceback__ = tb
    text = "".join(traceback.format_exception(exc))
    # The worker is gone: the locals of its frames (its ports, its loop) must not live on in
    # the exception its parent gets; file names and line numbers stay for printing.
    traceback.clear_frames(whole)
    report = {"type": type(exc).__qualname__, "module": type(exc).__module__,
              "message": str(exc), "traceback": text, "pickle": None, "local": None}
    if backend == "thread" and thread_id is not None:
        _local_errors[thread_id] = exc
        report["local"] = thread_id
    else:
        try:
            import pickle  # lazily: a worker that never fails need not import it

            report["pickle"] = pickle.dumps(exc)
        except Exception:
            pass
    return report


def boot_failure_report(message):
    """A report for a worker that failed before its bootstrap could report anything (its
    'error' is a WorkerError, a RuntimeError)."""
    return {"type": "RuntimeError", "module": "builtins", "message": message,
            "traceback": f"RuntimeError: {message}\n", "pickle": None, "local": None}


def rebuild_error(report, allow_pickle=True):
    """The exception a parent's 'error' event carries, from a report of error_report; with
    allow_pickle False, never by unpickling (a WorkerError with the type's name instead)."""
    local = report.get("local")
    if local is not None:
        exc = _local_errors.pop(local, None)
        if exc is not None:
            return exc
    data = report.get("pickle") if allow_pickle else None
    if data is not None:
        try:
            import pickle

            exc = pickle.loads(data)
        except Exception:
            exc = None
        if (isinstance(exc, BaseException) and type(exc).__qualname__ == report["type"]
                and type(exc).__module__ == report["module"]):
            try:
                exc.add_note("Traceback in the worker:\n" + report["traceback"].rstrip("\n"))
            except Exception:
                pass
            return exc
    return WorkerError(report["type"], report["message"], report["traceback"])


def print_worker_error(worker, error, report):
    """A worker's error that found no 'error' listener: print it, as an uncaught exception in a
    thread is."""
    import sys
    name = f" ({worker.name})" if worker.name else ""
    print(f"Exception in ringport worker {worker.thread_id}{name}:", file=sys.stderr)
    if isinstance(error, WorkerError) or error.__traceback__ is None:
        tb = error.traceback if isinstance(error, WorkerError) else (report or {}).get("traceback")
        print(tb or f"{type(error).__name__}: {error}", file=sys.stderr, end="")
        if tb and not tb.endswith("\n"):
            print(file=sys.stderr)
    else:
        import traceback
        traceback.print_exception(error, file=sys.stderr)
