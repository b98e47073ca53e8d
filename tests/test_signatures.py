"""The extension's docstrings carry signatures (Cython's embedsignature), so help() and IDEs show
them: functions and methods start with their own, classes with their constructor's."""
import re

import pytest

import ringport
from ringport import atomics

CLASSES = [ringport.MessageChannel, ringport.BroadcastChannel, ringport.SharedArrayBuffer,
           ringport.Int8Array, ringport.Float64Array]


@pytest.mark.parametrize("func, sig", [
    (ringport.dumps, "dumps(obj, *, allow_pickle=True, ports=None)"),
    (ringport.loads, "loads(data, *, allow_pickle=False, ports=None)"),
    (ringport.receive_message_on_port, "receive_message_on_port(port, /)"),
    (atomics.wait, "wait(arr, index, value, timeout=None)"),
    (atomics.compare_exchange, "compare_exchange(arr, index, expected, replacement, /)"),
    (ringport.MessagePort.post_message,
     "post_message(self, value, transfer=None, timeout=None, /, **kwargs)"),
    (ringport.MessagePort.receive, "receive(self, timeout=None, /, **kwargs)"),
    (ringport.SharedArrayBuffer.slice, "slice(self, begin=0, end=None)"),
])
def test_functions_and_methods_start_with_their_signature(func, sig):
    assert func.__doc__.startswith(sig + "\n")


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_classes_start_with_their_constructor(cls):
    assert cls.__doc__.startswith(cls.__name__ + "(")


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_no_parameter_follows_a_trailing_star(cls):
    # Cython's default signature format wrote keyword-only parameters before a trailing "*"
    # ("SharedArrayBuffer(byte_length, max_byte_length=None, *)"), which reads as positional
    assert not re.search(r", \*\)", cls.__doc__)
