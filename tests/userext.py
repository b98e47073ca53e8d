"""The user-extension build helper lives in ringport.bench.userext (the benchmark runner needs it
from an installed package too); tests import it from here as before."""
from ringport.bench.userext import PYX, SETUP, build, have_compiler  # noqa: F401
