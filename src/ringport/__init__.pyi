from collections.abc import MutableMapping
from typing import Any

from ringport import atomics as atomics
from ringport._core import (
    BigInt64Array as BigInt64Array,
    BigUint64Array as BigUint64Array,
    BroadcastChannel as BroadcastChannel,
    Float32Array as Float32Array,
    Float64Array as Float64Array,
    Int8Array as Int8Array,
    Int16Array as Int16Array,
    Int32Array as Int32Array,
    MessageChannel as MessageChannel,
    MessagePort as MessagePort,
    ReceivedMessage as ReceivedMessage,
    SharedArrayBuffer as SharedArrayBuffer,
    Uint8Array as Uint8Array,
    Uint16Array as Uint16Array,
    Uint32Array as Uint32Array,
    dumps as dumps,
    loads as loads,
    receive_message_on_port as receive_message_on_port,
)
from ringport._errors import (
    DataCloneError as DataCloneError,
    DecodeError as DecodeError,
    Empty as Empty,
    Full as Full,
    PortClosed as PortClosed,
    WorkerError as WorkerError,
    WorkerTerminated as WorkerTerminated,
)
from ringport._pool import BrokenWorkerPool as BrokenWorkerPool, WorkerPool as WorkerPool
from ringport._prestart import prestart as prestart
from ringport._worker import (
    Worker as Worker,
    available_backends as available_backends,
    get_environment_data as get_environment_data,
    set_environment_data as set_environment_data,
)

_MaybeNone = Any  # (typeshed's MaybeNone)

__version__: str

def get_include() -> str:
    """The directory holding ringport's C headers, for Extension(include_dirs=[...])."""

# Per worker, read at each access (the module's __getattr__): in the main program parent_port
# is None, worker_data None, is_main_thread True, thread_id 0, argv sys.argv, env os.environ.
# parent_port is None only where no worker code runs: typed as typeshed types sys.stdout
# (`| MaybeNone`, an Any), so a worker's parent_port.post_message(...) needs no assert while a
# check `is None` stays allowed.
parent_port: MessagePort | _MaybeNone
worker_data: Any
is_main_thread: bool
thread_id: int
argv: list[str]
env: MutableMapping[str, str]
# Node's spellings
parentPort: MessagePort | _MaybeNone
workerData: Any
isMainThread: bool
threadId: int

__all__ = [
    "BigInt64Array",
    "BigUint64Array",
    "BroadcastChannel",
    "DataCloneError",
    "DecodeError",
    "Empty",
    "Float32Array",
    "Float64Array",
    "Full",
    "Int16Array",
    "Int32Array",
    "Int8Array",
    "MessageChannel",
    "MessagePort",
    "PortClosed",
    "ReceivedMessage",
    "SharedArrayBuffer",
    "Uint16Array",
    "Uint32Array",
    "Uint8Array",
    "Worker",
    "WorkerError",
    "WorkerPool",
    "BrokenWorkerPool",
    "WorkerTerminated",
    "argv",
    "atomics",
    "available_backends",
    "dumps",
    "env",
    "get_environment_data",
    "get_include",
    "is_main_thread",
    "loads",
    "parent_port",
    "prestart",
    "receive_message_on_port",
    "set_environment_data",
    "thread_id",
    "worker_data",
]
