#!/usr/bin/env bash
# tuning/check.sh — read-only report on how well this Linux host is tuned for ringcast.
#
# Usage: check.sh [--strict] [--json] [--no-doctor] [IFACE]
#
#   IFACE        interface name or one of its IPv4 addresses (default: lo)
#   --strict     exit 1 when any check is WARN (default: always exit 0)
#   --json       one JSON object: {"iface":…, "checks":[{check,value,recommended,status,note}], …}
#   --no-doctor  do not run `ringcast doctor`
#
# Status: OK (meets the recommendation), WARN (below it), INFO (a choice or a counter,
# never a failure), SKIP (cannot be read here, e.g. a global sysctl hidden in a
# non-initial network namespace). Only WARN counts for --strict.
#
# It reads /proc, /sys and the output of `ip` and `ethtool`; it never changes a setting
# and never puts a packet on a network. The one exception you should know about: when a
# ringcast binary is found, `ringcast doctor --iface IFACE` runs, and on a loopback IFACE
# its self-test sends one multicast datagram round `lo` with TTL 0 (it cannot leave the
# host). --no-doctor skips it. The binary is RINGCAST_BIN if set, else `ringcast` on
# PATH, else ./target/release/ringcast or ./target/debug/ringcast (from the current
# directory, then from the repository this script lives in).
#
# Exit: 0, or 1 with --strict and at least one WARN, or 2 on a usage error.

if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -u
export LC_ALL=C

readonly MIB=1048576
readonly REC_RMEM_MAX=$((32 * MIB))
readonly REC_WMEM_MAX=$((32 * MIB))
readonly REC_RMEM_DEFAULT=$((4 * MIB))
readonly REC_BACKLOG=16384
readonly REC_UDP_MEM_MAX_BYTES=$((256 * MIB))

usage() {
    sed -n '2,/^$/s/^# \{0,1\}//p' "$0" >&2
}

STRICT=0
JSON=0
DOCTOR=1
IFACE=""
for arg in "$@"; do
    case "$arg" in
    --strict) STRICT=1 ;;
    --json) JSON=1 ;;
    --no-doctor) DOCTOR=0 ;;
    -h | --help)
        usage
        exit 0
        ;;
    -*)
        printf 'check.sh: unknown option %s\n' "$arg" >&2
        usage
        exit 2
        ;;
    *)
        if [ -n "$IFACE" ]; then
            printf 'check.sh: only one interface, got %s and %s\n' "$IFACE" "$arg" >&2
            exit 2
        fi
        IFACE=$arg
        ;;
    esac
done
IFACE=${IFACE:-lo}

# ---------------------------------------------------------------- helpers

C_CHECK=()
C_VALUE=()
C_REC=()
C_STATUS=()
C_NOTE=()

# add CHECK VALUE RECOMMENDED STATUS [NOTE]
add() {
    C_CHECK+=("$1")
    C_VALUE+=("$2")
    C_REC+=("$3")
    C_STATUS+=("$4")
    C_NOTE+=("${5:-}")
}

# rd FILE: prints the file's first line; fails when it cannot be read.
rd() {
    local line
    [ -r "$1" ] || return 1
    { IFS= read -r line <"$1"; } 2>/dev/null || [ -n "${line:-}" ] || return 1
    printf '%s' "$line"
}

# sysctl_path net.core.rmem_max -> /proc/sys/net/core/rmem_max
sysctl_path() {
    printf '/proc/sys/%s' "${1//.//}"
}

is_uint() {
    case "$1" in
    '' | *[!0-9]*) return 1 ;;
    *) return 0 ;;
    esac
}

# human BYTES -> "4.3 GiB" / "32 MiB" / "208 KiB" / "100 B"
human() {
    local b=$1 g=$((1024 * MIB))
    if [ "$b" -ge "$g" ]; then
        if [ $((b % g)) -eq 0 ]; then
            printf '%d GiB' $((b / g))
        else
            printf '%d.%d GiB' $((b / g)) $((b % g * 10 / g))
        fi
    elif [ "$b" -ge "$MIB" ]; then
        if [ $((b % MIB)) -eq 0 ]; then
            printf '%d MiB' $((b / MIB))
        else
            printf '%d.%d MiB' $((b / MIB)) $((b % MIB * 10 / MIB))
        fi
    elif [ "$b" -ge 1024 ]; then
        printf '%d KiB' $((b / 1024))
    else
        printf '%d B' "$b"
    fi
}

# ranges "0 1 2 3 5 7 8" -> "0-3,5,7-8" (input sorted ascending)
ranges() {
    local out="" start="" prev="" n
    for n in "$@"; do
        if [ -z "$start" ]; then
            start=$n
        elif [ "$n" -ne $((prev + 1)) ]; then
            out+="${out:+,}$start"
            [ "$prev" -ne "$start" ] && out+="-$prev"
            start=$n
        fi
        prev=$n
    done
    if [ -n "$start" ]; then
        out+="${out:+,}$start"
        [ "$prev" -ne "$start" ] && out+="-$prev"
    fi
    printf '%s' "$out"
}

have() { command -v "$1" >/dev/null 2>&1; }

NOT_VISIBLE="not readable here: the kernel shows this global sysctl only in the host's initial network namespace; run the check there"

# sysctl_min KEY MIN UNIT WHY: OK when the value is >= MIN; UNIT "bytes" or a word.
sysctl_min() {
    local key=$1 min=$2 unit=$3 why=$4 v shown rec
    rec=">= $min"
    [ "$unit" = bytes ] && rec+=" ($(human "$min"))" || rec+=" $unit"
    if ! v=$(rd "$(sysctl_path "$key")") || ! is_uint "$v"; then
        add "$key" "unreadable" "$rec" SKIP "$NOT_VISIBLE"
        return
    fi
    shown=$v
    [ "$unit" = bytes ] && shown+=" ($(human "$v"))" || shown+=" $unit"
    if [ "$v" -ge "$min" ]; then
        add "$key" "$shown" "$rec" OK "$why"
    else
        add "$key" "$shown" "$rec" WARN "$why"
    fi
}

# ---------------------------------------------------------------- host facts

KERNEL=$(uname -r 2>/dev/null || echo unknown)
NCPU=$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc 2>/dev/null || echo 1)
is_uint "$NCPU" || NCPU=1
UID_NOW=$(id -u 2>/dev/null || echo unknown)
PAGESIZE=$(getconf PAGESIZE 2>/dev/null || echo 4096)
is_uint "$PAGESIZE" || PAGESIZE=4096
CMDLINE=$(rd /proc/cmdline || true)

# cmdline_arg NAME: value of NAME= on the kernel command line (empty when absent).
cmdline_arg() {
    local w
    for w in $CMDLINE; do
        case "$w" in
        "$1"=*) printf '%s' "${w#*=}" ;;
        esac
    done
}

# ---------------------------------------------------------------- socket buffers

sysctl_min net.core.rmem_max "$REC_RMEM_MAX" bytes \
    "ringcast asks for a 32 MiB receive buffer (Config::rcvbuf); without CAP_NET_ADMIN the kernel silently caps SO_RCVBUF at rmem_max, and a short buffer drops bursts (UdpRcvbufErrors). As root ringcast uses SO_RCVBUFFORCE and is not capped."
sysctl_min net.core.wmem_max "$REC_WMEM_MAX" bytes \
    "caps SO_SNDBUF for non-root processes; ringcast asks for 4 MiB by default (Config::sndbuf), 32 MiB leaves room to raise it for bursts of large messages."
sysctl_min net.core.rmem_default "$REC_RMEM_DEFAULT" bytes \
    "receive buffer of sockets that never set SO_RCVBUF; ringcast always sets its own, but benchmark baselines and other UDP tools rely on this, so comparisons are only fair when it is raised too."
sysctl_min net.core.netdev_max_backlog "$REC_BACKLOG" packets \
    "per-CPU input queue (packets); every datagram sent over lo passes through it, as do RPS-steered packets. Overflows show in column 2 of /proc/net/softnet_stat."

if v=$(rd "$(sysctl_path net.ipv4.udp_mem)"); then
    read -r umin upress umax <<<"$v"
    if is_uint "${umax:-}"; then
        inuse=$(awk '$1 == "UDP:" { for (i = 2; i < NF; i++) if ($i == "mem") print $(i + 1) }' /proc/net/sockstat 2>/dev/null)
        val="$umin $upress $umax pages (max $(human $((umax * PAGESIZE))); in use ${inuse:-?} pages)"
        rec="max >= $((REC_UDP_MEM_MAX_BYTES / PAGESIZE)) pages ($(human "$REC_UDP_MEM_MAX_BYTES"))"
        why="total memory of all UDP sockets, in pages; above the max the kernel drops datagrams. The default is sized from RAM at boot; it must hold every ringcast receive buffer at once (2 x rcvbuf each)."
        if [ $((umax * PAGESIZE)) -ge "$REC_UDP_MEM_MAX_BYTES" ]; then
            add net.ipv4.udp_mem "$val" "$rec" OK "$why"
        else
            add net.ipv4.udp_mem "$val" "$rec" WARN "$why"
        fi
    else
        add net.ipv4.udp_mem "$v" "three page counts" WARN "unexpected format"
    fi
else
    add net.ipv4.udp_mem unreadable "max >= $(human "$REC_UDP_MEM_MAX_BYTES")" SKIP "$NOT_VISIBLE"
fi

# ---------------------------------------------------------------- busy polling

for key in net.core.busy_poll net.core.busy_read; do
    if v=$(rd "$(sysctl_path "$key")"); then
        if [ "$v" = 0 ]; then
            note="off. Right for lo (no NAPI to poll) and for park/shared modes; on a NIC with cores to spare, 50 (us) may cut receive latency at the cost of CPU (apply.sh --busy-poll). Measure before keeping it."
        else
            note="on ($v us of kernel busy polling per read/poll). Helps only NAPI NICs, costs CPU, and has no effect on lo. Sockets pick busy_read up when created, so restart ringcast after changing it."
        fi
        add "$key" "$v" "0 (default), or 50 for NIC latency with spare cores" OK "$note"
    else
        add "$key" unreadable "0 or 50" SKIP "$NOT_VISIBLE"
    fi
done

# ---------------------------------------------------------------- io_uring

if v=$(rd /proc/sys/kernel/io_uring_disabled); then
    group=$(rd /proc/sys/kernel/io_uring_group || echo -1)
    case "$v" in
    0) add kernel.io_uring_disabled 0 0 OK "io_uring allowed for everyone; ringcast uses multishot recvmsg + a provided buffer ring." ;;
    1)
        st=WARN
        [ "$UID_NOW" = 0 ] && st=OK
        for g in $(id -G 2>/dev/null); do [ "$g" = "$group" ] && st=OK; done
        add kernel.io_uring_disabled 1 0 "$st" "io_uring only for CAP_SYS_ADMIN or group kernel.io_uring_group ($group); others fall back to sendmmsg/recvmmsg."
        ;;
    *) add kernel.io_uring_disabled "$v" 0 WARN "io_uring disabled for everyone; ringcast falls back to sendmmsg/recvmmsg (sysctl -w kernel.io_uring_disabled=0 to allow it)." ;;
    esac
else
    add kernel.io_uring_disabled "absent" 0 OK "the sysctl does not exist before Linux 6.6; io_uring is on unless a seccomp filter blocks it."
fi

seccomp=$(awk '$1 == "Seccomp:" { print $2 }' /proc/self/status 2>/dev/null)
case "${seccomp:-}" in
0) add process.seccomp "0 (none)" "0, or a profile that allows io_uring_setup/enter/register" OK "no seccomp filter on this shell, so none is inherited by ringcast started from it." ;;
2) add process.seccomp "2 (filter)" "a profile that allows io_uring_setup/enter/register" INFO "a seccomp filter is active (a container?). Docker's default profile blocks io_uring; ringcast then uses sendmmsg/recvmmsg. 'ringcast doctor' shows which backend it picks." ;;
'') add process.seccomp unknown "-" SKIP "no Seccomp line in /proc/self/status" ;;
*) add process.seccomp "$seccomp" "0 or 2" INFO "strict seccomp mode" ;;
esac

capeff=$(awk '$1 == "CapEff:" { print $2 }' /proc/self/status 2>/dev/null)
if [ -n "${capeff:-}" ]; then
    # CAP_NET_ADMIN is capability bit 12.
    if [ $(((16#$capeff >> 12) & 1)) -eq 1 ]; then
        add process.cap_net_admin yes "-" INFO "processes started like this one may use SO_RCVBUFFORCE/SO_SNDBUFFORCE, so rmem_max/wmem_max do not cap ringcast's request; unprivileged deployments still need them raised."
    else
        add process.cap_net_admin no "-" INFO "without CAP_NET_ADMIN ringcast's buffer requests are capped by rmem_max/wmem_max."
    fi
fi

# ---------------------------------------------------------------- CPUs

declare -A GOV_CPUS=()
gov_found=0
for f in /sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor; do
    [ -r "$f" ] || continue
    g=$(rd "$f") || continue
    c=${f#/sys/devices/system/cpu/cpu}
    c=${c%%/*}
    GOV_CPUS[$g]="${GOV_CPUS[$g]:-} $c"
    gov_found=1
done
if [ "$gov_found" = 1 ]; then
    val=""
    st=OK
    for g in "${!GOV_CPUS[@]}"; do
        # shellcheck disable=SC2086  # word splitting of the CPU list is intended
        list=$(printf '%s\n' ${GOV_CPUS[$g]} | sort -n | tr '\n' ' ')
        # shellcheck disable=SC2086
        val+="${val:+; }$g on cpu $(ranges $list)"
        [ "$g" = performance ] || st=WARN
    done
    driver=$(rd /sys/devices/system/cpu/cpu0/cpufreq/scaling_driver || echo unknown)
    add cpu.governor "$val" "performance on every CPU that runs ringcast" "$st" \
        "scaling driver $driver. A dynamic governor ramps the clock down between bursts, so the first messages after a quiet spell are slower (expected effect; measure with the bench harness). cpupower frequency-set -g performance"
else
    add cpu.governor "no cpufreq" performance SKIP "no /sys/devices/system/cpu/*/cpufreq: a VM or firmware-managed clocks; the host or hypervisor decides the frequency."
fi

if [ -d /sys/devices/system/cpu/cpu0/cpuidle ]; then
    idle_driver=$(rd /sys/devices/system/cpu/cpuidle/current_driver || echo unknown)
    states=""
    for s in /sys/devices/system/cpu/cpu0/cpuidle/state[0-9]*; do
        [ -d "$s" ] || continue
        name=$(rd "$s/name" || echo '?')
        lat=$(rd "$s/latency" || echo '?')
        dis=$(rd "$s/disable" || echo 0)
        if [ "$dis" = 0 ]; then
            states+="${states:+ }$name(${lat}us)"
        else
            states+="${states:+ }$name(off)"
        fi
    done
    add cpu.idle_states "driver $idle_driver; cpu0: ${states:-none}" \
        "busy-spin hosts: nothing deeper than C1 on agent cores" INFO \
        "a wake from a deep C-state adds its exit latency (shown in us) to the first packet after idle. Busy-spin agents never idle; park/yield agents do. Limit with kernel args (intel_idle.max_cstate=1 processor.max_cstate=1), 'cpupower idle-set -D 10', or by holding /dev/cpu_dma_latency open (tuned's latency-performance profile)."
else
    add cpu.idle_states "no cpuidle" "-" SKIP "no /sys/devices/system/cpu/cpu0/cpuidle"
fi

isolated=$(rd /sys/devices/system/cpu/isolated || true)
iso_arg=$(cmdline_arg isolcpus)
if [ -n "$isolated" ] || [ -n "$iso_arg" ]; then
    add kernel.isolcpus "${isolated:-$iso_arg}" "the agent and app cores, e.g. isolcpus=2-5" OK \
        "isolated CPUs get no ordinary tasks; pin ringcast's agents there with Config::cores and the app threads with taskset."
elif [ "$NCPU" -lt 4 ]; then
    add kernel.isolcpus none "(needs >= 4 CPUs)" INFO \
        "$NCPU CPUs: too few to set any aside for agents and still leave a housekeeping core."
else
    add kernel.isolcpus none "isolcpus=<agent and app cores> for busy-spin deployments" WARN \
        "without isolation other tasks and kernel threads share the agent cores and show up as latency outliers. Only worth it when agents busy-spin; see tuning/README.md."
fi

nohz=$(rd /sys/devices/system/cpu/nohz_full || true)
nohz_arg=$(cmdline_arg nohz_full)
[ "$nohz" = "(null)" ] && nohz=""
if [ -n "$nohz" ] || [ -n "$nohz_arg" ]; then
    add kernel.nohz_full "${nohz:-$nohz_arg}" "same cores as isolcpus" OK \
        "the tick stops on these CPUs while one task runs; nohz_full also moves RCU callbacks off them (implies rcu_nocbs)."
elif [ "$NCPU" -lt 4 ]; then
    add kernel.nohz_full none "(needs >= 4 CPUs)" INFO "$NCPU CPUs: too few to isolate."
else
    add kernel.nohz_full none "nohz_full=<same cores as isolcpus> for busy-spin deployments" WARN \
        "without it a busy-spinning agent still takes the scheduler tick (typically every 1-4 ms) on its core."
fi

rcu=$(cmdline_arg rcu_nocbs)
add kernel.rcu_nocbs "${rcu:-none}" "same cores as nohz_full (implied by it)" INFO \
    "RCU callbacks run on other CPUs for the listed cores."

irqb=""
for d in /proc/[0-9]*; do
    comm=$(rd "$d/comm" 2>/dev/null) || continue
    if [ "$comm" = irqbalance ]; then
        irqb=${d#/proc/}
        break
    fi
done
if [ -n "$irqb" ]; then
    add irqbalance "running (pid $irqb)" "stopped when NIC IRQs are pinned by hand" WARN \
        "irqbalance moves interrupts every 10 s and can undo a hand-set /proc/irq/*/smp_affinity_list or land a NIC IRQ on an agent core. systemctl disable --now irqbalance (or ban the agent cores with IRQBALANCE_BANNED_CPULIST)."
else
    add irqbalance "not running" "stopped when NIC IRQs are pinned by hand" OK \
        "IRQ affinity stays where it is set."
fi

# ---------------------------------------------------------------- memory

thp_sel() { sed -n 's/.*\[\(.*\)\].*/\1/p' "$1" 2>/dev/null; }
thp=$(thp_sel /sys/kernel/mm/transparent_hugepage/enabled)
case "$thp" in
'') add mm.transparent_hugepage unreadable "madvise or never" SKIP "no /sys/kernel/mm/transparent_hugepage" ;;
always) add mm.transparent_hugepage always "madvise (or never)" WARN \
    "with 'always' khugepaged collapses and compacts memory behind every process, a known source of latency spikes. echo madvise > /sys/kernel/mm/transparent_hugepage/enabled" ;;
*) add mm.transparent_hugepage "$thp" "madvise (or never)" OK "huge pages only where a program asks for them." ;;
esac
thpd=$(thp_sel /sys/kernel/mm/transparent_hugepage/defrag)
case "$thpd" in
'') ;;
always) add mm.transparent_hugepage.defrag always "madvise, defer or never" WARN \
    "'always' makes page faults stall in direct compaction." ;;
*) add mm.transparent_hugepage.defrag "$thpd" "madvise, defer or never" OK "no direct compaction for programs that did not ask for huge pages." ;;
esac

if v=$(rd /proc/sys/kernel/numa_balancing); then
    nodes=0
    for n in /sys/devices/system/node/node[0-9]*; do [ -d "$n" ] && nodes=$((nodes + 1)); done
    if [ "$v" != 0 ] && [ "$nodes" -gt 1 ]; then
        add kernel.numa_balancing "$v ($nodes NUMA nodes)" "0 on multi-node hosts with pinned threads" WARN \
            "automatic NUMA balancing unmaps pages to sample accesses; the resulting faults land on pinned, latency-critical threads. sysctl -w kernel.numa_balancing=0"
    else
        add kernel.numa_balancing "$v ($nodes NUMA node(s))" "0 on multi-node hosts with pinned threads" OK \
            "single node or already off: nothing to migrate."
    fi
fi

# ---------------------------------------------------------------- interface

# The interface may be given by address, as ringcast accepts.
ifname=$IFACE
case "$IFACE" in
*[!0-9.]*) ;;
*.*.*.*)
    if have ip; then
        n=$(ip -o -4 addr show 2>/dev/null | awk -v a="$IFACE" '{ split($4, p, "/"); if (p[1] == a) { print $2; exit } }')
        [ -n "$n" ] && ifname=$n
    fi
    ;;
esac

# /proc/net/dev answers for this network namespace (sysfs may show another one).
in_ns=0
while IFS= read -r line; do
    case "$line" in
    *:*)
        n=${line%%:*}
        n=${n//[[:space:]]/}
        [ "$n" = "$ifname" ] && in_ns=1
        ;;
    esac
done </proc/net/dev 2>/dev/null

flags=""
mtu=""
src=""
if [ "$in_ns" = 1 ]; then
    if have ip; then
        link=$(ip -o link show dev "$ifname" 2>/dev/null)
        flags=$(printf '%s' "$link" | sed -n 's/^[0-9]*: [^<]*<\([^>]*\)>.*/\1/p')
        mtu=$(printf '%s' "$link" | sed -n 's/.* mtu \([0-9]*\).*/\1/p')
        src="ip link"
    fi
    if [ -z "$flags" ] && [ -r "/sys/class/net/$ifname/flags" ]; then
        hex=$(rd "/sys/class/net/$ifname/flags")
        f=$((hex))
        flags=""
        [ $((f & 0x8)) -ne 0 ] && flags+="LOOPBACK,"
        [ $((f & 0x1000)) -ne 0 ] && flags+="MULTICAST,"
        [ $((f & 0x1)) -ne 0 ] && flags+="UP,"
        [ "$(rd "/sys/class/net/$ifname/carrier" 2>/dev/null)" = 1 ] && flags+="LOWER_UP,"
        flags=${flags%,}
        mtu=$(rd "/sys/class/net/$ifname/mtu" || true)
        src="sysfs (may describe another network namespace; install iproute2 for an exact answer)"
    fi
fi

has_flag() { case ",$flags," in *",$1,"*) return 0 ;; *) return 1 ;; esac }

if [ "$in_ns" = 0 ]; then
    add iface.exists "$IFACE: not found" "an interface of this network namespace" WARN \
        "no such interface here (see 'ip -br link'); ringcast would fail to start on it."
else
    loopback=0
    has_flag LOOPBACK && loopback=1
    add iface.exists "$ifname${flags:+ <$flags>}" "an interface of this network namespace" OK "flags from ${src:-nowhere}"

    if has_flag UP; then
        add iface.up up up OK "administratively up"
    else
        add iface.up down up WARN "ip link set $ifname up"
    fi
    if has_flag LOWER_UP; then
        add iface.carrier yes yes OK "link has carrier"
    else
        add iface.carrier no yes WARN "no carrier (cable, switch port or peer down)"
    fi

    if is_uint "${mtu:-}"; then
        payload=$((mtu - 28))
        [ "$payload" -gt 65507 ] && payload=65507
        if [ "$loopback" = 1 ]; then
            add iface.mtu "$mtu (datagram payload $payload)" "default (65536 on lo)" OK \
                "ringcast fills datagrams up to min(MTU - 28, 65507) bytes unless Config::max_payload says less."
        elif [ "$mtu" -lt 1500 ]; then
            add iface.mtu "$mtu (datagram payload $payload)" "1500, or 9000 end to end" INFO \
                "below Ethernet's 1500 (a tunnel or overlay?); ringcast adapts its payload to $payload bytes. Check that every hop passes it."
        else
            add iface.mtu "$mtu (datagram payload $payload)" "1500, or 9000 end to end" OK \
                "ringcast fills datagrams up to MTU - 28 bytes; jumbo frames (9000) cut per-packet costs for large messages only if every NIC and switch on the path carries them."
        fi
    else
        add iface.mtu unknown "1500 or 9000" SKIP "could not read the MTU"
    fi

    if has_flag MULTICAST; then
        add iface.multicast yes yes OK "MULTICAST flag set"
    elif [ "$loopback" = 1 ]; then
        add iface.multicast "no (loopback)" "-" OK "Linux loopback delivers multicast without the MULTICAST flag; ringcast accepts it."
    else
        add iface.multicast no yes WARN "ip link set $ifname multicast on"
    fi

    addr=""
    if have ip; then
        addr=$(ip -o -4 addr show dev "$ifname" 2>/dev/null | awk '{ print $4; exit }')
        if [ -n "$addr" ]; then
            add iface.ipv4 "$addr" "an IPv4 address" OK "ringcast joins and sends on the interface's IPv4 address."
        else
            add iface.ipv4 none "an IPv4 address" WARN "ringcast needs an IPv4 address on the interface to join and send (ip addr add ...)."
        fi
    else
        add iface.ipv4 unknown "an IPv4 address" SKIP "ip (iproute2) not installed"
    fi

    rp_all=$(rd /proc/sys/net/ipv4/conf/all/rp_filter || echo '?')
    rp_if=$(rd "/proc/sys/net/ipv4/conf/$ifname/rp_filter" || echo '?')
    if is_uint "$rp_all" && is_uint "$rp_if"; then
        rp=$rp_all
        [ "$rp_if" -gt "$rp" ] && rp=$rp_if
        val="$rp (all=$rp_all, $ifname=$rp_if)"
        if [ "$rp" = 1 ]; then
            add iface.rp_filter "$val" "0 or 2 (loose) for multicast sources on other subnets" WARN \
                "strict reverse-path filtering drops multicast whose source address would not be routed back out of $ifname (a publisher on another subnet, a second NIC). The effective value is max(all, $ifname): sysctl -w net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.$ifname.rp_filter=2"
        else
            add iface.rp_filter "$val" "0 or 2 (loose)" OK "reverse-path filtering will not drop multicast from sources routed elsewhere."
        fi
    else
        add iface.rp_filter unreadable "0 or 2" SKIP "no /proc/sys/net/ipv4/conf/$ifname/rp_filter"
    fi

    if have ip; then
        groups=$(ip maddr show dev "$ifname" 2>/dev/null | awk '$1 == "inet" { printf "%s%s", sep, $2; sep = " " }')
        add iface.mcast_groups "${groups:-none}" "-" INFO \
            "IPv4 groups joined on $ifname now (ip maddr show dev $ifname). On a switched LAN, IGMP snooping forwards a group only to ports that joined it."
    fi
    if v=$(rd /proc/sys/net/ipv4/igmp_max_memberships); then
        add net.ipv4.igmp_max_memberships "$v" ">= groups joined per socket" INFO \
            "per-socket limit on IP_ADD_MEMBERSHIP; ringcast joins one group per node."
    fi

    # ------------------------------------------------------------ NIC (not lo)
    if [ "$loopback" = 0 ]; then
        if have ethtool; then
            ring=$(ethtool -g "$ifname" 2>/dev/null | awk '
                /^Pre-set maximums/ { s = "max" } /^Current hardware/ { s = "cur" }
                $1 == "RX:" { rx[s] = $2 } $1 == "TX:" { tx[s] = $2 }
                END { if (rx["cur"] != "") printf "rx %s/%s tx %s/%s", rx["cur"], rx["max"], tx["cur"], tx["max"] }')
            if [ -n "$ring" ]; then
                add nic.rings "$ring (current/max)" "rx at max for bursty multicast" INFO \
                    "a bigger RX ring absorbs bursts the CPU cannot drain at once (fewer drops; each drop is a loss ringcast must report or repair) at the cost of more buffered packets. ethtool -G $ifname rx <max>"
            else
                add nic.rings "not reported" "-" SKIP "ethtool -g $ifname gave nothing (driver without ring control?)"
            fi
            coal=$(ethtool -c "$ifname" 2>/dev/null | awk -F': *' '
                /^Adaptive RX/ { split($2, a, " "); ad = a[1] } $1 == "rx-usecs" { us = $2 } $1 == "rx-frames" { fr = $2 }
                END { if (us != "" || ad != "") printf "adaptive-rx %s rx-usecs %s rx-frames %s", ad, us, fr }')
            add nic.coalesce "${coal:-not reported}" "latency: adaptive-rx off, rx-usecs 0-8; throughput: driver default" INFO \
                "interrupt coalescing delays the RX interrupt to batch packets: lower is less latency, more interrupts. ethtool -C $ifname adaptive-rx off rx-usecs 0"
            offl=$(ethtool -k "$ifname" 2>/dev/null | awk -F': *' '
                $1 == "generic-receive-offload" { g = $2 } $1 == "generic-segmentation-offload" { s = $2 }
                $1 == "tx-udp-segmentation" { u = $2 } $1 == "rx-udp-gro-forwarding" { f = $2 }
                END { printf "gro %s gso %s tx-udp-segmentation %s rx-udp-gro-forwarding %s", g, s, u, f }')
            add nic.offloads "$offl" "driver defaults (gro on, gso on)" INFO \
                "UDP GRO only merges datagrams for sockets that enable UDP_GRO, and GSO only splits sends that use UDP_SEGMENT; leave both on."
        else
            add nic.rings "ethtool not installed" "-" SKIP "install ethtool to read ring sizes, coalescing and offloads"
        fi

        dev=$(readlink -f "/sys/class/net/$ifname/device" 2>/dev/null || true)
        irqdir=""
        for d in "$dev" "$dev/.."; do
            if [ -n "$dev" ] && [ -d "$d/msi_irqs" ]; then
                irqdir=$d/msi_irqs
                break
            fi
        done
        if [ -n "$irqdir" ]; then
            irqs=""
            for i in "$irqdir"/*; do
                n=${i##*/}
                is_uint "$n" || continue
                aff=$(rd "/proc/irq/$n/smp_affinity_list" || echo '?')
                eff=$(rd "/proc/irq/$n/effective_affinity_list" || echo '?')
                irqs+="${irqs:+ }$n->$aff(eff $eff)"
            done
            add nic.irqs "${irqs:-none}" "a housekeeping core, not an agent core" INFO \
                "IRQ -> allowed CPUs (effective CPU) of $ifname's device. Set with echo CPU > /proc/irq/N/smp_affinity_list (irqbalance off)."
        else
            add nic.irqs "unknown" "-" SKIP "no MSI IRQ list for $ifname's device (virtual or not PCI); see /proc/interrupts"
        fi
    fi
fi

# ---------------------------------------------------------------- counters

udp=$(awk '$1 == "Udp:" { if (!h) { for (i = 2; i <= NF; i++) name[i] = $i; h = 1 } else { for (i = 2; i <= NF; i++) if (name[i] ~ /^(InErrors|RcvbufErrors|SndbufErrors|MemErrors)$/) printf "%s%s=%s", (n++ ? " " : ""), name[i], $i } }' /proc/net/snmp 2>/dev/null)
add stats.udp_errors "${udp:-unreadable}" "no increase during a run" INFO \
    "counters since boot (or since this network namespace was created). RcvbufErrors: a receive buffer was full; SndbufErrors: a send buffer was full. Compare before and after a run: nstat -az UdpRcvbufErrors UdpSndbufErrors"

if [ -r /proc/net/softnet_stat ]; then
    drops=0 squeeze=0
    while read -r _ d s _; do
        drops=$((drops + 16#$d))
        squeeze=$((squeeze + 16#$s))
    done </proc/net/softnet_stat
    sn="dropped=$drops time_squeeze=$squeeze"
    add stats.softnet "$sn" "no increase during a run" INFO \
        "summed over CPUs since boot. dropped: netdev_max_backlog overflowed; time_squeeze: softirq ran out of budget (net.core.netdev_budget)."
fi

# ---------------------------------------------------------------- ringcast doctor

HERE=$(cd "$(dirname "$0")" 2>/dev/null && pwd || echo .)
ROOT=$(cd "$HERE/.." 2>/dev/null && pwd || echo ..)
DOCTOR_BIN=""
DOCTOR_OUT=""
DOCTOR_RC=""
find_ringcast() {
    local p
    if [ -n "${RINGCAST_BIN:-}" ]; then
        [ -x "$RINGCAST_BIN" ] && printf '%s' "$RINGCAST_BIN"
        return
    fi
    if p=$(command -v ringcast 2>/dev/null) && [ -n "$p" ]; then
        printf '%s' "$p"
        return
    fi
    for p in ./target/release/ringcast ./target/debug/ringcast \
        "$ROOT/target/release/ringcast" "$ROOT/target/debug/ringcast"; do
        if [ -f "$p" ] && [ -x "$p" ]; then
            printf '%s' "$p"
            return
        fi
    done
}
if [ "$DOCTOR" = 1 ]; then
    DOCTOR_BIN=$(find_ringcast)
    if [ -n "$DOCTOR_BIN" ]; then
        if have timeout; then
            DOCTOR_OUT=$(timeout 30 "$DOCTOR_BIN" doctor --iface "$IFACE" 2>&1)
        else
            DOCTOR_OUT=$("$DOCTOR_BIN" doctor --iface "$IFACE" 2>&1)
        fi
        DOCTOR_RC=$?
        verdict=$(printf '%s\n' "$DOCTOR_OUT" | sed -n 's/^verdict: *//p' | head -n 1)
        if [ -z "$DOCTOR_OUT" ]; then
            add ringcast.doctor "exit $DOCTOR_RC, no output" "this host can run ringcast" INFO \
                "$DOCTOR_BIN printed nothing: a stale or stub build? Rebuild with cargo build --release."
        elif [ "$DOCTOR_RC" = 0 ]; then
            add ringcast.doctor "${verdict:-exit 0}" "this host can run ringcast" OK "$DOCTOR_BIN doctor --iface $IFACE"
        else
            add ringcast.doctor "${verdict:-exit $DOCTOR_RC}" "this host can run ringcast" WARN \
                "$DOCTOR_BIN doctor --iface $IFACE exited $DOCTOR_RC; see its output."
        fi
    else
        add ringcast.doctor "binary not found" "this host can run ringcast" SKIP \
            "no ringcast in RINGCAST_BIN, PATH, ./target/{release,debug} or $ROOT/target/{release,debug}; cargo build --release"
    fi
else
    add ringcast.doctor skipped "this host can run ringcast" SKIP "--no-doctor"
fi

# ---------------------------------------------------------------- report

n_ok=0 n_warn=0 n_info=0 n_skip=0
for s in "${C_STATUS[@]}"; do
    case "$s" in
    OK) n_ok=$((n_ok + 1)) ;;
    WARN) n_warn=$((n_warn + 1)) ;;
    INFO) n_info=$((n_info + 1)) ;;
    *) n_skip=$((n_skip + 1)) ;;
    esac
done

# json STRING: STRING as a JSON string literal.
json() {
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\n'/\\n}
    s=${s//$'\t'/\\t}
    s=${s//$'\r'/\\r}
    s=${s//[[:cntrl:]]/}
    printf '"%s"' "$s"
}

if [ "$JSON" = 1 ]; then
    printf '{"tool":"ringcast-tuning-check","iface":%s,"kernel":%s,"cpus":%s,"uid":%s,"strict":%s,\n' \
        "$(json "$IFACE")" "$(json "$KERNEL")" "$NCPU" "$(json "$UID_NOW")" \
        "$([ "$STRICT" = 1 ] && echo true || echo false)"
    printf ' "checks":[\n'
    last=$((${#C_CHECK[@]} - 1))
    for i in "${!C_CHECK[@]}"; do
        printf '  {"check":%s,"value":%s,"recommended":%s,"status":%s,"note":%s}%s\n' \
            "$(json "${C_CHECK[$i]}")" "$(json "${C_VALUE[$i]}")" "$(json "${C_REC[$i]}")" \
            "$(json "${C_STATUS[$i]}")" "$(json "${C_NOTE[$i]}")" "$([ "$i" -lt "$last" ] && echo ,)"
    done
    printf ' ],\n'
    printf ' "summary":{"ok":%d,"warn":%d,"info":%d,"skip":%d},\n' "$n_ok" "$n_warn" "$n_info" "$n_skip"
    if [ -n "$DOCTOR_BIN" ]; then
        printf ' "doctor":{"binary":%s,"exit":%s,"output":%s}\n' \
            "$(json "$DOCTOR_BIN")" "${DOCTOR_RC:-null}" "$(json "$DOCTOR_OUT")"
    else
        printf ' "doctor":null\n'
    fi
    printf '}\n'
else
    printf 'ringcast host check: interface %s, kernel %s, %s CPUs, uid %s\n\n' "$IFACE" "$KERNEL" "$NCPU" "$UID_NOW"
    for i in "${!C_CHECK[@]}"; do
        printf '%-4s  %-31s %s\n' "${C_STATUS[$i]}" "${C_CHECK[$i]}" "${C_VALUE[$i]}"
        [ "${C_REC[$i]}" != - ] && printf '      recommended: %s\n' "${C_REC[$i]}"
        if [ "${C_STATUS[$i]}" != OK ] && [ -n "${C_NOTE[$i]}" ]; then
            printf '      %s\n' "${C_NOTE[$i]}"
        fi
    done
    printf '\nsummary: %d OK, %d WARN, %d INFO, %d SKIP\n' "$n_ok" "$n_warn" "$n_info" "$n_skip"
    if [ -n "$DOCTOR_BIN" ]; then
        printf '\n--- %s doctor --iface %s (exit %s)\n' "$DOCTOR_BIN" "$IFACE" "$DOCTOR_RC"
        [ -n "$DOCTOR_OUT" ] && printf '%s\n' "$DOCTOR_OUT"
    fi
    [ "$n_warn" -gt 0 ] && printf '\nSee tuning/README.md for why and how; tuning/apply.sh --dry-run shows the sysctl changes.\n'
fi

if [ "$STRICT" = 1 ] && [ "$n_warn" -gt 0 ]; then
    exit 1
fi
exit 0
