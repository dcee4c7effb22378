#!/usr/bin/env bash
# Runs the engine's throughput example (1,000,000 x 1 KiB between two processes over
# loopback multicast, every message verified) REPS times per backend, inside a fresh
# network namespace when root, and writes the raw output, the medians and the
# environment to results/<UTC date>-throughput-example.md.
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${REPS:-5}
extra=("$@")
cargo build --release --example throughput --bin ringcast >/dev/null
bin=target/release/examples/throughput
out="results/$(date -u +%Y-%m-%dT%H%MZ)-throughput-example.md"
run() {
    if [[ $(id -u) == 0 ]]; then
        unshare -n sh -c "ip link set lo up; $*"
    else
        sh -c "$*"
    fi
}
{
    echo "# ringcast throughput example: 1,000,000 x 1 KiB, two processes, loopback multicast"
    echo
    echo "Command: \`$bin --backend B ${extra[*]}\`, $reps runs per backend, alternating."
    echo
    echo "## Environment"
    echo
    echo '```'
    echo "date:   $(date -u)"
    echo "kernel: $(uname -r)"
    echo "cpu:    $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //') x $(nproc)"
    echo "load:   $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "rustc:  $(rustc --version)"
    echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (dirty)')"
    run target/release/ringcast doctor | grep -E 'io_uring|backend|rmem|wmem|interface' || true
    echo '```'
    echo
    echo "## Runs"
    echo
    echo '```'
} > "$out"
declare -A sender receiver
for i in $(seq 1 "$reps"); do
    for b in uring mmsg; do
        text=$(run "$bin --backend $b ${extra[*]}" 2>&1 || true)
        echo "[$b run $i]" >> "$out"
        echo "$text" >> "$out"
        s=$(echo "$text" | awk '/sender:/ {print $2}')
        r=$(echo "$text" | awk '/receiver:/ {print $2}')
        ok=$(echo "$text" | grep -c 'verdict: OK' || true)
        [[ $ok == 1 ]] || { s=FAILED; r=FAILED; }
        sender[$b]+="$s "
        receiver[$b]+="$r "
    done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
{
    echo '```'
    echo
    echo "## Medians (msg/s; a run that lost, duplicated or corrupted anything counts as FAILED)"
    echo
    echo "| backend | sender runs | receiver runs | median sender | median receiver |"
    echo "|---|---|---|--:|--:|"
    for b in uring mmsg; do
        echo "| $b | ${sender[$b]} | ${receiver[$b]} | $(echo "${sender[$b]}" | median) | $(echo "${receiver[$b]}" | median) |"
    done
} >> "$out"
echo "wrote $out"
tail -n 6 "$out"
