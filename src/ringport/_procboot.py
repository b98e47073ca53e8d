"""The process backend, child side: what a process worker's interpreter runs first.

argv: the socket to the parent, the memfd and socket of the parent port's channel, the parent's
pid (see ringport._process).  It reads the start-up payload from the socket, wraps side 1 of the
channel as ringport.parent_port, and runs the worker through ringport._bootstrap.run, as the
other backends do; then it reports the error (if any) and the exit code, and exits.
"""
import os
import _thread
import socket
import sys


_prctl = None   # libc's prctl, looked up once (in the zygote, before it forks)
_pdeath_for = None   # the parent this process already dies with


def _die_with_parent(ppid):
    """SIGKILL this process when its parent (the zygote that forked it, or the parent's thread
    that spawned it) ends (Linux), and exit now if that parent is already gone."""
    global _prctl, _pdeath_for
    if sys.platform.startswith("linux") and _pdeath_for != (os.getpid(), ppid):
        PR_SET_PDEATHSIG = 1
        try:
            if _prctl is None:
                import ctypes
                _prctl = ctypes.CDLL(None, use_errno=True).prctl
            _prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0)
            _pdeath_for = (os.getpid(), ppid)   # (a forked child does not keep the setting)
        except (OSError, AttributeError):
            pass
    if os.getppid() != ppid:
        os._exit(1)


def _watch_parent(sock, ctl):
    """Follow the parent's frames: terminate() requests, and the end of the parent."""
    from ringport._process import TERMINATE, read_frame
    while True:
        try:
            kind, _ = read_frame(sock)
        except OSError:
            kind = None
        if kind is None:   # the parent is gone (or closed its end): nobody waits for us
            os._exit(1)
        if kind == TERMINATE:
            ctl.terminate()


def main():
    """A spawned worker: its descriptors and its parent's pid come as argv."""
    args = [int(a) for a in sys.argv[1:7]]
    del sys.argv[1:7]
    run(*args)


def run(sock_fd, memfd, chan_sock, bmemfd, bsock, ppid):
    """Run the worker and end the process (a spawned worker, or one forked by the zygote)."""
    _die_with_parent(ppid)
    sock = socket.socket(fileno=sock_fd)
    from ringport._process import ERROR, EXIT, write_frame
    try:
        token, ctl, ctl_chan = _boot(sock, memfd, chan_sock, bmemfd, bsock)
    except BaseException as exc:   # before the worker ran: that is its error
        from ringport._core import dumps
        from ringport._errors import error_report
        try:
            write_frame(sock, ERROR, dumps(error_report(exc, "process"), allow_pickle=False))
            write_frame(sock, EXIT, dumps(1))
        finally:
            os._exit(1)
    from ringport import _bootstrap
    code = _bootstrap.run(token, ctl.id, None)
    _finish(sock, code, ctl, ctl_chan)


_prepared = None   # (control block, control channel) that a spare made ahead of its request


def prepare():
    """In a spare worker (ringport._zygote), before it knows its request: what every boot makes
    whatever the request is, and a first pass over the code a boot runs (so its copy-on-write
    page faults are taken now, not on the way to the worker's first message)."""
    global _prepared
    from ringport._core import MessageChannel, _new_worker_ctl, dumps, loads
    loads(dumps({"capacity": 1, "bridge_capacity": 1, "sys_path": list(sys.path)}))
    compile("pass", "<spare>", "exec")
    _prepared = (_new_worker_ctl(), MessageChannel())


def _boot(sock, memfd, chan_sock, bmemfd, bsock):
    """The worker's token (for ringport._bootstrap.run), its control block and channel."""
    from ringport._process import ONLINE, PAYLOAD, read_frame, write_frame
    kind, data = read_frame(sock)
    if kind != PAYLOAD:
        os._exit(1)
    from ringport._core import loads
    boot = loads(data)
    # the parent's sys.path first: worker_data may need its modules to unpickle
    sys.path[:] = boot["sys_path"]
    from ringport._core import MessageChannel, _export, _new_worker_ctl, _process_port
    from ringport._relay import _ports_in
    port = _process_port(memfd, chan_sock, boot["capacity"])
    from ringport import _bcbridge
    _bcbridge.add(_process_port(bmemfd, bsock, boot["bridge_capacity"]))
    # the first message is the start-up payload, from the parent that started this process
    # (trusted as much as the program itself: its worker_data may hold pickled values)
    payload = port.receive()
    port.allow_pickle = payload.pop("allow_pickle")
    if _prepared is not None:
        ctl, ctl_chan = _prepared
    else:
        ctl, ctl_chan = _new_worker_ctl(), MessageChannel()
    payload["parent_port"] = port
    payload["ctl_port"] = ctl_chan.port2
    token = _export(payload, [port, ctl_chan.port2, *_ports_in(payload["worker_data"])])
    # no wait for the parent to see 'online': the Worker emits it before the first message
    # anyway (Worker._first_message), and a terminate() now reaches _watch_parent
    write_frame(sock, ONLINE)
    # a bare thread: threading.Thread.start() would wait until it runs, a context switch on
    # the way to the worker's first message (and the process ends by os._exit, never joining)
    _thread.start_new_thread(_watch_parent, (sock, ctl))
    return token, ctl, ctl_chan


def _finish(sock, code, ctl, ctl_chan):
    """Report the worker's error and exit code to the parent, and end the process."""
    from ringport._core import _flush_shared, _import, dumps
    from ringport._process import ERROR, EXIT, write_frame
    from ringport._relay import flush
    tok = ctl.swap_error(0)
    if tok:
        try:
            report = _import(tok)
            report["local"] = None
            write_frame(sock, ERROR, dumps(report, allow_pickle=False))
        except Exception:   # noqa: BLE001 - the exit code still says it failed
            if code == 0:
                code = 1
    ctl_chan.port1.close()
    flush()   # ports relayed to other processes: what the worker posted on them goes out first
    _flush_shared()   # and what waits to enter a ring shared with another process
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:   # noqa: BLE001
            pass
    try:
        write_frame(sock, EXIT, dumps(code))
    except OSError:
        pass
    # like a worker thread's end: the process ends with its worker (its other threads with it)
    os._exit(code & 0xFF if code >= 0 else 1)
