# joblib ships no types: its base classes are Any here (their metaclass is ABCMeta).
import abc
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from joblib._parallel_backends import AutoBatchingMixin  # type: ignore[import-untyped, import-not-found, unused-ignore]
from joblib.parallel import ParallelBackendBase  # type: ignore[import-untyped, import-not-found, unused-ignore]

from ringport._pool import WorkerPool

__all__ = ["RingportBackend", "default_worker_backend"]

POOL_OPTIONS: frozenset[str]
SHARED_IDLE_TIMEOUT: float

def default_worker_backend() -> str:
    """What worker_backend="auto" picks: thread on a free-threaded build, else process where
    there is one, else thread."""

class RingportBackend(AutoBatchingMixin, ParallelBackendBase, metaclass=abc.ABCMeta):  # type: ignore[misc]
    """joblib's ``"ringport"`` backend: each batch of calls is a task of a ringport WorkerPool."""

    supports_retrieve_callback: bool
    worker_backend: str
    pool_options: dict[str, Any]
    uses_threads: bool
    supports_sharedmem: bool
    def __init__(self, nesting_level: int | None = None, inner_max_num_threads: int | None = None,
                 *, worker_backend: str = "auto", pool: WorkerPool | None = None,
                 **pool_options: Any) -> None: ...
    def effective_n_jobs(self, n_jobs: int | None) -> int: ...
    def configure(self, n_jobs: int | None = 1, parallel: Any = None, prefer: str | None = None,
                  require: str | None = None, **memmap_options: Any) -> int: ...
    def submit(self, func: Callable[[], Any],
               callback: Callable[[Future[Any]], object] | None = None) -> Future[Any]: ...
    def apply_async(self, func: Callable[[], Any],
                    callback: Callable[[Future[Any]], object] | None = None) -> Future[Any]: ...
    def retrieve_result_callback(self, future: Future[Any]) -> Any: ...
    def abort_everything(self, ensure_ready: bool = True) -> None: ...
    def terminate(self) -> None: ...
