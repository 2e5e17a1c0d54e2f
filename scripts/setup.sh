# Shared by scripts/serve and scripts/test: system packages, then a virtualenv in .venv.
# Sourced, not run: sets VENV for the caller.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

need_apt=()
for pkg in "$@"; do
  case "$pkg" in
    git) command -v git >/dev/null 2>&1 || need_apt+=(git) ;;
    hugo) command -v hugo >/dev/null 2>&1 || need_apt+=(hugo) ;;
    nodejs)
      command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
      command -v npm >/dev/null 2>&1 || need_apt+=(npm)
      ;;
    *) dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg") ;;
  esac
done
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing system packages: ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "missing system packages: ${need_apt[*]} (install them with your package manager)" >&2
    exit 1
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
