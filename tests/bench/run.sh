#!/usr/bin/env bash
# Prints the hub's figures: tools/call through control + one edge to the C fixture at 1, 8,
# 32 and 64 concurrent sessions, the same call straight to the fixture over stdio, the rpc
# runtime's own figures, and per-session servers: initialize -> first result for a fresh
# session whose call starts its own fixture process, without and with the warm pool, and
# the same through supergateway's stateful Streamable HTTP mode (a peer that also spawns
# one child per session). Builds the release preset first. Loopback only; stops itself.
#   tests/bench/run.sh [SECONDS_PER_FIGURE] [SESSIONS_PER_SPAWN_FIGURE]
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-3}
spawns=${2:-50}
e2e="$here/tests/e2e"
cmake --preset release -S "$here" >/dev/null
cmake --build "$here/build/release" -j"$(nproc)" --target mcphub-control mcphub-edge mcphub-fixture \
  hub_bench rpc_bench >/dev/null
bin="$here/build/release/bin"
work=$(mktemp -d)
trap 'kill -TERM ${peer_pid:-} ${edge_pid:-} ${control_pid:-} 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
# fixture: shared; ps: one process per session; psw: the same with 4 started ahead of demand.
printf '{"mcpServers":{"fixture":{"command":"%s/mcphub-fixture"},
  "ps":{"command":"%s/mcphub-fixture","perSession":true},
  "psw":{"command":"%s/mcphub-fixture","perSession":true}},
  "hub":{"warmPerSession":{"psw":4}}}\n' "$bin" "$bin" "$bin" >"$work/settings.json"
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

echo "== per-session servers: initialize -> first tools/call result of a fresh session, $spawns sessions one after another"
"$bin/hub_bench" --http "$edge" --path /mcp/ps --spawn "$spawns" --label "hub perSession"
"$bin/hub_bench" --http "$edge" --path /mcp/psw --spawn "$spawns" --label "hub perSession, warm 4"
if [ -f "$e2e/node_modules/supergateway/dist/index.js" ]; then
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  node --import "$e2e/loopback.mjs" "$e2e/node_modules/supergateway/dist/index.js" \
    --stdio "$bin/mcphub-fixture" --outputTransport streamableHttp --stateful --port "$port" \
    --logLevel none >"$work/peer.log" 2>&1 &
  peer_pid=$!
  for _ in $(seq 200); do curl -s -o /dev/null "http://127.0.0.1:$port/mcp" && break; sleep 0.05; done
  "$bin/hub_bench" --http "127.0.0.1:$port" --path /mcp --spawn "$spawns" --label "supergateway --stateful"
else
  echo "(supergateway not installed: npm ci in tests/e2e)"
fi
