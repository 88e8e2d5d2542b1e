#!/usr/bin/env bash
# Installs what is missing, builds with tests, and runs the whole suite with ctest.
# Extra arguments go to ctest (for example: ./test.sh -R Smtp).
set -euo pipefail
cd "$(dirname "$0")"

scripts/install-deps.sh --with-tests
cmake -S . -B build/test -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPOSTVAULT_BUILD_TESTS=ON >/dev/null
cmake --build build/test
ctest --test-dir build/test --output-on-failure --timeout 600 -j2 "$@"
