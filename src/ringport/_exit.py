"""How workers are stopped: terminate() that is delivered again until the worker ended, and
interpreter exit, where the program stays alive for its referenced workers and listeners, as in
Node, and no worker outlives the interpreter that started it.

* on_threading_shutdown runs in the main thread when the main module is done, before threading
  joins its threads: it waits (interruptibly) while a referenced worker or a referenced port
  with 'message' listeners is live.
* at_exit (atexit) terminates the workers still running (unreferenced ones) and waits for all
  of them together, at most EXIT_GRACE_S in total.
"""
import _signal
import atexit
import os
import sys
import threading
import time

from ringport import _context

__all__ = ["EXIT_GRACE_S", "REDELIVER_S", "live", "redeliver", "terminate_all"]

#: How long interpreter exit waits, in total, for the workers it terminates.  A worker stuck in
#: a call that nothing interrupts (a C extension, time.sleep in a subinterpreter) is left behind.
EXIT_GRACE_S = 10.0

#: How often terminate() delivers WorkerTerminated again until the worker has ended.
REDELIVER_S = 0.05

live = set()                # workers not yet exited, in this interpreter
live_lock = threading.Lock()


class _Redeliverer:
    """Delivers WorkerTerminated again, every REDELIVER_S, to each terminated worker until it
    has ended: termination cannot be swallowed for good.  One thread per interpreter, while
    there is something to do."""

    def __init__(self):
        self.lock = threading.Lock()
        self.workers = set()
        self.thread = None
        self.stopped = False

    def add(self, worker):
        with self.lock:
            if self.stopped:
                return
            self.workers.add(worker)
            if self.thread is None:
                t = threading.Thread(
                    target=self._run, name="ringport-terminate",
                    daemon=not _context.in_subinterpreter_worker())
                try:
                    t.start()   # (a Ctrl-C may interrupt start(): then no thread is recorded)
                except RuntimeError:
                    # "can't create new thread at interpreter shutdown" (3.12: terminate() from
                    # the exit path, after Ctrl-C): no redelivery then; at_exit() still waits
                    # for the workers, bounded
                    return
                self.thread = t

    def _run(self):
        while True:
            with self.lock:
                self.workers = {w for w in self.workers
                                if w._thread.is_alive() and not w._ctl.done}
                if not self.workers or self.stopped:
                    self.thread = None
                    return
                workers = list(self.workers)
            workers[0]._thread.join(REDELIVER_S)
            with self.lock:
                if self.stopped:
                    continue
                for w in workers:
                    if not w._ctl.done:
                        w._ctl.terminate()

    def stop(self):
        """At exit, before finalization: a terminate() that reached into another interpreter
        while ours is being torn down crashes the process."""
        with self.lock:
            self.stopped = True
            thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            try:
                thread.join(1.0)
            except RuntimeError:   # its start() was interrupted by Ctrl-C before it ran
                pass


_redeliverer = _Redeliverer()
redeliver = _redeliverer.add


def terminate_all(workers, grace):
    """Terminate the workers and wait for all of them together, at most grace seconds."""
    for w in workers:
        w._stop()
    deadline = time.monotonic() + grace
    for w in workers:
        try:
            w._thread.join(max(0.0, deadline - time.monotonic()))
        except RuntimeError:   # a host thread whose start() a Ctrl-C interrupted
            pass


def at_exit():
    """After threading's shutdown (the loop thread is done): stop the loop and terminate the
    workers that are still running (unreferenced ones), so no interpreter outlives ours."""
    loop = _context.main_ctx.loop
    if loop is not None:
        loop.stop()
    with live_lock:
        workers = list(live)
    terminate_all(workers, EXIT_GRACE_S)
    _redeliverer.stop()


def on_threading_shutdown():
    """In the main thread, when its module is done, before threading joins threads: keep the
    program alive while a referenced worker or port with listeners is live, as Node does.  If
    the main module died of an uncaught exception, or Ctrl-C comes while waiting, do not wait:
    stop the workers now (sys.exit() in the main thread still waits, as for threads)."""
    loop = _context.main_ctx.loop
    if getattr(sys, "last_exc", None) is not None or getattr(sys, "last_value", None) is not None:
        at_exit()
        return
    if loop is None:
        return
    try:
        loop.wait_idle()
    except KeyboardInterrupt:
        _signal.signal(_signal.SIGINT, _signal.SIG_IGN)  # one Ctrl-C stops everything
        for _ in range(3):
            try:  # (a trip still pending from the same Ctrl-C may raise once more)
                at_exit()
                break
            except KeyboardInterrupt:
                pass
        print("KeyboardInterrupt", file=sys.stderr, flush=True)
        if sys.platform != "win32":
            # exit as a Ctrl-C'ed Python does (status 128 + SIGINT)
            _signal.signal(_signal.SIGINT, _signal.SIG_DFL)
            os.kill(os.getpid(), _signal.SIGINT)
        raise


atexit.register(at_exit)
# Private, and deliberately not behind hasattr(): without it "the program stays alive for its
# workers" would silently stop working.  Nothing public runs at this point of shutdown (after
# the main module, before threading joins non-daemon threads, in the main thread, where Ctrl-C
# gets through); see docs/architecture.md, "Private and fragile APIs", and the test
# test_private_apis.py that fails if it is gone.
threading._register_atexit(on_threading_shutdown)
