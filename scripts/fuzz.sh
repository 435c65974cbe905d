#!/usr/bin/env bash
# Runs the cargo-fuzz targets of the core, one after another.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Targets: record, name_value, connection, request (default: all, 60 s each).
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# New corpus entries go to fuzz/corpus/TARGET (only seed-* and regress-*
# files are committed); a crash is saved under fuzz/artifacts/TARGET: copy it
# to fuzz/corpus/TARGET/regress-NAME so the stable replay test keeps it.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(record name_value connection request)

for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  echo "== fuzzing $target for ${seconds}s"
  cargo +nightly fuzz run "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -max_len=16384 -rss_limit_mb=1024 -timeout=5 \
    -print_final_stats=1 2>&1 | grep -a -E "stat::number_of_executed_units|ERROR|panicked|SUMMARY|Done|DONE" || true
  if [ -n "$(ls -A "artifacts/$target" 2>/dev/null)" ]; then
    echo "!! $target found a crash: fuzz/artifacts/$target" >&2
    exit 1
  fi
done
