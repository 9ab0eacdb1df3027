#!/usr/bin/env bash
# Checks the Helm chart (helm/hubcast) and the docker-compose setup, without a cluster,
# a helm binary or Docker:
#   bash scripts/check-chart.sh
# Installs what is missing first: the Python packages helm-python-sdk 0.2.2 (Helm's Go SDK,
# bundled) and kubernetes-validate; yamllint, promtool (Debian's prometheus package),
# redis-server and redis-sentinel from apt. Then runs tests/helm/check_chart.py, which builds
# target/debug/hubcast if it is missing, prints one line per check and ends with
# "N passed, M failed"; the exit status is non-zero when anything failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

HELM_PYTHON_VERSION="0.2.2"

# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

echo "==> tools"
ensure_venv

installed_helm_python="$("$PYTHON" -c 'import helm_python; print(helm_python.__version__)' 2>/dev/null || true)"
if [ "$installed_helm_python" != "$HELM_PYTHON_VERSION" ]; then
  echo "helm-python-sdk ${installed_helm_python:-missing}: installing helm-python-sdk==$HELM_PYTHON_VERSION"
  pip_install "helm-python-sdk==$HELM_PYTHON_VERSION"
fi
if ! "$PYTHON" -c 'import kubernetes_validate, yaml' >/dev/null 2>&1; then
  echo "kubernetes-validate missing: installing it"
  pip_install kubernetes-validate
fi

if ! command -v yamllint >/dev/null 2>&1; then
  echo "yamllint missing: installing it"
  apt_install yamllint
fi
if ! command -v promtool >/dev/null 2>&1; then
  echo "promtool missing: installing Debian's prometheus package"
  apt_install --no-install-recommends prometheus
fi
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
  echo "redis-server missing: installing it"
  apt_install redis-server redis-tools
fi
if ! command -v redis-sentinel >/dev/null 2>&1; then
  echo "redis-sentinel missing: installing it"
  apt_install redis-sentinel
fi

echo "helm-python-sdk $("$PYTHON" -c 'import helm_python; print(helm_python.__version__)')" \
  "(Helm SDK $("$PYTHON" -c 'import helm_python; print(helm_python.helm_sdk_version())'))," \
  "kubernetes-validate $("$PYTHON" -m kubernetes_validate --version)," \
  "$(yamllint --version), $(promtool --version 2>&1 | head -n1 | cut -d' ' -f1-3)," \
  "$(redis-server --version | cut -d' ' -f1-3)"

BIN="$(cargo_target_dir)/debug/hubcast"
if [ ! -x "$BIN" ] && [ -z "${CHECK_CHART_BIN:-}" ]; then
  echo "==> cargo build --bin hubcast ($BIN is missing)"
  cargo build --bin hubcast
fi

echo "==> tests/helm/check_chart.py"
exec "$PYTHON" tests/helm/check_chart.py "$@"
