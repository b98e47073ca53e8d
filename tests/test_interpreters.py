"""Proofs for the claims about interpreters: no GIL on free-threaded builds, own-GIL
subinterpreters load the module and talk over channels."""
import os
import subprocess
import sys
import textwrap
import threading

import pytest

import ringport
from conftest import FREE_THREADED, HAS_SUBINTERPRETERS

SRC_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(ringport.__file__)))


@pytest.mark.skipif(not FREE_THREADED, reason="needs a free-threaded build")
def test_import_keeps_the_gil_disabled():
    env = {k: v for k, v in os.environ.items() if k != "PYTHON_GIL"}
    code = ("import sys, ringport; ch = ringport.MessageChannel(); ch.port1.post_message(1); "
            "ch.port2.receive(); print(sys._is_gil_enabled())")
    out = subprocess.run([sys.executable, "-W", "error", "-c", code], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
    assert "GIL" not in out.stderr


def _interp_api():
    try:
        import _interpreters as I
    except ImportError:
        pytest.skip("no _interpreters module")
    return I


@pytest.mark.skipif(not HAS_SUBINTERPRETERS, reason="own-GIL subinterpreters need 3.13+")
def test_module_works_in_an_isolated_subinterpreter():
    I = _interp_api()
    iid = I.create()  # the default configuration: isolated, with its own GIL
    try:
        code = textwrap.dedent(f"""
            import sys
            sys.path.insert(0, {SRC_ROOT!r})
            import ringport
            ch = ringport.MessageChannel()
            ch.port1.post_message({{"x": [1, 2]}})
            assert ch.port2.receive(timeout=5) == {{"x": [1, 2]}}
        """)
        err = I.exec(iid, code)
        assert err is None, err
    finally:
        I.destroy(iid)


@pytest.mark.skipif(not HAS_SUBINTERPRETERS, reason="own-GIL subinterpreters need 3.13+")
def test_channel_between_main_and_subinterpreters():
    I = _interp_api()
    ch = ringport.MessageChannel()
    tok = ringport._core._export({"port": ch.port2, "n": 3}, transfer=[ch.port2])
    iid = I.create()
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {SRC_ROOT!r})
        import ringport
        d = ringport._core._import({tok})
        p = d["port"]
        for _ in range(d["n"]):
            v = p.receive(timeout=10)
            p.post_message(("echo", v))
    """)
    errs = []
    t = threading.Thread(target=lambda: errs.append(I.exec(iid, code)))
    t.start()
    try:
        for i in range(3):
            ch.port1.post_message(i)
            assert ch.port1.receive(timeout=10) == ("echo", i)
    finally:
        t.join(30)
        I.destroy(iid)
    assert errs == [None]


@pytest.mark.skipif(not HAS_SUBINTERPRETERS, reason="own-GIL subinterpreters need 3.13+")
def test_several_interpreters_load_the_module_at_once():
    I = _interp_api()
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {SRC_ROOT!r})
        import ringport
        for _ in range(200):
            ch = ringport.MessageChannel()
            ch.port1.post_message([1, "two", 3.0])
            assert ch.port2.receive() == [1, "two", 3.0]
    """)
    ids = [I.create() for _ in range(4)]
    errs = []
    ts = [threading.Thread(target=lambda i=i: errs.append(I.exec(i, code))) for i in ids]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    for i in ids:
        I.destroy(i)
    assert errs == [None] * 4


# ---------------------------------------------------------------------------- concurrent module init

# Each interpreter imports the module and uses objects of most of its types: a channel round
# trip, a typed array over a shared buffer, and the per-type names table the race corrupted.
_IMPORT_AND_USE = textwrap.dedent(f"""
    import sys
    sys.path.insert(0, {SRC_ROOT!r})
    import ringport
    from ringport import _core
    ch = ringport.MessageChannel()
    ch.port1.post_message({{"x": [1, "two", 3.0]}})
    assert ch.port2.receive(timeout=10) == {{"x": [1, "two", 3.0]}}
    assert _core._TYPE_NAMES == tuple(t.__name__ for t in _core._TA_TYPES)
    assert all(type(t) is type and t.__module__ == "ringport._core" for t in _core._TA_TYPES)
    a = ringport.Int32Array(ringport.SharedArrayBuffer(16))
    a[0] = 5
    try:
        a[1] = 2**40
    except OverflowError as e:
        assert "Int32Array" in str(e), e
    else:
        raise AssertionError("no OverflowError")
    ch.port1.close()
""")


def _import_in_interpreters_at_once(n, rounds):
    I = _interp_api()
    for r in range(rounds):
        ids = [I.create() for _ in range(n)]
        errs = [None] * n
        barrier = threading.Barrier(n)

        def run(k):
            barrier.wait()
            errs[k] = I.exec(ids[k], _IMPORT_AND_USE)

        ts = [threading.Thread(target=run, args=(k,)) for k in range(n)]
        try:
            for t in ts:
                t.start()
            for t in ts:
                t.join(120)
            assert not any(t.is_alive() for t in ts), "an interpreter did not finish"
        finally:
            for i in ids:
                I.destroy(i)
        failed = [f"{e.type.__qualname__}: {e.msg}\n{e.errdisplay}" for e in errs if e is not None]
        assert not failed, f"round {r}: {len(failed)} of {n} failed:\n" + "\n".join(failed)


@pytest.mark.skipif(not HAS_SUBINTERPRETERS, reason="own-GIL subinterpreters need 3.13+")
def test_many_interpreters_initialise_the_module_at_once():
    _import_in_interpreters_at_once(8, 3)


@pytest.mark.stress
@pytest.mark.skipif(not HAS_SUBINTERPRETERS, reason="own-GIL subinterpreters need 3.13+")
def test_many_interpreters_initialise_the_module_at_once_stress():
    _import_in_interpreters_at_once(8, 60)


# Process-wide C variables holding Python objects are what made concurrent initialisation
# race: each interpreter's init stored its own objects there (a module-level comprehension's
# loop variable, cached builtins such as `id`), so interpreters read, refcounted and freed each
# other's objects.  The generated C must have none (per-interpreter state lives in the module
# state struct).  Only an in-place build leaves the generated C beside the module.
# __pyx_m: only compiled without CYTHON_USE_MODULE_STATE.  The cached builtins object, super and
# NotImplemented are static objects of the runtime, the same (and immortal, 3.12+) in every
# interpreter; builtin *functions* (id, len, ...) are per interpreter and must not be cached:
# the core uses none (obj_key() stands in for id()).
_ALLOWED_STATICS = {"__pyx_m", "__pyx_builtin_object", "__pyx_builtin_super",
                    "__pyx_builtin_NotImplemented"}


def test_generated_c_keeps_no_python_objects_in_process_globals():
    import re
    c_file = os.path.join(os.path.dirname(ringport._core.__file__), "_core.c")
    if not os.path.exists(c_file):
        pytest.skip("no generated _core.c beside the module (not an in-place build)")
    pattern = re.compile(
        r"^static\s+(?:PyObject|PyTypeObject)\s*\*+\s*(\w+)\s*(?:\[[^]]*\])?\s*(?:=[^;(]*)?;",
        re.M)
    with open(c_file) as f:
        shared = sorted(set(pattern.findall(f.read())) - _ALLOWED_STATICS)
    assert not shared, f"Python objects in process-wide C variables: {shared}"


# ---------------------------------------------------------------------------- failed init

@pytest.mark.skipif(not HAS_SUBINTERPRETERS, reason="own-GIL subinterpreters need 3.13+")
def test_failed_init_in_a_subinterpreter_raises():
    """An init that fails (here: a dependency without the name the module imports) raises in
    that interpreter and leaves no half-made module behind; other interpreters are unaffected.
    (Cython 3.3's interpreter -> module table may report it as a SystemError caused by the
    ImportError once interpreter ids pass 32, and then refuses a second import in that
    interpreter: a stale table entry; see the branch report.)"""
    I = _interp_api()
    iid = I.create()
    try:
        err = I.exec(iid, textwrap.dedent(f"""
            import sys, types
            sys.path.insert(0, {SRC_ROOT!r})
            sys.modules["ringport._events"] = types.ModuleType("ringport._events")
            import ringport._core
        """))
        assert err is not None, "the import did not fail"
        assert "ImportError: cannot import name Emitter" in err.errdisplay, err.errdisplay
        err = I.exec(iid, 'import sys; assert "ringport._core" not in sys.modules')
        assert err is None, err.errdisplay
    finally:
        I.destroy(iid)
    assert ringport.MessageChannel() is not None
    other = I.create()
    try:
        assert I.exec(other, _IMPORT_AND_USE) is None
    finally:
        I.destroy(other)


@pytest.mark.skipif(not HAS_SUBINTERPRETERS or FREE_THREADED,
                    reason="subinterpreter workers need a GIL build of CPython 3.13+")
def test_worker_whose_interpreter_cannot_load_the_module_reports_it(tmp_path):
    """A subinterpreter worker that fails while ringport initialises there ends with a non-zero
    exit code and the ImportError printed, not silently."""
    # sitecustomize runs in every new interpreter: break ringport's init in subinterpreters only
    (tmp_path / "sitecustomize.py").write_text(textwrap.dedent("""
        import sys, types, _interpreters
        if _interpreters.get_current()[0] != 0:
            sys.modules["ringport._events"] = types.ModuleType("ringport._events")
    """))
    script = textwrap.dedent("""
        import ringport
        w = ringport.Worker("pass", eval=True, backend="subinterpreter")
        print("exit code", w.join(timeout=60), flush=True)
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), SRC_ROOT]))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=120)
    assert "exit code 1" in out.stdout, (out.stdout, out.stderr)
    assert "ImportError" in out.stderr and "Emitter" in out.stderr, out.stderr
