#!/usr/bin/env bash
# Builds KenLM's `lmplz` and `query` (stock), and a second `lmplz` with the patch
# bench/kenlm_single_discount.patch (one discount per order, D = n1 / (n1 + 2 n2), in place
# of modified Kneser-Ney's three), for `python -m bench.kn_reference` (docs/benchmarks.md,
# "Kneser-Ney against KenLM"). Nothing here touches the repository or its environment.
#
#   bash bench/kenlm_build.sh KENLM_SOURCE_DIR OUT_DIR
#
# KENLM_SOURCE_DIR: a KenLM checkout (https://github.com/kpu/kenlm; measured with commit
# 4cb443e60b7bf2c0ddf3c745378f76cb59e254e5). Needs cmake, a C++ compiler, zlib and Boost
# (Debian 12: apt-get install cmake build-essential zlib1g-dev libboost-program-options-dev
# libboost-system-dev libboost-thread-dev libboost-test-dev). Writes OUT_DIR/stock/{lmplz,
# query} and OUT_DIR/single/lmplz; about 3 minutes on 2 cores.
set -euo pipefail
SRC="$(cd "$1" && pwd)"
OUT="$(mkdir -p "$2" && cd "$2" && pwd)"
PATCH="$(cd "$(dirname "$0")" && pwd)/kenlm_single_discount.patch"
JOBS="${JOBS:-2}"

build() {  # source dir, build dir, targets...
  local src="$1" dir="$2"
  shift 2
  cmake -S "$src" -B "$dir" -DCMAKE_BUILD_TYPE=Release -DKENLM_MAX_ORDER=10 >"$dir.cmake.log" 2>&1
  cmake --build "$dir" -j "$JOBS" --target "$@" >"$dir.make.log" 2>&1
}

mkdir -p "$OUT/stock" "$OUT/single"
build "$SRC" "$OUT/build-stock" lmplz query
cp "$OUT/build-stock/bin/lmplz" "$OUT/build-stock/bin/query" "$OUT/stock/"

rm -rf "$OUT/src-single"
cp -r "$SRC" "$OUT/src-single"
patch -d "$OUT/src-single" -p1 <"$PATCH"
build "$OUT/src-single" "$OUT/build-single" lmplz
cp "$OUT/build-single/bin/lmplz" "$OUT/single/"
echo "built: $OUT/stock/lmplz $OUT/stock/query $OUT/single/lmplz"
