"""The process backend, parent side: a worker in a new Python process of the same interpreter.

The worker's parent port is one side of a channel whose rings live in a memfd mapping
(``_core._process_channel``): the parent keeps side 0, the child maps the same file and wraps
side 1, so messages cross without a copy through the kernel and waits use process-shared futexes.
Besides that, a Unix socket pair links the two processes for the rest: the start-up payload
(worker_data, argv, env, the target...), 'online', the error report and the exit code from the
child, and terminate() from the parent.  The child's end of the socket closing is how the parent
learns at once that the process ended, whatever ended it (a signal, os._exit, a crash).

The child is forked by this process's zygote (``ringport._zygote``: a single-threaded process
with ringport imported, started once), or, failing that, started with subprocess (fork + exec:
never a bare fork of a process that has threads) from the worker's host thread.  Either way it
has PR_SET_PDEATHSIG, so that it dies with the zygote or that thread, and it also exits when its
end of the socket reports the parent gone.  ``ringport._procboot`` is what the child runs.
"""
import os
import signal
import socket
import struct
import subprocess
import sys
import threading

from ringport._core import _port_peer_gone, dumps, loads
from ringport._errors import boot_failure_report

__all__ = ["TERMINATE_GRACE_S", "ProcessLink", "read_frame", "write_frame"]

#: How long terminate() waits for a process worker to stop cooperatively before it kills it.
TERMINATE_GRACE_S = 2.0

_HEADER = struct.Struct("<IB")      # payload length, kind
_MAX_FRAME = 1 << 30
_EARLY_PAYLOAD = 1 << 16    # a start-up frame this small is written before the process starts

# frame kinds: parent to child
PAYLOAD, TERMINATE = b"P", b"T"
# child to parent
ONLINE, ERROR, EXIT = b"O", b"E", b"X"


def write_frame(sock, kind, data=b""):
    sock.sendall(_HEADER.pack(len(data), kind[0]) + data)


def _read_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def read_frame(sock):
    """(kind, data), or (None, b"") once the other end closed (or sent something malformed)."""
    head = _read_exact(sock, _HEADER.size)
    if head is None:
        return None, b""
    n, kind = _HEADER.unpack(head)
    if n > _MAX_FRAME:
        return None, b""
    data = _read_exact(sock, n) if n else b""
    if data is None:
        return None, b""
    return bytes((kind,)), data


def _interpreter_command(code):
    """The interpreter and flags of this process, running code with this ringport importable."""
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    boot = f"import sys; sys.path.insert(0, {pkg_parent!r}); {code}"
    return [sys.executable, *subprocess._args_from_interpreter_flags(), "-c", boot]


def _child_command():
    """The interpreter and flags of this process, running ringport._procboot."""
    return _interpreter_command("from ringport._procboot import main; main()")


def _request_child(link_fd, fds):
    """Ask this process's zygote for the worker's process (unless RINGPORT_PROCESS_START=spawn):
    a function that waits for its answer (see _zygote.request), or None."""
    if os.environ.get("RINGPORT_PROCESS_START") != "spawn":
        from ringport import _zygote
        try:
            return _zygote.request(link_fd, fds)
        except OSError:
            pass
    return None


def _start_child(link_fd, fds, requested=None):
    """The worker's process: forked by this process's zygote (requested: what _request_child
    returned), or (RINGPORT_PROCESS_START=spawn, or no zygote to be had) spawned.  A
    subprocess.Popen or a _zygote.ZygoteChild."""
    if requested is not None:
        try:
            return requested()
        except OSError:
            pass
    cmd = _child_command() + [str(link_fd), *map(str, fds), str(os.getpid())]
    return subprocess.Popen(cmd, pass_fds=(link_fd, *fds), stdin=subprocess.DEVNULL,
                            close_fds=True)


def _describe_status(returncode):
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"the worker process was killed by {name} ({-returncode})"
    return f"the worker process exited with status {returncode} without reporting its end"


_LOST_WAIT_S = 10.0   # how long a lost zygote's child may take to die (it is being killed)


def _came_online(sock):
    """Whether the process at the other end of the link (a lost zygote's child, if there was
    one) wrote anything on it (its first frame is ONLINE, before the worker's code runs).
    Only that process holds the other end now, and it is being killed: its end closes soon,
    and what it wrote stays readable.  Waiting longer than _LOST_WAIT_S counts as online (no
    second start of a worker that may be running)."""
    sock.settimeout(_LOST_WAIT_S)
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except ConnectionResetError:   # its end closed with the start-up frame unread
        return False
    except OSError:
        return True
    finally:
        sock.settimeout(None)


class _LostChild:
    """The process of a worker that died with its zygote before the zygote gave its pid: the
    part of subprocess.Popen that ProcessLink uses, ended by SIGKILL (the zygote's death
    signal)."""

    pid = None
    returncode = -signal.SIGKILL

    def poll(self):
        return self.returncode

    def wait(self):
        return self.returncode

    def kill(self):
        pass


class ProcessLink:
    """One process worker: made (and its process asked for) in the Worker's constructor, then
    run() in its host thread."""

    def __init__(self, payload, fds, port):
        self.payload = payload          # dumps() of the start-up payload
        self.fds = fds                  # memfd and socket of side 1: the parent port's channel,
                                        # then the broadcast bridge's
        self.port = port                # the parent's side of the shared channel
        self.proc = None
        self.sock = None
        self.lock = threading.Lock()
        self.terminating = False
        self.killed = False
        self.timer = None
        # Asked of the zygote here, in the Worker's constructor, rather than by the host thread
        # once it runs: the worker boots meanwhile (the start-up frame waits in the socket; a
        # big one would fill it before anybody reads it, so it goes once the process is there)
        self.link = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.boot = payload
        self.requested = None
        self.pending = None             # the zygote's answer, for pid() before run() has it
        self.asked = False
        if len(payload) <= _EARLY_PAYLOAD:
            write_frame(self.link[0], PAYLOAD, payload)
            self.payload = None
            self.requested = self.pending = _request_child(self.link[1].fileno(), fds)
            self.asked = True

    def child(self):
        """The worker's process object, as soon as it is known (the zygote answered: waits a
        moment for that), even before run() took the answer; None if there is none."""
        proc = self.proc
        if proc is None:
            peek = getattr(self.pending, "peek", None)
            if peek is not None:
                proc = peek()
        return proc

    def abandon(self):
        """The Worker could not be made after all: let the process (if asked for) end, and close
        what it would have had."""
        for s in self.link:
            s.close()   # a process already asked for reads the end of its link, and exits
        self.link = None
        if self.requested is not None:
            try:
                self.requested()   # (its answer; the zygote reaps it)
            except OSError:
                pass
            self.requested = None
        for fd in self.fds:
            os.close(fd)
        self.fds = ()

    def run(self, on_online):
        """Start the process and follow it to its end (in the host thread).  Returns (exit code,
        error report or None)."""
        (ours, theirs), self.link = self.link, None
        requested, self.requested = self.requested, None
        try:
            if not self.asked:
                requested = self.pending = _request_child(theirs.fileno(), self.fds)
            elif requested is not None and self.payload is None:
                try:
                    self.proc = requested()
                except OSError:
                    # the zygote went before it answered.  A child of its own that took the
                    # start-up frame dies with it (PR_SET_PDEATHSIG); if it came online first,
                    # the worker's code may have run, and this is the worker's end (not a start
                    # to make again: it would run twice).  Else a spawned process gets a new
                    # link and the frame again.
                    theirs.close()
                    if _came_online(ours):
                        self.proc = _LostChild()
                    else:
                        ours.close()
                        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                        self.payload = self.boot
                requested = None
            if self.proc is None:
                self.proc = _start_child(theirs.fileno(), self.fds, requested)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
            for fd in self.fds:
                os.close(fd)
            self.fds = ()
        with self.lock:
            self.sock = ours
            terminate = self.terminating
        try:
            if self.payload is not None:
                write_frame(ours, PAYLOAD, self.payload)
                self.payload = None
            if terminate:
                self._send_terminate()
            return self._follow(ours, on_online)
        finally:
            ours.close()
            # whatever ended it, the process is gone: its side of the channel will post nothing
            # more (what it posted is still delivered, then PortClosed)
            _port_peer_gone(self.port)
            self.port = None
            if self.timer is not None:
                self.timer.cancel()

    def _follow(self, sock, on_online):
        code = None
        report = None
        while True:
            try:
                kind, data = read_frame(sock)
            except OSError:
                kind = None
            if kind is None:
                break
            if kind == ONLINE:
                on_online()
            elif kind == ERROR:
                try:
                    report = loads(data, allow_pickle=False)
                except Exception as exc:  # noqa: BLE001 - a garbled report is still an error
                    report = boot_failure_report(f"the worker's error report was unreadable: "
                                                 f"{exc}")
            elif kind == EXIT:
                try:
                    code = int(loads(data, allow_pickle=False))
                except Exception:
                    code = 1
        returncode = self.proc.wait()
        if self.killed:                      # terminate() had to kill it: that is its end
            return 1, None
        if code is None:                     # it died without a word
            return (128 - returncode if returncode < 0 else returncode or 1,
                    boot_failure_report(_describe_status(returncode)))
        return code, report

    def terminate(self):
        """Ask the worker to stop; kill it if it has not within TERMINATE_GRACE_S."""
        with self.lock:
            if self.terminating:
                return
            self.terminating = True
            if self.sock is None:            # not started yet: run() sends it
                return
        self._send_terminate()

    def _send_terminate(self):
        try:
            write_frame(self.sock, TERMINATE)
        except OSError:
            pass
        self.timer = threading.Timer(TERMINATE_GRACE_S, self._kill)
        self.timer.daemon = True
        try:
            self.timer.start()
        except RuntimeError:   # "can't create new thread at interpreter shutdown": no grace
            self.timer = None
            self._kill()

    def _kill(self):
        proc = self.proc
        if proc is not None and proc.poll() is None:
            self.killed = True
            try:
                proc.kill()
            except OSError:
                pass
