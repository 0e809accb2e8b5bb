#!/usr/bin/env bash
# Install everything keyvault's tests need (Debian packages, a virtualenv with the
# project and its test extras), then run the linters, the type checker and the tests.
# Safe to run again: it installs only what is missing. Used by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

# notary, notary-server: e2e and trust tests; age: recovery with the real binary;
# softhsm2: the pkcs11 wrapper; openssl: legacy key layouts; systemd: systemd-analyze.
APT_PACKAGES=(notary age softhsm2 openssl systemd)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "==> installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

VENV=${KEYVAULT_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating virtualenv $VENV"
  python3 -m venv "$VENV"
fi
echo "==> installing keyvault with test extras"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'

# The same checks as .pre-commit-config.yaml, over the same paths.
echo "==> ruff"
"$VENV/bin/ruff" check keyvault tests benchmarks docs scripts
echo "==> ruff format"
"$VENV/bin/ruff" format --check keyvault tests benchmarks docs scripts
echo "==> mypy"
"$VENV/bin/mypy"  # the package, the tests and scripts/ (files in pyproject.toml)
echo "==> pytest"
# The fixtures find the venv's tools (weed, moto_server, keyvault) beside its python,
# and anything the tests run as a subprocess finds them on PATH.
PATH="$(cd "$VENV/bin" && pwd):$PATH"
export PATH
# Fail on any skip that docs/testing.md does not list (tests/fixtures/skips.py).
export KEYVAULT_STRICT_SKIPS=1
exec "$VENV/bin/pytest" -q -p no:cacheprovider "$@"
