"""Build a small user extension that cimports ringport.atomics: the one place that knows how,
used by the cimported rows of ``python -m ringport.bench`` and by tests/test_cimport.py (tests
import the package, never the other way round).  Builds in a subprocess, so setuptools' and
Cython's output and warnings stay out of the caller."""
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig

import ringport

PYX = r'''
# cython: language_level=3, freethreading_compatible=True, boundscheck=False, wraparound=False
from libc.stdint cimport int32_t, int64_t
from ringport.atomics cimport (add_i32, add_f64, load_i32, store_i32, compare_exchange_i32,
                               add_i64, wait_i32, notify, import_atomics, WAIT_OK,
                               WAIT_NOT_EQUAL, WAIT_TIMED_OUT, WAIT_CANCELED)

import_atomics()

CODES = {"ok": WAIT_OK, "not-equal": WAIT_NOT_EQUAL, "timed-out": WAIT_TIMED_OUT,
         "canceled": WAIT_CANCELED}


def add_loop(int32_t[::1] arr, Py_ssize_t index, long n):
    """arr[index] += 1, n times, atomically and without the GIL."""
    cdef int32_t *p = &arr[index]
    cdef long i
    with nogil:
        for i in range(n):
            add_i32(p, 1)


def add_loop_f64(double[::1] arr, Py_ssize_t index, long n, double v):
    cdef double *p = &arr[index]
    cdef long i
    with nogil:
        for i in range(n):
            add_f64(p, v)


def add_loop_i64(int64_t[::1] arr, Py_ssize_t index, long n, long long v):
    cdef int64_t *p = &arr[index]
    cdef long i
    with nogil:
        for i in range(n):
            add_i64(p, v)


def cas(int32_t[::1] arr, Py_ssize_t index, int32_t expected, int32_t desired):
    return compare_exchange_i32(&arr[index], expected, desired)


def wait32(int32_t[::1] arr, Py_ssize_t index, int32_t expected, int64_t timeout_ns):
    cdef int r
    with nogil:
        r = wait_i32(&arr[index], expected, timeout_ns)
    return r


def notify32(int32_t[::1] arr, Py_ssize_t index, long long count):
    cdef int64_t r
    with nogil:
        r = notify(&arr[index], count)
    return r


def ping_pong(int32_t[::1] arr, long rounds, int me):
    """Two threads alternate: me=0 waits for even values and makes them odd, me=1 the other way
    round; returns when done (no GIL during the loop)."""
    cdef int32_t *p = &arr[0]
    cdef long i
    cdef int32_t v
    with nogil:
        for i in range(rounds):
            while True:
                v = load_i32(p)
                if (v & 1) == me:
                    break
                wait_i32(p, v, 1000000000)
            store_i32(p, v + 1)
            notify(p, -1)
'''

SETUP = r'''
import sys
from setuptools import Extension, setup
from Cython.Build import cythonize
inc, src = sys.argv.pop(1), sys.argv.pop(1)
setup(name="rp_userext", script_args=sys.argv[1:],
      ext_modules=cythonize([Extension("rp_userext", ["rp_userext.pyx"], include_dirs=[inc],
                                       extra_compile_args=["-O2"])],
                            include_path=[src], quiet=True))
'''


def have_compiler():
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc) is not None


def build(tmpdir):
    """Compile the extension in tmpdir and import it."""
    tmpdir = str(tmpdir)
    with open(os.path.join(tmpdir, "rp_userext.pyx"), "w") as f:
        f.write(PYX)
    with open(os.path.join(tmpdir, "setup_userext.py"), "w") as f:
        f.write(SETUP)
    src = os.path.dirname(os.path.dirname(os.path.abspath(ringport.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    p = subprocess.run([sys.executable, "setup_userext.py", ringport.get_include(), src,
                        "build_ext", "--inplace"], cwd=tmpdir, env=env, capture_output=True,
                       text=True, timeout=300)
    if p.returncode != 0:
        raise RuntimeError(f"building the user extension failed:\n{p.stdout}\n{p.stderr}")
    so = [n for n in os.listdir(tmpdir) if n.startswith("rp_userext") and
          n.endswith(sysconfig.get_config_var("EXT_SUFFIX"))]
    spec = importlib.util.spec_from_file_location("rp_userext", os.path.join(tmpdir, so[0]))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def cache_dir():
    """Where build_cached() keeps its builds: outside the source tree, keyed by everything
    that changes the binary (the .pyx, ringport's version and headers, the Python ABI)."""
    import hashlib
    h = hashlib.sha256(PYX.encode())
    h.update(SETUP.encode())
    h.update(ringport.__version__.encode())
    h.update(sys.version.encode())
    h.update(str(sysconfig.get_config_var("EXT_SUFFIX")).encode())
    inc = ringport.get_include()
    for root, _, files in sorted(os.walk(inc)):
        for n in sorted(files):
            with open(os.path.join(root, n), "rb") as f:
                h.update(f.read())
    for n in ("atomics.pxd", "_core.pxd"):
        p = os.path.join(os.path.dirname(os.path.abspath(ringport.__file__)), n)
        if os.path.exists(p):
            with open(p, "rb") as f:
                h.update(f.read())
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ringport", "bench-userext", h.hexdigest()[:16])


def build_cached():
    """build() into cache_dir(), reusing an earlier build of the same sources."""
    d = cache_dir()
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    so = os.path.join(d, "rp_userext" + suffix)
    if os.path.exists(so):
        spec = importlib.util.spec_from_file_location("rp_userext", so)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    os.makedirs(d, exist_ok=True)
    return build(d)
