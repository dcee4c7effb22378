#!/usr/bin/env bash
# Runs the engine's criterion micro-benchmarks (`cargo bench -p ringcast`, about two
# minutes) and writes a markdown summary — each benchmark's median time per element
# (message, record, datagram header...) and elements per second, from criterion's
# target/criterion/<id>/new/estimates.json — with the commit, a dirty flag and the
# environment to results/<UTC date>-microbench.md.
#
# Arguments go to criterion: a filter (`receiver`), `--save-baseline before`, or
# `--baseline before` / `--baseline-lenient before` to compare with a saved baseline
# (the summary then gets a column for it and the change). Run it on an idle machine:
# numbers taken while something else builds are noise.
set -euo pipefail
cd "$(dirname "$0")/.."
args=("$@")
compare=""
for ((i = 0; i < ${#args[@]}; i++)); do
    case ${args[i]} in
        --baseline | --baseline-lenient) compare=${args[i + 1]:-} ;;
        --baseline=* | --baseline-lenient=*) compare=${args[i]#*=} ;;
    esac
done
target=${CARGO_TARGET_DIR:-target}
commit="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . || echo ' (dirty)')"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
cargo bench -p ringcast --no-run
out="results/$(date -u +%Y-%m-%dT%H%MZ)-microbench.md"
marker=$(mktemp)
log=$(mktemp)
trap 'rm -f "$marker" "$log"' EXIT
cargo bench -p ringcast -- "${args[@]}" 2>&1 | tee "$log"
{
    echo "# ringcast micro-benchmarks (criterion, \`cargo bench -p ringcast\`)"
    echo
    echo '```'
    echo "date:    $(date -u)"
    echo "commit:  $commit"
    echo "args:    ${args[*]:-(none)}"
    echo "kernel:  $(uname -r)"
    echo "cpu:     $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //') x $(nproc)"
    echo "load:    $load_before before, $(cut -d' ' -f1-3 /proc/loadavg) after"
    echo "rustc:   $(rustc --version)"
    echo '```'
    echo
    echo "Median of criterion's samples divided by the elements per iteration"
    echo "(\`Throughput::Elements\`: a message, record, frame or header; engine/benches/README.md"
    echo "says what each benchmark measures)."
    echo
    python3 - "$target/criterion" "$marker" "$compare" <<'PY'
import json, os, sys

root, marker, compare = sys.argv[1], sys.argv[2], sys.argv[3]
since = os.path.getmtime(marker)
rows = []
for d, _, files in os.walk(root):
    if os.path.basename(d) != "new" or "estimates.json" not in files:
        continue
    est = os.path.join(d, "estimates.json")
    if os.path.getmtime(est) < since:
        continue  # left over from an earlier run, or not selected by this run's filter
    bench = json.load(open(os.path.join(d, "benchmark.json")))
    elems = (bench.get("throughput") or {}).get("Elements") or 1
    median = json.load(open(est))["median"]["point_estimate"] / elems
    base = None
    if compare:
        b = os.path.join(os.path.dirname(d), compare, "estimates.json")
        if os.path.exists(b):
            base = json.load(open(b))["median"]["point_estimate"] / elems
    rows.append((bench["full_id"], elems, median, base))
rows.sort()
if not rows:
    print("(no benchmark results written by this run)")
    sys.exit(0)
if compare:
    print(f"| benchmark | elements/iter | {compare} ns/elem | ns/elem | change | M elem/s |")
    print("|---|--:|--:|--:|--:|--:|")
else:
    print("| benchmark | elements/iter | ns/elem | M elem/s |")
    print("|---|--:|--:|--:|")
for name, elems, ns, base in rows:
    rate = 1e3 / ns if ns > 0 else float("inf")
    if compare:
        b = f"{base:.2f}" if base else "—"
        ch = f"{(ns / base - 1) * 100:+.1f}%" if base else "—"
        print(f"| `{name}` | {elems} | {b} | {ns:.2f} | {ch} | {rate:.1f} |")
    else:
        print(f"| `{name}` | {elems} | {ns:.2f} | {rate:.1f} |")
PY
    echo
    echo "## criterion's output"
    echo
    echo '```'
    grep -E '^[a-z]+/|time:|thrpt:|change:|Performance|No change|regressed|improved' "$log" || true
    echo '```'
} > "$out"
echo "wrote $out"
