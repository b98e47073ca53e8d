#!/usr/bin/env bash
# Build and run the C-layer tests: futex waits, portable waits, and under ThreadSanitizer.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
csrc="$here/../../csrc"
out=${1:-$(mktemp -d)}
mkdir -p "$out"
srcs=("$csrc"/rp_*.c "$here/test_channel.c")
flags=(-std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -I"$csrc" -I"$here/../../src/ringport/include" -pthread)
build() { local name=$1; shift; gcc "${flags[@]}" "$@" "${srcs[@]}" -o "$out/$name"; }
build futex -O2
build portable -O2 -DRP_PORTABLE_WAIT
build tsan -O1 -g -fsanitize=thread
build asan -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer
for t in futex portable tsan asan; do
  echo "--- $t"
  TSAN_OPTIONS=halt_on_error=1 "$out/$t"
done
