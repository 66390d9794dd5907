#!/bin/sh
# Compile train.c against the library make_data_and_library.py emitted (in ./build).
#   python examples/c_train/make_data_and_library.py && examples/c_train/build.sh
#   examples/c_train/build/train examples/c_train/build/digits_data.bin examples/c_train/build/digits_weights.bin 10
# BUILD=dir overrides the folder; CC picks the compiler (default cc).
set -eu
HERE="$(cd "$(dirname "$0")" && pwd)"
BUILD="${BUILD:-$HERE/build}"
${CC:-cc} -O2 -std=c11 -Wall -Wextra -o "$BUILD/train" "$HERE/train.c" \
    -I"$BUILD" -L"$BUILD" -ldigits -Wl,-rpath,'$ORIGIN' -lm
echo "built $BUILD/train"
