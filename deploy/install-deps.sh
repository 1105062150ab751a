#!/usr/bin/env bash
# Installs what building mcphub needs on Debian 12 (and, with --test, what its test suite
# needs: the npm packages of tests/e2e and tests/deploy). Installs only what is missing;
# safe to re-run.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

build_pkgs=(build-essential cmake pkg-config libgrpc-dev protobuf-c-compiler libprotobuf-c-dev
            libmicrohttpd-dev libjansson-dev libuv1-dev libcurl4-openssl-dev libssl-dev grpc-proto)
test_pkgs=(libcmocka-dev python3 python3-grpcio python3-protobuf protobuf-compiler nodejs npm
           clang libclang-rt-14-dev curl kubernetes-client)

pkgs=("${build_pkgs[@]}")
[ $want_test = 1 ] && pkgs+=("${test_pkgs[@]}")

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node may come from elsewhere than Debian's package (it does on some images): keep it.
if command -v node >/dev/null && command -v npm >/dev/null; then
  filtered=()
  for p in "${missing[@]}"; do [ "$p" = nodejs ] || [ "$p" = npm ] || filtered+=("$p"); done
  missing=("${filtered[@]+"${filtered[@]}"}")
fi
# So may kubectl (tests/deploy renders the manifests with it; any version from Debian's
# kubernetes-client 1.20 up will do): keep it, Debian's would clash over /usr/bin/kubectl.
if command -v kubectl >/dev/null; then
  filtered=()
  for p in "${missing[@]}"; do [ "$p" = kubernetes-client ] || filtered+=("$p"); done
  missing=("${filtered[@]+"${filtered[@]}"}")
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ $want_test = 1 ]; then
  # Official MCP SDK clients and reference servers for the end-to-end tests.
  (cd "$here/tests/e2e" && npm ci --no-audit --no-fund --loglevel=error)
  # Kubernetes API schemas and YAML parser for the checks of deploy/ (tests/deploy).
  (cd "$here/tests/deploy" && npm ci --no-audit --no-fund --loglevel=error)
fi
