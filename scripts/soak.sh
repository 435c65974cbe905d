#!/usr/bin/env bash
# The soak: a million mixed requests (kept connections, a new connection
# per request, 64 KiB bodies, aborts mid-body) against each runtime's
# `mirror` example, every response checked, and the server's RSS at the end
# within 5 % of its RSS after the first quarter of the run (at least
# 10,000 requests), after a burst of 24 clients has taken every pool to its
# bound.
#
#   scripts/soak.sh [REQUESTS_PER_RUNTIME]   (default 1000000)
#
# Release mode; takes a few minutes with the build. `cargo test` runs the
# same test with 40,000 requests (tests/tests/soak.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${1:-1000000}
cargo build -q --release -p simple-fastcgi-examples --bins
SOAK_REQUESTS=$requests cargo test -q --release -p simple-fastcgi-tests --test soak -- \
  --nocapture --test-threads 1 2>&1 | grep -v "aborted the request"
