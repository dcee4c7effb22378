#!/usr/bin/env bash
# tuning/apply.sh — raise the sysctls ringcast cares about (socket buffers, input backlog,
# optionally busy polling) on the running kernel.
#
# Usage: apply.sh [--dry-run] [--busy-poll[=USEC]] [--persist]
#
#   --dry-run          print what would change, change nothing (no root needed)
#   --busy-poll[=US]   also set net.core.busy_poll and net.core.busy_read (default 50 us)
#   --persist          also write /etc/sysctl.d/90-ringcast.conf so the values survive a
#                      reboot (without it nothing is written to disk)
#
# Values: net.core.rmem_max=33554432  net.core.wmem_max=33554432
#         net.core.rmem_default=4194304  net.core.netdev_max_backlog=16384
# A value already higher is left alone (never lowered); busy_poll/busy_read are set
# exactly. It prints the previous values and the command that restores them.
#
# It never touches network interfaces, IRQ affinity, CPU settings or anything else:
# those are host-specific and documented in tuning/README.md instead.
#
# Exit: 0 done (or dry run), 1 not root or a write failed, 2 usage error.

if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -u
export LC_ALL=C

readonly CONF=/etc/sysctl.d/90-ringcast.conf

usage() {
    sed -n '2,/^$/s/^# \{0,1\}//p' "$0" >&2
}

DRY=0
PERSIST=0
BUSY=""
for arg in "$@"; do
    case "$arg" in
    --dry-run | -n) DRY=1 ;;
    --persist) PERSIST=1 ;;
    --busy-poll) BUSY=50 ;;
    --busy-poll=*)
        BUSY=${arg#--busy-poll=}
        case "$BUSY" in
        '' | *[!0-9]*)
            printf 'apply.sh: --busy-poll wants microseconds, got %s\n' "$BUSY" >&2
            exit 2
            ;;
        esac
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        printf 'apply.sh: unknown argument %s\n' "$arg" >&2
        usage
        exit 2
        ;;
    esac
done

# key target mode (min: raise only; exact: set as given)
PLAN=(
    "net.core.rmem_max 33554432 min"
    "net.core.wmem_max 33554432 min"
    "net.core.rmem_default 4194304 min"
    "net.core.netdev_max_backlog 16384 min"
)
if [ -n "$BUSY" ]; then
    PLAN+=("net.core.busy_poll $BUSY exact" "net.core.busy_read $BUSY exact")
fi

if [ "$DRY" = 0 ] && [ "$(id -u)" != 0 ]; then
    printf 'apply.sh: must run as root to change sysctls (try --dry-run to see the plan)\n' >&2
    exit 1
fi

path_of() { printf '/proc/sys/%s' "${1//.//}"; }

[ "$DRY" = 1 ] && printf 'dry run: nothing will be changed\n'
failed=0
undo=()
persist_lines=()
for entry in "${PLAN[@]}"; do
    read -r key target mode <<<"$entry"
    path=$(path_of "$key")
    if ! cur=$(cat "$path" 2>/dev/null); then
        printf 'skip    %-28s not visible here (global sysctl: run in the host'"'"'s initial network namespace)\n' "$key"
        [ "$DRY" = 1 ] || failed=1
        continue
    fi
    want=$target
    if [ "$mode" = min ] && [ "$cur" -ge "$target" ]; then
        printf 'keep    %-28s %s (already >= %s)\n' "$key" "$cur" "$target"
        persist_lines+=("$key = $cur")
        continue
    fi
    persist_lines+=("$key = $want")
    if [ "$cur" = "$want" ]; then
        printf 'keep    %-28s %s\n' "$key" "$cur"
        continue
    fi
    if [ "$DRY" = 1 ]; then
        printf 'would   %-28s %s -> %s   (sysctl -w %s=%s)\n' "$key" "$cur" "$want" "$key" "$want"
        undo+=("$key=$cur")
        continue
    fi
    if printf '%s\n' "$want" >"$path" 2>/dev/null && [ "$(cat "$path" 2>/dev/null)" = "$want" ]; then
        printf 'set     %-28s %s -> %s\n' "$key" "$cur" "$want"
        undo+=("$key=$cur")
    else
        printf 'FAILED  %-28s could not write %s (now %s)\n' "$key" "$want" "$(cat "$path" 2>/dev/null)" >&2
        failed=1
    fi
done

if [ "$PERSIST" = 1 ]; then
    content="# Written by ringcast tuning/apply.sh. Remove this file to undo at next boot.
# See tuning/README.md for what each value does."
    for l in "${persist_lines[@]}"; do
        content+=$'\n'"$l"
    done
    if [ "$DRY" = 1 ]; then
        printf '\nwould write %s:\n%s\n' "$CONF" "$content"
    elif printf '%s\n' "$content" >"$CONF.tmp.$$" && mv -f "$CONF.tmp.$$" "$CONF"; then
        printf '\nwrote %s (loaded at boot by systemd-sysctl / sysctl --system)\n' "$CONF"
    else
        rm -f "$CONF.tmp.$$"
        printf 'FAILED  could not write %s\n' "$CONF" >&2
        failed=1
    fi
fi

if [ "${#undo[@]}" -gt 0 ]; then
    if [ "$DRY" = 1 ]; then
        printf '\nundo would be: sysctl -w %s\n' "${undo[*]}"
    else
        printf '\nto undo: sysctl -w %s\n' "${undo[*]}"
    fi
fi
if [ "$PERSIST" = 1 ]; then
    if [ "$DRY" = 1 ]; then
        printf 'and would be: rm -f %s\n' "$CONF"
    else
        printf 'and: rm -f %s\n' "$CONF"
    fi
fi
[ "$DRY" = 1 ] || printf 'verify: tuning/check.sh\n'
exit "$failed"
