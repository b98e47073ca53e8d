"""ringport's benchmark suite: ``python -m ringport.bench [--quick] [--json PATH] [--plot PATH]``.

Measures ringport against Node.js ``worker_threads`` (the JavaScript is in ``node/`` next to this
file), ``threading`` + ``queue.Queue``, ``multiprocessing``, the stdlib's interpreter queues,
faster-fifo and the PyPI ``atomics`` package, and ``ringport.WorkerPool`` against the stdlib's
executors, joblib and Node's piscina, in one run; see ``python -m ringport.bench -h``.
Nothing here is imported by ``import ringport``.
"""
