#!/bin/bash
# bench/cpg.sh - corosync's own CPG benchmark client, cpgbench.c, unchanged, on a 3-agent cohort cluster.
#
#   bench/cpg.sh            the anchor's four throughput cases (64 B and 1 KiB; one sender and all 3),
#                           then failover: `cpgbench watch` on every node, kill -9 of node 3's agent,
#                           time to the CPG confchg with node 3 left (nodedown) at nodes 1 and 2
#
# cpgbench.c is compiled from the corosync anchor (../shared/anchors/corosync/cpgbench.c, or $ANCHOR)
# against Debian's <corosync/cpg.h> and linked with cohort's libcohort_cpg.so instead of -lcpg. The
# agents run on loopback with the default configuration (config/default.toml) and the test suite's
# fencing settings; one cpgbench process per node, as in the anchor (cohort gives a group one local
# owner per node). Every process this script starts is stopped by its PID on exit.
#
# Env: REPS (default 1), OUT (default bench/results/$(date +%F)-cpg), ANCHOR.
# Needs: libcpg-dev and a C compiler (apt-get install -y libcpg-dev gcc). See docs/BENCHMARKS.md.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
REPS="${REPS:-1}"
OUT="${OUT:-$HERE/results/$(date +%F)-cpg}"
ANCHOR="${ANCHOR:-$ROOT/../shared/anchors/corosync}"
if [ ! -f /usr/include/corosync/cpg.h ] || ! command -v cc >/dev/null; then
	echo "bench/cpg.sh needs Debian's CPG headers and a C compiler: apt-get install -y libcpg-dev gcc" >&2
	exit 1
fi
mkdir -p "$OUT"
(cd "$ROOT" && cargo build --release -q -p cohort-actors --bin cohort && cargo build --release -q -p cohort-cpg)
REL="$ROOT/target/release"
RUN="$(mktemp -d /tmp/cohort-cpgbench.XXXXXX)"
B="$RUN/cpgbench"
cc -O2 -Wall -Wextra -o "$B" "$ANCHOR/cpgbench.c" -L"$REL" -lcohort_cpg -Wl,-rpath,"$REL"

PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$RUN"
}
trap cleanup EXIT

# Three agents on free loopback ports.
"$REL/cohort" keygen --out "$RUN/cluster.key" >/dev/null
PORTS=($(python3 -c 'import socket
s=[socket.socket(socket.AF_INET,socket.SOCK_DGRAM) for _ in range(3)]
[x.bind(("127.0.0.1",0)) for x in s]
print(" ".join(str(x.getsockname()[1]) for x in s))'))
{
	echo '[cluster]'
	echo 'name = "cpgbench"'
	for i in 1 2 3; do
		echo "[[cluster.nodes]]"
		echo "id = $i"
		echo "addr = \"127.0.0.1:${PORTS[$((i - 1))]}\""
	done
	echo '[merge]'
	echo 'policy = "fence"'
	echo '[fencing]'
	echo 'mode = "agent"'
	echo 'restart_counts_as_fenced = true'
} >"$RUN/cluster.toml"
for i in 1 2 3; do
	mkdir -p "$RUN/node$i"
	cat >"$RUN/node$i.toml" <<EOF
[node]
id = $i
data_dir = "$RUN/node$i"
key_file = "$RUN/cluster.key"
[api]
socket = "$RUN/node$i/cohort.sock"
[admin]
listen = ""
EOF
	"$REL/cohort" agent --config "$RUN/cluster.toml" --config "$RUN/node$i.toml" 2>"$RUN/agent$i.log" &
	PIDS+=($!)
done
# Wait (with a deadline) for one primary view of all three.
for _ in $(seq 1 200); do
	if "$REL/cohort" status --json --socket "$RUN/node1/cohort.sock" 2>/dev/null |
		python3 -c 'import json,sys; s=json.load(sys.stdin); v=s.get("view") or {}; sys.exit(0 if s.get("primary") and len(v.get("members",[]))==3 else 1)' 2>/dev/null; then
		break
	fi
	sleep 0.1
done

# One case: $1 size, $2 msgs per sender, $3 senders (1 or 3).
run_case() {
	local size=$1 n=$2 senders=$3 group="b$RANDOM" pids=() i
	for i in 1 2 3; do
		if [ "$senders" = 3 ] || [ "$i" = 1 ]; then mode=send; else mode=recv; fi
		# Receivers first; the sender waits for all three members (-w 3).
		if [ "$mode" = send ] && [ "$senders" = 1 ]; then continue; fi
		COHORT_CLIENT_SOCKET="$RUN/node$i/cohort.sock" "$B" "$mode" -g "$group" -n "$n" -s "$size" -p "$senders" -w 3 -q -T 120 \
			>"$RUN/out$i" &
		pids+=($!)
		PIDS+=($!)
	done
	if [ "$senders" = 1 ]; then
		COHORT_CLIENT_SOCKET="$RUN/node1/cohort.sock" "$B" send -g "$group" -n "$n" -s "$size" -p 1 -w 3 -q -T 120 >"$RUN/out1" &
		pids+=($!)
		PIDS+=($!)
	fi
	for p in "${pids[@]}"; do wait "$p" || true; done
	cat "$RUN/out1" "$RUN/out2" "$RUN/out3" | grep '^RESULT'
}

{
	echo "# cpgbench.c (unchanged) on cohort, 3 agents on loopback, $(date -u +%FT%TZ), commit $(cd "$ROOT" && git rev-parse --short HEAD)"
	for r in $(seq 1 "$REPS"); do
		echo "## rep $r: 64 B, 1 sender, 50000 msgs"
		run_case 64 50000 1
		echo "## rep $r: 64 B, all 3 senders, 20000 msgs each"
		run_case 64 20000 3
		echo "## rep $r: 1 KiB, 1 sender, 30000 msgs"
		run_case 1024 30000 1
		echo "## rep $r: 1 KiB, all 3 senders, 12000 msgs each"
		run_case 1024 12000 3
	done

	# Failover, last (it kills node 3's agent).
	for i in 1 2 3; do
		COHORT_CLIENT_SOCKET="$RUN/node$i/cohort.sock" "$B" watch -g failover -T 60 >"$RUN/watch$i" &
		PIDS+=($!)
	done
	wait_for() { # wait_for FILE PATTERN: up to 20 s
		for _ in $(seq 1 400); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
		echo "timed out waiting for '$2' in $1" >&2
		return 1
	}
	for i in 1 2 3; do wait_for "$RUN/watch$i" "^CONFCHG .* n=3 "; done
	t_kill=$(date +%s%3N)
	kill -9 "${PIDS[2]}"
	echo "## failover: kill -9 of node 3's agent at t_ms=$t_kill"
	for i in 1 2; do
		wait_for "$RUN/watch$i" "^CONFCHG .*left=\[3/[0-9]*:nodedown\]"
		line=$(grep "^CONFCHG .*left=\[3/[0-9]*:nodedown\]" "$RUN/watch$i" | head -1)
		t=$(echo "$line" | sed -E 's/.*t_ms=([0-9]+)\..*/\1/')
		echo "FAILOVER node=$i kill_to_confchg_ms=$((t - t_kill)) $line"
	done
} | tee "$OUT/cpgbench-cohort.txt"
