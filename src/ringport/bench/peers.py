"""The peer side of every message benchmark, written once over a (send, recv) pair so that a
thread, a ringport Worker (either backend), a process and a subinterpreter all run the same code.

This module must import in a subinterpreter: no numpy at import time, ringport only on demand.
"""

MSG = {"task": "processData", "payload": [1, 2, 3, 4, 5]}
ARRAY_LEN = 131072          # float64 elements in 1 MiB


def grid_rows(w, k, g):
    """Lattice points (x, y) in [0, g)^2 with x*x + y*y < g*g, over the rows x = w, w+k, ...:
    the CPU-bound pure-Python job of the scaling benchmark (4 * total / g**2 estimates pi)."""
    g2 = g * g
    c = 0
    for x in range(w, g, k):
        x2 = x * x
        for y in range(g):
            if x2 + y * y < g2:
                c += 1
    return c


def grid_exact(g):
    """The exact total of grid_rows over all rows, by a closed form per row."""
    from math import isqrt
    return sum(isqrt(g * g - x * x - 1) + 1 for x in range(g))


def copy_array(numpy=True, kind=None):
    """The 1 MiB float64 array the 'copied' case sends again and again (a[i] = i); kind
    "array" is an array.array('d'), "memoryview" a memoryview of one, None numpy where it loads."""
    if kind == "memoryview":
        return memoryview(copy_array(kind="array"))
    if numpy and kind is None:
        try:
            import numpy as np
            return np.arange(ARRAY_LEN, dtype=np.float64)
        except ImportError:   # e.g. inside a subinterpreter, where numpy does not load
            pass
    import array
    return array.array("d", range(ARRAY_LEN))


def ready():
    """What a process pool's first task returns (worker start-up)."""
    return "ready"


def wn_side(a, rounds, me, lat=None):
    """One side of the wait/notify ping-pong on a[0]: side `me` (0 or 1) waits for its turn
    (a[0] == 2 * i + me), then hands over.  Side 0 appends each round trip (us) to lat."""
    from time import perf_counter_ns as pc
    from ringport import atomics
    load, store, wait, notify = atomics.load, atomics.store, atomics.wait, atomics.notify
    t = pc()
    for i in range(rounds):
        want = 2 * i + me
        while True:
            v = load(a, 0)
            if v == want:
                break
            wait(a, 0, v, 5)
        if lat is not None:
            t2 = pc()
            if i:
                lat.append((t2 - t) / 1e3)
            t = t2
        store(a, 0, want + 1)
        notify(a, 0)


def _copy_of(a):
    """A copy of a numpy array, array.array or memoryview, of the same type."""
    if isinstance(a, memoryview):
        return memoryview(bytearray(a)).cast(a.format)
    return a.copy() if hasattr(a, "copy") else type(a)(a.typecode, a)


def run(op, send, recv, args, send_bytes=None):
    """Do one benchmark's peer work.  args is a dict of plain values (it may have crossed a
    process or interpreter boundary); send_bytes, where the transport has one, sends raw bytes
    (multiprocessing's Connection.send_bytes)."""
    n = args.get("n", 0)
    if op == "echo":                    # ping-pong: reply with the value plus one
        for _ in range(n):
            send(recv() + 1)
    elif op == "msg":                   # one way: the processData dict
        for _ in range(n):
            send(MSG)
    elif op == "msg_many":              # one way: the processData dict, post_many batches
        post_many = send.__self__.post_many   # (ringport ports only)
        chunk = args.get("chunk", 256)
        batch = [MSG] * chunk
        for start in range(0, n, chunk):
            post_many(batch if n - start >= chunk else batch[:n - start])
    elif op == "bytes":                 # one way: byte strings of one size, two patterns
        size = args["size"]
        pay = (bytes(size), b"\x01" * size)
        for i in range(n):
            send(pay[i & 1])
    elif op == "array_copy":            # one way: the same array, changed, sent as a copy
        a = copy_array(args.get("numpy", True), args.get("kind"))
        copy_each = args.get("copy_each", False)   # systems that pass references copy here
        for i in range(n):
            a[0] = i
            send(_copy_of(a) if copy_each else a)
    elif op == "array_bytes":           # one way: the same array's bytes, no pickling
        a = copy_array()
        for i in range(n):
            a[0] = i
            send_bytes(a)
    elif op == "array_shared":          # one way: a fresh SharedArrayBuffer-backed array each
        from ringport import Float64Array
        length = args.get("len", ARRAY_LEN)
        for i in range(n):
            f = Float64Array(length)
            f[0] = i
            f[length - 1] = length - 1
            send(f)
            del f                       # the sender keeps nothing: ownership passes over
    elif op == "array_fresh":           # one way: a fresh numpy array (reference passing)
        import numpy as np
        for i in range(n):
            f = np.zeros(ARRAY_LEN)
            f[0] = i
            f[ARRAY_LEN - 1] = ARRAY_LEN - 1
            send(f)
    elif op == "grid":                  # scaling: tasks until None
        while True:
            t = recv()
            if t is None:
                return
            send(grid_rows(*t))
    elif op == "add":                   # shared counter from a worker: wait for "go"
        from ringport import atomics
        arr = args["arr"]
        add = atomics.add
        send("ready")
        recv()
        for _ in range(n):
            add(arr, 0, 1)
        send("done")
    elif op == "waitnotify":            # wait/notify ping-pong with the main side, on args["arr"]
        send("ready")
        wn_side(args["arr"], n, 1)
        send("done")
    elif op == "ready":                 # start-up probe
        send("ready")
    else:
        raise ValueError(f"unknown peer op {op!r}")


def serve_port(port):
    """Loop of a ringport Worker or thread: each command is (op, args); None ends it."""
    send, recv = port.post_message, port.receive
    while True:
        cmd = recv()
        if cmd is None:
            return
        run(cmd[0], send, recv, cmd[1])


def serve_conn(conn):
    """The same loop over a multiprocessing Connection."""
    while True:
        cmd = conn.recv()
        if cmd is None:
            return
        run(cmd[0], conn.send, conn.recv, cmd[1], conn.send_bytes)


def serve_queues(qin, qout):
    """The same loop over a pair of queues (multiprocessing.Queue, faster-fifo, interpreters)."""
    while True:
        cmd = qin.get()
        if cmd is None:
            return
        run(cmd[0], qout.put, qin.get, cmd[1])
