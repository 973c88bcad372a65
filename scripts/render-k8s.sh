#!/usr/bin/env bash
# Renders the Helm chart into k8s/weir.yaml: plain manifests for users
# without Helm (namespace "weir", release "weir", default values; edit the
# ConfigMap's job spec and the image before applying). The chart test checks
# that the file is what this script renders now, so it cannot drift.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
install_k8s_tools
{
  echo "# Rendered from helm/weir by scripts/render-k8s.sh; do not edit by hand."
  echo "# kubectl create namespace weir && kubectl -n weir apply -f k8s/weir.yaml"
  helm template weir helm/weir --namespace weir --skip-tests
} > k8s/weir.yaml
echo "wrote k8s/weir.yaml"
