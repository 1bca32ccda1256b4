#!/usr/bin/env bash
# Installs the benchmark peers by package name (nothing of their source is committed).
#   Socket.IO 4 + @socket.io/redis-adapter from npm: bench/peers/socketio/node_modules
#   Sockudo from crates.io (cargo install):           bench/peers/sockudo/bin/sockudo
# `install.sh socketio` or `install.sh sockudo` installs one of them.
set -euo pipefail
cd "$(dirname "$0")"
want="${1:-all}"
if [[ $want == all || $want == socketio ]]; then
  (cd socketio && npm install --no-audit --no-fund --loglevel=error)
  echo "peer installed: socketio"
fi
if [[ $want == all || $want == sockudo ]]; then
  # Its build needs protoc (metrics-exporter-tcp generates code from a .proto).
  if ! command -v protoc >/dev/null; then
    sudo_=""; [[ $(id -u) -ne 0 ]] && sudo_=sudo
    $sudo_ apt-get install -y -qq protobuf-compiler
  fi
  # Its default features plus the Redis adapter (for the cluster scenario).
  cargo install --locked --root sockudo sockudo --version "${SOCKUDO_VERSION:-5.2.0}" --features redis
  echo "peer installed: sockudo ($(sockudo/bin/sockudo --version 2>/dev/null || echo built))"
fi
