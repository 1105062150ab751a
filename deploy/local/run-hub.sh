#!/usr/bin/env bash
# Quick start: installs what is missing, builds (release preset) and runs the hub on this
# machine: mcphub-control on its embedded default configuration (the fixture MCP server)
# and one mcphub-edge on 127.0.0.1:3000. Ctrl-C (or SIGTERM) stops both.
# Pass --config FILE to run on your own mcp_settings.json instead.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
"$here/deploy/install-deps.sh"
cmake --preset release -S "$here" >/dev/null
cmake --build "$here/build/release" -j"$(nproc)" --target mcphub-control mcphub-edge mcphub-fixture

bin="$here/build/release/bin"
gateway=${MCPHUB_LISTEN:-127.0.0.1:50051}
"$bin/mcphub-control" --listen "$gateway" "$@" &
control_pid=$!
"$bin/mcphub-edge" --listen "${MCPHUB_EDGE_LISTEN:-127.0.0.1:3000}" --control "$gateway" &
edge_pid=$!

stop() {
  kill -TERM "$edge_pid" "$control_pid" 2>/dev/null || true
  wait "$edge_pid" "$control_pid" 2>/dev/null || true
}
trap stop INT TERM EXIT
echo "mcphub: edge on http://127.0.0.1:3000 (try /readyz), control on $gateway; Ctrl-C stops" >&2
# Either daemon exiting ends the hub.
wait -n "$control_pid" "$edge_pid"
