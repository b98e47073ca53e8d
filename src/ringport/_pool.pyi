import concurrent.futures as _cf
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Literal, TypeVar

from typing_extensions import ParamSpec, Self

from ringport._core import MessagePort
from ringport._worker import _Backend

__all__ = ["BrokenWorkerPool", "WorkerPool"]

_T = TypeVar("_T")
_P = ParamSpec("_P")

STATS_WINDOW: int

class BrokenWorkerPool(_cf.BrokenExecutor):
    """A worker's initializer failed: the pool runs nothing more (as BrokenProcessPool)."""

class Percentiles(dict[str, float]):
    """Run- or wait-time figures in seconds; the keys are also attributes."""

    p50: float
    p75: float
    p90: float
    p99: float
    min: float
    max: float
    mean: float
    count: float

class WorkerPool(_cf.Executor):
    """A pool of ringport workers that runs tasks: a ``concurrent.futures.Executor``."""

    backend: str
    max_workers: int
    min_workers: int
    idle_timeout: float | None
    max_queue: int | None
    max_tasks_per_worker: int | None
    submit_timeout: float | None
    name: str | None
    filename: str | None
    def __init__(self, *, max_workers: int | None = None, min_workers: int | None = None,
                 backend: _Backend = "auto", idle_timeout: float | None = None,
                 max_queue: int | Literal["auto"] | None = None,
                 max_tasks_per_worker: int | None = None,
                 initializer: Callable[..., object] | None = None, initargs: tuple[Any, ...] = (),
                 worker_data: object = None, name: str | None = None,
                 filename: str | os.PathLike[str] | None = None, submit_timeout: float | None = None,
                 allow_pickle: bool = True, ray_options: Mapping[str, Any] | None = None) -> None: ...
    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _cf.Future[_T]: ...
    def run(self, task: object, *, transfer: Iterable[MessagePort] = (),
            name: str = "default") -> _cf.Future[Any]: ...
    def abort(self, future: _cf.Future[Any]) -> bool: ...
    def map(self, fn: Callable[..., _T], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1, buffersize: int | None = None) -> Iterator[_T]: ...
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None: ...
    def on(self, event: Literal["drain"], listener: Callable[[], object]) -> Self: ...
    def off(self, event: Literal["drain"], listener: Callable[[], object] | None = None) -> Self: ...
    def once(self, event: Literal["drain"], listener: Callable[[], object]) -> Self: ...
    async def submit_async(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T: ...
    async def run_async(self, task: object, *, transfer: Iterable[MessagePort] = (),
                        name: str = "default") -> Any: ...
    @property
    def queue_size(self) -> int: ...
    @property
    def needs_drain(self) -> bool: ...
    @property
    def completed(self) -> int: ...
    @property
    def idle_workers(self) -> int: ...
    @property
    def workers(self) -> int: ...
    @property
    def utilization(self) -> float: ...
    @property
    def run_time(self) -> Percentiles: ...
    @property
    def wait_time(self) -> Percentiles: ...
    @property
    def stats(self) -> dict[str, Any]: ...
