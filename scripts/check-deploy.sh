#!/usr/bin/env bash
# Offline checks of the deployment files in deploy/ (see deploy/README.md): every Kubernetes
# manifest against the Kubernetes JSON schemas (kubernetes-validate, strict: unknown fields and
# unknown apiVersion/kind fail; the snapshot CRD kinds against the CRD schemas vendored in
# deploy/schemas/), the Nomad jobs and volume parsed with python-hcl2, and the files against
# each other (scripts/check_deploy.py). Nothing is applied to a cluster. Builds the venv it
# needs once: `.venv-deploy` at the repo root (or POLLY_DEPLOY_VENV), pinned packages from
# PyPI; after that it needs no network. POLLY_K8S_VERSION picks the schema version (1.35.0).
# Needs python3 >= 3.11 with venv.
set -euo pipefail

cd "$(dirname "$0")/.."
venv="${POLLY_DEPLOY_VENV:-$PWD/.venv-deploy}"
python="${PYTHON:-python3}"
# kubernetes-validate bundles the Kubernetes JSON schemas (1.x up to 1.37); python-hcl2
# parses the Nomad HCL. Pinned: both changed their output between releases.
packages=("kubernetes-validate==1.37.0" "python-hcl2==8.1.4")

installed() {
  [ -x "$venv/bin/python" ] &&
    "$venv/bin/python" - "${packages[@]}" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(0 if all(version(n) == v for n, v in (p.split("==") for p in sys.argv[1:])) else 1)
PY
}

if ! installed; then
  echo "check-deploy: installing ${packages[*]} into $venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" --disable-pip-version-check --quiet install "${packages[@]}"
fi

"$venv/bin/python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "check-deploy: needs python >= 3.11 (tomllib)")'
"$venv/bin/python" scripts/check_deploy.py "$PWD"
