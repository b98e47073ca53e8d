"""Write the fuzzing corpus (tests/fuzz/corpus/*.bin): inputs worth replaying on every run.

    PYTHONPATH=src python tests/fuzz/make_corpus.py

Valid dumps() output of tricky values (the mutations start from these) and hand-made hostile
inputs, each of which once crashed, escaped as a non-DecodeError, or allocated out of
proportion.  Failing inputs the fuzzer saves (--save) can be copied here as they are.
"""
import array
import sys
from pathlib import Path

from fuzz_codec import pickle_frame, varint  # noqa: E402  (beside this script)

OUT = Path(__file__).resolve().parent / "corpus"




def nested_headers(kinds, k):
    body = bytearray()
    for j in range(k):
        left = 4 * (k - j - 1)
        body += bytes([kinds[j % len(kinds)], 0x80 | (left & 0x7F), 0x80 | ((left >> 7) & 0x7F),
                       left >> 14])
    return b"\x00" + bytes(body)


def array_with_dtype(ds, nbytes=8, shape=2):
    return (b"\x00A" + varint(len(ds)) + ds + b"C\x01" + varint(shape) + b"o" + varint(nbytes)
            + b"\x00" * nbytes)


def valid():
    from ringport import dumps

    lst = [1]
    lst.append(lst)
    d = {}
    d["self"] = d
    inner = []
    t = ((inner,),)
    inner.append(t)
    shared = [1, 2]
    out = {
        "scalars": [None, True, False, 0, -1, 2**63 - 1, -2**63, 2**200, 1.5, float("nan"),
                    complex(1, -2), "", "ascii", "héllo", "日本語", "\U0001F600", "\ud800",
                    b"\x00\xff", bytearray(b"ab")],
        "containers": [[], (), {}, set(), frozenset(), [[[]]], ((1,),), {(1, 2): {"a": [3]}},
                       {1, "x", (1, 2)}, frozenset({frozenset({2})})],
        "cycle-list": lst,
        "cycle-dict": d,
        "cycle-tuple": t,
        "shared": [shared, shared, (shared,)],
        "deep": [[[[[[[[[[[]]]]]]]]]]],
        "buffers": [array.array("d", [1.5, -0.0]), array.array("b", [1, -1]),
                    array.array("w", "hé") if "w" in array.typecodes else array.array("i"),
                    memoryview(b"abc"),
                    memoryview(bytearray(range(24))).cast("i", [2, 3]),
                    memoryview(bytearray(8)).cast("d", []), memoryview(bytearray(range(10)))[::3]],
    }
    try:
        import numpy as np
        out["numpy"] = [np.arange(6, dtype="<i4").reshape(2, 3), np.zeros(3, dtype="<M8[ns]"),
                        np.asfortranarray(np.ones((2, 2))), np.array(["ab", "c"]),
                        np.zeros(0, dtype="f2")]
    except ImportError:
        pass
    return {f"valid-{k}": dumps(v) for k, v in out.items()}


def hostile():
    return {
        "pickle-bytearray8-400MiB": pickle_frame(b"\x80\x05\x96" + (400 << 20).to_bytes(8, "little")
                                                 + b"."),
        "pickle-memo-2G": pickle_frame(b"\x80\x05N" + b"r" + (2**31).to_bytes(4, "little") + b"."),
        "pickle-text-put": pickle_frame(b"(p99999999999\n."),
        "pickle-binbytes8": pickle_frame(b"\x80\x05\x8e" + (2**40).to_bytes(8, "little") + b"."),
        "pickle-frame": pickle_frame(b"\x80\x05\x95" + (2**40).to_bytes(8, "little") + b"N."),
        "pickle-os-system": pickle_frame(b"\x80\x04\x95\x1d\x00\x00\x00\x00\x00\x00\x00\x8c\x05"
                                         b"posix\x94\x8c\x06system\x94\x93\x94\x8c\x04true\x94"
                                         b"\x85\x94R\x94."),
        "nested-lists-32k": nested_headers(b"l", 8192),
        "nested-mixed-4k": nested_headers(b"ltzd", 1024),
        "dtype-syntax-error": array_with_dtype(b"(i4,"),
        "dtype-object": array_with_dtype(b"O"),
        "dtype-structured": array_with_dtype(b"i4,i4"),
        "dtype-bad-unit": array_with_dtype(b"<M8[xs]"),
        "array-shape-huge": array_with_dtype(b"<i4", 8, 2**62),
        "varint-overflow": b"\x00l" + b"\xff" * 10 + b"\x01",
        "count-huge": b"\x00l\xff\xff\xff\xff\xff\xff\xff\xff\x7f",
        "dict-count-half": b"\x00d" + varint(2**62) + b"N",
        "flags-unknown": b"\x02N",
        "ref-out-of-range": b"\x01l\x01R\x05",
        "ref-without-memo": b"\x00R\x00",
        "dup-marker-bad": b"\x01t\x01NDd\x00",
        "handle-port": b"\x00H\x00",
        "handle-shared": b"\x00S\x00\x00",
        "block-handle": b"\x00P\x02\x80\x05\x01h\x00",
        "bigint-huge": b"\x00I" + varint(2**40) + b"\x01",
        "ascii-non-ascii": b"\x00a\x02\xc3\xa9",
        "ucs4-bad-codepoint": b"\x00u\x04\x01\x00\x00" + b"\xff\xff\xff\xff",
        "unhashable-key": b"\x00d\x01l\x00i" + (1).to_bytes(8, "little"),
        "trailing": b"\x00NN",
        "pyarray-bad-typecode": b"\x00YZo\x00",
        "pyarray-partial-item": b"\x00Ydo\x03abc",
        "pyarray-length-huge": b"\x00Ydo" + varint(2**40) + b"\x00",
        "view-bad-format": b"\x00M\x02<d\x00\x01\x01o\x08" + b"\x00" * 8,
        "view-struct-format": b"\x00M\x02ii\x00\x01\x01o\x08" + b"\x00" * 8,
        "view-shape-huge": b"\x00M\x01d\x00\x02" + varint(2**62) + varint(2**62) + b"o\x00",
        "view-shape-mismatch": b"\x00M\x01d\x00\x01\x02o\x08" + b"\x00" * 8,
        "view-ndim-huge": b"\x00M\x01B\x00" + varint(2**40) + b"\x01",
        "view-zero-2d": b"\x00M\x01d\x00\x02\x00\x03o\x00",
        "view-bad-readonly": b"\x00M\x01B\x02\x01\x00o\x00",
        "bytearray-block-handle": b"\x00Xh\x00",
    }


def main():
    OUT.mkdir(exist_ok=True)
    items = {**valid(), **hostile()}
    for name, data in items.items():
        (OUT / f"{name}.bin").write_bytes(data)
    print(f"{len(items)} inputs in {OUT}")


if __name__ == "__main__":
    sys.exit(main())
