"""The codec fuzzer (tests/fuzz/fuzz_codec.py) as tests: the corpus plus fresh mutations must
decode to a value or raise DecodeError, never crash, raise anything else or over-allocate.

The quick test runs on every suite run; the stress one (>= 10**5 inputs, under an ASan build
in CI) runs with ``python -m pytest -m stress tests/test_fuzz.py``.  Either prints the seed of
a failing run: ``python tests/fuzz/fuzz_codec.py COUNT --seed SEED`` replays it.
"""
import io
import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "fuzz"))
import fuzz_codec  # noqa: E402

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the fuzzer limits memory with RLIMIT_AS and /proc")


def fuzz(count, seed, tmp_path):
    log = io.StringIO()
    # RINGPORT_FUZZ_BUDGET_MB: .ci/run raises it under ASan, whose allocator (redzones,
    # quarantine) makes the peak RSS of a child that decodes many inputs grow by itself
    budget = int(os.environ.get("RINGPORT_FUZZ_BUDGET_MB", "256"))
    summary = fuzz_codec.run(count, seed=seed, save=str(tmp_path), log=log, budget_mb=budget)
    assert summary["failures"] == 0, (
        f"fuzzing with seed {seed} found {summary['by_kind']}; failing inputs in {tmp_path}\n"
        + log.getvalue()[-6000:])
    return summary


def test_corpus_is_there():
    files = list(fuzz_codec.CORPUS.glob("*.bin"))
    assert len(files) >= 20 and all(f.stat().st_size <= 64 * 1024 for f in files)


def test_corpus_and_fresh_mutations(tmp_path):
    seed = int(time.time() * 1000) % 1_000_000
    summary = fuzz(2000, seed, tmp_path)
    assert summary["inputs"] >= 2000 + 20


@pytest.mark.stress
def test_fuzz_stress(tmp_path):
    count = int(os.environ.get("RINGPORT_FUZZ_COUNT", "100000"))
    seed = int(time.time() * 1000) % 1_000_000
    fuzz(count, seed, tmp_path)
