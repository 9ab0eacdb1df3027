# Shared by the project's scripts: install missing tools from Debian's packages and PyPI.
# Source it after cd-ing to the repository root.

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

# pip_install ARG…: a Debian-managed Python refuses plain `pip install` (PEP 668); retry
# with --break-system-packages there.
pip_install() {
  if ! "${PYTHON:-python3}" -m pip install --quiet "$@"; then
    echo "pip refused; retrying with --break-system-packages"
    "${PYTHON:-python3}" -m pip install --quiet --break-system-packages "$@"
  fi
}
