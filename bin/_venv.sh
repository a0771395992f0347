# Sourced by bin/* scripts: make sure .venv exists and matches setup.cfg.
# Usage: ensure_venv [extra]   (extra: "demo" adds the demo's mail catcher, "test" the test
# tools and everything the demo has)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# EXTCDR_VENV: a Python environment made elsewhere, used as it is (the stand-in PBX runs an
# installed module's commands with the development tree's).
VENV="${EXTCDR_VENV:-$ROOT/.venv}"

apt_install() {
    # Debian packages, only as root and only when missing.
    local missing=()
    for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ]; then
        echo "extcdr: please install these Debian packages: ${missing[*]}" >&2
        return 1
    fi
    echo "extcdr: installing ${missing[*]} ..." >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

extra_rank() {
    # Each install includes the ones below it: test ⊇ demo ⊇ base.
    case "$1" in test) echo 2 ;; demo) echo 1 ;; *) echo 0 ;; esac
}

ensure_venv() {
    [ -n "${EXTCDR_VENV:-}" ] && return 0
    local extra="${1:-}"
    local spec="." hash stamp
    [ -n "$extra" ] && spec=".[$extra]"
    hash="$(sha1sum < "$ROOT/setup.cfg" | cut -c1-12)"
    # One stamp: the setup.cfg installed from, holding the biggest extra installed from it.
    stamp="$VENV/.extcdr-$hash"
    if [ -f "$stamp" ] && [ "$(extra_rank "$(cat "$stamp")")" -ge "$(extra_rank "$extra")" ]; then
        return 0
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV" 2>/dev/null || {
            rm -rf "$VENV"
            apt_install python3-venv python3-pip
            python3 -m venv "$VENV"
        }
    fi
    echo "extcdr: installing Python dependencies into .venv ..." >&2
    (cd "$ROOT" && "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$spec")
    find "$VENV" -maxdepth 1 -name '.extcdr-*' ! -name ".extcdr-$hash" -delete
    echo "${extra:-base}" > "$stamp"
}
