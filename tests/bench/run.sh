#!/usr/bin/env bash
# Prints the hub's figures: tools/call through control + one edge to the C fixture at 1, 8,
# 32 and 64 concurrent sessions (with control's and the edge's thread switches and CPU time
# per call), the same call straight to the fixture over stdio, the rpc runtime's own figures,
# and per-session servers: initialize -> first result for a fresh session whose call starts
# its own fixture process, without and with the warm pool, and
# the same through supergateway's stateful Streamable HTTP mode (a peer that also spawns
# one child per session). Then the hub at scale (hub_scale): initialize+DELETE cycles per
# second; memory per idle session with SCALE_SESSIONS sessions held open; one GET stream per
# session on the one edge, its memory, and the time for a list_changed (settings file edit,
# then SIGHUP) to reach every stream; at 200 streams again; and cleanup with two more edges:
# DELETE through one edge -> the session's GET stream on another ends, and DELETE -> a
# perSession server's process exits. Builds the release preset first (or, with BUILD_DIR
# set, builds in that already configured tree). Loopback only; stops itself.
#   tests/bench/run.sh [SECONDS_PER_FIGURE] [SESSIONS_PER_SPAWN_FIGURE] [SCALE_SESSIONS]
# SCALE_SESSIONS defaults to 10000; 0 skips the scale part (the slow one) but not cleanup.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-3}
spawns=${2:-50}
scale=${3:-10000}
e2e="$here/tests/e2e"
if [ -n "${BUILD_DIR:-}" ]; then
  build=$BUILD_DIR
else
  cmake --preset release -S "$here" >/dev/null
  build="$here/build/release"
fi
cmake --build "$build" -j"$(nproc)" --target mcphub-control mcphub-edge mcphub-fixture \
  hub_bench rpc_bench hub_scale >/dev/null
bin="$build/bin"
work=$(mktemp -d)
trap 'kill -TERM ${peer_pid:-} ${edge3_pid:-} ${edge2_pid:-} ${edge_pid:-} ${control_pid:-} 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
# A descriptor per stream, in the client and in the edge: everything started from here
# inherits the highest limit allowed.
hard=$(ulimit -Hn)
[ "$hard" = unlimited ] && hard=1048576
ulimit -n "$hard"
# fixture: shared; ps: one process per session; psw: the same with 4 started ahead of demand.
# maxSessions: the scale part's sessions plus what the figures before it leave open.
# settings-alt.json differs by one tool description: switching between the two changes the
# tools list of every session on /mcp/fixture, which then hears tools/list_changed.
settings() {
  printf '{"mcpServers":{"fixture":{"command":"%s/mcphub-fixture"%s},
  "ps":{"command":"%s/mcphub-fixture","perSession":true},
  "psw":{"command":"%s/mcphub-fixture","perSession":true}},
  "hub":{"warmPerSession":{"psw":4},"maxSessions":%d}}\n' "$bin" "$1" "$bin" "$bin" $((scale + 10000))
}
settings "" >"$work/settings.json"
settings ',"tools":{"echo":{"description":"fan-out"}}' >"$work/settings-alt.json"
MCPHUB_LOG_LEVEL=info "$bin/mcphub-control" --config "$work/settings.json" --listen 127.0.0.1:0 \
  --admin-listen 127.0.0.1:0 2>"$work/control.log" &
control_pid=$!
for _ in $(seq 100); do grep -q 'service=gateway' "$work/control.log" 2>/dev/null && break; sleep 0.05; done
gateway=$(sed -n 's/.*service=gateway addr=\(127\.0\.0\.1:[0-9]*\).*/\1/p' "$work/control.log" | head -1)
# start_edge NAME: an edge whose address lands in $edge_addr, its pid in $edge_started.
start_edge() {
  MCPHUB_LOG_LEVEL=info "$bin/mcphub-edge" --listen 127.0.0.1:0 --control "$gateway" \
    --max-streams $((scale > 0 ? scale + 1000 : 1024)) 2>"$work/$1.log" &
  edge_started=$!
  for _ in $(seq 100); do grep -q 'edge listening' "$work/$1.log" 2>/dev/null && break; sleep 0.05; done
  edge_addr=$(sed -n 's/.*edge listening" addr=\(127\.0\.0\.1:[0-9]*\).*/\1/p' "$work/$1.log" | head -1)
  for _ in $(seq 100); do curl -sf "http://$edge_addr/readyz" >/dev/null && break; sleep 0.05; done
}
start_edge edge
edge=$edge_addr
edge_pid=$edge_started

echo "== tools/call echo, $secs s per figure, $(nproc) cores, client on the same machine"
# p50 FILE: the p50 (us) of a hub_bench figure line saved in FILE.
p50() { sed -n 's/.* p50 *\([0-9.]*\) us.*/\1/p' "$1" | head -1; }
"$bin/hub_bench" --stdio "$bin/mcphub-fixture" --seconds "$secs" | tee "$work/direct.txt"
# cost PID: its thread switches (voluntary and not) and CPU time in clock ticks so far.
cost() {
  echo "$(cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {s += $2} END {print s + 0}')" \
    "$(awk '{print $14 + $15}' /proc/"$1"/stat)"
}
tck=$(getconf CLK_TCK)
for n in 1 8 32 64; do
  c0=$(cost "$control_pid") e0=$(cost "$edge_pid")
  "$bin/hub_bench" --http "$edge" --path /mcp/fixture --sessions "$n" --seconds "$secs" |
    tee "$work/hub$n.txt"
  c1=$(cost "$control_pid") e1=$(cost "$edge_pid")
  awk -v c0="$c0" -v c1="$c1" -v e0="$e0" -v e1="$e1" -v tck="$tck" \
    -v calls="$(sed -n 's/.* calls *\([0-9]*\) .*/\1/p' "$work/hub$n.txt")" 'BEGIN {
    split(c0, a); split(c1, b); split(e0, x); split(e1, y)
    if (calls > 0)
      printf "  per call: control %.2f thread switches, %.0f us CPU; edge %.2f, %.0f us\n",
        (b[1] - a[1]) / calls, (b[2] - a[2]) * 1e6 / tck / calls,
        (y[1] - x[1]) / calls, (y[2] - x[2]) * 1e6 / tck / calls }'
done
awk -v d="$(p50 "$work/direct.txt")" -v h="$(p50 "$work/hub1.txt")" 'BEGIN {
  if (d > 0 && h > 0)
    printf "hub cost  sequential tools/call p50: +%.1f us over the direct call, %.1fx\n", h - d, h / d }'
echo "== rpc runtime (control <-> edge transport)"
"$bin/rpc_bench" --seconds "$secs"

echo "== per-session servers: initialize -> first tools/call result of a fresh session, $spawns sessions one after another"
"$bin/hub_bench" --http "$edge" --path /mcp/ps --spawn "$spawns" --label "hub perSession" |
  tee "$work/spawn.txt"
"$bin/hub_bench" --http "$edge" --path /mcp/psw --spawn "$spawns" --label "hub perSession, warm 4" |
  tee "$work/spawn-warm.txt"
if [ -f "$e2e/node_modules/supergateway/dist/index.js" ]; then
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  node --import "$e2e/loopback.mjs" "$e2e/node_modules/supergateway/dist/index.js" \
    --stdio "$bin/mcphub-fixture" --outputTransport streamableHttp --stateful --port "$port" \
    --logLevel none >"$work/peer.log" 2>&1 &
  peer_pid=$!
  for _ in $(seq 200); do curl -s -o /dev/null "http://127.0.0.1:$port/mcp" && break; sleep 0.05; done
  "$bin/hub_bench" --http "127.0.0.1:$port" --path /mcp --spawn "$spawns" \
    --label "supergateway --stateful" | tee "$work/spawn-peer.txt"
  p50ms() { sed -n 's/.* p50 *\([0-9.]*\) ms.*/\1/p' "$1" | head -1; }
  awk -v h="$(p50ms "$work/spawn.txt")" -v w="$(p50ms "$work/spawn-warm.txt")" \
    -v g="$(p50ms "$work/spawn-peer.txt")" 'BEGIN {
    if (h > 0 && w > 0 && g > 0)
      printf "peer ratio  supergateway p50 / hub p50: %.2fx cold, %.2fx with the warm pool\n", g / h, g / w }'
else
  echo "(supergateway not installed: npm ci in tests/e2e)"
fi

if [ "$scale" -gt 0 ]; then
  echo "== scale: $scale sessions and GET streams on one edge (VmRSS from /proc; RLIMIT_NOFILE $(ulimit -n))"
  "$bin/hub_scale" --http "$edge" --path /mcp/fixture --control-pid "$control_pid" \
    --edge-pid "$edge_pid" --cycles "$secs" --idle "$scale" --streams \
    --settings "$work/settings.json" --fanout-alt "$work/settings-alt.json"
  echo "== fan-out at 200 streams"
  "$bin/hub_scale" --http "$edge" --path /mcp/fixture --control-pid "$control_pid" --no-memory \
    --idle 200 --streams --settings "$work/settings.json" --fanout-alt "$work/settings-alt.json"
fi

echo "== cleanup: $spawns sessions one after another; 3 edges"
start_edge edge2
edge2=$edge_addr
edge2_pid=$edge_started
start_edge edge3
edge3=$edge_addr
edge3_pid=$edge_started
"$bin/hub_scale" --http "$edge" --http "$edge2" --http "$edge3" --path /mcp/fixture \
  --end-streams "$spawns"
"$bin/hub_scale" --http "$edge" --path /mcp/ps --control-pid "$control_pid" --end-process "$spawns"
