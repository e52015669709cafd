# Sourced by the other scripts: find Python 3.12, make .venv, install the project and the
# isolated tools (AWS SAM CLI and checkov live in their own venvs: each pins its own boto3 and
# friends, which must not decide the project's versions).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SAM_VERSION="1.170.0"
CHECKOV_VERSION="3.3.30"

find_python312() {
  local is312='import sys; assert sys.version_info[:2] == (3, 12)'
  if [[ -n "${PYTHON:-}" ]]; then
    if "$PYTHON" -c "$is312" 2>/dev/null; then echo "$PYTHON"; return; fi
    echo "error: PYTHON=$PYTHON is not a working Python 3.12" >&2
    exit 1
  fi
  local candidate
  # Each candidate is run, not just looked up: a pyenv shim named python3.12 exists on PATH
  # even when the selected version is another one (and then fails). pyenv's own directory
  # is searched even when pyenv is not on PATH; .venv last (made by one of these earlier).
  local pyenv_root="${PYENV_ROOT:-${HOME:-}/.pyenv}"
  if command -v pyenv >/dev/null; then pyenv_root="$(pyenv root)"; fi
  for candidate in python3.12 "$pyenv_root"/versions/3.12.*/bin/python3.12 \
                   /usr/local/bin/python3.12 /usr/bin/python3.12 /opt/homebrew/bin/python3.12 \
                   "$ROOT/.venv/bin/python"; do
    if "$candidate" -c "$is312" 2>/dev/null; then
      echo "$candidate"; return
    fi
  done
  echo "error: Python 3.12 not found; install it or set PYTHON=/path/to/python3.12" >&2
  exit 1
}

ensure_venv() {
  local stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
  if [[ ! -x .venv/bin/python ]]; then
    "$(find_python312)" -m venv .venv
  fi
  if [[ ! -f "$stamp" ]]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[dev]"
    rm -f .venv/.installed-* && touch "$stamp"
  fi
}

ensure_sam() {
  if [[ ! -x .tools/sam/bin/sam ]] || ! .tools/sam/bin/sam --version 2>/dev/null | grep -q "$SAM_VERSION"; then
    "$(find_python312)" -m venv .tools/sam
    .tools/sam/bin/python -m pip install --quiet "aws-sam-cli==$SAM_VERSION"
  fi
}

ensure_checkov() {
  if [[ ! -x .tools/checkov/bin/checkov ]] || ! .tools/checkov/bin/checkov --version 2>/dev/null | grep -qx "$CHECKOV_VERSION"; then
    "$(find_python312)" -m venv .tools/checkov
    .tools/checkov/bin/python -m pip install --quiet "checkov==$CHECKOV_VERSION"
  fi
}

# The gallery's browser tests (tests/ui) drive Debian's chromium through Playwright for
# Python (no browser download). CAPTIONER_CHROMIUM names another binary; without one the
# tests fail, they never skip.
ensure_browser() {
  if [[ -n "${CAPTIONER_CHROMIUM:-}" ]] || command -v chromium >/dev/null 2>&1; then return; fi
  local sudo=""
  if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
  $sudo apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-install-recommends chromium fonts-dejavu-core >/dev/null
}
