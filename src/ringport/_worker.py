"""Workers: Node's worker_threads in Python.

A Worker runs a script, Python source or a function in parallel with its parent, on one of two
backends:

* ``"thread"``: a thread of the same interpreter.  Truly parallel on free-threaded CPython; on
  GIL builds it shares the GIL (fine for I/O and for code that releases the GIL).
* ``"subinterpreter"``: a thread running a new interpreter with its own GIL (CPython 3.13+):
  truly parallel on standard builds.  Modules that refuse to load in subinterpreters (numpy,
  today) cannot be imported there.

Parent and worker talk through MessagePorts (``worker.post_message`` / ``ringport.parent_port``)
whose messages are structured clones.  A worker boots from one token (``_core._export``) that
carries its parent port, a control port, worker_data, environment data, argv, env and its id.

Events and the loop.  Listeners of ports and workers are called by an event loop of the context
that registered them, one at a time:

* in the main thread's context, by a daemon dispatcher thread named ``ringport-loop`` that
  sleeps on a C wait set until a watched port has something.  When the main module is done, the
  main thread waits (interruptibly) while a referenced worker or a referenced port with 'message'
  listeners is live, so the program exits by itself afterwards, as in Node;
* in a worker, by the worker's own thread once its script has run: it keeps dispatching until no
  referenced port with listeners (and no referenced child worker) remains, then the worker exits.

Messages that arrive before a listener is attached stay queued for it.
"""
import _signal
import atexit
import builtins
import collections
import os
import sys
import threading
import weakref

from ringport import _core
from ringport._core import (
    MessageChannel,
    _WaitSet,
    _WorkerCtl,
    _drop_token,
    _export,
    _import,
    _loop_state,
    _port_new_ref,
    _run_guarded,
)
from ringport._errors import WorkerError, WorkerTerminated
from ringport._events import Emitter

try:
    import _interpreters
except ImportError:  # before 3.13
    _interpreters = None

__all__ = ["Worker", "available_backends", "get_environment_data", "set_environment_data"]

# (asyncio, traceback, re, importlib and sysconfig are imported where used: a subinterpreter
# worker imports this module at boot, and asyncio alone costs it ~150 ms on 3.14.)


def _free_threaded():
    if sys.platform != "win32":
        return "t" in sys.abiflags
    import sysconfig
    return bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


FREE_THREADED = _free_threaded()

#: The exit code of a worker stopped by terminate() (Node uses 1 as well).
TERMINATED_EXIT_CODE = 1


def available_backends():
    """The backends that work on this interpreter, the default ("auto") first."""
    subinterp = _interpreters is not None and sys.version_info >= (3, 13) and not FREE_THREADED
    return ["subinterpreter", "thread"] if subinterp else ["thread"]


def _resolve_backend(backend):
    if backend == "auto":
        return available_backends()[0]
    if backend not in ("thread", "subinterpreter"):
        raise ValueError(f"backend must be 'auto', 'thread' or 'subinterpreter', not {backend!r}")
    if backend not in available_backends():
        why = ("this is a free-threaded build: use backend='thread', which runs in parallel"
               if FREE_THREADED else "subinterpreters with their own GIL need CPython 3.13+")
        raise ValueError(f"backend 'subinterpreter' is not available here ({why})")
    return backend


# ---------------------------------------------------------------------------- per-worker context


class _Context:
    """What ringport.parent_port, worker_data, thread_id... say in one worker (or the main)."""

    def __init__(self, *, parent_port=None, worker_data=None, thread_id=0, is_main_thread=True,
                 env=None, argv=None, env_data=None, name=None, loop=None):
        self.parent_port = parent_port
        self.worker_data = worker_data
        self.thread_id = thread_id
        self.is_main_thread = is_main_thread
        self.env = env
        self.argv = argv
        self.env_data = {} if env_data is None else env_data
        self.name = name
        self.loop = loop
        self.children = weakref.WeakSet()
        self.lock = threading.Lock()

    def get_loop(self):
        with self.lock:
            if self.loop is None:  # only the main context creates its loop lazily
                self.loop = _Loop(threaded=True)
            return self.loop


_tls = threading.local()     # thread-backend workers: each worker thread's context
_interp_ctx = None           # a subinterpreter worker: the context of its whole interpreter
_main_ctx = _Context(env=os.environ, argv=sys.argv)


def _current():
    ctx = getattr(_tls, "ctx", None)
    if ctx is not None:
        return ctx
    return _interp_ctx if _interp_ctx is not None else _main_ctx


def context_attr(name):
    """ringport.<name> for the per-worker attributes (see ringport.__getattr__)."""
    return getattr(_current(), name)


def set_environment_data(key, value):
    """Set (value None: delete) an entry cloned into every worker started afterwards from this
    context, as Node's setEnvironmentData."""
    env = _current().env_data
    if value is None:
        env.pop(key, None)
    else:
        env[key] = value


def get_environment_data(key):
    """What set_environment_data(key, ...) stored here or in a parent before this worker started
    (None if nothing)."""
    return _current().env_data.get(key)


# ---------------------------------------------------------------------------- event loops


class _Loop:
    """Dispatches the events of the ports watched by one context, one listener at a time.

    Ports are watched through a C wait set: each watched port's incoming queue signals the set
    after every post and on close, and the loop sleeps on it (no polling)."""

    def __init__(self, threaded):
        self.ws = _WaitSet()
        self.threaded = threaded
        self.lock = threading.Lock()           # guards watched and the thread fields
        self.dispatch_lock = threading.Lock()  # one listener at a time, across thread hand-overs
        self.watched = {}
        self.calls = collections.deque()       # call_soon() callbacks
        self.thread = None
        self.stopped = False
        self.idle = _WaitSet()                 # signalled when what the loop watches changes

    def update(self, port):
        state = _loop_state(port)
        with self.lock:
            key = id(port)
            if state:
                if key not in self.watched:
                    self.watched[key] = port
                    self.ws.watch(port, 0)
            elif self.watched.pop(key, None) is not None:
                self.ws.unwatch(port, 0)
            if self.threaded:
                self._ensure_thread()
        self.ws.signal()
        self._changed()

    def _referenced(self):
        return bool(self.calls) or any(_loop_state(p) == 2 for p in self.watched.values())

    def call_soon(self, fn, *args):
        """Run fn(*args) on this loop, between listeners."""
        with self.lock:
            self.calls.append((fn, args))
            if self.threaded:
                self._ensure_thread()
        self.ws.signal()
        self._changed()

    def _ensure_thread(self):
        # with self.lock held.  The dispatcher is a daemon thread: what keeps the program alive
        # is _on_threading_shutdown, in the main thread, where Ctrl-C still gets through (threading's
        # own join of non-daemon threads cannot be interrupted on 3.13).
        if self.stopped or self.thread is not None or not (self.watched or self.calls):
            return
        t = threading.Thread(target=self._run_thread, name="ringport-loop", daemon=True)
        self.thread = t
        t.start()

    def _changed(self):
        self.idle.signal()  # whoever waits for the loop to go idle re-checks

    def _dispatch_all(self, ports, report):
        """One round over the ports; True if anything was delivered.  report: what to do with an
        exception a listener raised (None: let it propagate)."""
        busy = False
        with self.dispatch_lock:
            while self.calls:
                try:
                    fn, args = self.calls.popleft()
                except IndexError:
                    break
                busy = True
                try:
                    fn(*args)
                except Exception as exc:
                    if report is None:
                        raise
                    report(exc)
            for port in ports:
                try:
                    if port._dispatch(64):
                        busy = True
                except Exception as exc:
                    if report is None:
                        raise
                    report(exc)
                    busy = True
                if not _loop_state(port):
                    with self.lock:
                        if self.watched.pop(id(port), None) is not None:
                            self.ws.unwatch(port, 0)
                            busy = True
        return busy

    def _run_thread(self):
        me = threading.current_thread()
        while True:
            seen = self.ws.seq()
            with self.lock:
                if self.thread is not me or self.stopped:
                    return
                if not (self.watched or self.calls):
                    self.thread = None  # update() starts a new one when needed
                    self._changed()
                    return
                ports = list(self.watched.values())
            busy = self._dispatch_all(ports, _report_listener_error)
            self._changed()
            if not busy:
                self.ws.wait(seen, None, False)

    def wait_idle(self):
        """In the main thread at exit: wait until nothing referenced is watched (Node's "the
        event loop is empty"), interruptibly."""
        while True:
            seen = self.idle.seq()
            with self.lock:
                if self.stopped or not self._referenced():
                    return
            # sliced: PyErr_CheckSignals() runs every 50 ms, so Ctrl-C gets through here even
            # where a threading.Event wait would not see it (interpreter shutdown, 3.11-3.14)
            self.idle.wait(seen, None, True)

    def run_inline(self):
        """A worker's loop, in the worker's own thread: until nothing referenced is watched."""
        while True:
            seen = self.ws.seq()
            with self.lock:
                if not self._referenced():
                    return
                ports = list(self.watched.values())
            if self._dispatch_all(ports, None):
                continue
            self.ws.wait(seen, None, False)

    def stop(self):
        with self.lock:
            self.stopped = True
        self.ws.signal()
        self._changed()


def _report_listener_error(exc):
    import traceback
    print("Exception in a ringport listener:", file=sys.stderr)
    traceback.print_exception(exc, file=sys.stderr)


class _Hook:
    """Set as ringport._core._loop_hook: ports tell it when their listeners or ref change."""

    def __init__(self):
        self.owners = weakref.WeakKeyDictionary()  # port -> the loop that watches it
        self.lock = threading.Lock()

    def update(self, port):
        with self.lock:
            loop = self.owners.get(port)
        if loop is None:
            if not _loop_state(port):
                return
            loop = _current().get_loop()
            with self.lock:
                loop = self.owners.setdefault(port, loop)
        loop.update(port)

    def wake(self):
        pass  # closing a channel signals the wait sets watching it from C


_core._loop_hook = _Hook()


# ---------------------------------------------------------------------------- Worker


_live = set()              # workers not yet exited, in this interpreter
_live_lock = threading.Lock()
_local_errors = {}         # thread backend: the worker's exception object itself, by thread id


def _target_spec(target, eval_, backend):
    if eval_:
        if not isinstance(target, str):
            raise TypeError("with eval=True, target must be Python source (a str)")
        return ("eval", target), None
    if isinstance(target, (str, os.PathLike)):
        path = os.path.abspath(os.fspath(target))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"worker script not found: {path}")
        return ("file", path), None
    if callable(target):
        if backend == "thread":
            return ("call",), target
        module = getattr(target, "__module__", None)
        qualname = getattr(target, "__qualname__", "")
        if module in (None, "__main__") or "<locals>" in qualname or "<lambda>" in qualname:
            raise TypeError(
                f"a function target for backend='subinterpreter' must be importable by its module "
                f"and qualified name (a module-level function of an importable module); "
                f"{qualname or target!r} in module {module!r} is not; use a script path, or "
                f"backend='thread'")
        return ("func", module, qualname), None
    raise TypeError(f"target must be a path to a .py file, Python source with eval=True, or a "
                    f"function, not {type(target).__name__}")


class Worker:
    """A worker running target in parallel: ``Worker(target, *, eval=False, worker_data=None,
    transfer=(), name=None, backend="auto", argv=None, env=None)``.

    target: a path to a .py file (run as ``__main__``), Python source with eval=True, or a
    module-level function called with no arguments.  worker_data arrives as a structured clone
    in ``ringport.worker_data``; ports listed in transfer (also inside worker_data) move to the
    worker.  argv: strings appended to the worker's argv (``sys.argv`` in a subinterpreter worker,
    ``ringport.argv`` in every backend); env: the worker's ``ringport.env`` (default: a copy of
    the parent's).

    Events: 'online', 'message' (value), 'messageerror' (exception), 'error' (exception),
    'exit' (exit code).  Talk with ``post_message``/``receive``; stop with ``terminate()``;
    wait with ``join()`` or, in asyncio, ``await worker.wait_exit()`` (or ``await worker``).
    """

    def __init__(self, target, *, eval=False, worker_data=None, transfer=(), name=None,
                 backend="auto", argv=None, env=None):
        backend = _resolve_backend(backend)
        spec, func = _target_spec(target, eval, backend)
        parent = _current()
        if argv is None:
            argv = []
        elif isinstance(argv, (str, bytes)):
            raise TypeError("argv must be a list of strings")
        argv = [str(a) for a in argv]
        if env is None:
            env = dict(parent.env) if parent.env is not None else dict(os.environ)
        else:
            env = {str(k): str(v) for k, v in dict(env).items()}
        self.backend = backend
        self.name = name
        self._ctl = _WorkerCtl()
        self.thread_id = self._ctl.thread_id
        self._events = Emitter()
        self._lock = threading.Lock()
        self._exit_code = None
        self._error = None
        self._error_printed = False
        self._async_waiters = []
        self._refed = True
        self._missed = {}  # 'online'/'error'/'exit' that happened with no listener: replayed
        self._loop = parent.get_loop()
        chan, ctl = MessageChannel(), MessageChannel()
        payload = {
            "parent_port": chan.port2,
            "ctl_port": ctl.port2,
            "worker_data": worker_data,
            "env_data": parent.env_data,
            "argv": argv,
            "env": env,
            "name": name,
            "thread_id": self.thread_id,
            "spec": spec,
            "sys_path": list(sys.path),
            "backend": backend,
        }
        host_ctl = _port_new_ref(ctl.port2)  # the host thread posts 'exit' through it
        token = _export(payload, [chan.port2, ctl.port2, *transfer])
        self._port = chan.port1
        self._ctlport = ctl.port1
        self._thread = threading.Thread(
            target=self._host, args=(token, func, host_ctl),
            name=f"ringport-worker-{self.thread_id}" + (f" ({name})" if name else ""),
            daemon=_interp_ctx is None)  # isolated subinterpreters refuse daemon threads
        with _live_lock:
            _live.add(self)
        parent.children.add(self)
        self._ctlport.on("message", self._on_ctl)
        try:
            self._thread.start()
        except BaseException:
            _drop_token(token)
            with _live_lock:
                _live.discard(self)
            self._ctlport.close()
            raise

    # ------------------------------------------------------------------ the host thread

    def _host(self, token, func, host_ctl):
        code = 1
        report = None
        try:
            if self.backend == "thread":
                code = _bootstrap(token, self._ctl.address, func)
            else:
                code, report = self._run_subinterpreter(token)
        except BaseException as exc:  # a failure of ringport itself, not of the worker's code
            report = _error_report(exc, "thread")
            code = 1
        tok = self._ctl.swap_error(0)
        if tok:
            try:
                report = _import(tok)
            except BaseException as exc:
                report = _error_report(exc, "thread")
        error = _rebuild_error(report) if report is not None else None
        with self._lock:
            self._exit_code = code
            self._error = error
            waiters, self._async_waiters = self._async_waiters, []
        if error is not None and not self._events.count("error"):
            self._error_printed = True
            _print_worker_error(self, error, report)
        with _live_lock:
            _live.discard(self)
        for loop, fut in waiters:
            try:
                loop.call_soon_threadsafe(_resolve, fut, code)
            except RuntimeError:  # that event loop is closed
                pass
        try:
            host_ctl.post_message(("exit", code))
        finally:
            host_ctl.close()

    def _run_subinterpreter(self, token):
        iid = _interpreters.create()
        try:
            res = _interpreters.exec(
                iid, "import ringport._worker as _w\n"
                     f"_w._bootstrap({token}, {self._ctl.address}, None)\n")
        finally:
            _interpreters.destroy(iid)
        code = self._ctl.exit_code
        report = None
        if code == -1:  # it never got to import the token: it failed while booting
            _drop_token(token)
            code = 1
        if res is not None:
            report = {"type": res.type.__qualname__, "module": res.type.__module__,
                      "message": res.msg, "traceback": res.errdisplay, "pickle": None,
                      "local": None}
            code = 1
        return code, report

    # ------------------------------------------------------------------ events

    def _emit(self, event, *args):
        if not self._events.emit(event, *args):
            self._missed[event] = args
            return False
        return True

    def _replay(self, event):
        args = self._missed.pop(event, None)
        if args is not None:
            if event == "exit":
                self._port._dispatch()  # messages first, as when 'exit' came in
                if "error" in self._missed and self._events.count("error"):
                    self._replay("error")
            self._events.emit(event, *args)

    def _on_ctl(self, msg):
        kind = msg[0]
        if kind == "online":
            self._emit("online")
        elif kind == "exit":
            # the messages the worker posted before it ended come before 'exit'
            self._port._dispatch()
            error = self._error
            if error is not None:
                if not self._emit("error", error) and not self._error_printed:
                    _print_worker_error(self, error, None)
            self._emit("exit", msg[1])
            self._ctlport.close()

    def on(self, event, listener):
        """Listen for 'online', 'message', 'messageerror', 'error' or 'exit'."""
        if event in ("message", "messageerror"):
            self._port.on(event, listener)
            if not self._refed:
                self._port.unref()
        else:
            self._events.on(event, listener)
            self._replay_soon(event)
        return self

    add_listener = on

    def _replay_soon(self, event):
        # A worker can start, fail and end before the line after Worker(...) attaches its
        # listeners (threads are not Node's single loop): 'online', 'error' and 'exit' that
        # found no listener are delivered to the first one attached later, on the loop.
        if event in self._missed:
            self._loop.call_soon(self._replay, event)

    def once(self, event, listener):
        if event in ("message", "messageerror"):
            self._port.once(event, listener)
            if not self._refed:
                self._port.unref()
        else:
            self._events.once(event, listener)
            self._replay_soon(event)
        return self

    def off(self, event, listener=None):
        if event in ("message", "messageerror"):
            self._port.off(event, listener)
        else:
            self._events.off(event, listener)
        return self

    remove_listener = off

    # ------------------------------------------------------------------ talking

    def post_message(self, value, transfer=()):
        """Send a structured clone of value to the worker's ringport.parent_port."""
        self._port.post_message(value, transfer)

    postMessage = post_message

    def receive(self, timeout=None):
        """The next message the worker posted (blocks; ringport.Empty on timeout; PortClosed
        once the worker ended and everything it posted was received)."""
        return self._port.receive(timeout)

    @property
    def port(self):
        """The parent's end of the channel to the worker's parent_port."""
        return self._port

    # ------------------------------------------------------------------ life

    @property
    def threadId(self):
        return self.thread_id

    @property
    def exit_code(self):
        """The exit code once the worker ended, else None."""
        return self._exit_code

    def is_alive(self):
        return self._thread.is_alive()

    def join(self, timeout=None):
        """Wait for the worker to end; its exit code, or None if timeout (seconds) passed."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("a worker cannot join itself")
        self._thread.join(timeout)
        if self._thread.is_alive():
            return None
        return self._exit_code

    def terminate(self, timeout=None):
        """Stop the worker as soon as possible and wait for it (at most timeout seconds):
        blocked ringport receives and waits return at once, and running Python code gets
        WorkerTerminated at its next bytecode boundary.  Returns the exit code (1 when it was
        terminated, as in Node; its own code if it had ended already), or None on timeout.

        Cannot be interrupted: a long call inside a C extension that does not return to Python
        (and, in a subinterpreter worker, blocking calls such as time.sleep, which only a signal
        to the main thread would cut short): the worker stops when that call returns."""
        if self._exit_code is None:
            self._ctl.terminate()
        return self.join(timeout)

    def ref(self):
        """Keep the program alive while this worker runs (the default)."""
        self._refed = True
        self._ctlport.ref()
        self._port.ref()

    def unref(self):
        """Let the program exit while this worker still runs (it is terminated at exit)."""
        self._refed = False
        self._ctlport.unref()
        self._port.unref()

    def has_ref(self):
        return self._refed

    async def wait_exit(self):
        """Await the worker's end in asyncio, without blocking the event loop; the exit code."""
        import asyncio
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._exit_code is not None:
                return self._exit_code
            fut = loop.create_future()
            self._async_waiters.append((loop, fut))
        return await fut

    def __await__(self):
        return self.wait_exit().__await__()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.terminate()

    def __repr__(self):
        state = "running" if self._exit_code is None else f"exited {self._exit_code}"
        name = f" {self.name!r}" if self.name else ""
        return f"<ringport.Worker{name} thread_id={self.thread_id} {self.backend} {state}>"


def _resolve(fut, code):
    if not fut.done():
        fut.set_result(code)


def _print_worker_error(worker, error, report):
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


# ---------------------------------------------------------------------------- errors


_OWN_FILES = ("_worker.py", "_worker.pxi")


def _error_report(exc, backend, thread_id=None):
    """What the parent needs to rebuild exc: the object itself for the thread backend (same
    interpreter), else its pickle, plus the type, message and formatted traceback."""
    import traceback
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.endswith(_OWN_FILES):
        tb = tb.tb_next  # ringport's own frames above the worker's code say nothing useful
    if tb is not None:
        exc.__traceback__ = tb
    tb = "".join(traceback.format_exception(exc))
    report = {"type": type(exc).__qualname__, "module": type(exc).__module__,
              "message": str(exc), "traceback": tb, "pickle": None, "local": None}
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


def _rebuild_error(report):
    local = report.get("local")
    if local is not None:
        exc = _local_errors.pop(local, None)
        if exc is not None:
            return exc
    data = report.get("pickle")
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


# ---------------------------------------------------------------------------- inside the worker


def _bootstrap(token, ctl_address, func):
    """Run a worker in this thread: its context, its target, its loop.  Returns the exit code
    (and stores it in the control block)."""
    global _interp_ctx
    ctl = _WorkerCtl(ctl_address)
    payload = _import(token)
    ctl.exit_code = 0   # the token is consumed: the host must not drop it
    backend = payload["backend"]
    ctx = _Context(parent_port=payload["parent_port"], worker_data=payload["worker_data"],
                   thread_id=payload["thread_id"], is_main_thread=False, env=payload["env"],
                   env_data=payload["env_data"], name=payload["name"],
                   loop=_Loop(threaded=False))
    spec = payload["spec"]
    if spec[0] in ("file", "func"):
        script = spec[1]
    elif spec[0] == "eval":
        script = "-c"
    else:
        script = getattr(func, "__qualname__", "-c")
    ctx.argv = [script, *payload["argv"]]
    if backend == "thread":
        _tls.ctx = ctx
    else:
        _interp_ctx = ctx
        sys.path[:] = payload["sys_path"]
        sys.argv[:] = ctx.argv
        if spec[0] == "file":
            sys.path.insert(0, os.path.dirname(spec[1]))
    ctl_port = payload["ctl_port"]
    code = 0
    try:
        ctl_port.post_message(("online",))
        _, exc = _run_guarded(ctl, lambda: _run_target(ctx, spec, func, backend))
        if exc is None:
            code = 0
        elif isinstance(exc, SystemExit):
            code = _system_exit_code(exc)
        elif isinstance(exc, WorkerTerminated) or ctl.terminated:
            code = TERMINATED_EXIT_CODE
        else:
            code = 1
            if backend == "subinterpreter":
                exc = _explain_subinterpreter_import(exc)
            report = _error_report(exc, backend, ctx.thread_id)
            try:
                tok = _export(report)
            except Exception:
                report["pickle"] = None
                tok = _export(report)
            old = ctl.swap_error(tok)
            if old:
                _drop_token(old)
        exc = None
    finally:
        _end_children(ctx)
        try:
            ctx.parent_port.close()   # the host posts 'exit' on the control channel later
        finally:
            ctl.exit_code = code
            if backend == "thread":
                _tls.ctx = None
            else:
                # Let the worker's context (its loop, ports, env) go now, while the interpreter
                # is whole: freed later, during its teardown, it keeps blocks of the interpreter's
                # allocator alive (2 MiB RSS per worker on 3.14).
                _interp_ctx = None
    return code


def _system_exit_code(exc):
    c = exc.code
    if c is None:
        return 0
    if isinstance(c, int):
        return c
    print(c, file=sys.stderr)
    return 1


def _explain_subinterpreter_import(exc):
    if isinstance(exc, ImportError):
        import re
        m = re.search(r"module (\S+) does not support loading in subinterpreters", str(exc))
        if m:
            top = exc.name or m.group(1).split(".")[0]
            new = ImportError(
                f"module {m.group(1)!r} (imported as {top!r}) does not support loading in "
                f"subinterpreters, so it cannot be used in a backend='subinterpreter' worker; use "
                f"backend='thread' (truly parallel on a free-threaded Python) instead",
                name=exc.name)
            new.__cause__ = exc
            return new
    return exc


def _run_target(ctx, spec, func, backend):
    kind = spec[0]
    if kind == "call":
        func()
    elif kind == "func":
        import importlib
        obj = importlib.import_module(spec[1])
        for part in spec[2].split("."):
            obj = getattr(obj, part)
        obj()
    else:
        if kind == "file":
            with open(spec[1], "rb") as f:
                source = f.read()
            filename = spec[1]
        else:
            source, filename = spec[1], "[worker eval]"
        code = compile(source, filename, "exec")
        if backend == "subinterpreter":
            ns = sys.modules["__main__"].__dict__
        else:
            ns = {"__builtins__": builtins}
        ns["__name__"] = "__main__"
        if kind == "file":
            ns["__file__"] = filename
        exec(code, ns)
    ctx.loop.run_inline()


def _end_children(ctx):
    """A worker that ends takes its own workers with it (as in Node)."""
    for w in list(ctx.children):
        if w.exit_code is None:
            w.terminate(timeout=10)


# ---------------------------------------------------------------------------- interpreter exit


def _at_exit():
    """After threading's shutdown (the loop thread is done): stop the loop and terminate the
    workers that are still running (unreferenced ones), so no interpreter outlives ours."""
    loop = _main_ctx.loop
    if loop is not None:
        loop.stop()
    with _live_lock:
        workers = list(_live)
    for w in workers:
        w._ctl.terminate()
    for w in workers:
        w._thread.join(10)


def _on_threading_shutdown():
    """In the main thread, when its module is done, before threading joins threads: keep the
    program alive while a referenced worker or port with listeners is live, as Node does.  If
    the main module died of an uncaught exception, or Ctrl-C comes while waiting, do not wait:
    stop the workers now (sys.exit() in the main thread still waits, as for threads)."""
    loop = _main_ctx.loop
    if getattr(sys, "last_exc", None) is not None or getattr(sys, "last_value", None) is not None:
        _at_exit()
        return
    if loop is None:
        return
    try:
        loop.wait_idle()
    except KeyboardInterrupt:
        _signal.signal(_signal.SIGINT, _signal.SIG_IGN)  # one Ctrl-C stops everything
        for _ in range(3):
            try:  # (a trip still pending from the same Ctrl-C may raise once more)
                _at_exit()
                break
            except KeyboardInterrupt:
                pass
        print("KeyboardInterrupt", file=sys.stderr, flush=True)
        if sys.platform != "win32":
            # exit as a Ctrl-C'ed Python does (status 128 + SIGINT)
            _signal.signal(_signal.SIGINT, _signal.SIG_DFL)
            os.kill(os.getpid(), _signal.SIGINT)
        raise


atexit.register(_at_exit)
if _interp_ctx is None and hasattr(threading, "_register_atexit"):
    threading._register_atexit(_on_threading_shutdown)
