# Sourced by scripts/gate and scripts/test: make this machine ready, idempotently, and say how
# long each phase took. Installs only what is missing: python venv, Go check, Docker engine,
# debootstrap (offline images), then the project into .venv and the images.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# Offline or online is stackcheck's own decision (per engine, remembered); STACKCHECK_OFFLINE=1|0 forces it.
export PATH="$PATH:/usr/local/go/bin"

phase_start=0
phase() { phase_start=$(date +%s.%N); echo "== phase: $1"; }
phase_end() { printf '== timing: %-8s %6.1fs\n' "$1" "$(echo "$(date +%s.%N) - $phase_start" | bc)"; }

need_apt=()
command -v bc >/dev/null || need_apt+=(bc)
python3 -c 'import ensurepip' 2>/dev/null || need_apt+=(python3-venv)
[[ "${STACKCHECK_OFFLINE:-}" == "0" ]] || command -v debootstrap >/dev/null || need_apt+=(debootstrap)
command -v chromium >/dev/null || need_apt+=(chromium)
command -v g++ >/dev/null || need_apt+=(g++)  # Ollama's cgo build (ggml) in the image catalog
command -v patch >/dev/null || need_apt+=(patch)  # the Ollama build applies a backported fix
if ((${#need_apt[@]})); then
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    echo "missing: ${need_apt[*]}; install them (Debian: apt-get install ${need_apt[*]}) and run again" >&2
    exit 2
  fi
  echo "== installing ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

phase venv
if [[ ! -x .venv/bin/stackcheck ]] || [[ pyproject.toml -nt .venv/.installed ]]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev]'
  touch .venv/.installed
fi
phase_end venv

phase engine
.venv/bin/stackcheck engine ensure
phase_end engine

phase images
.venv/bin/stackcheck images build
phase_end images
