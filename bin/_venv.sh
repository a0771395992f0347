# Sourced by bin/* scripts: make sure .venv exists and matches setup.cfg.
# Usage: ensure_venv [extra]   (extra: "test" installs the test tools too)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

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

ensure_venv() {
    local extra="${1:-}"
    local spec="." stamp
    [ -n "$extra" ] && spec=".[$extra]"
    stamp="$VENV/.extcdr-$(cat "$ROOT/setup.cfg" | sha1sum | cut -c1-12)-${extra:-base}"
    [ -f "$stamp" ] && return 0
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV" 2>/dev/null || {
            rm -rf "$VENV"
            apt_install python3-venv python3-pip
            python3 -m venv "$VENV"
        }
    fi
    echo "extcdr: installing Python dependencies into .venv ..." >&2
    (cd "$ROOT" && "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$spec")
    rm -f "$VENV"/.extcdr-*
    touch "$stamp"
}
