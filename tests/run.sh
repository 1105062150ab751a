#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing, builds with warnings as errors and
# runs ctest in the dev preset, then the asan preset (AddressSanitizer +
# UndefinedBehaviorSanitizer, leak checks on), then the tsan preset (ThreadSanitizer, with
# suppressions only for gRPC and abseil, which Debian builds without it), then the release
# preset (optimized: what the quick start runs, and where -O2 warnings show).
# --quick runs the dev preset only.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
presets=(dev asan tsan release)
[ "${1:-}" = "--quick" ] && presets=(dev)

"$here/deploy/install-deps.sh" --test

jobs=$(nproc)
for preset in "${presets[@]}"; do
  echo "=== preset $preset: build"
  cmake --preset "$preset" -S "$here" >/dev/null
  cmake --build "$here/build/$preset" -j"$jobs"
  echo "=== preset $preset: test"
  # Tests start daemons and time their readiness: two at a time on a 2-core machine.
  (cd "$here" && ctest --preset "$preset" -j2)
done
