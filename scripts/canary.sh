#!/usr/bin/env bash
# Builds the no_std canary for thumbv7em-none-eabihf and checks that it links
# without std or an allocator and really contains the core's code.
set -euo pipefail
cd "$(dirname "$0")/../canary"
cargo build --release
bin=target/thumbv7em-none-eabihf/release/simple-fastcgi-canary
if readelf -Ws "$bin" | grep -E '__rust_alloc|__rg_alloc|__rust_no_alloc_shim|__rdl_alloc|malloc|free$'; then
  echo "FAIL: allocator symbols in the no_std canary" >&2
  exit 1
fi
hex=$(readelf -SW "$bin" | awk '{ for (i = 1; i < NF; i++) if ($i == ".text") print $(i + 4) }')
text=$(( 16#${hex:-0} ))
if [ "${text:-0}" -lt 4096 ]; then
  echo "FAIL: canary .text is ${text:-0} bytes: the core's code was optimised away" >&2
  exit 1
fi
echo "canary OK: links for thumbv7em-none-eabihf, no allocator symbols, .text ${text} bytes"
