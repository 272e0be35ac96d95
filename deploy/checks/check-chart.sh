#!/usr/bin/env bash
# Lints, renders and validates the Helm chart (`make deploy-check`).
#
#   check-chart.sh HELM PYTHON KUBE_VERSION
#
# PYTHON is the interpreter of the virtual environment that holds
# kubernetes-validate. Renders with the default values and with each
# values-*.yaml here that must pass, validates every object against the
# Kubernetes API schemas of KUBE_VERSION (validate_manifests.py), then
# asserts that values which must be refused are refused, for the right
# reason, and that validate_manifests.py refuses renderings with one of the
# chart's promises broken (so its checks are known to bite).
set -euo pipefail

helm=$1
python=$2
kube_version=$3
here=$(cd "$(dirname "$0")" && pwd)
chart=$(cd "$here/../helm/weft" && pwd)
out=$(mktemp -d "${TMPDIR:-/tmp}/weft-chart.XXXXXX")
trap 'rm -rf "$out"' EXIT
# Helm's own state (repositories, caches) stays in the scratch directory.
export HELM_CACHE_HOME=$out/helm-cache HELM_CONFIG_HOME=$out/helm-config HELM_DATA_HOME=$out/helm-data

# Values files that must lint, render and validate (besides the defaults).
passing=(values-full.yaml values-inline-secrets.yaml)

echo "== helm lint --strict"
"$helm" lint --strict --kube-version "$kube_version" "$chart"
for values in "${passing[@]}"; do
  "$helm" lint --strict --kube-version "$kube_version" "$chart" -f "$here/$values"
done

echo "== helm template, then validate against Kubernetes $kube_version"
rendered=()
for values in default "${passing[@]}"; do
  args=()
  [ "$values" = default ] || args=(-f "$here/$values")
  "$helm" template weft "$chart" --namespace weft --kube-version "$kube_version" "${args[@]}" >"$out/${values%.yaml}.rendered.yaml"
  rendered+=("$out/${values%.yaml}.rendered.yaml")
done
"$python" "$here/validate_manifests.py" --kubernetes-version "$kube_version" "${rendered[@]}"

echo "== NOTES.txt renders (helm install --dry-run=client, no cluster contacted)"
for values in default "${passing[@]}"; do
  args=()
  [ "$values" = default ] || args=(-f "$here/$values")
  "$helm" install weft "$chart" --namespace weft --dry-run=client "${args[@]}" >"$out/install.log" 2>&1 || { cat "$out/install.log"; exit 1; }
  grep -q '^NOTES:' "$out/install.log" || { echo "FAIL: no NOTES with $values"; cat "$out/install.log"; exit 1; }
  echo "ok: $values"
done

echo "== values that must be refused"
# expect_refusal WHAT EXPECTED-MESSAGE COMMAND...: the command must fail, and
# its output must carry the expected message (so it failed for that reason).
expect_refusal() {
  local what=$1 expected=$2
  shift 2
  if "$@" >"$out/refusal.log" 2>&1; then
    echo "FAIL: $what: accepted"
    cat "$out/refusal.log"
    return 1
  fi
  if ! grep -qF -- "$expected" "$out/refusal.log"; then
    echo "FAIL: $what: refused, but not with \"$expected\":"
    cat "$out/refusal.log"
    return 1
  fi
  echo "ok, refused: $what: $expected"
}
schema_error="at '/node/replicaCount': got string, want integer"
expect_refusal "helm lint, node.replicaCount a string (schema)" "$schema_error" \
  "$helm" lint --strict "$chart" -f "$here/values-wrong-type.yaml"
expect_refusal "helm template, node.replicaCount a string (schema)" "$schema_error" \
  "$helm" template weft "$chart" -f "$here/values-wrong-type.yaml"
# `helm lint` reports a template's `fail` as INFO, so only `helm template`
# can assert this one.
expect_refusal "helm template, an Ingress in front of nodes without auth" "auth.mode is none and ingress.enabled is true" \
  "$helm" template weft "$chart" -f "$here/values-open-ingress.yaml"
expect_refusal "helm template, metrics.port equal to node.port" "metrics.port equals node.port" \
  "$helm" template weft "$chart" --set metrics.port=1234
expect_refusal "helm template, TLS without its Secret" "tls.enabled needs tls.existingSecret" \
  "$helm" template weft "$chart" --set tls.enabled=true
expect_refusal "helm template, ownership without the cluster secret" "cluster.mode is ownership: set cluster.existingSecret" \
  "$helm" template weft "$chart" --set cluster.mode=ownership
expect_refusal "helm template, ownership with TLS on the nodes" "cluster.mode is ownership with tls.enabled" \
  "$helm" template weft "$chart" --set cluster.mode=ownership --set cluster.existingSecret=s --set tls.enabled=true --set tls.existingSecret=t
expect_refusal "helm template, sasl_ssl without the password's Secret" "kafka.security.protocol is sasl_ssl: set" \
  "$helm" template weft "$chart" --set kafka.security.protocol=sasl_ssl --set kafka.security.saslMechanism=SCRAM-SHA-512 --set kafka.security.saslUsername=weft
expect_refusal "helm template, a Kafka CA with plaintext" "kafka.security.caSecret/clientCertSecret need protocol ssl or sasl_ssl" \
  "$helm" template weft "$chart" --set kafka.security.caSecret=kafka-ca
expect_refusal "helm template, an unknown Kafka protocol (schema)" "kafka/security/protocol" \
  "$helm" template weft "$chart" --set kafka.security.protocol=tls

echo "== renderings that validate_manifests.py must refuse (values-full's, one promise broken)"
# tamper HOW: writes values-full's rendering, changed as HOW says, to
# $out/tampered.yaml.
tamper() {
  "$python" - "$1" "$out/values-full.rendered.yaml" "$out/tampered.yaml" <<'EOF'
import sys
import yaml
how, source, target = sys.argv[1:]
with open(source, encoding="utf-8") as handle:
    objects = [o for o in yaml.safe_load_all(handle) if o]
if how == "without the Ingress that denies /metrics":
    objects = [o for o in objects if not (o["kind"] == "Ingress" and o["metadata"]["name"].endswith("-metrics-deny"))]
elif how == "the metrics port on the public Service":
    service = next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "weft")
    service["spec"]["ports"].append({"name": "metrics", "port": 9464, "targetPort": "metrics", "protocol": "TCP"})
elif how == "the node ServiceMonitor on the public port":
    monitor = next(o for o in objects if o["kind"] == "ServiceMonitor" and o["metadata"]["name"] == "weft-node")
    monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] = "node"
    monitor["spec"]["endpoints"][0]["port"] = "http"
else:
    sys.exit(f"unknown tampering: {how}")
with open(target, "w", encoding="utf-8") as handle:
    yaml.safe_dump_all(objects, handle)
EOF
}
for how in "without the Ingress that denies /metrics|routes /metrics to the nodes, and no Ingress denies the exact path /metrics" \
           "the metrics port on the public Service|Service/weft is public and carries a metrics port" \
           "the node ServiceMonitor on the public port|scrapes the public Service weft"; do
  tamper "${how%%|*}"
  expect_refusal "validate_manifests.py, ${how%%|*}" "${how#*|}" \
    "$python" "$here/validate_manifests.py" --kubernetes-version "$kube_version" "$out/tampered.yaml"
done
