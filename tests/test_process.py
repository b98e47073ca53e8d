"""The process backend: what only a worker in its own process can show (numpy on a GIL build,
sudden death, orphans, descriptors and mappings given back) and exact counts across the process
boundary.  The rest of the worker suite runs on it through the `backend` fixture."""
import gc
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

import ringport
from ringport._backends import FREE_THREADED
from ringport import Float64Array, Int32Array, SharedArrayBuffer, Uint8Array, Worker, atomics
from conftest import wait_until

pytestmark = pytest.mark.skipif("process" not in ringport.available_backends(),
                                reason="process workers need Linux")


@pytest.fixture(autouse=True, scope="module")
def _zygote_running():
    """The zygote (and its socket) outlives the tests: start it before any test counts
    descriptors."""
    w = Worker("import ringport\nringport.parent_port.post_message(1)\n", eval=True,
               backend="process")
    assert w.receive(timeout=60) == 1
    assert w.join(60) == 0


def _fds():
    return len(os.listdir("/proc/self/fd"))


def _maps():
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


def _ringport_maps():
    """Mappings of ringport's own memfds (channels' rings, SharedArrayBuffers), each as its
    address range and inode: a mapping an earlier test left to helper threads may go away
    during a test, so leaks are what was not there before, never a count."""
    with open("/proc/self/maps") as f:
        return {(fields[0], fields[4]) for fields in map(str.split, f)
                if any("memfd:ringport" in x for x in fields[5:])}


# Under AddressSanitizer the allocator maps memory of its own as it goes (its regions, shadow):
# the count of all mappings moves by a few with no leak, so only ringport's own are exact there.
_MAP_SLACK = 32 if "asan" in os.environ.get("LD_PRELOAD", "") else 2


def _settled(count, baseline, slack, what):
    """Wait until count() comes back to baseline (+ slack): helper threads and the kernel let
    go of descriptors and mappings shortly after a worker ended."""
    gc.collect()
    wait_until(lambda: gc.collect() is not None and count() <= baseline + slack, 10,
               f"{what} back to {baseline} (+{slack}), now {count()}")


def test_auto_and_available():
    backends = ringport.available_backends()
    assert "process" in backends
    if FREE_THREADED:
        assert backends[0] == "thread"
    elif sys.version_info >= (3, 13):
        assert backends[0] == "subinterpreter"
    else:
        assert backends[0] == "process"


def test_numpy_in_process_workers_filling_halves_of_one_buffer():
    np = pytest.importorskip("numpy")
    n = 1 << 16
    sab = SharedArrayBuffer(8 * n)
    src = textwrap.dedent("""
        import numpy as np, ringport
        sab, lo, hi = ringport.worker_data
        a = np.frombuffer(sab, dtype=np.float64)
        a[lo:hi] = np.arange(lo, hi, dtype=np.float64)
        ringport.parent_port.post_message(float(a[lo:hi].sum()))
    """)
    ws = [Worker(src, eval=True, backend="process", worker_data=(sab, lo, lo + n // 2))
          for lo in (0, n // 2)]
    parts = [w.receive(timeout=60) for w in ws]
    assert [w.join(60) for w in ws] == [0, 0]
    whole = np.frombuffer(sab, dtype=np.float64)
    assert whole.sum() == sum(parts) == n * (n - 1) / 2
    assert Float64Array(sab)[n - 1] == n - 1


def test_numpy_array_round_trip_through_a_process_worker():
    np = pytest.importorskip("numpy")
    w = Worker("import ringport\n"
               "a = ringport.parent_port.receive()\n"
               "ringport.parent_port.post_message(a * 2)\n", eval=True, backend="process")
    a = np.arange(300_000, dtype=np.float64)   # bigger than a ring record: crosses in pieces
    w.post_message(a)
    b = w.receive(timeout=60)
    assert w.join(60) == 0
    assert np.array_equal(b, a * 2)


def test_sigkill_mid_stream_is_an_error_and_frees_everything():
    # one worker first: what the first process worker sets up once per process (the zygote and
    # its reader thread, the dispatcher thread, kept big blocks) is not this worker's to free;
    # run alone on 3.13t, the count grew by 11 mappings and 1 descriptor without it
    w = Worker("import ringport\nringport.parent_port.post_message(1)", eval=True,
               backend="process")
    assert w.receive(timeout=30) == 1
    assert w.join(30) == 0
    del w
    fds, maps, own = _fds(), _maps(), _ringport_maps()
    ch = ringport.MessageChannel()
    sab = SharedArrayBuffer(1 << 20)
    w = Worker("import ringport\n"
               "port, sab = ringport.worker_data\n"
               "port.post_message('holding')\n"
               "i = 0\n"
               "while True:\n"
               "    ringport.parent_port.post_message(i)\n"
               "    i += 1\n", eval=True, backend="process",
               worker_data=(ch.port2, sab), transfer=[ch.port2])
    errors, exits = [], []
    w.on("error", errors.append)
    w.on("exit", exits.append)
    assert ch.port1.receive(timeout=30) == "holding"
    held = _ringport_maps() - own
    assert held   # (the check sees the channel and the buffer the worker maps)
    for i in range(1000):
        assert w.receive(timeout=30) == i
    os.kill(w.pid, signal.SIGKILL)
    assert w.join(30) == 128 + signal.SIGKILL
    wait_until(lambda: exits, 10, "'exit'")
    assert exits == [128 + signal.SIGKILL]
    assert len(errors) == 1 and "SIGKILL" in str(errors[0])
    # what it posted before it died is still delivered, in order, then the port reads closed
    i = 1000
    while True:
        try:
            got = w.receive(timeout=30)   # (not inside an assert: pytest's rewrite would keep
        except ringport.PortClosed:      # the bound method, and so the worker, in a local)
            break
        assert got == i
        i += 1
    with pytest.raises(ringport.PortClosed):   # the port it held closes too
        ch.port1.receive(timeout=30)
    del w, ch, errors, sab
    _settled(_fds, fds, 0, "open descriptors")
    wait_until(lambda: gc.collect() is not None and not (_ringport_maps() - own), 10,
               f"ringport's memfd mappings made in this test let go (held: {len(held)}), "
               f"still mapped: {_ringport_maps() - own}")
    _settled(_maps, maps, _MAP_SLACK, "mappings")


def test_terminate_kills_a_worker_that_ignores_it():
    w = Worker("import ringport, time\n"
               "ringport.parent_port.post_message('ready')\n"
               "while True:\n"
               "    try:\n"
               "        time.sleep(0.01)\n"
               "    except BaseException:\n"
               "        pass\n", eval=True, backend="process")
    assert w.receive(timeout=30) == "ready"
    t = time.monotonic()
    assert w.terminate(30) == 1
    assert time.monotonic() - t < 15


def _gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] in ("Z", "X")   # a zombie is dead
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("start", ["zygote", "spawn"])
def test_parent_killed_leaves_no_orphan(tmp_path, monkeypatch, start):
    """Neither the worker nor the zygote that forked it outlives a parent killed by SIGKILL
    (the zygote was started from a thread that is not the main thread)."""
    src = os.path.dirname(os.path.dirname(os.path.abspath(ringport.__file__)))
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(f"""
        import sys, threading, time
        sys.path.insert(0, {src!r})
        import ringport
        ws = []
        def start():
            ws.append(ringport.Worker("import os, ringport, time\\n"
                                      "ringport.parent_port.post_message((os.getpid(), "
                                      "os.getppid()))\\n"
                                      "time.sleep(600)\\n", eval=True, backend="process"))
        t = threading.Thread(target=start)   # a thread that ends: the zygote must outlive it
        t.start()
        t.join()
        pid, ppid = ws[0].receive(timeout=60)
        others, deadline = [], time.monotonic() + 30
        while {start == "zygote"} and not others and time.monotonic() < deadline:
            # the zygote's next spare, forked once the zygote is idle a moment
            with open(f"/proc/{{ppid}}/task/{{ppid}}/children") as f:
                others = [int(c) for c in f.read().split() if int(c) != pid]
            time.sleep(0.01)
        print(pid, ppid, *others, flush=True)
        time.sleep(600)
    """))
    if start == "spawn":
        monkeypatch.setenv("RINGPORT_PROCESS_START", "spawn")
    else:
        monkeypatch.delenv("RINGPORT_PROCESS_START", raising=False)
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        child, its_parent, *spares = map(int, p.stdout.readline().split())
        assert (its_parent == p.pid) == (start == "spawn")
        # the zygote forks the next worker ahead of demand: it must go with the parent too
        assert len(spares) == (start == "zygote"), spares
        assert not _gone(its_parent)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(30)
    finally:
        p.kill()
        p.wait(30)
        p.stdout.close()
    wait_until(lambda: _gone(child), 20, "the process worker of a killed parent to end")
    wait_until(lambda: _gone(its_parent), 20, "the zygote of a killed parent to end")
    for spare in spares:
        wait_until(lambda: _gone(spare), 20, "the zygote's spare worker to end")


_WHERE = ("import os, ringport\n"
          "ringport.parent_port.post_message((os.getppid(), os.getcwd(),\n"
          "                                   os.environ.get('RINGPORT_TEST_ZYGOTE')))\n"
          "print('to stdout', flush=True)\n")


@pytest.mark.parametrize("start", ["zygote", "spawn"])
def test_both_start_paths_give_the_parent_cwd_env_and_stdout_of_now(tmp_path, monkeypatch,
                                                                    capfd, start):
    """Forked by the zygote (started before this test) or spawned, a worker runs in the
    parent's current directory and environment, and writes to its current stdout."""
    if start == "spawn":
        monkeypatch.setenv("RINGPORT_PROCESS_START", "spawn")
    else:
        monkeypatch.delenv("RINGPORT_PROCESS_START", raising=False)
    monkeypatch.setenv("RINGPORT_TEST_ZYGOTE", "now")
    monkeypatch.chdir(tmp_path)
    w = Worker(_WHERE, eval=True, backend="process")
    ppid, cwd, env = w.receive(timeout=60)
    assert w.join(60) == 0
    assert (ppid == os.getpid()) == (start == "spawn")
    assert cwd == str(tmp_path)
    assert env == "now"
    assert "to stdout" in capfd.readouterr().out


def _zygote_pid():
    w = Worker("import os, ringport\nringport.parent_port.post_message(os.getppid())\n",
               eval=True, backend="process")
    ppid = w.receive(timeout=60)
    assert w.join(60) == 0
    return ppid


def test_workers_still_start_once_the_zygote_is_killed(monkeypatch):
    monkeypatch.delenv("RINGPORT_PROCESS_START", raising=False)
    zygote = _zygote_pid()
    assert zygote != os.getpid()
    w = Worker("import ringport, time\nringport.parent_port.post_message('up')\n"
               "time.sleep(600)\n", eval=True, backend="process")
    errors = []
    w.on("error", errors.append)
    assert w.receive(timeout=60) == "up"
    os.kill(zygote, signal.SIGKILL)
    # its workers go with it (PR_SET_PDEATHSIG): an error naming the signal, not a hang
    assert w.join(30) == 128 + signal.SIGKILL
    wait_until(lambda: errors, 10, "'error'")
    assert "SIGKILL" in str(errors[0])
    for _ in range(3):   # the next workers start (from a new zygote)
        assert _zygote_pid() not in (zygote, os.getpid())


def test_a_zygote_lost_after_its_child_read_the_start_up_frame(monkeypatch):
    """The zygote forked the worker, whose process read the start-up frame, then went before it
    answered: the spawned process that replaces it gets the frame again (it waited forever for
    it, and the program could not exit)."""
    import ringport._process
    import ringport._zygote
    from ringport._process import read_frame
    monkeypatch.delenv("RINGPORT_PROCESS_START", raising=False)

    def request(link_fd, fds):
        def answer():
            with socket.socket(fileno=os.dup(link_fd)) as s:
                read_frame(s)   # (what the lost zygote's child took)
            raise OSError("the zygote is gone")
        return answer
    monkeypatch.setattr(ringport._zygote, "request", request)
    w = Worker("import os, ringport\nringport.parent_port.post_message(os.getppid())\n",
               eval=True, backend="process")
    try:
        assert w.receive(timeout=30) == os.getpid()   # spawned by this process
        assert w.join(30) == 0
    finally:
        w.terminate()


def test_a_zygote_lost_after_its_child_came_online_ends_that_worker(monkeypatch):
    """The zygote's child took the start-up frame and came online (the worker's code may have
    run), then the zygote went before it answered, taking the child with it: the worker ended,
    killed, and is not started a second time (found with a real zygote killed right after the
    worker's first message: the worker ran again in a spawned process, and join hung)."""
    import ringport._process
    import ringport._zygote
    from ringport._process import ONLINE, read_frame, write_frame
    monkeypatch.delenv("RINGPORT_PROCESS_START", raising=False)
    spawned = []
    start_child = ringport._process._start_child
    monkeypatch.setattr(ringport._process, "_start_child",
                        lambda *a, **k: spawned.append(a) or start_child(*a, **k))

    def request(link_fd, fds):
        def answer():
            with socket.socket(fileno=os.dup(link_fd)) as s:
                read_frame(s)            # what the lost zygote's child took,
                write_frame(s, ONLINE)   # and its first word
            raise OSError("the zygote is gone")
        return answer
    monkeypatch.setattr(ringport._zygote, "request", request)
    w = Worker("import ringport\nringport.parent_port.post_message('ran')\n", eval=True,
               backend="process")
    errors = []
    w.on("error", errors.append)
    try:
        assert w.join(30) == 128 + signal.SIGKILL
        wait_until(lambda: errors, 10, "'error'")
        assert "SIGKILL" in str(errors[0])
        with pytest.raises(ringport.PortClosed):
            w.receive(timeout=5)
        assert spawned == []
    finally:
        w.terminate()


def test_pid_is_known_once_the_zygote_answered_before_the_host_thread_took_it(monkeypatch):
    """Worker.pid comes from the zygote's answer as soon as it is there: a worker can post
    messages before its host thread has run (found as a TypeError from os.kill(w.pid, ...)
    after 1000 messages, on a busy machine)."""
    import threading
    import ringport._zygote
    monkeypatch.delenv("RINGPORT_PROCESS_START", raising=False)
    real_request = ringport._zygote.request
    gate = threading.Event()

    def request(link_fd, fds):
        real = real_request(link_fd, fds)

        def answer():
            gate.wait(30)   # the host thread, held back
            return real()
        answer.peek = real.peek
        return answer
    monkeypatch.setattr(ringport._zygote, "request", request)
    w = Worker("import os, ringport\nringport.parent_port.post_message(os.getpid())\n"
               "ringport.parent_port.receive()\n", eval=True, backend="process")
    try:
        pid = w.receive(timeout=30)
        assert w.pid == pid
        gate.set()
        w.post_message(None)
        assert w.join(30) == 0 and w.pid == pid
    finally:
        gate.set()
        w.terminate()


def test_workers_spawn_when_no_zygote_can_be_started(monkeypatch):
    import ringport._process
    import ringport._zygote
    monkeypatch.delenv("RINGPORT_PROCESS_START", raising=False)
    monkeypatch.setattr(ringport._zygote, "_zygote", None)
    monkeypatch.setattr(ringport._zygote, "_failures", 0)
    real = ringport._process._interpreter_command
    monkeypatch.setattr(ringport._process, "_interpreter_command",
                        lambda code: real("import os; os._exit(3)")
                        if "_zygote" in code else real(code))
    for _ in range(5):   # each one spawned (and after a few failed zygotes, no more tries)
        assert _zygote_pid() == os.getpid()
    assert ringport._zygote._failures == ringport._zygote._MAX_FAILURES


def _count_from_producers(n_threads, per_thread):
    src = textwrap.dedent("""
        import threading, ringport
        n, per = ringport.worker_data
        def produce(k):
            for i in range(per):
                ringport.parent_port.post_message((k, i))
        ts = [threading.Thread(target=produce, args=(k,)) for k in range(n)]
        for t in ts: t.start()
        for t in ts: t.join()
    """)
    w = Worker(src, eval=True, backend="process", worker_data=(n_threads, per_thread))
    nxt = [0] * n_threads
    for _ in range(n_threads * per_thread):
        k, i = w.receive(timeout=60)
        assert i == nxt[k], "each producer's messages arrive once, in order"
        nxt[k] += 1
    assert w.join(60) == 0
    with pytest.raises(ringport.PortClosed):
        w.receive(timeout=30)
    assert nxt == [per_thread] * n_threads


def test_messages_from_several_producer_threads_counted_exactly():
    _count_from_producers(4, 25_000)


@pytest.mark.stress
def test_a_million_messages_counted_exactly():
    _count_from_producers(4, 250_000)


def test_atomics_exact_from_two_process_workers():
    ints = Int32Array(SharedArrayBuffer(64))
    floats = Float64Array(SharedArrayBuffer(64))
    src = textwrap.dedent("""
        import ringport
        from ringport import atomics
        ints, floats, n = ringport.worker_data
        for _ in range(n):
            atomics.add(ints, 0, 1)
            atomics.add(floats, 0, 0.5)
    """)
    n = 20_000
    ws = [Worker(src, eval=True, backend="process", worker_data=(ints, floats, n))
          for _ in range(2)]
    assert [w.join(60) for w in ws] == [0, 0]
    assert ints[0] == 2 * n
    assert floats[0] == n


def test_wait_and_notify_across_processes():
    cell = Int32Array(SharedArrayBuffer(16))
    w = Worker("import ringport\nfrom ringport import atomics\n"
               "cell = ringport.worker_data\n"
               "ringport.parent_port.post_message('waiting')\n"
               "ringport.parent_port.post_message(atomics.wait(cell, 0, 0, 60))\n"
               "ringport.parent_port.post_message(atomics.wait(cell, 0, 0, 0.05))\n",
               eval=True, backend="process", worker_data=cell)
    assert w.receive(timeout=30) == "waiting"
    deadline = time.monotonic() + 30
    woken = 0
    while not woken and time.monotonic() < deadline:   # once the worker sleeps in wait()
        woken = atomics.notify(cell, 0)
        time.sleep(0.005)
    assert woken == 1
    assert w.receive(timeout=30) == "ok"          # woken by this process, not timed out
    assert w.receive(timeout=30) == "timed-out"
    assert w.join(30) == 0


@pytest.mark.stress
def test_start_join_cycles_leave_descriptors_and_memory_flat():
    def cycle():
        w = Worker("import ringport\nringport.parent_port.post_message(1)\n", eval=True,
                   backend="process")
        assert w.receive(timeout=60) == 1
        assert w.join(60) == 0

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    for _ in range(10):
        cycle()
    fds, before = _fds(), rss()
    for _ in range(200):
        cycle()
    _settled(_fds, fds, 0, "open descriptors")
    grown = rss() - before
    assert grown < 200 * 50 * 1024, f"RSS grew {grown / 1024:.0f} KiB over 200 cycles"


def test_workers_spawn_when_the_zygote_cannot_even_be_executed(monkeypatch):
    """Any error starting the zygote (here subprocess's own) leaves the worker to spawn."""
    import types
    import ringport._zygote

    def popen(*args, **kw):
        raise subprocess.SubprocessError("no zygote today")
    monkeypatch.delenv("RINGPORT_PROCESS_START", raising=False)
    monkeypatch.setattr(ringport._zygote, "_zygote", None)
    monkeypatch.setattr(ringport._zygote, "_failures", 0)
    monkeypatch.setattr(ringport._zygote, "subprocess",
                        types.SimpleNamespace(Popen=popen, DEVNULL=subprocess.DEVNULL))
    assert _zygote_pid() == os.getpid()
    assert ringport._zygote._failures == 1


@pytest.mark.skipif("subinterpreter" not in ringport.available_backends(),
                    reason="no subinterpreter backend on this interpreter")
def test_process_worker_started_by_a_subinterpreter_worker():
    """(Its helper threads must not be daemon threads there: isolated interpreters refuse them.)"""
    src = textwrap.dedent("""
        import ringport
        w = ringport.Worker("import ringport\\nringport.parent_port.post_message(42)", eval=True,
                            backend="process")
        ringport.parent_port.post_message(w.receive(timeout=60))
        ringport.parent_port.post_message(w.join(60))
    """)
    w = Worker(src, eval=True, backend="subinterpreter")
    assert w.receive(timeout=60) == 42
    assert w.receive(timeout=60) == 0
    assert w.join(60) == 0


def _minflt():
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def test_big_arrays_from_a_process_worker_reuse_warm_memory_on_both_sides():
    """Bursts of 1 MiB arrays (ten times what the 4 MiB ring holds) arrive whole and in order,
    and neither side faults in fresh memory for each one: the sender copies them into the
    channel's arena (or, when it is full, waits for ring room rather than queueing fresh
    overflow blocks), and the receiver views them there (or decodes into kept warm blocks).  A
    fresh MiB costs 256 page faults and about 1 ms on a VM.  The arena's pages fault in once, as
    far as the sender ever gets ahead (16 MiB: 4096 pages at most), in whichever burst that is."""
    np = pytest.importorskip("numpy")
    rounds = 4
    src = textwrap.dedent(f"""
        import resource, numpy as np, ringport
        port = ringport.parent_port
        a = np.arange(131072, dtype=np.float64)
        for rnd in range({rounds}):
            port.receive()
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for i in range(40):
                a[0] = i
                port.post_message(a)
            port.post_message(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """)
    w = Worker(src, eval=True, backend="process")
    mine = theirs = 0
    try:
        for rnd in range(rounds):   # the first round warms both sides up (and imports numpy)
            w.post_message("go")
            before = _minflt()
            for i in range(40):
                b = w.receive(timeout=60)
                assert b.shape == (131072,) and b[0] == i and b[-1] == 131071.0
                del b
            if rnd:
                mine += _minflt() - before
                theirs += w.receive(timeout=60)
            else:
                w.receive(timeout=60)
        assert w.join(60) == 0
    finally:
        w.terminate()
    # without warm memory: about 256 faults per MiB on each side, 30,000 for the three bursts
    assert mine < 6000, f"receiver: {mine} page faults for 120 MiB"
    assert theirs < 6000, f"sender: {theirs} page faults for 120 MiB"


# a worker that reads nothing until the parent opens its gate (worker_data: an Int32Array)
_AFTER_GATE = textwrap.dedent("""
    import hashlib, ringport
    from ringport import atomics
    gate = ringport.worker_data
    while atomics.load(gate, 0) == 0:
        atomics.wait(gate, 0, 0, 5)
    port = ringport.parent_port
""")


def test_big_posts_to_a_process_worker_that_is_not_reading_do_not_wait_for_it():
    """A post bigger than the ring's free room waits only a moment for a consumer that takes
    nothing, then queues the rest (a message split between the ring and the overflow list),
    and everything arrives intact once the worker reads."""
    gate = Int32Array(SharedArrayBuffer(8))
    src = _AFTER_GATE + textwrap.dedent("""
        port.post_message([hashlib.sha256(port.receive()).hexdigest() for _ in range(8)])
    """)
    import hashlib
    bodies = [bytes([i]) * (3 << 20) + os.urandom(1000 * i + 7) for i in range(8)]
    w = Worker(src, eval=True, backend="process", worker_data=gate)
    try:
        t0 = time.monotonic()
        for b in bodies:
            w.post_message(b)
        posting = time.monotonic() - t0
        atomics.store(gate, 0, 1)
        atomics.notify(gate, 0)
        assert w.receive(timeout=60) == [hashlib.sha256(b).hexdigest() for b in bodies]
        assert w.join(60) == 0
    finally:
        w.terminate()
    # 24 MiB copied once into the ring and the overflow list, plus one short patience (2 ms)
    assert posting < 2.0, f"posting took {posting:.2f} s"


def test_a_spare_worker_gets_the_env_cwd_and_argv_of_its_start_not_of_its_fork(
        tmp_path, monkeypatch, capfd):
    """The zygote forks each worker ahead of demand (started before this test): what the
    parent changed since, and the start's own argv and env, are what the worker sees."""
    monkeypatch.delenv("RINGPORT_PROCESS_START", raising=False)
    zygote = _zygote_pid()                        # (and a spare waits now)
    monkeypatch.setenv("RINGPORT_TEST_SPARE_GONE", "before")
    assert _zygote_pid() == zygote                # a spare forked with that variable set
    monkeypatch.delenv("RINGPORT_TEST_SPARE_GONE")
    monkeypatch.setenv("RINGPORT_TEST_ZYGOTE", "later")
    monkeypatch.chdir(tmp_path)
    src = ("import os, sys, ringport\n"
           "ringport.parent_port.post_message((os.getppid(), os.getcwd(), sys.argv[1:],\n"
           "    os.environ.get('RINGPORT_TEST_ZYGOTE'),\n"
           "    os.environ.get('RINGPORT_TEST_SPARE_GONE')))\n"
           "print('spare to stdout', flush=True)\n")
    w = Worker(src, eval=True, backend="process", argv=["a", "b"])
    assert w.receive(timeout=60) == (zygote, str(tmp_path), ["a", "b"], "later", None)
    assert w.join(60) == 0
    assert "spare to stdout" in capfd.readouterr().out
    w = Worker("import ringport\n"
               "ringport.parent_port.post_message(dict(ringport.env))\n", eval=True,
               backend="process", env={"RINGPORT_TEST_ZYGOTE": "own"})
    assert w.receive(timeout=60) == {"RINGPORT_TEST_ZYGOTE": "own"}
    assert w.join(60) == 0


def test_big_data_from_a_process_worker_arrives_aligned_writable_and_independent():
    """Big data from another process is decoded in place in the message it came in (no copy
    into a block of its own) where it is most of the message: still 16-aligned for every dtype,
    writable, and its own (the sender's later writes, other values of the same message and
    the receiver's writes to one of them change nothing else); the rest are copied as before."""
    np = pytest.importorskip("numpy")
    kinds = ["f8", "c16", "u1", "f4", "g"]
    sizes = [131072, 131071, 200_000, 3 << 20]
    src = textwrap.dedent(f"""
        import numpy as np, ringport
        port = ringport.parent_port
        for dt in {kinds!r}:
            for n in {sizes!r}:
                a = np.arange(n).astype(dt)
                port.post_message(a)
                port.post_message((a, a[:10], b"x" * 70000, bytearray(70000), a.reshape(-1, 1),
                                   a.tolist()[:3]))
                a[:] = 0
    """)
    w = Worker(src, eval=True, backend="process")
    try:
        for dt in kinds:
            for n in sizes:
                want = np.arange(n).astype(dt)
                alone = w.receive(timeout=60)
                t = w.receive(timeout=60)
                for x in (alone, t[0], t[4].ravel()):
                    assert x.flags.aligned and x.flags.writeable, (dt, n)
                    assert np.array_equal(x, want), (dt, n)
                assert np.array_equal(t[1], want[:10])
                assert t[2] == b"x" * 70000 and t[3] == bytearray(70000)
                assert t[5] == want.tolist()[:3]
                alone[:] = 1
                t[0][:] = 2
                assert np.array_equal(t[4].ravel(), want) and np.array_equal(t[1], want[:10])
                del alone, t
        assert w.join(60) == 0
    finally:
        w.terminate()


def _failed_starts_left_nothing(fds, maps):
    """After process Worker() calls that raised: the processes they had asked for are reaped,
    nothing of theirs stays open or mapped here, and a worker still starts and runs."""
    from ringport import _zygote
    z = _zygote._zygote
    if z is not None:   # (RINGPORT_PROCESS_START=spawn: no zygote)
        wait_until(lambda: not z.children and not z.replies, 10, "the zygote's workers reaped")
    _settled(_fds, fds, 0, "descriptors")
    _settled(lambda: len(_ringport_maps() - maps), 0, 0, "ringport mappings")
    w = Worker("import ringport\nringport.parent_port.post_message(2)\n", eval=True,
               backend="process")
    assert w.receive(timeout=60) == 2 and w.join(60) == 0


def test_a_worker_whose_payload_cannot_be_cloned_leaves_no_process_or_descriptor():
    """The process is asked for before the start-up payload is posted (it boots meanwhile): a
    payload that cannot be cloned still raises DataCloneError from the constructor, and the
    process already asked for ends, is reaped, and leaves nothing open here."""
    import threading
    fds = _fds()
    maps = _ringport_maps()
    for _ in range(5):
        with pytest.raises(ringport.DataCloneError):
            Worker("import ringport\n", eval=True, backend="process",
                   worker_data=threading.Lock())
    _failed_starts_left_nothing(fds, maps)


def test_a_worker_whose_host_thread_cannot_start_leaves_no_process_or_descriptor(monkeypatch):
    """The host thread starts after the process was asked for and the payload posted: if it
    cannot start (no more threads), the constructor raises, and that process ends, is reaped,
    and leaves nothing open here."""
    from ringport import _worker

    def refuse(self):
        raise RuntimeError("can't start new thread")
    fds = _fds()
    maps = _ringport_maps()
    monkeypatch.setattr(_worker._HostThread, "start", refuse)
    for _ in range(3):
        with pytest.raises(RuntimeError, match="can't start new thread"):
            Worker("import ringport\nringport.parent_port.post_message(1)\n", eval=True,
                   backend="process")
    monkeypatch.undo()
    _failed_starts_left_nothing(fds, maps)


def test_big_arrays_posted_to_a_process_worker_are_copied_before_post_message_returns():
    """A big numpy array posted to another process goes from the array itself into the shared
    ring (no copy into the message first): what arrives is the array as it was when
    post_message returned, also where the ring was full and the rest waited in the overflow
    list, with what follows it in the message (more data, shared memory) intact."""
    np = pytest.importorskip("numpy")
    gate = Int32Array(SharedArrayBuffer(8))
    src = _AFTER_GATE + textwrap.dedent("""
        out = []
        for _ in range(6):
            a, odd, sab, tail = port.receive()
            u8 = ringport.Uint8Array(sab)
            out.append((hashlib.sha256(a.tobytes()).hexdigest(), a.dtype.str, a.shape,
                        hashlib.sha256(odd.tobytes()).hexdigest(), bytes(u8), tail))
            u8[0] = 255   # shared, not copied: the parent sees it
        port.post_message(out)
    """)
    import hashlib
    a = np.arange(3 << 17, dtype=np.float64).reshape(-1, 4)   # 3 MiB: more than a ring record
    odd = np.arange(70001, dtype=np.uint8)                       # not a multiple of 16
    sabs = [SharedArrayBuffer(4) for _ in range(6)]
    want = []
    w = Worker(src, eval=True, backend="process", worker_data=gate)
    try:
        for i in range(6):
            a[0, 0] = i
            Uint8Array(sabs[i])[1] = i
            want.append((hashlib.sha256(a.tobytes()).hexdigest(), a.dtype.str, a.shape,
                         hashlib.sha256(odd.tobytes()).hexdigest(), bytes([0, i, 0, 0]),
                         {"i": i}))
            w.post_message((a, odd, sabs[i], {"i": i}))
            a[:] = -1   # after the post: must not reach the worker
            odd[:3] = 9
            odd[:3] = np.arange(3)
        atomics.store(gate, 0, 1)
        atomics.notify(gate, 0)
        assert w.receive(timeout=60) == want
        assert w.join(60) == 0
        assert all(Uint8Array(s)[0] == 255 for s in sabs)
    finally:
        w.terminate()


# ---------------------------------------------------------------------------- arenas
# Big arrays to another process over an unbounded channel are copied once, into the arena of the
# channel's direction, and viewed there by the receiver (rp_channel.h); ringport._core._in_arena
# tells such an array from one that took the fragment path.

_ARENA_SENDER = textwrap.dedent("""
    import numpy as np, ringport
    port = ringport.parent_port
    n = port.receive()
    a = np.zeros(131072)
    for i in range(n):
        a[0] = a[-1] = i
        port.post_message(a)
    port.post_message("sent")
""")


def test_arrays_received_in_the_arena_keep_their_values_while_later_ones_arrive():
    """Every other 1 MiB array is kept (60 MiB in all, more than the 16 MiB arena): kept ones
    never change as the arena is reused around them, later ones take the fragment path while
    it is full, and the kept arrays are the receiver's own (writing one changes no other)."""
    np = pytest.importorskip("numpy")
    from ringport._core import _in_arena
    w = Worker(_ARENA_SENDER, eval=True, backend="process")
    try:
        w.post_message(120)
        kept, how = [], []
        for i in range(120):
            b = w.receive(timeout=60)
            assert b[0] == i and b[-1] == i and b.flags.writeable
            how.append(_in_arena(b))
            if i % 2 == 0:
                kept.append(b)
            del b
        assert w.receive(timeout=60) == "sent"
        assert w.join(60) == 0
    finally:
        w.terminate()
    assert how[0] and any(how), how          # the first one at least went through the arena
    assert not all(how), "60 MiB kept cannot all be in a 16 MiB arena"
    for j, b in enumerate(kept):
        assert b[0] == 2 * j and b[-1] == 2 * j and not b[1:-1].any(), j
    kept[0][:] = -1.0
    assert all(b[0] == 2 * j for j, b in enumerate(kept) if j)
    # the worker and its channel are gone; the arrays still read (their mapping stays)
    assert float(np.sum([b[-1] for b in kept[1:]])) == float(sum(range(2, 120, 2)))


def test_an_arena_array_outlives_its_port_and_worker():
    np = pytest.importorskip("numpy")
    from ringport._core import _in_arena
    w = Worker(_ARENA_SENDER, eval=True, backend="process")
    try:
        w.post_message(1)
        b = w.receive(timeout=60)
        assert w.receive(timeout=60) == "sent"
        assert w.join(60) == 0
    finally:
        w.terminate()
    w.port.close()
    del w
    gc.collect()
    assert _in_arena(b) and b[0] == 0 and b.sum() == 0.0
    b[:] = 7.0
    assert b.sum() == 7.0 * 131072
    del b
    gc.collect()


_ARENA_RECEIVER = textwrap.dedent("""
    import ringport
    from ringport._core import _in_arena
    port = ringport.parent_port
    for k in range(2):
        try:
            port.receive()
            port.post_message("decoded")
        except ringport.DecodeError:
            port.post_message("failed")
    for i in range(40):
        m = port.receive()
        port.post_message((_in_arena(m), float(m[0])))
        del m
""")


class _FailsToUnpickle:
    """Pickles here; rebuilding it raises (int('not a number'))."""

    def __reduce__(self):
        return (int, ("not a number",))


def test_a_message_that_fails_to_decode_gives_its_arena_record_back():
    """The record of an array in a message whose decoding fails, before the array (never
    viewed) or after it (viewed, then dropped), or whose encoding failed after the array, is
    free again: afterwards 40 arrays sent one at a time all go through the arena (a record kept
    in use would fill it after 15)."""
    np = pytest.importorskip("numpy")
    import threading
    a = np.zeros(131072)
    w = Worker(_ARENA_RECEIVER, eval=True, backend="process")
    try:
        # (and one that fails to encode here, after its array went into the arena)
        with pytest.raises(ringport.DataCloneError):
            w.post_message([a, threading.Lock()])
        w.post_message([_FailsToUnpickle(), a])
        assert w.receive(timeout=60) == "failed"
        w.post_message([a, _FailsToUnpickle()])
        assert w.receive(timeout=60) == "failed"
        for i in range(40):
            a[0] = i
            w.post_message(a)
            assert w.receive(timeout=60) == (True, float(i)), i
        assert w.join(60) == 0
    finally:
        w.terminate()


def test_a_bounded_channel_to_a_process_does_not_use_the_arena():
    """Bounded mode counts every pending byte in the ring: big arrays keep the fragment path."""
    np = pytest.importorskip("numpy")
    src = textwrap.dedent("""
        import ringport
        from ringport._core import _in_arena
        port = ringport.parent_port.receive()
        for i in range(3):
            m = port.receive()
            port.post_message((_in_arena(m), float(m[0])))
    """)
    ch = ringport.MessageChannel(max_pending_bytes=4 << 20)
    w = Worker(src, eval=True, backend="process")
    try:
        w.post_message(ch.port2, transfer=[ch.port2])
        a = np.zeros(131072)
        for i in range(3):
            a[0] = i
            ch.port1.post_message(a)
            assert ch.port1.receive(timeout=60) == (False, float(i))
        assert w.join(60) == 0
    finally:
        w.terminate()
        ch.port1.close()


def test_big_arrays_from_several_threads_to_one_process_arrive_whole():
    """Producers in several threads share the arena of one direction (its lock): every array
    arrives whole, none mixed with another's bytes."""
    np = pytest.importorskip("numpy")
    import threading
    src = textwrap.dedent("""
        import ringport
        port = ringport.parent_port
        bad = seen = 0
        for i in range(4 * 25):
            m = port.receive()
            seen += 1
            bad += not (m[0] == m[-1] == m[len(m) // 2])
            del m
        port.post_message((seen, bad))
    """)
    w = Worker(src, eval=True, backend="process")

    def produce(t):
        a = np.empty(100_000)
        for i in range(25):
            a[:] = t * 1000 + i
            w.post_message(a)

    try:
        threads = [threading.Thread(target=produce, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert w.receive(timeout=60) == (100, 0)
        assert w.join(60) == 0
    finally:
        w.terminate()


def test_a_shared_buffer_and_a_pickled_value_in_one_message_reach_a_process():
    """A message that needs pickle is decoded from a private copy; its handles (here a
    SharedArrayBuffer's descriptor) still reach the decoder."""
    import fractions
    src = textwrap.dedent("""
        import ringport
        from ringport import Int32Array, atomics
        port = ringport.parent_port
        m = port.receive()
        atomics.store(Int32Array(m["sab"]), 0, 42)
        port.post_message(m["f"] * 2)
    """)
    sab = SharedArrayBuffer(16)
    w = Worker(src, eval=True, backend="process")
    try:
        w.post_message({"sab": sab, "f": fractions.Fraction(1, 3)})
        assert w.receive(timeout=60) == fractions.Fraction(2, 3)
        assert atomics.load(Int32Array(sab), 0) == 42
        assert w.join(60) == 0
    finally:
        w.terminate()


def _shared_pair(capacity=1 << 18):
    """Both sides of a channel shared with a process, in this one (what a process worker and
    its parent each hold), for what needs no second process to show."""
    from ringport._core import _process_channel, _process_port
    a, fd, sock = _process_channel(capacity)
    return a, _process_port(fd, sock, capacity)


def test_messages_waiting_in_a_shared_port_move_with_it_to_another_process():
    """A port whose channel is already shared moves to a third process as its descriptors;
    what waits in its ring unread went with it.  It used to be drained (lost) by the process
    that let go of it, and the arena records those messages named stayed in use."""
    np = pytest.importorskip("numpy")
    from ringport._core import _in_arena
    a0, a1 = _shared_pair()
    x0, x1 = _shared_pair()
    try:
        for i in range(3):
            a0.post_message(np.full(131072, float(i)))
        a0.post_message("marker")
        x0.post_message(a1, transfer=[a1])
        b1 = x1.receive(timeout=10)
        got = [b1.receive(timeout=10) for _ in range(4)]
        assert [float(g[0]) for g in got[:3]] == [0.0, 1.0, 2.0] and got[3] == "marker"
        del got
        gc.collect()
        for i in range(20):   # and the arena goes on being reused
            a0.post_message(np.full(131072, 9.0))
            b = b1.receive(timeout=10)
            assert _in_arena(b) and b[0] == 9.0, i
            del b
    finally:
        for p in (a0, x0, x1):
            p.close()


def test_a_received_block_in_a_garbage_cycle_is_freed_by_its_owner():
    """A memoryview of data received in place (an arena record, a message's own node) inside a
    reference cycle: the collector must not clear the block's owner before the block frees
    (that made the block free memory it does not own)."""
    np = pytest.importorskip("numpy")
    a0, a1 = _shared_pair()
    try:
        for kind in ("arena", "node"):
            if kind == "arena":
                a0.post_message(np.arange(131072, dtype=np.float64))
                got = a1.receive(timeout=10)
                m = memoryview(got.base if got.base is not None else got)
            else:
                a0.post_message(memoryview(bytearray(b"x" * (1 << 19))))
                m = got = a1.receive(timeout=10)
            del got
            cycle = [m]
            cycle.append(cycle)
            del m, cycle
            gc.collect()
    finally:
        a0.close()
        a1.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_dropping_received_arrays_frees_nothing_of_the_parent():
    """A child forked with arrays received into the arena drops them when it exits: the parent
    still views them, so the records must stay in use (freed, the producer would write the
    next arrays over what the parent reads)."""
    np = pytest.importorskip("numpy")
    from ringport._core import _in_arena
    a0, a1 = _shared_pair()
    try:
        a0.post_message(np.full(131072, 1.0))
        kept = a1.receive(timeout=10)
        assert _in_arena(kept)
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)   # (fork with threads)
            pid = os.fork()
        if pid == 0:
            try:
                del kept
                gc.collect()
            finally:
                os._exit(0)
        assert os.waitpid(pid, 0)[1] == 0
        for i in range(20):
            a0.post_message(np.full(131072, 2.0))
            b = a1.receive(timeout=10)
            assert b[0] == 2.0
            del b
        assert kept[0] == 1.0 and kept[-1] == 1.0 and float(kept.sum()) == 131072.0
    finally:
        a0.close()
        a1.close()
