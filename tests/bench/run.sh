#!/usr/bin/env bash
# Prints the hub's figures: tools/call through control + one edge to the C fixture at 1, 8,
# 32 and 64 concurrent sessions, the same call straight to the fixture over stdio, and the
# rpc runtime's own figures. Builds the release preset first. Loopback only; stops itself.
#   tests/bench/run.sh [SECONDS_PER_FIGURE]
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-3}
cmake --preset release -S "$here" >/dev/null
cmake --build "$here/build/release" -j"$(nproc)" --target mcphub-control mcphub-edge mcphub-fixture \
  hub_bench rpc_bench >/dev/null
bin="$here/build/release/bin"
work=$(mktemp -d)
trap 'kill -TERM ${edge_pid:-} ${control_pid:-} 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
printf '{"mcpServers":{"fixture":{"command":"%s/mcphub-fixture"}}}\n' "$bin" >"$work/settings.json"
MCPHUB_LOG_LEVEL=info "$bin/mcphub-control" --config "$work/settings.json" --listen 127.0.0.1:0 \
  --admin-listen 127.0.0.1:0 2>"$work/control.log" &
control_pid=$!
for _ in $(seq 100); do grep -q 'service=gateway' "$work/control.log" 2>/dev/null && break; sleep 0.05; done
gateway=$(sed -n 's/.*service=gateway addr=\(127\.0\.0\.1:[0-9]*\).*/\1/p' "$work/control.log" | head -1)
MCPHUB_LOG_LEVEL=info "$bin/mcphub-edge" --listen 127.0.0.1:0 --control "$gateway" 2>"$work/edge.log" &
edge_pid=$!
for _ in $(seq 100); do grep -q 'edge listening' "$work/edge.log" 2>/dev/null && break; sleep 0.05; done
edge=$(sed -n 's/.*edge listening" addr=\(127\.0\.0\.1:[0-9]*\).*/\1/p' "$work/edge.log" | head -1)
for _ in $(seq 100); do curl -sf "http://$edge/readyz" >/dev/null && break; sleep 0.05; done

echo "== tools/call echo, $secs s per figure, $(nproc) cores, client on the same machine"
"$bin/hub_bench" --stdio "$bin/mcphub-fixture" --seconds "$secs"
for n in 1 8 32 64; do
  "$bin/hub_bench" --http "$edge" --path /mcp/fixture --sessions "$n" --seconds "$secs"
done
echo "== rpc runtime (control <-> edge transport)"
"$bin/rpc_bench" --seconds "$secs"
