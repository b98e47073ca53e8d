"""Worker: Node's worker_threads Worker, run on a thread or a subinterpreter.

The parent side only: a Worker exports one token (``_core._export``) that carries the worker's
parent port, a control port, worker_data, environment data, argv, env and its id, and starts a
host thread that runs the worker (``ringport._bootstrap.run``, inside a new interpreter for the
subinterpreter backend), then posts 'exit' on the control channel.  Listeners run on the
parent's event loop (``ringport._loop``); the per-worker context is ``ringport._context``,
backend choice ``ringport._backends``, interpreter exit ``ringport._exit``.
"""
import _thread
import os
import sys
import threading

from ringport import _bcbridge, _context, _exit
from ringport._backends import _interpreters, available_backends, resolve_backend
from ringport._bootstrap import install_unraisable_hook, run
from ringport._context import get_environment_data, set_environment_data
from ringport._core import (MessageChannel, _drop_token, _export, _import, _new_worker_ctl,
                            _port_new_ref, _port_set_unshared, _process_channel, dumps)
from ringport._errors import boot_failure_report, error_report, print_worker_error, rebuild_error
from ringport._events import Emitter

#: Ring bytes per direction of a process worker's parent port: pages are committed as messages
#: reach them, and a big ring lets a burst of big messages go through it rather than through
#: fresh memory (a 1 MiB stream went from ~1.5 to ~3.7 GB/s with 4 MiB instead of 1 MiB).
PROCESS_CAPACITY = 1 << 22
#: ... and of the channel that carries BroadcastChannel messages to and from it.
BRIDGE_CAPACITY = 1 << 16

__all__ = ["Worker", "available_backends", "get_environment_data", "set_environment_data"]

_environ_cache = (None, None)   # (os.environ's raw bytes, their decoded copy)


def _environ_snapshot():
    """A copy of os.environ as str: decoding every variable through os.environ's mapping costs
    more than a thread worker's start, so the decoded copy is kept while the raw bytes (a C
    dict comparison) are unchanged."""
    global _environ_cache
    data = getattr(os.environ, "_data", None)
    if not isinstance(data, dict):
        return dict(os.environ)
    raw, decoded = _environ_cache
    if raw != data:
        raw = dict(data)
        decoded = dict(os.environ)
        _environ_cache = (raw, decoded)
    return dict(decoded)


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
                f"a function target for backend={backend!r} must be importable by its module "
                f"and qualified name (a module-level function of an importable module); "
                f"{qualname or target!r} in module {module!r} is not; use a script path, or "
                f"backend='thread'")
        return ("func", module, qualname), None
    raise TypeError(f"target must be a path to a .py file, Python source with eval=True, or a "
                    f"function, not {type(target).__name__}")


class Worker:
    """A worker running target in parallel: ``Worker(target, *, eval=False, worker_data=None,
    transfer=(), name=None, backend="auto", argv=None, env=None, allow_pickle=True)``.

    target: a path to a .py file (run as ``__main__``), Python source with eval=True, or a
    module-level function called with no arguments.  worker_data arrives as a structured clone
    in ``ringport.worker_data``; ports listed in transfer (also inside worker_data) move to the
    worker.  argv: strings appended to the worker's argv (``sys.argv`` in a subinterpreter worker,
    ``ringport.argv`` in every backend); env: the worker's ``ringport.env`` (default: a copy of
    the parent's).  allow_pickle=False turns the codec's pickle fallback off on the worker's ports
    (posting what the native codec cannot represent raises DataCloneError; a pickle frame that
    arrives raises DecodeError) and rebuilds the worker's errors as WorkerError, never by
    unpickling: nothing the worker sends runs code in the parent.

    Events: 'online', 'message' (value), 'messageerror' (exception), 'error' (exception),
    'exit' (exit code).  Talk with ``post_message``/``receive``; stop with ``terminate()``;
    wait with ``join()`` or, in asyncio, ``await worker.wait_exit()`` (or ``await worker``).
    """

    def __init__(self, target, *, eval=False, worker_data=None, transfer=(), name=None,
                 backend="auto", argv=None, env=None, allow_pickle=True, ray_options=None):
        backend = resolve_backend(backend)
        if backend == "ray":
            from ringport._ray import _target_for_ray
            spec, func = _target_for_ray(target, eval)
        else:
            if ray_options is not None:
                raise ValueError("ray_options is for backend='ray' only")
            spec, func = _target_spec(target, eval, backend)
        parent = _context.current()
        if argv is None:
            argv = []
        elif isinstance(argv, (str, bytes)):
            raise TypeError("argv must be a list of strings")
        argv = [str(a) for a in argv]
        if env is None:
            # the main program's env is os.environ itself: its cached decoded copy (decoding
            # every variable again cost ~60 us of a thread worker's ~0.5 ms start)
            penv = parent.env
            env = _environ_snapshot() if penv is None or penv is os.environ else dict(penv)
        else:
            env = {str(k): str(v) for k, v in dict(env).items()}
        self.backend = backend
        self.name = name
        self._ctl = _new_worker_ctl()
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
        # allow_pickle=False: nothing the worker sends can run code here (the pickle fallback is off
        # both ways, and its errors come back as WorkerError rather than unpickled)
        self._allow_pickle = allow_pickle = bool(allow_pickle)
        self._link = None
        self._end_hooks = []   # called in the host thread once the exit code is known
        self._online = False   # 'online' was emitted (or missed, for a later listener)
        self._guarded = False  # the first 'message' listener was wrapped (_OnlineFirst)
        ctl = MessageChannel(allow_pickle=allow_pickle)
        payload = {
            "worker_data": worker_data,
            "env_data": parent.env_data,
            "argv": argv,
            "env": env,
            "name": name,
            "thread_id": self.thread_id,
            "spec": spec,
            "backend": backend,
        }
        host_ctl = _port_new_ref(ctl.port2)  # the host thread posts 'exit' through it
        host_env = None   # a thread worker's env, when its token does not carry it
        thread_name = f"ringport-worker-{self.thread_id}" + (f" ({name})" if name else "")
        if backend == "process":
            token = None
            self._port = self._start_process(payload, transfer)
        elif backend == "ray":
            token = None
            self._port = self._start_ray(spec, func, payload, transfer, ray_options)
        else:
            chan = MessageChannel(allow_pickle=allow_pickle)
            if backend == "thread":
                # a thread worker takes its env dict (a fresh copy made above) as it is: encoding
                # and decoding every variable through the token cost ~15 us of its start
                payload["env"], host_env = None, env
            payload["parent_port"] = chan.port2
            payload["ctl_port"] = ctl.port2
            token = _export(payload, [chan.port2, ctl.port2, *transfer])
            self._port = chan.port1
        self._ctlport = ctl.port1
        self._thread = None
        try:
            host_args = (token, func, host_env, host_ctl, list(sys.path))
            # (isolated subinterpreters refuse daemon threads, and so _thread's)
            daemon = not _context.in_subinterpreter_worker()
            self._thread = (_HostThread if backend == "process" and daemon else threading.Thread)(
                target=self._host, args=host_args, name=thread_name, daemon=daemon)
            with _exit.live_lock:
                _exit.live.add(self)
            parent.children.add(self)
            self._ctlport.on("message", self._on_ctl)
            self._thread.start()
        except BaseException:
            # (a Ctrl-C may come after the thread started: then it owns the token and the link)
            if self._thread is None or not self._thread.is_alive():
                if token is not None:
                    _drop_token(token)
                if backend == "process":
                    self._link.abandon()   # (the process asked for ends: its link closes)
            with _exit.live_lock:
                _exit.live.discard(self)
            parent.children.discard(self)
            self._ctlport.close()
            raise

    # ------------------------------------------------------------------ the host thread

    def _start_process(self, payload, transfer):
        """The process backend: the parent's port of a channel shared with the new process,
        with the start-up payload as its first message (so worker_data shares buffers and moves
        ports as any message does), and the link that starts the process from the host thread."""
        from ringport._process import ProcessLink   # (subprocess, socket: only when used)
        port, memfd, sock = _process_channel(PROCESS_CAPACITY)
        payload["allow_pickle"] = self._allow_pickle
        bridge = link = None
        try:
            bridge, bmemfd, bsock = _process_channel(BRIDGE_CAPACITY)
            boot = dumps({"capacity": PROCESS_CAPACITY, "bridge_capacity": BRIDGE_CAPACITY,
                          "sys_path": list(sys.path)})
            # the process is asked for first: it boots while the payload is posted (it waits
            # for the payload in its port)
            link = ProcessLink(boot, (memfd, sock, bmemfd, bsock), port)
            # the payload may always be pickled: it goes to the process this one starts (as
            # _export does for the other backends); the port's own setting applies after it
            port.post_message(payload, transfer)
            port.allow_pickle = self._allow_pickle
        except BaseException:
            port.close()   # (a process already asked for finds its port closed, and ends)
            if link is not None:
                link.abandon()
            else:
                os.close(memfd)
                os.close(sock)
            if bridge is not None:
                bridge.close()
                if link is None:
                    os.close(bmemfd)
                    os.close(bsock)
            raise
        _bcbridge.add(bridge)
        self._link = link
        return port

    def _start_ray(self, spec, func, payload, transfer, ray_options):
        """The Ray backend: the parent's port of a channel whose other end the link relays to
        the actor that hosts the worker (see ringport._ray)."""
        from ringport._ray import RayLink, remote_pickle_allowed
        allow = self._allow_pickle and remote_pickle_allowed()
        chan = MessageChannel(allow_pickle=allow)
        _port_set_unshared(chan.port1)
        try:
            self._link = RayLink(spec, func, payload, transfer, chan.port2, ray_options, allow)
        except BaseException:
            chan.port1.close()
            chan.port2.close()
            raise
        return chan.port1

    def _host(self, token, func, env, host_ctl, sys_path):
        if self._link is not None:
            try:
                code, report = self._link.run(lambda: host_ctl.post_message(("online",)))
            except BaseException as exc:   # the process could not be started
                code, report = 1, error_report(exc, "process")
        else:
            code, report = _run_worker(self.backend, token, self._ctl, func, env, sys_path)
        if report is None:
            error = None
        elif self.backend == "ray":
            from ringport._ray import rebuild_remote_error
            error = rebuild_remote_error(report, self._link.allow_pickle)
        else:
            error = rebuild_error(report, self._allow_pickle)
        with self._lock:
            self._exit_code = code
            self._error = error
            waiters, self._async_waiters = self._async_waiters, []
        if error is not None and not self._events.count("error"):
            self._error_printed = True
            print_worker_error(self, error, report)
        with _exit.live_lock:
            _exit.live.discard(self)
        for hook in self._end_hooks:
            hook()
        for loop, fut in waiters:
            try:
                loop.call_soon_threadsafe(_resolve, fut, code)
            except RuntimeError:  # that event loop is closed
                pass
        try:
            host_ctl.post_message(("exit", code))
        finally:
            host_ctl.close()

    # ------------------------------------------------------------------ events

    def _emit(self, event, *args):
        # A listener attached in another thread while this runs either is called here or finds
        # the event in _missed (both sides look under self._lock): never neither.
        with self._lock:
            if not self._events.count(event):
                self._missed[event] = args
                return False
        self._events.emit(event, *args)
        return True

    def _first_message(self):
        """Before the first message reaches a listener: a message from the worker proves it is
        online, so 'online' comes before it even when the control channel's message is not
        seen yet (two channels are not ordered with each other; seen on free-threaded builds),
        and a missed 'online' whose listener came since is replayed now rather than after
        messages already flowing."""
        self._went_online()
        self._online_first()

    def _went_online(self):
        with self._lock:
            if self._online:
                return
            self._online = True
        self._emit("online")

    def _online_first(self):
        with self._lock:
            missed = "online" in self._missed
        if missed and self._events.count("online"):
            self._replay("online")
            return True
        return False

    def _replay(self, event):
        with self._lock:
            args = self._missed.pop(event, None)
        if args is not None:
            if event == "exit":
                self._online_first()
                self._port._dispatch()  # messages first, as when 'exit' came in
                if "error" in self._missed and self._events.count("error"):
                    self._replay("error")
            self._events.emit(event, *args)

    def _on_ctl(self, msg):
        kind = msg[0]
        if kind == "online":
            self._went_online()
        elif kind == "exit":
            # the messages the worker posted before it ended come before 'exit'
            self._online_first()
            self._port._dispatch()
            error = self._error
            if error is not None:
                if not self._emit("error", error) and not self._error_printed:
                    print_worker_error(self, error, None)
            self._emit("exit", msg[1])
            self._ctlport.close()

    def _guard_first_message(self, event, listener):
        # the first 'message' listener attached before 'online' is wrapped (it is called
        # first): the wrapper sees the first message before any listener does
        if event != "message":
            return listener
        with self._lock:
            if self._online or self._guarded:
                return listener
            self._guarded = True
        return _OnlineFirst(self, listener)

    def on(self, event, listener):
        """Listen for 'online', 'message', 'messageerror', 'error' or 'exit'."""
        if event in ("message", "messageerror"):
            self._port.on(event, self._guard_first_message(event, listener))
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
        with self._lock:
            missed = event in self._missed
        if missed:
            self._loop.call_soon(self._replay, event)

    def once(self, event, listener):
        if event in ("message", "messageerror"):
            self._port.once(event, self._guard_first_message(event, listener))
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

    @property
    def pid(self):
        """The process id of a process worker (None if it could not start, and for the
        other backends, which run in this process).  A worker forked by the zygote (the
        default) has it once the constructor returned (this waits a moment for the zygote to
        name it); a spawned one once its host thread started it."""
        link = self._link
        proc = link.child() if link is not None and hasattr(link, "child") else None
        return proc.pid if proc is not None else None

    def is_alive(self):
        return self._thread.is_alive()

    def join(self, timeout=None):
        """Wait for the worker to end; its exit code, or None if timeout (seconds) passed."""
        if self._thread.ident == threading.get_ident() and self._thread.is_alive():
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
        It cannot be swallowed: until the worker has ended (also after a timeout), it is
        delivered again, also when a finalizer or an except clause caught it.

        Cannot be interrupted: a long call inside a C extension that does not return to Python
        (and, in a subinterpreter worker, blocking calls such as time.sleep, which only a signal
        to the main thread would cut short): the worker stops when that call returns."""
        self._stop()
        return self.join(timeout)

    def _stop(self):
        # WorkerTerminated can be swallowed (a finalizer, a bare except): deliver it again
        # until the worker has ended
        if self._exit_code is None:
            if self._link is not None:     # asks, then kills it after a grace period
                self._link.terminate()
                return
            if self.backend == "thread":   # (a subinterpreter worker installs its own)
                install_unraisable_hook()
            self._ctl.terminate()
            _exit.redeliver(self)

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


class _OnlineFirst:
    """A worker's first 'message' listener, wrapped so that 'online' is emitted before the first
    message (Worker._first_message); equal to the listener it wraps, so off(listener) finds
    it."""

    __slots__ = ("worker", "listener")

    def __init__(self, worker, listener):
        self.worker = worker
        self.listener = listener

    def __call__(self, value):
        if not self.worker._online:
            self.worker._first_message()
        return self.listener(value)

    def __eq__(self, other):
        return other is self or other == self.listener

    __hash__ = None


def _resolve(fut, code):
    if not fut.done():
        fut.set_result(code)


# ---------------------------------------------------------------------------- the host thread


def _run_worker(backend, token, ctl, func, env, sys_path):
    """In the host thread: run the worker to its end; (exit code, error report or None).  A
    worker that fails before its bootstrap could report anything still ends with an error.
    env: a thread worker's env dict, which its token does not carry (else None)."""
    report = None
    try:
        if backend == "thread":
            code = run(token, ctl.id, func, env)
        else:
            code, report = _run_subinterpreter(token, ctl, sys_path)
    except BaseException as exc:  # the bootstrap failed: ringport's own code, or worker_data
        report = error_report(exc, "thread")
        code = 1
    if ctl.exit_code == -1:  # it never got to import the token
        try:
            _drop_token(token)
        except ValueError:  # it had taken it after all: nothing left to drop
            pass
        code = 1
        if report is None:
            report = boot_failure_report("the worker failed to start")
    tok = ctl.swap_error(0)
    if tok:
        try:
            report = _import(tok)
        except BaseException as exc:
            report = error_report(exc, "thread")
    if code == 0 and report is not None:
        code = 1
    return code, report


def _run_subinterpreter(token, ctl, sys_path):
    warm = sys.modules.get("ringport._prestart")   # (imported by prestart(), its only user)
    iid = warm.take_interpreter() if warm is not None else None
    if iid is None:
        iid = _interpreters.create()
    try:
        # the parent's sys.path first: the token's values may need its modules to unpickle
        res = _interpreters.exec(
            iid, f"import sys\nsys.path[:] = {sys_path!r}\n"
                 "import ringport._bootstrap as _b\n"
                 f"_b.run({token}, {ctl.id}, None)\n")
    finally:
        _interpreters.destroy(iid)
    code = ctl.exit_code
    report = None
    if res is not None:   # an exception escaped the bootstrap (or the import of ringport)
        report = {"type": res.type.__qualname__, "module": res.type.__module__,
                  "message": res.msg, "traceback": res.errdisplay, "pickle": None,
                  "local": None}
        code = 1
    return code, report


class _HostThread:
    """A process worker's host thread, started with _thread rather than threading: Thread.start()
    waits until the new thread runs, and with the process already asked for, that wait queued
    for a core behind the booting worker and the zygote's next spare (milliseconds on the way
    to the first message on two cores).  It is made and used as the threading.Thread it
    replaces: name, ident, start(), is_alive() and join().  (Isolated subinterpreters refuse
    such threads: workers started there keep a threading.Thread.)"""

    __slots__ = ("name", "ident", "_target", "_args", "_done", "_started")

    def __init__(self, *, target, args, name, daemon=True):   # (a _thread thread is daemon)
        self.name = name
        self.ident = None
        self._target, self._args = target, args
        self._done = threading.Event()
        self._started = False

    def start(self):
        self._started = True
        try:
            _thread.start_new_thread(self._run, ())
        except BaseException:
            self._started = False
            raise

    def _run(self):
        self.ident = _thread.get_ident()
        target, args, self._target, self._args = self._target, self._args, None, None
        try:
            target(*args)
        finally:
            self._done.set()

    def is_alive(self):
        return self._started and not self._done.is_set()

    def join(self, timeout=None):
        if not self._started:
            raise RuntimeError("cannot join thread before it is started")
        self._done.wait(timeout)

    def __repr__(self):
        return f"<_HostThread {self.name!r} {'alive' if self.is_alive() else 'ended'}>"
