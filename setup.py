"""Extension list and build flags only; metadata lives in pyproject.toml.

Build variants, chosen by environment variable:
  RINGPORT_DEBUG=1                   -O0 -g, C asserts and Cython bounds checks on
  RINGPORT_SANITIZE=address|thread|address,undefined
                                     compile and link with those sanitizers; with undefined,
                                     any UB report aborts (-fno-sanitize-recover=undefined)
Our own C builds with -Wall -Wextra -Werror as two static libraries: csrc/ (plain C11) and the
C of the Cython core that needs Python's headers (src/ringport/_glue.c, compiled against this
interpreter's headers, so a free-threaded build gets Py_GIL_DISABLED from its pyconfig.h).  The
Cython-generated C is compiled with the warnings Cython's output is clean under.
"""
import glob
import os
import sys
import sysconfig

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

DEBUG = os.environ.get("RINGPORT_DEBUG", "") not in ("", "0")
SANITIZE = os.environ.get("RINGPORT_SANITIZE", "")
if SANITIZE not in ("", "address", "thread", "address,undefined"):
    sys.exit("RINGPORT_SANITIZE must be 'address', 'thread' or 'address,undefined', "
             f"not {SANITIZE!r}")

CSRC = ["csrc/rp_wait.c", "csrc/rp_registry.c", "csrc/rp_ring.c", "csrc/rp_waitset.c",
        "csrc/rp_channel.c", "csrc/rp_workerctl.c", "csrc/rp_broadcast.c", "csrc/rp_shm.c",
        "csrc/rp_park.c"]
GLUE = ["src/ringport/_glue.c"]
# csrc/, _glue.h, and the public header ringport/atomics.h (shipped for C and Cython users)
INCLUDE = ["csrc", "src/ringport", "src/ringport/include"]
PY_INCLUDE = list(dict.fromkeys([sysconfig.get_paths()["include"],
                                 sysconfig.get_paths()["platinclude"]]))

if sys.platform == "win32":
    common = ["/O2"] if not DEBUG else ["/Od", "/Zi"]
    ours = common + ["/W4", "/WX", "/std:c11", "/experimental:c11atomics"]
    link = []
else:
    common = ["-O0", "-g", "-UNDEBUG"] if DEBUG else ["-O2", "-DNDEBUG"]
    common.append("-fno-strict-aliasing")
    link = []
    if SANITIZE:
        common += [f"-fsanitize={SANITIZE}", "-fno-omit-frame-pointer", "-g"]
        link += [f"-fsanitize={SANITIZE}"]
        if "undefined" in SANITIZE:
            # a UB report must fail the run, not scroll past in the output
            common.append("-fno-sanitize-recover=undefined")
    ours = common + ["-std=c11", "-fPIC", "-Wall", "-Wextra", "-Werror"]

macros = [
    # per-interpreter module state and heap types: required to load in several interpreters
    ("CYTHON_USE_MODULE_STATE", "1"),
    ("CYTHON_USE_TYPE_SPECS", "1"),
    # no freelists: Cython keeps them in the module state, and an object freed after its
    # module (a closure scope collected while a subinterpreter ends, once the module is freed
    # with its interpreter) would write into freed memory (found by the ASan run of .ci/run)
    ("CYTHON_USE_FREELISTS", "0"),
    # ringport/atomics.h: the core defines the C API, it does not import it
    ("RINGPORT_BUILDING_CORE", "1"),
]

ext = Extension(
    "ringport._core",
    sources=["src/ringport/_core.pyx"],
    include_dirs=INCLUDE,
    define_macros=macros,
    # rebuild the module when the C it links changes (build_clib does not track headers)
    depends=sorted(glob.glob("csrc/*.[ch]")) + ["src/ringport/_glue.h", "src/ringport/_cython_fixups.h", *GLUE],
    extra_compile_args=common,
    extra_link_args=link,
)



class build_ext_with_clib(build_ext):
    """Build the csrc/ static library first, also for `build_ext --inplace` and editable installs."""

    def run(self):
        self.run_command("build_clib")
        super().run()


setup(
    cmdclass={"build_ext": build_ext_with_clib},
    # _glue first: a static library must come before the one it calls into
    libraries=[("ringport_glue", {"sources": GLUE, "include_dirs": INCLUDE + PY_INCLUDE,
                                  "cflags": ours}),
               ("ringport_c", {"sources": CSRC, "include_dirs": INCLUDE, "cflags": ours})],
    ext_modules=cythonize(
        [ext],
        language_level=3,
        compiler_directives={
            "freethreading_compatible": True,
            "subinterpreters_compatible": "own_gil",
            "boundscheck": DEBUG,
            "wraparound": False,
            "cdivision": True,
            # signatures in the docstrings, for help() and IDEs; the "python" format, because
            # the default "c" one writes a class's signature with its keyword-only parameters
            # after a trailing "*" (SharedArrayBuffer(byte_length, max_byte_length=None, *))
            "embedsignature": True,
            "embedsignature.format": "python",
        },
    ),
)
