#!/usr/bin/env bash
# Installs the benchmark peers by package name (nothing of their source is committed).
#   Socket.IO 4 + @socket.io/redis-adapter from npm: bench/peers/socketio/node_modules
set -euo pipefail
cd "$(dirname "$0")"
(cd socketio && npm install --no-audit --no-fund --loglevel=error)
echo "peers installed: socketio"
