#!/usr/bin/env bash
# Install what the benchmark harness's `aeron` cargo feature needs to build Aeron's C
# client and media driver from the sources bundled in rusteron-client /
# rusteron-media-driver: clang + libclang-dev (bindgen), libbsd-dev, uuid-dev,
# pkg-config, and CMake >= 3.30 (Aeron 1.54's minimum; Debian 12 ships 3.25, so it
# comes from PyPI's `cmake` package).
#
# Idempotent (skips whatever is already there), non-interactive, meant to run as root
# (CI, dev machines):
#
#   bash bench-harness/setup-aeron.sh
#   cargo build --release -p ringcast-bench --features aeron
#
# The new cmake is linked into /usr/local/bin (before /usr/bin on the default PATH) and,
# under pyenv, gets a pyenv shim; the script fails if `cmake` on this PATH is still older
# than 3.30 afterwards.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

MIN_CMAKE=3.30

# 1. Debian packages.
missing=()
for pkg in clang libclang-dev libbsd-dev uuid-dev pkg-config; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
        missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "setup-aeron: apt-get install ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "setup-aeron: apt packages present (clang libclang-dev libbsd-dev uuid-dev pkg-config)"
fi

# 2. CMake >= 3.30, first on PATH.
cmake_version() { "$1" --version 2>/dev/null | awk 'NR == 1 { print $3 }'; }
version_ok() { # version_ok CMAKE_BINARY
    local v
    v=$(cmake_version "$1") || return 1
    [ -n "$v" ] && [ "$(printf '%s\n%s\n' "$MIN_CMAKE" "$v" | sort -V | head -n1)" = "$MIN_CMAKE" ]
}

if command -v cmake >/dev/null && version_ok "$(command -v cmake)"; then
    echo "setup-aeron: cmake $(cmake_version "$(command -v cmake)") already first on PATH"
else
    py=$(command -v python3 || true)
    if [ -z "$py" ] || ! "$py" -m pip --version >/dev/null 2>&1; then
        echo "setup-aeron: apt-get install python3-pip (for 'pip install cmake')"
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
        py=$(command -v python3)
    fi
    # Where pip's cmake lives (nothing if the PyPI package is not installed).
    pip_cmake() {
        "$py" -c 'import cmake, os; print(os.path.join(cmake.CMAKE_BIN_DIR, "cmake"))' 2>/dev/null
    }
    cand=$(pip_cmake || true)
    if [ -z "$cand" ] || ! version_ok "$cand"; then
        echo "setup-aeron: pip install 'cmake>=$MIN_CMAKE'"
        pip_args=(-q --disable-pip-version-check --root-user-action=ignore "cmake>=$MIN_CMAKE")
        # Debian's own python3 refuses system-wide installs (PEP 668) unless told.
        "$py" -m pip install "${pip_args[@]}" ||
            "$py" -m pip install --break-system-packages "${pip_args[@]}"
        cand=$(pip_cmake)
    fi
    if ! version_ok "$cand"; then
        echo "setup-aeron: pip's cmake ($cand) is older than $MIN_CMAKE" >&2
        exit 1
    fi
    for tool in cmake ctest cpack; do
        if [ -x "$(dirname "$cand")/$tool" ]; then
            ln -sf "$(dirname "$cand")/$tool" "/usr/local/bin/$tool"
        fi
    done
    if command -v pyenv >/dev/null; then
        pyenv rehash || true
    fi
    hash -r
fi

first=$(command -v cmake || true)
if [ -z "$first" ] || ! version_ok "$first"; then
    echo "setup-aeron: 'cmake' on PATH (${first:-none}) is older than $MIN_CMAKE;" \
        "put /usr/local/bin first on PATH" >&2
    exit 1
fi
echo "setup-aeron: $("$first" --version | head -n1) ($first)"
echo "setup-aeron: $(clang --version | head -n1)"
