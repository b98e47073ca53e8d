__all__ = ["prestart", "take_interpreter"]

MAX_SPARES: int

def take_interpreter() -> int | None:
    """A ready interpreter's id for a subinterpreter worker, or None (make a fresh one)."""

def prestart(n: int = 1, *, backend: str = "auto") -> None:
    """Keep ``n`` workers of ``backend`` ready ahead of demand (subinterpreters; a no-op for
    "thread" and "process"); ``prestart(0)`` drops them."""

def spare_count() -> int:
    """How many interpreters are ready now."""

def at_exit() -> None: ...
