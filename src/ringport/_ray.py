"""The Ray backend: a worker hosted in a Ray actor, on any node of the cluster.

Ray places the actor, ships the target (a function goes as a Ray argument: by reference when its
module is importable there, by value otherwise; a script's source is sent and written to a file
there), detects failures and kills the actor for terminate().  Messages do not go through Ray
calls: the actor connects back to this process over TCP (to a listener on this node's address,
proving itself with a 16-byte secret that went to it through Ray), and a ``ringport._raylink.Link``
on each end bridges the worker's parent port, BroadcastChannel and every port transferred over
it.  A message of BLOB_MIN bytes or more goes through Ray's object store instead (``_Blobs``).

Inside the actor the worker is a thread worker of that process (``Worker(backend="thread")``),
so everything a worker has (parent_port, worker_data, env data, argv, env, exit codes, errors)
comes from the thread backend; this module only relays it.

Trust: bytes from another machine are untrusted.  The pickle fallback is off on the link both
ways unless RINGPORT_RAY_ALLOW_PICKLE=1 is set in the driver and in the actors (``ringport.ray.
init(allow_pickle=True)`` sets both), and a worker's error is rebuilt by type only for builtin
exception types, otherwise as WorkerError, never by unpickling.
"""
import builtins
import itertools
import os
import queue
import socket
import sys
import tempfile
import threading

from ringport import _bcbridge
from ringport._core import (MessageChannel, _port_set_unshared, _try_receive, dumps, loads)
from ringport._errors import WorkerError, boot_failure_report, error_report, rebuild_error
from ringport._raylink import LINGER_S, Link

__all__ = ["ALLOW_PICKLE_ENV", "RayLink", "available", "remote_pickle_allowed"]

#: "1" in the driver and the actors: what crosses between machines may be pickled (runs code).
ALLOW_PICKLE_ENV = "RINGPORT_RAY_ALLOW_PICKLE"
#: How long the driver waits for a started actor to connect back before the start fails.
CONNECT_TIMEOUT_S = 120.0
#: After the actor's task ended (or the actor died), how long its link may still deliver.
_GRACE_S = 2.0


def available():
    import importlib.util
    return importlib.util.find_spec("ray") is not None


def _ray():
    try:
        import ray
    except ImportError:
        raise ImportError("backend='ray' needs Ray: pip install 'ringport[ray]'") from None
    return ray


def _ray_up():
    """Ray if this process is still connected, else None: a thread of ours that calls Ray after
    ray.shutdown() must not start or join a cluster again."""
    ray = sys.modules.get("ray")
    return ray if ray is not None and ray.is_initialized() else None


def remote_pickle_allowed():
    return os.environ.get(ALLOW_PICKLE_ENV, "") == "1"


def rebuild_remote_error(report, allow_pickle):
    """A worker's error from another machine: unpickled only if allowed, else an instance of
    the builtin exception type it names (no code runs), else WorkerError."""
    if allow_pickle or report.get("died"):   # (died: made here, for an actor that died)
        return rebuild_error(report, allow_pickle)
    cls = getattr(builtins, str(report.get("type", "")), None) \
        if report.get("module") == "builtins" else None
    if isinstance(cls, type) and issubclass(cls, BaseException):
        try:
            exc = cls(report.get("message", ""))
            exc.add_note("Traceback in the worker:\n" + str(report.get("traceback", "")).rstrip())
            return exc
        except Exception:   # noqa: BLE001 - a type that wants other arguments
            pass
    return WorkerError(str(report.get("type")), str(report.get("message")),
                       str(report.get("traceback")))


# ---------------------------------------------------------------------------- driver side


def pool_defaults(ray_options):
    """A WorkerPool(backend="ray")'s default max_workers (the cluster's CPUs) and the Ray
    options of its workers (spread over the nodes unless the caller says otherwise)."""
    ray = _ray()
    if ray_options is not None and not isinstance(ray_options, dict):
        raise TypeError(f"ray_options must be a dict of Ray actor options, not "
                        f"{type(ray_options).__name__}")
    if not ray.is_initialized():
        ray.init()
    cpus = int(ray.cluster_resources().get("CPU", 1)) or 1
    opts = {"scheduling_strategy": "SPREAD"}
    opts.update(ray_options or {})
    return cpus, opts


def _died(message):
    report = boot_failure_report(message)
    report["died"] = True
    return report


class _Listener:
    """This process's TCP listener, on the node's address: each actor connects back to it and
    is handed to the RayLink that waits for its secret."""

    def __init__(self):
        host = _ray().util.get_node_ip_address()
        self.sock = socket.create_server((host, 0))
        self.addr = (host, self.sock.getsockname()[1])
        self.waiting = {}
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, name="ringport-ray-listen", daemon=True).start()

    def expect(self, secret):
        q = queue.Queue(1)
        with self.lock:
            self.waiting[secret] = q
        return q

    def forget(self, secret):
        with self.lock:
            self.waiting.pop(secret, None)

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._hello, args=(conn,), daemon=True).start()

    def _hello(self, conn):
        try:
            conn.settimeout(10)
            secret = b""
            while len(secret) < 16:
                chunk = conn.recv(16 - len(secret))
                if not chunk:
                    break
                secret += chunk
            conn.settimeout(None)
        except OSError:
            secret = b""
        with self.lock:
            q = self.waiting.pop(secret, None)
        if q is None:
            conn.close()
        else:
            q.put(conn)


_listener = None
_listener_lock = threading.Lock()


def _get_listener():
    global _listener
    with _listener_lock:
        if _listener is None:
            _listener = _Listener()
        return _listener


_host_cls = None


def _host_class():
    global _host_cls
    if _host_cls is None:
        _host_cls = _ray().remote(_Host)
    return _host_cls


def _target_for_ray(target, eval_):
    """What the actor needs to run target: (spec, function or None).  Checked as for a thread
    worker (any callable goes: Ray ships it), and a script goes as its source."""
    from ringport._worker import _target_spec
    spec, func = _target_spec(target, eval_, "thread")
    if spec[0] == "file":
        with open(spec[1], encoding="utf-8") as f:
            return ("file", os.path.basename(spec[1]), f.read()), None
    if spec[0] == "call":
        return ("func",), func
    return spec, None


class _DriverBlobs:
    """Large messages through Ray's object store: to the actor by a call that carries an
    ObjectRef, from it by a call whose result Ray stores."""

    def __init__(self, actor):
        self.actor = actor
        self.ids = itertools.count(1)

    def put(self, data):
        ray = _ray_up()
        if ray is None:
            raise OSError("this process left the Ray cluster")
        bid = next(self.ids)
        self.actor.push_blob.remote(bid, ray.put(data))
        return bid

    def fetch(self, bid):
        ray = _ray_up()
        if ray is None:
            return None
        try:
            return ray.get(self.actor.pull_blob.remote(bid), timeout=CONNECT_TIMEOUT_S)
        except Exception:   # noqa: BLE001 - the actor is gone: so is the link
            return None


class RayLink:
    """One Ray worker, parent side: made in the Worker's constructor (the actor is asked for
    there), then run() in the Worker's host thread, like the process backend's ProcessLink."""

    proc = None   # (Worker.pid: a Ray worker's process is on another machine)

    def __init__(self, spec, func, payload, transfer, port, ray_options, allow_pickle):
        ray = _ray()
        if ray_options is not None and not isinstance(ray_options, dict):
            raise TypeError(f"ray_options must be a dict of Ray actor options, not "
                            f"{type(ray_options).__name__}")
        # the start-up payload is posted on a channel here first: that moves the transferred
        # ports (the caller's objects become unusable, as in any post) and refuses at once what
        # cannot cross (shared memory; unpicklable or, with pickle off, non-native values)
        self.allow_pickle = bool(allow_pickle) and remote_pickle_allowed()
        self.boot = MessageChannel(allow_pickle=self.allow_pickle)
        _port_set_unshared(self.boot.port1)
        try:
            self.boot.port1.post_message(payload, transfer)
        except BaseException:
            self.boot.port1.close()
            self.boot.port2.close()
            raise
        self.port = port
        self.secret = os.urandom(16)
        self.listener = None
        try:
            if not ray.is_initialized():
                ray.init()
            self.listener = _get_listener()
            self.conn = self.listener.expect(self.secret)
            opts = {"max_concurrency": 4}
            opts.update(ray_options or {})
            self.actor = _host_class().options(**opts).remote()
            self.ref = self.actor.run.remote(self.listener.addr, self.secret, spec, func,
                                             self.allow_pickle)
        except BaseException:   # (bad ray_options, no cluster ...): the moved ports go too
            if self.listener is not None:
                self.listener.forget(self.secret)
            self.boot.port1.close()
            self.boot.port2.close()
            raise
        self.lock = threading.Lock()
        self.killed = False
        self.link = None

    def run(self, on_online):
        """Follow the worker to its end (in the host thread): (exit code, error report)."""
        events = queue.Queue()
        try:
            sock = self._connect()
            if sock is None:
                return 1, _died(self._why_gone("never connected back"))
            link = self.link = Link(sock, odd=False, allow_pickle=self.allow_pickle,
                                    on_control=lambda k, d: events.put((k, d)),
                                    on_closed=lambda: events.put((None, None)),
                                    blobs=_DriverBlobs(self.actor))
            got, payload = _try_receive(self.boot.port2)
            self.boot.port2.close()
            link.send_control(b"P", dumps(payload, allow_pickle=self.allow_pickle,
                                          ports=link._port_out))
            link.bind(0, self.port)
            bc = MessageChannel()
            link.bind(1, bc.port2)
            _bcbridge.add(bc.port1)
            link.start()
            return self._follow(link, events, on_online)
        finally:
            if self.link is not None:
                self.link.close()
            else:
                self.port.close()
            self.boot.port2.close()
            self.listener.forget(self.secret)
            self._kill()

    def _connect(self):
        waited = 0.0
        while waited < CONNECT_TIMEOUT_S:
            try:
                return self.conn.get(timeout=0.25)
            except queue.Empty:
                waited += 0.25
            ray = _ray_up()
            if self.killed or ray is None:
                return None
            ready, _ = ray.wait([self.ref], timeout=0)
            if ready:     # its task ended (or the actor died) without connecting
                try:
                    return self.conn.get(timeout=0.5)
                except queue.Empty:
                    return None
        return None

    def _follow(self, link, events, on_online):
        code = report = None
        ended_at = None
        clock = 0.0
        while True:
            try:
                kind, data = events.get(timeout=0.25)
            except queue.Empty:
                clock += 0.25
                if ended_at is None:
                    ray = _ray_up()
                    if ray is None or ray.wait([self.ref], timeout=0)[0]:
                        ended_at = clock
                # its node may be gone (TCP may not say): close, at once; but a worker that
                # sent its exit code ended well, and what it posted may still wait here for
                # room in a full bounded port, so that gets longer
                elif clock - ended_at >= (_GRACE_S if code is None else LINGER_S):
                    link.close(hard=True)
                continue
            if kind is None:
                break
            if kind == b"O":
                on_online()
            elif kind == b"E":
                try:
                    report = loads(data, allow_pickle=False)
                    if not isinstance(report, dict):
                        raise TypeError("not a dict")
                except Exception as exc:  # noqa: BLE001 - a garbled report is still an error
                    report = boot_failure_report(f"the worker's error report was unreadable: "
                                                 f"{exc}")
            elif kind == b"X":
                try:
                    code = int(loads(data, allow_pickle=False))
                except Exception:   # noqa: BLE001
                    code = 1
        link.join(5)
        if self.killed:
            return 1, None
        if code is None:
            return 1, _died(self._why_gone("died"))
        return code, report

    def _why_gone(self, what):
        ray = _ray_up()
        if ray is None:
            return f"the Ray actor hosting the worker {what} (this process left the cluster)"
        try:
            ray.get(self.ref, timeout=5)
            cause = "its task ended"
        except Exception as exc:  # noqa: BLE001 - RayActorError, a node gone, a timeout ...
            cause = f"{type(exc).__name__}: {exc}".strip()
        return f"the Ray actor hosting the worker {what} ({cause})"

    def terminate(self):
        """Kill the actor (its exit code is 1, as a terminated worker's)."""
        with self.lock:
            if self.killed:
                return
            self.killed = True
        self._kill()

    def _kill(self):
        ray = _ray_up()
        if ray is not None:
            try:
                ray.kill(self.actor, no_restart=True)
            except Exception:   # noqa: BLE001 - gone already
                pass


# ---------------------------------------------------------------------------- actor side


class _ActorBlobs:
    def __init__(self):
        self.ids = itertools.count(1)
        self.inbox = {}
        self.outbox = {}
        self.cond = threading.Condition()

    def put(self, data):
        bid = next(self.ids)
        with self.cond:
            self.outbox[bid] = data
        return bid

    def fetch(self, bid):
        with self.cond:
            if not self.cond.wait_for(lambda: bid in self.inbox, CONNECT_TIMEOUT_S):
                return None
            return self.inbox.pop(bid)

    def arrive(self, bid, data):
        with self.cond:
            self.inbox[bid] = data
            self.cond.notify_all()

    def take(self, bid):
        with self.cond:
            return self.outbox.pop(bid, None)


class _Host:
    """The Ray actor that hosts one worker (a Ray actor class once _host_class() wraps it)."""

    def __init__(self):
        self.blobs = _ActorBlobs()

    def push_blob(self, bid, data):
        self.blobs.arrive(bid, data)

    def pull_blob(self, bid):
        return self.blobs.take(bid)

    def run(self, addr, secret, spec, func, allow_pickle):
        if allow_pickle:
            os.environ[ALLOW_PICKLE_ENV] = "1"
        sock = socket.create_connection(tuple(addr), timeout=30)
        sock.settimeout(None)
        sock.sendall(secret)
        events = queue.Queue()
        link = None

        def on_control(kind, data):
            if kind == b"P":    # decoded here, in the reader: its ports are streams at once
                events.put((kind, link.decode(data)))

        link = Link(sock, odd=True, allow_pickle=allow_pickle, on_control=on_control,
                    on_closed=lambda: events.put((None, None)), blobs=self.blobs, expect=(0,))
        bc = MessageChannel()
        link.bind(1, bc.port2)
        _bcbridge.add(bc.port1)
        link.start()
        kind, boot = events.get()
        if kind is None:
            return 1
        return _run_hosted(link, boot, spec, func, allow_pickle)


def _run_hosted(link, boot, spec, func, allow_pickle):
    from ringport._context import set_environment_data
    from ringport._worker import Worker
    payload, ports = boot
    for k, v in (payload.get("env_data") or {}).items():
        set_environment_data(k, v)
    tmp = None
    if spec[0] == "file":
        tmp = tempfile.mkdtemp(prefix="ringport-ray-")
        target = os.path.join(tmp, os.path.basename(spec[1]) or "worker.py")
        with open(target, "w", encoding="utf-8") as f:
            f.write(spec[2])
        kw = {}
    elif spec[0] == "eval":
        target, kw = spec[1], {"eval": True}
    else:
        target, kw = func, {}
    try:
        w = Worker(target, backend="thread", worker_data=payload.get("worker_data"),
                   transfer=ports, name=payload.get("name"), argv=payload.get("argv"),
                   env=payload.get("env"), allow_pickle=True, **kw)
    except BaseException as exc:
        _report_end(link, 1, exc)
        return 1
    w.on("online", lambda: _send(link, b"O"))
    link.bind(0, w.port)
    code = w.join()
    _report_end(link, code, w._error)
    if tmp is not None:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    return code


def _send(link, kind, data=b""):
    try:
        link.send_control(kind, data)
    except OSError:
        pass


def _report_end(link, code, exc):
    link.drain()
    if exc is not None:
        report = error_report(exc, "ray")
        try:
            data = dumps(report, allow_pickle=False)
        except Exception:   # noqa: BLE001
            data = dumps(boot_failure_report(f"{type(exc).__name__}: {exc}"), allow_pickle=False)
        _send(link, b"E", data)
    _send(link, b"X", dumps(int(code if code is not None else 1)))
    link.close()
    link.join(5)

