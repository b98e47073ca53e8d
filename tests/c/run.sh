#!/usr/bin/env bash
# Build and run the C-layer tests (each tests/c/test_*.c against every csrc/ file): futex waits,
# portable waits, and under ThreadSanitizer and AddressSanitizer + UBSan.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
csrc="$here/../../csrc"
out=${1:-$(mktemp -d)}
mkdir -p "$out"
srcs=("$csrc"/rp_*.c)
flags=(-std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -I"$csrc" -I"$here/../../src/ringport/include" -pthread)
variants=(futex portable tsan asan)
declare -A vflags=(
  [futex]="-O2"
  [portable]="-O2 -DRP_PORTABLE_WAIT"
  [tsan]="-O1 -g -fsanitize=thread"
  [asan]="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer"
)
for test in "$here"/test_*.c; do
  name=$(basename "$test" .c)
  for v in "${variants[@]}"; do
    # shellcheck disable=SC2086
    gcc "${flags[@]}" ${vflags[$v]} "${srcs[@]}" "$test" -o "$out/$name-$v"
  done
done
for test in "$here"/test_*.c; do
  name=$(basename "$test" .c)
  for v in "${variants[@]}"; do
    echo "--- $name ($v)"
    TSAN_OPTIONS=halt_on_error=1 UBSAN_OPTIONS=halt_on_error=1 "$out/$name-$v"
  done
done
