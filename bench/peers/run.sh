#!/usr/bin/env bash
# Runs the same scenarios against switchyard, the ceiling and the peers, in one
# session, so BENCHMARKS.md compares like for like. Install the peers first with
# bench/peers/install.sh. One JSON line per run on stdout, a summary per run on stderr.
#   bench/peers/run.sh [conns]          (default 10000; idle also at 19000)
set -euo pipefail
cd "$(dirname "$0")/../.."
conns="${1:-10000}"
cargo build --release --workspace --quiet
ulimit -n 20000
bench=./target/release/switchyard-bench
targets=(ceiling switchyard socketio sockudo)
for t in "${targets[@]}"; do $bench idle --conns 19000 --channels 100 --target "$t"; done
for t in "${targets[@]}"; do $bench fanout --conns "$conns" --channels 1 --duration 8 --target "$t"; done
for t in switchyard sockudo; do
  $bench fanout --conns "$conns" --channels 1000 --duration 8 --batch 100 --window 2000 --target "$t"
done
$bench fanout --conns "$conns" --channels 1000 --duration 8 --window 2000 --target ceiling
$bench cluster --conns "$conns" --duration 8 --node-threads 1
for t in socketio sockudo; do $bench cluster --conns "$conns" --duration 8 --target "$t"; done
