#!/bin/bash
# bench/run.sh - cohort's benchmark and the corosync anchor, side by side, in one session.
#
#   bench/run.sh                 everything: cohort (tput, lat, failover, rss), then corosync (tput, lat, failover)
#   bench/run.sh cohort          only cohort's benchmark (no root needed)
#   bench/run.sh corosync        only the corosync anchor (root; installs Debian packages, uses network namespaces)
#
# Env: REPS (default 2), OUT (default bench/results/$(date +%F)).
# The two never run at the same time: both use the same 2 cores. See docs/BENCHMARKS.md.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
REPS="${REPS:-2}"
OUT="${OUT:-$HERE/results/$(date +%F)}"
ANCHOR="${ANCHOR:-$ROOT/../shared/anchors/corosync}"
mkdir -p "$OUT"
what="${1:-all}"

if [ "$what" = all ] || [ "$what" = cohort ]; then
	(cd "$ROOT" && cargo build --release -p cohort-actors --bin cohort --example bench)
	"$ROOT/target/release/examples/bench" --reps "$REPS" | tee "$OUT/cohort.txt"
fi
if [ "$what" = all ] || [ "$what" = corosync ]; then
	# OUT and RUNDIR are ours, so the anchor's own results/ are never overwritten.
	REPS="$REPS" OUT="$OUT/corosync" RUNDIR="${RUNDIR:-/tmp/cohort-bench-corosync}" "$ANCHOR/bench.sh" tput lat failover
	cp "$OUT/corosync/summary.txt" "$OUT/corosync-summary.txt"
fi
