#!/usr/bin/env bash
# tuning/test.sh — tests for check.sh and apply.sh. Changes nothing on the host:
# apply.sh only ever runs with --dry-run here, or as an unprivileged user (which it
# must refuse). Works as root or not, and inside `unshare -n`.
#
# Usage: bash tuning/test.sh        Last line: "N passed, M failed"; exit 1 on any failure.

if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -u
export LC_ALL=C

HERE=$(cd "$(dirname "$0")" && pwd)
CHECK=$HERE/check.sh
APPLY=$HERE/apply.sh
TMP=$(mktemp -d "${TMPDIR:-/tmp}/ringcast-tuning-test.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

PASS=0
FAIL=0
ok() {
    PASS=$((PASS + 1))
    printf 'ok     %s\n' "$1"
}
bad() {
    FAIL=$((FAIL + 1))
    printf 'FAIL   %s\n' "$1"
    [ -n "${2:-}" ] && printf '       %s\n' "$2"
}
# expect NAME WANTED_RC ACTUAL_RC
expect_rc() {
    if [ "$3" = "$2" ]; then ok "$1 (exit $3)"; else bad "$1" "exit $3, wanted $2"; fi
}
# has NAME FILE PATTERN (grep -E)
has() {
    if grep -Eq -- "$3" "$2"; then ok "$1"; else bad "$1" "no match for /$3/ in $(head -c 300 "$2")"; fi
}

# Everything check.sh reads, to prove it (and apply.sh --dry-run) changed nothing.
snapshot() {
    local f
    for f in net/core/rmem_max net/core/wmem_max net/core/rmem_default net/core/wmem_default \
        net/core/netdev_max_backlog net/core/busy_poll net/core/busy_read net/ipv4/udp_mem \
        kernel/io_uring_disabled net/ipv4/conf/all/rp_filter net/ipv4/conf/lo/rp_filter \
        kernel/numa_balancing; do
        printf '%s=%s\n' "$f" "$(cat "/proc/sys/$f" 2>/dev/null)"
    done
    cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null
    ls -la /etc/sysctl.d 2>/dev/null
    ip -o link 2>/dev/null | sed 's/ qlen.*//'
}

# A stand-in `ringcast` so the doctor step is tested without depending on a build.
FAKE_OK=$TMP/ringcast-ok
FAKE_BAD=$TMP/ringcast-bad
cat >"$FAKE_OK" <<'EOF'
#!/bin/sh
echo "fake doctor args: $*"
echo 'verdict:           this host can run ringcast'
exit 0
EOF
cat >"$FAKE_BAD" <<'EOF'
#!/bin/sh
echo 'verdict:           NOT READY'
exit 1
EOF
chmod 755 "$TMP" "$FAKE_OK" "$FAKE_BAD"

# python3 validator: JSON parses, has the documented shape, contains the named checks,
# and prints the number of WARNs.
validate_json() {
    python3 -c '
import json, sys
d = json.load(sys.stdin)
want = sys.argv[1].split()
assert isinstance(d, dict), "top level is not an object"
checks = d["checks"]
assert isinstance(checks, list) and checks, "checks is not a non-empty array"
for c in checks:
    for k in ("check", "value", "recommended", "status"):
        assert isinstance(c.get(k), str), "check %r lacks string %s" % (c, k)
    assert c["status"] in ("OK", "WARN", "INFO", "SKIP"), c
names = [c["check"] for c in checks]
missing = [n for n in want if n not in names]
assert not missing, "missing checks: %s" % missing
s = d["summary"]
warns = sum(c["status"] == "WARN" for c in checks)
assert s["warn"] == warns, (s, warns)
assert s["ok"] + s["warn"] + s["info"] + s["skip"] == len(checks), s
print(warns)
' "$1"
}

EXPECTED="net.core.rmem_max net.core.wmem_max net.core.rmem_default net.core.netdev_max_backlog
net.ipv4.udp_mem net.core.busy_poll net.core.busy_read kernel.io_uring_disabled cpu.governor
kernel.isolcpus kernel.nohz_full irqbalance mm.transparent_hugepage iface.exists iface.up
iface.mtu iface.multicast iface.rp_filter ringcast.doctor"

before=$(snapshot)

# ---- check.sh, plain
bash "$CHECK" >"$TMP/plain" 2>"$TMP/plain.err"
expect_rc "check.sh plain" 0 $?
has "plain output names rmem_max with a status" "$TMP/plain" '^(OK|WARN|SKIP) +net\.core\.rmem_max'
has "plain output names the interface checks" "$TMP/plain" '^(OK|WARN) +iface\.up'
has "plain output shows recommendations" "$TMP/plain" 'recommended: >= 33554432'
has "plain output ends with a summary" "$TMP/plain" '^summary: [0-9]+ OK, [0-9]+ WARN, [0-9]+ INFO, [0-9]+ SKIP$'
if [ -s "$TMP/plain.err" ]; then bad "check.sh writes nothing to stderr" "$(head -c 300 "$TMP/plain.err")"; else ok "check.sh writes nothing to stderr"; fi

# ---- check.sh --json
bash "$CHECK" --json >"$TMP/json"
expect_rc "check.sh --json" 0 $?
if warns=$(validate_json "$EXPECTED" <"$TMP/json" 2>"$TMP/json.err"); then
    ok "JSON parses and has every expected check ($warns WARN)"
else
    bad "JSON parses and has every expected check" "$(tail -n 3 "$TMP/json.err")"
    warns=unknown
fi
if python3 -c 'import json,sys; json.load(sys.stdin)' <"$TMP/json" 2>/dev/null; then ok "json.load accepts --json output"; else bad "json.load accepts --json output"; fi

# ---- --strict: exit 1 exactly when some check is WARN (doctor left out of this
# comparison so a real binary's self-test cannot make the two runs differ)
warns=$(bash "$CHECK" --json --no-doctor | validate_json "$EXPECTED" 2>/dev/null) || warns=unknown
bash "$CHECK" --strict --no-doctor >/dev/null 2>&1
rc=$?
case "$warns" in
0) expect_rc "check.sh --strict with no WARN" 0 "$rc" ;;
unknown) bad "check.sh --strict" "WARN count unknown (JSON failed)" ;;
*) expect_rc "check.sh --strict with $warns WARN" 1 "$rc" ;;
esac
bash "$CHECK" --strict --json --no-doctor >"$TMP/sjson" 2>/dev/null
rc=$?
if python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if d["strict"] is True else 1)' <"$TMP/sjson" 2>/dev/null; then ok "--strict --json is valid JSON with strict=true"; else bad "--strict --json is valid JSON with strict=true"; fi
[ "$warns" = 0 ] && want=0 || want=1
expect_rc "--strict --json exit code matches WARN count" "$want" "$rc"

# ---- doctor integration, with stand-in binaries
RINGCAST_BIN=$FAKE_OK bash "$CHECK" lo >"$TMP/doc"
expect_rc "check.sh with a ringcast that passes doctor" 0 $?
has "doctor ran with --iface" "$TMP/doc" 'fake doctor args: doctor --iface lo'
has "doctor verdict reported as OK" "$TMP/doc" '^OK +ringcast\.doctor +this host can run ringcast'
RINGCAST_BIN=$FAKE_BAD bash "$CHECK" --json lo >"$TMP/docbad"
expect_rc "check.sh exits 0 even when doctor fails" 0 $?
if python3 -c '
import json, sys
d = json.load(sys.stdin)
c = [c for c in d["checks"] if c["check"] == "ringcast.doctor"][0]
assert c["status"] == "WARN" and d["doctor"]["exit"] == 1 and "NOT READY" in d["doctor"]["output"]
' <"$TMP/docbad" 2>/dev/null; then ok "failed doctor is a WARN with its output in JSON"; else bad "failed doctor is a WARN with its output in JSON"; fi
RINGCAST_BIN=$FAKE_BAD bash "$CHECK" --strict lo >/dev/null
expect_rc "--strict fails when doctor fails" 1 $?
RINGCAST_BIN=$FAKE_BAD bash "$CHECK" --no-doctor --json lo >"$TMP/nodoc"
if python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if d["doctor"] is None else 1)' <"$TMP/nodoc" 2>/dev/null; then ok "--no-doctor skips the doctor"; else bad "--no-doctor skips the doctor"; fi
RINGCAST_BIN=$TMP/does-not-exist bash "$CHECK" >"$TMP/nobin"
expect_rc "check.sh without a ringcast binary" 0 $?
has "missing binary is a SKIP" "$TMP/nobin" '^SKIP +ringcast\.doctor +binary not found'

# ---- odd input: unknown interface (with characters JSON must escape), bad option
RINGCAST_BIN=$FAKE_OK bash "$CHECK" --json 'no"such\if' >"$TMP/odd"
expect_rc "check.sh on a missing interface" 0 $?
if python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d["iface"] == "no\"such\\if", d["iface"]
c = [c for c in d["checks"] if c["check"] == "iface.exists"][0]
assert c["status"] == "WARN", c
' <"$TMP/odd" 2>"$TMP/odd.err"; then ok "missing interface: WARN, name escaped in JSON"; else bad "missing interface: WARN, name escaped in JSON" "$(tail -n 2 "$TMP/odd.err")"; fi
bash "$CHECK" --bogus >/dev/null 2>&1
expect_rc "check.sh rejects an unknown option" 2 $?
sh "$CHECK" --no-doctor >/dev/null 2>&1
expect_rc "check.sh started with sh re-execs bash" 0 $?

# ---- apply.sh --dry-run
bash "$APPLY" --dry-run >"$TMP/dry" 2>&1
expect_rc "apply.sh --dry-run" 0 $?
has "dry run says so" "$TMP/dry" '^dry run: nothing will be changed'
has "dry run covers rmem_max" "$TMP/dry" '^(would|keep) +net\.core\.rmem_max'
has "dry run covers wmem_max" "$TMP/dry" '^(would|keep) +net\.core\.wmem_max'
has "dry run covers rmem_default" "$TMP/dry" '^(would|keep) +net\.core\.rmem_default'
has "dry run covers netdev_max_backlog" "$TMP/dry" '^(would|keep|skip) +net\.core\.netdev_max_backlog'
if grep -q busy_poll "$TMP/dry"; then bad "busy_poll only with --busy-poll"; else ok "busy_poll only with --busy-poll"; fi
conf_before=$([ -e /etc/sysctl.d/90-ringcast.conf ] && echo present || echo absent)
bash "$APPLY" --dry-run --busy-poll --persist >"$TMP/dry2" 2>&1
expect_rc "apply.sh --dry-run --busy-poll --persist" 0 $?
has "dry run with --busy-poll covers busy_read" "$TMP/dry2" '^(would|keep|skip) +net\.core\.busy_read'
has "dry run with --persist shows the file" "$TMP/dry2" '^would write /etc/sysctl\.d/90-ringcast\.conf:'
conf_after=$([ -e /etc/sysctl.d/90-ringcast.conf ] && echo present || echo absent)
if [ "$conf_before" = "$conf_after" ]; then ok "dry run wrote no sysctl.d file"; else bad "dry run wrote no sysctl.d file"; fi
bash "$APPLY" --busy-poll=abc >/dev/null 2>&1
expect_rc "apply.sh rejects --busy-poll=abc" 2 $?
bash "$APPLY" --frobnicate >/dev/null 2>&1
expect_rc "apply.sh rejects an unknown option" 2 $?

# ---- unprivileged: check.sh works, apply.sh refuses (only when we can drop privileges)
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null 2>&1; then
    drop() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
    cp "$CHECK" "$APPLY" "$TMP/" && chmod 755 "$TMP/check.sh" "$TMP/apply.sh"
    drop env RINGCAST_BIN="$FAKE_OK" bash "$TMP/check.sh" --json >"$TMP/nobody.json" 2>/dev/null
    expect_rc "check.sh as an unprivileged user" 0 $?
    if validate_json "$EXPECTED" <"$TMP/nobody.json" >/dev/null 2>&1; then ok "unprivileged JSON is valid"; else bad "unprivileged JSON is valid"; fi
    drop bash "$TMP/apply.sh" >"$TMP/nobody.apply" 2>&1
    expect_rc "apply.sh refuses without root" 1 $?
    has "apply.sh says why" "$TMP/nobody.apply" 'must run as root'
    drop bash "$TMP/apply.sh" --dry-run >/dev/null 2>&1
    expect_rc "apply.sh --dry-run needs no root" 0 $?
elif [ "$(id -u)" != 0 ]; then
    bash "$APPLY" >"$TMP/nonroot.apply" 2>&1
    expect_rc "apply.sh refuses without root" 1 $?
else
    printf 'skip   unprivileged tests (no setpriv)\n'
fi

# ---- nothing changed
after=$(snapshot)
if [ "$before" = "$after" ]; then ok "no sysctl, THP, sysctl.d or link state changed"; else bad "no sysctl, THP, sysctl.d or link state changed" "$(diff <(printf '%s\n' "$before") <(printf '%s\n' "$after") | head -5)"; fi

# ---- shellcheck, when installed
if command -v shellcheck >/dev/null 2>&1; then
    if shellcheck "$CHECK" "$APPLY" "$HERE/test.sh" >"$TMP/sc" 2>&1; then ok "shellcheck clean"; else bad "shellcheck clean" "$(head -n 5 "$TMP/sc")"; fi
else
    printf 'skip   shellcheck (not installed)\n'
fi

printf '%d passed, %d failed\n' "$PASS" "$FAIL"
[ "$FAIL" = 0 ]
