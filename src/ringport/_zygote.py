"""The process backend's zygote: a single-threaded process with ringport imported that forks
process workers, so that a worker does not pay for a fresh interpreter importing ringport.

One zygote per parent process, started lazily (subprocess: fork + exec, never a bare fork of a
process that has threads) by the first process worker.  The parent and the zygote talk over a
Unix SOCK_SEQPACKET pair, one message per frame:

- parent to zygote: a pickled ``(request id, {"cwd", "env"})`` with the worker's descriptors
  (link socket, channel memfd and socket, bridge memfd and socket, the parent's current
  stdout and stderr) attached by SCM_RIGHTS;
- zygote to parent: ``("pid", request id, pid)`` once it forked the worker, and
  ``("exit", pid, returncode)`` (``subprocess``'s convention: -N for signal N) once it reaped it.

The zygote never starts a thread, so its fork is the fork of a single-threaded process; the
forked worker runs ``ringport._procboot.run`` exactly as a spawned one does.

A spare: the zygote forks one worker ahead of demand, which waits (on its own SOCK_SEQPACKET
pair with the zygote) for a request, so that a start costs the parent a hand-over, not a fork.
The spare knows nothing of the request until it gets it: the descriptors, cwd, environment and
stdout/stderr are applied then, exactly as in a worker forked for the request (argv and the rest
come in the start-up payload).  Once a spare is taken, the zygote forks the next one at once
when it may use more than one core (the new worker boots on one, the fork runs on another while
the parent waits: back-to-back starts on 2 cores went from 4.6 to 3.2 ms a start against 3.5 ms
for multiprocessing's forkserver), and on one core only once it has been idle for
_SPARE_DELAY_MS (there the fork would take the core from the worker that just started).  A
spare dies as a worker does: PR_SET_PDEATHSIG with the zygote, and its socket's end
when the zygote exits; one that died before it was taken is found out by the hand-over failing
(the zygote forks for the request instead).  Death: the zygote
is started from a thread that lives until the zygote ends (it reads the zygote's replies), with
PR_SET_PDEATHSIG, so it dies with the parent process, SIGKILL included; it also exits when its
socket reports the parent gone.  Its workers set PR_SET_PDEATHSIG too (their parent is the
zygote).  If the zygote cannot be started or dies, ``ringport._process`` spawns workers directly.
"""
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading

__all__ = ["request", "serve"]

_MAX_REQUEST = 1 << 20          # a request carries os.environ: room for a large one
_START_TIMEOUT_S = 60.0         # how long a request waits for the forked worker's pid
_PEEK_TIMEOUT_S = 5.0           # how long Worker.pid waits for it
_MAX_FAILURES = 3               # zygotes in a row that started no worker: then spawn only
_N_FDS = 7
_SPARE_DELAY_MS = 5             # one core: idle time after a start before the next spare is forked
_SPARE_RETRY_MS = 200           # after a spare's fork failed (out of processes or memory)


# ---------------------------------------------------------------------------- parent side

class ZygoteChild:
    """A worker forked by the zygote, with the part of subprocess.Popen that ProcessLink uses."""

    def __init__(self, pid, zygote):
        self.pid = pid
        self.returncode = None
        self._zygote = zygote

    def poll(self):
        return self.returncode

    def wait(self):
        cond = self._zygote.cond
        with cond:
            while self.returncode is None:
                cond.wait()
        return self.returncode

    def kill(self):
        if self.returncode is None:
            os.kill(self.pid, signal.SIGKILL)


class _Zygote:
    def __init__(self):
        self.owner = os.getpid()
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.cond = threading.Condition()
        self.send_lock = threading.Lock()   # apart from cond: a blocked send must not stop
                                            # the reader delivering replies
        self.replies = {}                   # request id -> ZygoteChild
        self.children = {}                  # pid -> ZygoteChild still running
        self.next_id = 0
        self.dead = False
        self.started = threading.Event()
        self.start_error = None
        # the thread that starts the zygote lives as long as the zygote (PR_SET_PDEATHSIG
        # fires when the thread that forked it ends): it reads the zygote's replies until the
        # zygote is gone.  A daemon thread: at exit it ends with the process, and so does the
        # zygote.  (Not the main thread: a worker may be started from any thread.)
        try:
            threading.Thread(target=self._host, args=(theirs,), name="ringport-zygote",
                             daemon=True).start()
        except BaseException:   # (no new threads at interpreter shutdown, 3.12)
            self.sock.close()
            theirs.close()
            raise
        self.started.wait()
        if self.start_error is not None:
            raise self.start_error

    def _host(self, theirs):
        try:
            from ringport._process import _interpreter_command
            cmd = _interpreter_command("from ringport._zygote import serve; serve()")
            proc = subprocess.Popen(cmd + [str(theirs.fileno()), str(os.getpid())],
                                    pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                                    close_fds=True)
        except BaseException as exc:
            self.start_error = (OSError(f"the zygote could not be started: {exc}")
                                if isinstance(exc, Exception) else exc)
            self._died()
            return
        finally:
            theirs.close()
            self.started.set()
        try:
            self._read()
        finally:
            self._died()
            proc.wait()

    def _read(self):
        while True:
            try:
                msg = self.sock.recv(4096)
            except OSError:
                return
            if not msg:
                return
            what, key, value = pickle.loads(msg)
            with self.cond:
                if what == "pid":
                    child = None
                    if value > 0:                      # else its fork failed
                        child = ZygoteChild(value, self)
                        self.children[value] = child
                    self.replies[key] = child
                else:                                  # "exit"
                    child = self.children.pop(key, None)
                    if child is not None:
                        child.returncode = value
                self.cond.notify_all()

    def _died(self):
        with self.cond:
            self.dead = True
            # its workers die with it (PR_SET_PDEATHSIG): nobody can reap them for us now
            for child in self.children.values():
                child.returncode = -signal.SIGKILL
            self.children.clear()
            self.cond.notify_all()
        with self.send_lock:
            self.sock.close()

    def request(self, fds, state):
        """Ask for a worker with these descriptors, cwd and environment: the request's id for
        answer(), or OSError."""
        with self.cond:
            if self.dead:
                raise OSError("the zygote is gone")
            rid = self.next_id
            self.next_id += 1
        request = pickle.dumps((rid, state))
        with self.send_lock:
            if self.dead:
                raise OSError("the zygote is gone")
            socket.send_fds(self.sock, [request], fds)
        return rid

    def answer(self, rid, holder):
        """The ZygoteChild the request rid started (also left in holder.child), or OSError."""
        with self.cond:
            if not self.cond.wait_for(lambda: rid in self.replies or self.dead,
                                      _START_TIMEOUT_S):
                raise OSError("the zygote did not answer")
            child = holder.child = self.replies.pop(rid, None)
        if child is None:
            raise OSError("the zygote could not start the worker")
        return child


_lock = threading.Lock()
_zygote = None
_failures = 0


def _forget():
    """In a child forked from this process, the zygote and its reader thread are not ours."""
    global _lock, _zygote, _failures
    _lock = threading.Lock()
    _zygote = None
    _failures = 0


os.register_at_fork(after_in_child=_forget)


def request(link_fd, fds):
    """Send the zygote (started first if there is none, or it died) the request for a worker,
    without waiting for its answer: the worker boots while the caller goes on.  Returns a
    function that waits for the answer: a ZygoteChild, or OSError if no zygote did it (the
    caller spawns then).  OSError now if the request could not even be sent."""
    global _zygote, _failures
    from ringport import _context
    if _context.in_subinterpreter_worker():   # no daemon thread to hold a zygote there
        raise OSError("no zygote in a subinterpreter")
    # what may have changed since the zygote started (sys.path comes in the boot frame); an
    # error here (a deleted cwd) is no fault of the zygote's
    state = {"cwd": os.getcwd(), "env": dict(os.environb)}
    with _lock:
        z = _zygote
        if z is None or z.dead:
            if _failures >= _MAX_FAILURES:
                raise OSError("the zygote failed too often")
            try:
                z = _zygote = _Zygote()
            except RuntimeError as exc:   # no new threads at interpreter shutdown (3.12)
                _zygote = None
                raise OSError(f"no zygote now: {exc}") from exc
            except BaseException:
                _failures += 1
                raise
    try:
        # with the parent's stdout and stderr as they are now
        rid = z.request([link_fd, *fds, 1, 2], state)
    except OSError:
        _failed()
        raise

    def answer():
        global _failures
        try:
            child = z.answer(rid, answer)
        except OSError:
            _failed()
            raise
        _failures = 0
        return child

    def peek(timeout=_PEEK_TIMEOUT_S):
        """The ZygoteChild, without taking the answer (a Worker's pid while its host thread has
        not taken it yet); waits up to timeout for the zygote to answer, which it does right
        after it hands the request over (the worker may post before that reaches us).  None
        if it did not answer or failed."""
        with z.cond:
            z.cond.wait_for(lambda: answer.child is not None or rid in z.replies or z.dead,
                            timeout)
            return answer.child or z.replies.get(rid)
    answer.child = None
    answer.peek = peek
    return answer


def _failed():
    global _failures
    with _lock:
        _failures += 1


# ---------------------------------------------------------------------------- zygote side

def serve():
    """The zygote's main loop (argv: its socket, the parent's pid)."""
    sock_fd, ppid = int(sys.argv[1]), int(sys.argv[2])
    del sys.argv[1:3]
    from ringport import _procboot
    _procboot._die_with_parent(ppid)
    # what a worker needs, imported once here rather than in every worker
    import ringport                                                     # noqa: F401
    from ringport import _bcbridge, _bootstrap, _core, _errors, _process, _relay  # noqa: F401
    import select
    if threading.active_count() != 1:   # a fork would copy a thread's locks in any state
        os._exit(1)
    # A free-threaded 3.13 makes its functions and code objects immortal when its first thread
    # starts, in a pass over the whole heap: done here once, not by each worker on its way to
    # its first message (when it starts the thread that follows the parent's frames).  The
    # thread has ended before any fork.
    from ringport._backends import FREE_THREADED
    if FREE_THREADED:
        first = threading.Thread(target=int)
        first.start()
        first.join()   # (3.13+: the OS thread has ended, as a fork wants)
        del first
    import gc
    gc.freeze()   # what is imported now stays put: a worker's collections leave its pages shared
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is for the parent and its workers
    sock = socket.socket(fileno=sock_fd)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    me = os.getpid()
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    try:
        delay = 0 if len(os.sched_getaffinity(0)) > 1 else _SPARE_DELAY_MS
    except (AttributeError, OSError):
        delay = _SPARE_DELAY_MS
    spare, wait = None, 0   # the first spare at once
    while True:
        events = poller.poll(None if spare is not None else wait)
        if not events and spare is None:
            # the next spare (a start meanwhile forks for itself); after a failed fork, not
            # again before _SPARE_RETRY_MS
            spare = _fork_spare(sock, (wake_r, wake_w), me, _procboot)
            wait = delay if spare is not None else _SPARE_RETRY_MS
        for fd, _ in events:
            if fd == wake_r:
                try:
                    while os.read(wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
                _reap(sock)
                continue
            try:
                msg, fds, _, _ = socket.recv_fds(sock, _MAX_REQUEST, _N_FDS)
            except OSError:
                msg, fds = b"", []
            if not msg:                      # the parent is gone: so are we (and our workers)
                os._exit(0)
            try:
                rid, req = pickle.loads(msg)
                pid = -1
                if len(fds) == _N_FDS:
                    if spare is not None:
                        pid = _hand_over(spare, msg, fds)
                        spare = None
                    if pid < 0:
                        try:
                            pid = os.fork()
                        except OSError:   # out of processes or memory: the parent spawns it
                            pid = -1
                        if pid == 0:
                            _child(sock, (wake_r, wake_w), fds, req, me, _procboot)
            finally:
                for f in fds:
                    os.close(f)
            try:
                sock.send(pickle.dumps(("pid", rid, pid)))
            except OSError:
                os._exit(0)
        _reap(sock)


def _fork_spare(sock, wake, zygote_pid, procboot):
    """Fork a spare worker: (its pid, the zygote's end of its socket), or None."""
    try:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    except OSError:
        return None
    try:
        pid = os.fork()
    except OSError:
        ours.close()
        theirs.close()
        return None
    if pid == 0:
        try:
            ours.close()
            _spare(sock, wake, theirs, zygote_pid, procboot)
        finally:
            os._exit(1)
    theirs.close()
    return pid, ours


def _hand_over(spare, msg, fds):
    """Give a request to the spare: its pid, or -1 if it is gone (it died, or was killed)."""
    pid, ours = spare
    try:
        socket.send_fds(ours, [msg], fds)
    except OSError:
        pid = -1
    ours.close()
    return pid


def _spare(sock, wake, mine, zygote_pid, procboot):
    """In a spare: wait for a request from the zygote, then run it as a forked worker."""
    procboot._die_with_parent(zygote_pid)
    _leave_zygote(sock, wake)   # (SIGINT stays ignored until it is a worker)
    procboot.prepare()
    try:
        msg, fds, _, _ = socket.recv_fds(mine, _MAX_REQUEST, _N_FDS)
    except OSError:
        msg, fds = b"", []
    if not msg or len(fds) != _N_FDS:   # the zygote is gone
        os._exit(0)
    mine.close()
    _, req = pickle.loads(msg)
    _child(None, (), fds, req, zygote_pid, procboot)


def _leave_zygote(sock, wake):
    """In a process forked by the zygote: drop the zygote's signal wake-up and SIGCHLD handler,
    and close its socket (None: already closed) and wake-up pipe."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    if sock is not None:
        sock.close()
    for f in wake:
        os.close(f)


def _reap(sock):
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        try:
            sock.send(pickle.dumps(("exit", pid, os.waitstatus_to_exitcode(status))))
        except OSError:
            os._exit(0)


def _child(sock, wake, fds, req, zygote_pid, procboot):
    """In the forked worker: undo the zygote's own settings, then run as a spawned worker."""
    try:
        _leave_zygote(sock, wake)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        link, memfd, chan, bmemfd, bsock, out, err = fds
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.close(out)
        os.close(err)
        try:
            os.chdir(req["cwd"])
        except OSError:
            pass
        env = req["env"]
        for key in [k for k in os.environb if k not in env]:
            del os.environb[key]
        for key, value in env.items():
            if os.environb.get(key) != value:
                os.environb[key] = value
        procboot.run(link, memfd, chan, bmemfd, bsock, zygote_pid)
    finally:
        os._exit(1)
