# Shared by the project's scripts: install missing tools from Debian's packages, keep the
# Python test packages in a virtual environment inside the repository, and find cargo's
# build output. Source it after cd-ing to the repository root.

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
APT_UPDATED=0

# apt_install [--no-install-recommends] PACKAGE…: apt-get update once, then install.
apt_install() {
  if [ "$APT_UPDATED" -eq 0 ]; then
    $SUDO apt-get update
    APT_UPDATED=1
  fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
}

# The virtual environment every Python test and check runs in (git-ignored), so nothing
# is installed into the system interpreter.
VENV="$(pwd)/.venv"

# ensure_venv: creates $VENV when missing and exports PYTHON as its interpreter.
ensure_venv() {
  if ! command -v python3 >/dev/null 2>&1; then
    echo "python3 not found: installing python3 python3-venv"
    apt_install python3 python3-venv
  fi
  if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    echo "creating the Python virtual environment $VENV"
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV"; then
      # Debian splits venv (and ensurepip) out of python3.
      apt_install python3-venv
      rm -rf "$VENV"
      python3 -m venv "$VENV"
    fi
  fi
  PYTHON="$VENV/bin/python"
  export PYTHON
}

# pip_install ARG…: installs into the virtual environment.
pip_install() {
  ensure_venv
  "$PYTHON" -m pip install --quiet --disable-pip-version-check "$@"
}

# cargo_target_dir: where cargo puts build output (honours CARGO_TARGET_DIR and
# .cargo/config), from cargo itself.
cargo_target_dir() {
  cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
}
