#!/usr/bin/env bash
# Install what n-gram LM decoding needs into a virtual environment (idempotent: each part is skipped when present):
#   - KenLM's `lmplz` (builds ARPA files) and `build_binary` (ARPA → KenLM binary), compiled from the C++ tree that the
#     PyPI `kenlm` source package ships, with cmake and Boost/zlib/bz2/lzma development packages from apt;
#   - the `kenlm` Python module (from that same source package, so both are one KenLM version);
#   - pyctcdecode, without its dependencies: 0.5.0 declares numpy<2, and letting pip honour that downgrades numpy
#     and breaks pandas 3. It runs fine on numpy 2 (tests/test_decode.py checks); its one run-time dependency,
#     pygtrie, is in pyproject.toml.
#
# Usage: scripts/install_kenlm.sh [VENV]   (default .venv; called by `make setup`)
set -euo pipefail

VENV=${1:-.venv}
BIN=$(cd "$VENV/bin" && pwd)
KENLM_VERSION=0.3.0
PYCTCDECODE_VERSION=0.5.0
APT_PACKAGES=(build-essential cmake libboost-program-options-dev libboost-system-dev libboost-thread-dev
              libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev)

# Built and able to run (their --help exits 1, so build a two-line model instead).
have_lm_tools() {
  [[ -x "$BIN/lmplz" && -x "$BIN/build_binary" ]] &&
    printf 'a b\nb a\n' | "$BIN/lmplz" -o 2 --discount_fallback -S 64M -T "$WORK" >/dev/null 2>&1
}

install_apt_packages() {
  local missing=()
  for package in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  ((${#missing[@]})) || return 0
  local sudo=""
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null ||
      { echo "install_kenlm.sh: apt packages missing (${missing[*]}); install them as root" >&2; exit 1; }
    sudo=sudo
  fi
  echo "install_kenlm.sh: apt-get install ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The source package, fetched once per run into $WORK (pip only knows it as an sdist: that is what we want).
download_kenlm_source() {
  if [[ ! -f "$WORK/kenlm-$KENLM_VERSION.tar.gz" ]]; then
    pip_quiet download --no-deps --no-binary kenlm "kenlm==$KENLM_VERSION" -d "$WORK"
  fi
}

# pip, without its notes about this machine's extra local indexes.
pip_quiet() {
  "$BIN/python" -m pip "$1" -q "${@:2}" 2>&1 | sed '/^WARNING: Location/d'
}

# A command's output only when it fails (a C++ build prints pages of deprecation warnings).
quietly() {
  "$@" >"$WORK/step.log" 2>&1 || { tail -n 60 "$WORK/step.log" >&2; echo "install_kenlm.sh: failed: $*" >&2; exit 1; }
}

build_lm_tools() {
  download_kenlm_source
  tar -xzf "$WORK/kenlm-$KENLM_VERSION.tar.gz" -C "$WORK"
  local source="$WORK/kenlm-$KENLM_VERSION"
  quietly cmake -S "$source" -B "$source/build" -DCMAKE_BUILD_TYPE=Release
  quietly cmake --build "$source/build" --target lmplz build_binary -j "$(nproc)"
  install -m 755 "$source/build/bin/lmplz" "$source/build/bin/build_binary" "$BIN/"
}

install_python_modules() {
  if ! "$BIN/python" -c "import kenlm" 2>/dev/null; then
    download_kenlm_source
    pip_quiet install "$WORK/kenlm-$KENLM_VERSION.tar.gz"
  fi
  if ! "$BIN/python" -c "import pyctcdecode" 2>/dev/null; then
    pip_quiet install --no-deps "pyctcdecode==$PYCTCDECODE_VERSION"
  fi
}

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
if ! have_lm_tools; then
  install_apt_packages
  build_lm_tools
fi
install_python_modules
have_lm_tools
"$BIN/python" -c "import kenlm, pyctcdecode"
echo "install_kenlm.sh: lmplz, build_binary, kenlm and pyctcdecode are in $VENV"
