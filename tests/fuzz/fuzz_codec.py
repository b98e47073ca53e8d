"""Mutation fuzzer for ringport's codec: decoding untrusted bytes must raise DecodeError, never
crash, never raise anything else, and never allocate out of proportion to the input.

    python tests/fuzz/fuzz_codec.py COUNT [--seed S] [--corpus DIR] [--save DIR]

Inputs are the corpus files first (tests/fuzz/corpus/ by default), then COUNT mutations of
valid dumps() output of nested values (lists, dicts, tuples, sets, strings, bytes, ints, floats,
numpy arrays, shared references, cycles): bytes flipped or set to boundary values, varints
replaced by boundary lengths, ranges deleted, duplicated or truncated, inputs spliced, tags
inserted.  Each is decoded with loads(data) (allow_pickle=False).

Decoding runs in a child process, so a crash is counted (with the input that caused it) and the
run goes on in a fresh child.  Failures, each printed with the input in hex and saved to --save:
  crash       the child died (a signal, or an exit it did not choose)
  exception   loads raised something other than DecodeError
  memory      an allocation failed under the address-space limit (RLIMIT_AS: the child's size
              at start plus --budget-mb), or the peak RSS grew by more than --budget-mb
  slow        one input took more than --timeout seconds
The exit status is 1 when anything failed, else 0; the last line of output is a JSON summary.

Under AddressSanitizer, RLIMIT_AS cannot see the sanitizer's allocator (it maps inside space
reserved at start); the peak-RSS check still applies, and ASAN_OPTIONS=allocator_may_return_null=1
makes a too-big allocation a MemoryError (counted) rather than an abort.
"""
import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
POOL = 160          # valid messages that mutations start from


# ---------------------------------------------------------------------------- valid values

def gen_value(rng, np, depth=0, pool=None):
    """A random nested value; pool collects containers so later ones can be shared or cyclic."""
    if pool is None:
        pool = []
    r = rng.random()
    if depth < 5 and r < 0.35:
        kind = rng.choice("ltdsz")
        n = rng.choice([0, 1, 2, 3, rng.randrange(0, 20)])
        if kind == "l":
            v = []
            pool.append(v)
            v.extend(gen_value(rng, np, depth + 1, pool) for _ in range(n))
            if rng.random() < 0.1:
                v.append(v)                         # a cycle
            return v
        if kind == "d":
            v = {}
            pool.append(v)
            for _ in range(n):
                v[gen_key(rng)] = gen_value(rng, np, depth + 1, pool)
            if rng.random() < 0.1:
                v["self"] = v
            return v
        if kind == "t":
            t = tuple(gen_value(rng, np, depth + 1, pool) for _ in range(n))
            if rng.random() < 0.1:                  # a cycle through a tuple
                lst = []
                t = (lst, *t)
                lst.append(t)
            return t
        items = {gen_key(rng) for _ in range(n)}
        return set(items) if kind == "s" else frozenset(items)
    if pool and r < 0.42:
        return rng.choice(pool)                     # a shared reference
    if np is not None and r < 0.47:
        dtype = rng.choice(["f8", "i1", "u2", "i4", "c16", "?", "<U3", "S4", "M8[ns]", "m8[s]"])
        shape = rng.choice([(0,), (3,), (2, 3), (1, 2, 2)])
        a = np.zeros(shape, dtype=dtype)
        return np.asfortranarray(a) if rng.random() < 0.3 else a
    return gen_leaf(rng)


def gen_key(rng):
    return rng.choice([rng.randrange(-5, 5), "k" + str(rng.randrange(50)), (1, "t"), None, 1.5,
                       b"x", 2**70])


def gen_leaf(rng):
    return rng.choice([
        None, True, False, 0, 1, -1, 2**63 - 1, -2**63, 2**63, -2**63 - 1, 2**200,
        rng.randrange(-10**6, 10**6), 0.0, -0.0, 1.5, float("inf"), float("nan"), 1e-310,
        complex(1, -2), "", "a", "ascii text " * rng.randrange(4), "héllo", "日本語",
        "\U0001F600", "\ud800", b"", b"\x00\xff" * rng.randrange(5), bytearray(b"abc"),
    ])


def seeds(seed, np):
    out = []
    for j in range(POOL):
        rng = random.Random(seed * 7919 + j)
        out.append(dumps_value(gen_value(rng, np)))
    return out


def dumps_value(v):
    from ringport import dumps
    return dumps(v)


# ---------------------------------------------------------------------------- mutations

BOUNDARY_BYTES = [0x00, 0x01, 0x7F, 0x80, 0xFF, 0xFE]
BOUNDARY_LENGTHS = [0, 1, 2, 127, 128, 255, 256, 2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63,
                    2**64 - 1]
TAGS = b"NTFifcaubBltdszRDPAHSIo h"


def varint(n):
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def pickle_frame(pk):
    """A codec frame holding pickle bytes pk (the tag 'P'), for crafted inputs."""
    return b"\x00P" + varint(len(pk)) + pk + b"\x00"


def mutate(rng, data, pool):
    b = bytearray(data)
    for _ in range(rng.choice([1, 1, 1, 2, 3, 5])):
        op = rng.randrange(12)
        i = rng.randrange(len(b) + 1)
        if op == 0 and b:                            # flip a bit
            i = min(i, len(b) - 1)
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:                          # a boundary byte
            b[min(i, len(b) - 1)] = rng.choice(BOUNDARY_BYTES)
        elif op == 2:                                # a boundary length as a varint
            n = rng.choice(BOUNDARY_LENGTHS + [len(b) - i, len(b) - i + 1, (len(b) - i) // 2])
            j = min(len(b), i + rng.randrange(0, 3))
            b[i:j] = varint(max(n, 0))
        elif op == 3:                                # truncate
            del b[i:]
        elif op == 4:                                # delete a range
            del b[i:i + rng.randrange(1, 9)]
        elif op == 5:                                # duplicate a range
            j = i + rng.randrange(1, 17)
            b[i:i] = b[i:j]
        elif op == 6:                                # splice in part of another input
            o = rng.choice(pool)
            k = rng.randrange(len(o) + 1)
            b[i:] = o[k:] if rng.random() < 0.5 else o[k:k + rng.randrange(1, 33)] + b[i:]
        elif op == 7:                                # insert a tag
            b[i:i] = bytes([rng.choice(TAGS)])
        elif op == 8:                                # insert random bytes
            b[i:i] = rng.randbytes(rng.randrange(1, 9))
        elif op == 9:                                # a container header claiming the rest
            b[i:i] = bytes([rng.choice(b"ltdsz")]) + varint(len(b) - i)
        elif op == 10:                               # a codec flags byte
            if b:
                b[0] = rng.choice([0, 1, 2, 0x80])
        else:                                        # nested headers, each claiming the rest
            k = rng.choice([16, 256, 4096, 8192])
            run = bytearray()
            for j in range(k):
                left = 4 * (k - j - 1)
                run += bytes([rng.choice(b"ltz"), 0x80 | (left & 0x7F),
                              0x80 | ((left >> 7) & 0x7F), left >> 14])
            b[i:] = run
    return bytes(b)


def make_input(index, seed, corpus, pool):
    if index < len(corpus):
        return corpus[index]
    rng = random.Random(seed * 1_000_003 + index)
    return mutate(rng, rng.choice(pool), pool)


def load_corpus(path):
    if path is None or not Path(path).is_dir():
        return []
    return [p.read_bytes() for p in sorted(Path(path).iterdir()) if p.suffix == ".bin"]


# ---------------------------------------------------------------------------- the child

def vm_size():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def under_asan():
    try:
        with open("/proc/self/maps") as f:
            return "libasan" in f.read()
    except OSError:
        return False


def child(args):
    import resource

    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        import numpy as np
    except ImportError:
        np = None
    from ringport import DecodeError, loads

    corpus = load_corpus(args.corpus)
    pool = seeds(args.seed, np) + corpus
    budget = args.budget_mb << 20
    if not under_asan() and hasattr(resource, "RLIMIT_AS"):
        limit = vm_size() + budget
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def on_alarm(signum, frame):
        raise TimeoutError
    signal.signal(signal.SIGALRM, on_alarm)

    out = sys.stdout
    for index in range(args.start, args.stop):
        data = make_input(index, args.seed, corpus, pool)
        out.write(f"I {index}\n")
        out.flush()
        why = None
        signal.setitimer(signal.ITIMER_REAL, args.timeout)
        try:
            t0 = time.perf_counter()
            loads(data)
        except DecodeError:
            pass
        except MemoryError:
            why = "memory"
        except TimeoutError:
            why = "slow"
        except Exception as e:
            why = f"exception {type(e).__name__}: {e}"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        if why is None and resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0 > budget:
            why = "memory (peak RSS)"
            rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        if why is not None:
            out.write("F " + json.dumps({"index": index, "why": why, "hex": data.hex(),
                                         "seconds": round(time.perf_counter() - t0, 3)}) + "\n")
            out.flush()
    out.write("D\n")
    out.flush()


# ---------------------------------------------------------------------------- the driver

def run(count, seed=0, corpus=str(CORPUS), save=None, budget_mb=256, timeout=5.0, chunk=None,
        log=sys.stderr):
    """Fuzz count fresh inputs plus the corpus; returns the summary dict."""
    total = len(load_corpus(corpus)) + count
    failures = []
    start = 0
    restarts = 0
    while start < total:
        stop = total if chunk is None else min(total, start + chunk)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--seed", str(seed),
               "--start", str(start), "--stop", str(stop), "--budget-mb", str(budget_mb),
               "--timeout", str(timeout)]
        if corpus:
            cmd += ["--corpus", corpus]
        last = start - 1
        done = False
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
            for line in proc.stdout:
                if line.startswith("I "):
                    last = int(line[2:])
                elif line.startswith("F "):
                    failures.append(json.loads(line[2:]))
                elif line.startswith("D"):
                    done = True
            rc = proc.wait()
        if done and rc == 0:
            start = stop
            continue
        if last < start:
            raise RuntimeError(f"the fuzzing child failed to start (exit status {rc})")
        data = _regen(last, seed, corpus)
        why = (f"crash: signal {signal.Signals(-rc).name}" if rc < 0 else
               f"crash: exit status {rc}")
        failures.append({"index": last, "why": why, "hex": data.hex()})
        restarts += 1
        start = last + 1
    for f in failures:
        print(f"FAIL input #{f['index']}: {f['why']}\n    {f['hex'][:400]}", file=log)
        if save:
            Path(save).mkdir(parents=True, exist_ok=True)
            (Path(save) / f"fail-{seed}-{f['index']}.bin").write_bytes(bytes.fromhex(f["hex"]))
    kinds = {}
    for f in failures:
        k = f["why"].split(":")[0].split(" ")[0]
        kinds[k] = kinds.get(k, 0) + 1
    return {"inputs": total, "failures": len(failures), "by_kind": kinds, "restarts": restarts,
            "seed": seed}


def _regen(index, seed, corpus):
    """The input a crashed child was decoding, made again here (same seed, same index)."""
    try:
        import numpy as np
    except ImportError:
        np = None
    c = load_corpus(corpus)
    return make_input(index, seed, c, seeds(seed, np) + c)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("count", type=int, nargs="?", default=10000, help="fresh inputs to try")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: from time)")
    ap.add_argument("--corpus", default=str(CORPUS), help="directory of *.bin inputs to replay")
    ap.add_argument("--save", default=None, help="write failing inputs here")
    ap.add_argument("--budget-mb", type=int, default=256, help="memory one input may use")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds one input may take")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--stop", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.seed is None:
        args.seed = int(time.time()) % 100000
    if args.child:
        child(args)
        return 0
    summary = run(args.count, args.seed, args.corpus, args.save, args.budget_mb, args.timeout)
    print(json.dumps(summary))
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
