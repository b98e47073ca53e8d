"""Inside a worker: what its thread runs, from the token its parent exported to its exit code.

run() builds the worker's context from the token (parent port, control port, worker_data,
environment data, argv, env, id), runs the target and then the worker's loop, and on the way out
terminates the worker's own workers, closes every port its loop watched and stores the exit code
and error report in the control block for the parent's host thread.

A subinterpreter worker's interpreter imports this module first (``_worker.py`` passes it the
source to run), so it imports little: asyncio, traceback, re, importlib and pickle are imported
where used.
"""
import builtins
import os
import sys

from ringport import _context
from ringport._core import _drop_token, _export, _import, _run_guarded, _worker_ctl
from ringport._errors import WorkerTerminated, error_report
from ringport._loop import Loop

__all__ = ["TERMINATED_EXIT_CODE", "install_unraisable_hook", "run"]

#: The exit code of a worker stopped by terminate() (Node uses 1 as well).
TERMINATED_EXIT_CODE = 1


def run(token, ctl_id, func, env=None):
    """Run a worker in this thread: its context, its target, its loop.  Returns the exit code
    (and stores it in the control block).  env: the worker's env dict when the token does not
    carry it (a thread worker's, handed over as it is)."""
    ctl = _worker_ctl(ctl_id)
    ctl.exit_code = 0   # _import consumes the token even when it fails: the host must not drop it
    payload = _import(token)
    backend = payload["backend"]
    ctx = _context.Context(
        parent_port=payload["parent_port"], worker_data=payload["worker_data"],
        thread_id=payload["thread_id"], is_main_thread=False,
        env=payload["env"] if env is None else env,
        env_data=payload["env_data"], name=payload["name"], loop=Loop(threaded=False), ctl=ctl)
    spec = payload["spec"]
    if spec[0] in ("file", "func"):
        script = spec[1]
    elif spec[0] == "eval":
        script = "-c"
    else:
        script = getattr(func, "__qualname__", "-c")
    ctx.argv = [script, *payload["argv"]]
    _context.enter(ctx, backend)
    if backend != "thread":   # (its sys.path was set before the token was imported)
        sys.argv[:] = ctx.argv
        if spec[0] == "file":
            sys.path.insert(0, os.path.dirname(spec[1]))
        install_unraisable_hook()   # (thread workers: the parent installs it in terminate())
    ctl_port = payload["ctl_port"]
    del payload
    code = 1
    try:
        ctl_port.post_message(("online",))
        _, exc = _run_guarded(ctl, lambda: _run_target(ctx, spec, func, backend))
        _untrace()
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
            _store_error(ctl, error_report(exc, backend, ctx.thread_id))
        exc = None
    finally:
        try:
            _end_children(ctx)
        finally:
            try:
                ctx.loop.close()          # every port it listened on closes: peers see 'close'
                ctx.parent_port.close()   # the host posts 'exit' on the control channel later
            finally:
                ctl.exit_code = code
                _context.leave(backend)
                # an exception raised in the worker keeps this frame (its frames' f_back) for
                # as long as the parent holds it: let go of what the worker owned
                ctx = ctl_port = func = None
    return code


def _store_error(ctl, report):
    try:
        tok = _export(report)
    except Exception:
        report["pickle"] = None
        tok = _export(report)
    old = ctl.swap_error(tok)
    if old:
        _drop_token(old)


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
                f"backend='process' (a worker in its own process, parallel on every Python; or "
                f"backend='thread', parallel on a free-threaded Python) instead",
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
        code = _compiled(source, filename)
        if backend != "thread":   # its own interpreter: the script is its __main__
            ns = sys.modules["__main__"].__dict__
        else:
            ns = {"__builtins__": builtins}
        ns["__name__"] = "__main__"
        if kind == "file":
            ns["__file__"] = filename
        exec(code, ns)
    ctx.loop.run_inline()


#: Code objects of recent targets by (source, filename): compiling even a few lines costs more
#: than the rest of a thread worker's start (~70 us of ~0.5 ms on 3.13t), and a program tends to
#: start many workers from the same source.  Code objects are immutable, so workers of one
#: interpreter share them; each interpreter has its own cache (this module's).
_code_cache = {}
_CODE_CACHE_MAX = 32


def _compiled(source, filename):
    key = (source, filename)
    code = _code_cache.get(key)
    if code is None:
        code = compile(source, filename, "exec")
        if len(_code_cache) >= _CODE_CACHE_MAX:
            try:
                del _code_cache[next(iter(_code_cache))]   # the oldest
            except (KeyError, StopIteration, RuntimeError):   # another thread got there first
                pass
        _code_cache[key] = code
    return code


def _end_children(ctx):
    """A worker that ends takes its own workers with it (as in Node)."""
    from ringport._exit import terminate_all
    terminate_all(list(ctx.children), 10.0)


# ---------------------------------------------------------------------------- termination
#
# terminate() raises WorkerTerminated in the worker thread at its next bytecode boundary.  Where
# that boundary is inside a finalizer (__del__, a weakref callback), Python reports the exception
# as "unraisable" and carries on: the termination would be swallowed.  The hook below catches
# that case in a terminated worker and raises WorkerTerminated again at the next line of the
# code that was running when the finalizer ran (through the frames' trace functions: an
# exception set while still inside the hook would be raised, and swallowed, in the hook itself).
# The parent also delivers it again every REDELIVER_S until the worker ends (ringport._exit),
# for code that catches it with a bare except.

_prev_unraisable = None


def install_unraisable_hook():
    """Catch the WorkerTerminated that a finalizer swallowed (in this interpreter)."""
    global _prev_unraisable
    if sys.unraisablehook is not _unraisable_hook:
        _prev_unraisable = sys.unraisablehook
        sys.unraisablehook = _unraisable_hook


def _unraisable_hook(u):
    ctl = _context.current().ctl
    if ctl is not None and isinstance(u.exc_value, WorkerTerminated) and ctl.terminated:
        f = sys._getframe(1)   # the code that dropped the object whose finalizer raised
        while f is not None and f.f_code is not run.__code__:
            f.f_trace = _raise_terminated
            f = f.f_back
        sys.settrace(_trace_no_new_frames)
        return
    prev = _prev_unraisable if _prev_unraisable is not None else sys.__unraisablehook__
    prev(u)


def _trace_no_new_frames(frame, event, arg):
    return None   # frames entered from now on (finalizers included) are not traced


def _raise_terminated(frame, event, arg):
    sys.settrace(None)
    raise WorkerTerminated("the worker was terminated")


def _untrace():
    """Drop the trace function _unraisable_hook set, if the worker ended before it fired."""
    if sys.gettrace() is _trace_no_new_frames:
        sys.settrace(None)
