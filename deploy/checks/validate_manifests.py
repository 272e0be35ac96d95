"""Validate rendered Helm manifests offline.

    python validate_manifests.py --kubernetes-version 1.35.0 FILE...

Each object is validated strictly (unknown fields are errors) against the
Kubernetes API schemas that `kubernetes-validate` ships for that version.
Custom resources have no schema there: the kinds listed in CUSTOM_RESOURCES
are skipped *by name*, each skip is printed, and only the fields Weft relies
on are checked by hand. Any other kind without a schema is an error, so a
new kind cannot slip through unvalidated.

On top of the schemas, the properties the chart promises are checked
(CHART_PROMISES): probes, the drain's grace period, the locked-down
security context, config checksums, sticky routing and proxy timeouts, and
the metrics wiring: each listen address matches its named container port,
the nodes' metrics port has a Service of its own that the scrape
annotations and ServiceMonitors point at, no public Service (an Ingress
backend, a NodePort or a LoadBalancer) carries a metrics port, and every
Ingress host that routes a prefix covering /metrics also denies the exact
path /metrics to every address.
"""

import argparse
import re
import sys

import yaml
import kubernetes_validate
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

# Custom resources: (apiVersion, kind) -> what installs their definition.
CUSTOM_RESOURCES = {
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"): "Strimzi",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "the Prometheus Operator",
}


class Problems:
    def __init__(self):
        self.messages = []

    def check(self, condition, where, message):
        if not condition:
            self.messages.append(f"{where}: {message}")


def seconds(duration):
    """`25s`, `2m` -> seconds (the chart renders whole seconds)."""
    match = re.fullmatch(r"(\d+)(s|m)", duration or "")
    if not match:
        raise ValueError(f"not a duration in s or m: {duration!r}")
    return int(match.group(1)) * (60 if match.group(2) == "m" else 1)


def check_kafka_topic(obj, where, problems):
    spec = obj.get("spec", {})
    labels = obj["metadata"].get("labels", {})
    problems.check(labels.get("strimzi.io/cluster"), where, "no strimzi.io/cluster label")
    problems.check(re.fullmatch(r"[a-zA-Z0-9._-]{1,249}", spec.get("topicName", "")), where, "bad spec.topicName")
    for field in ("partitions", "replicas"):
        problems.check(isinstance(spec.get(field), int) and spec[field] >= 1, where, f"spec.{field} is not a positive integer")
    config = spec.get("config", {})
    problems.check(config.get("cleanup.policy") == "delete", where, "cleanup.policy must be delete (records are keyed by document)")
    problems.check(isinstance(config.get("retention.ms"), int), where, "retention.ms is not an integer")
    annotations = obj["metadata"].get("annotations", {})
    problems.check(annotations.get("helm.sh/resource-policy") == "keep", where, "not kept on uninstall")


def check_service_monitor(obj, where, problems):
    spec = obj.get("spec", {})
    problems.check(spec.get("selector", {}).get("matchLabels"), where, "no spec.selector.matchLabels")
    endpoints = spec.get("endpoints", [])
    problems.check(endpoints and all(e.get("port") and e.get("path") == "/metrics" for e in endpoints), where, "endpoints need a port and /metrics")


# ingress-nginx: the annotation that denies a location to the addresses
# listed, and the list that means every address.
DENYLIST = "nginx.ingress.kubernetes.io/denylist-source-range"
EVERY_ADDRESS = {"0.0.0.0/0", "::/0"}


def denies_everyone(ingress):
    ranges = ingress["metadata"].get("annotations", {}).get(DENYLIST, "")
    return EVERY_ADDRESS <= {r.strip() for r in ranges.split(",")}


def listen_port(address, name, where, problems):
    """`0.0.0.0:PORT` -> PORT; anything else is a problem (None)."""
    match = re.fullmatch(r"0\.0\.0\.0:(\d+)", address or "")
    problems.check(match, where, f"{name} is {address!r}, not 0.0.0.0:PORT (the pod's every interface)")
    return int(match.group(1)) if match else None


def weft_container(deployment):
    return next((c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "weft"), None)


def named_ports(container):
    return {p.get("name"): p["containerPort"] for p in container.get("ports", [])}


def pod_security(pod_spec, container, where, problems):
    pod = pod_spec.get("securityContext", {})
    own = container.get("securityContext", {})
    problems.check(own.get("readOnlyRootFilesystem") is True, where, "root filesystem is not read-only")
    problems.check(own.get("allowPrivilegeEscalation") is False, where, "privilege escalation allowed")
    problems.check(own.get("capabilities", {}).get("drop") == ["ALL"], where, "capabilities not all dropped")
    problems.check(own.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, where, "may run as root")
    seccomp = own.get("seccompProfile", pod.get("seccompProfile", {}))
    problems.check(seccomp.get("type") == "RuntimeDefault", where, "seccomp profile is not RuntimeDefault")


def check_deployment(obj, where, config_maps, problems):
    template = obj["spec"]["template"]
    pod_spec = template["spec"]
    annotations = template["metadata"].get("annotations", {})
    problems.check(pod_spec.get("automountServiceAccountToken") is False, where, "mounts a service account token")
    for container in pod_spec["containers"]:
        here = f"{where} container {container['name']}"
        pod_security(pod_spec, container, here, problems)
        problems.check("limits" in container.get("resources", {}), here, "no resource limits")
        if container["name"] != "weft":
            continue
        problems.check(annotations.get("checksum/config"), where, "no checksum/config annotation (config changes would not roll pods)")
        live = container.get("livenessProbe", {}).get("httpGet", {}).get("path")
        ready = container.get("readinessProbe", {}).get("httpGet", {}).get("path")
        problems.check(live == "/healthz", here, f"liveness probe is {live}, not /healthz")
        problems.check(ready == "/readyz", here, f"readiness probe is {ready}, not /readyz")
        env = {e["name"]: e for e in container.get("env", [])}
        problems.check(env.get("WEFT_NODE_ID", {}).get("value") == "$(POD_NAME)", here, "WEFT_NODE_ID is not the pod name")
        problems.check(env.get("POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name", here, "POD_NAME is not from the downward API")
        if "OTEL_EXPORTER_OTLP_ENDPOINT" in env:
            attributes = env.get("OTEL_RESOURCE_ATTRIBUTES", {}).get("value", "")
            problems.check(env.get("OTEL_SERVICE_NAME", {}).get("value", "").startswith("weft"), here, "OTEL_SERVICE_NAME is not weft")
            problems.check("k8s.pod.name=$(POD_NAME)" in attributes, here, "OTEL_RESOURCE_ATTRIBUTES lacks the pod name")
        config_name = container["envFrom"][0]["configMapRef"]["name"]
        config = config_maps.get(config_name)
        problems.check(config is not None, here, f"ConfigMap {config_name} is not rendered")
        if config is None:
            continue
        ports = named_ports(container)
        metrics_port = ports.get("metrics")
        problems.check(metrics_port, here, "no container port named metrics")
        if annotations.get("prometheus.io/scrape") == "true":
            scraped = annotations.get("prometheus.io/port")
            problems.check(scraped == str(metrics_port), here, f"prometheus.io/port is {scraped}, not the metrics port {metrics_port}")
            problems.check(annotations.get("prometheus.io/path") == "/metrics", here, "prometheus.io/path is not /metrics")
        command = (container.get("args") or [""])[0]
        if command == "serve":
            listen = listen_port(config.get("WEFT_LISTEN"), "WEFT_LISTEN", here, problems)
            metrics = listen_port(config.get("WEFT_METRICS_LISTEN"), "WEFT_METRICS_LISTEN", here, problems)
            problems.check(listen == ports.get("http"), here, f"WEFT_LISTEN port {listen} is not the http container port {ports.get('http')}")
            problems.check(metrics == metrics_port, here, f"WEFT_METRICS_LISTEN port {metrics} is not the metrics container port {metrics_port}")
            problems.check(metrics != listen, here, "the metrics port is the public port")
        elif command == "persist":
            listen = listen_port(config.get("WEFT_PERSIST_LISTEN"), "WEFT_PERSIST_LISTEN", here, problems)
            problems.check(listen == metrics_port, here, f"WEFT_PERSIST_LISTEN port {listen} is not the metrics container port {metrics_port}")
        grace = seconds(config["WEFT_SHUTDOWN_GRACE"])
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        total = pod_spec.get("terminationGracePeriodSeconds", 30)
        problems.check(total > grace + pre_stop, here, f"terminationGracePeriodSeconds {total} does not exceed preStop {pre_stop} + shutdown grace {grace}")


def check_ingress(obj, where, heartbeat, problems):
    annotations = obj["metadata"].get("annotations", {})
    paths = [p for rule in obj["spec"]["rules"] for p in rule["http"]["paths"]]
    if denies_everyone(obj):
        # Proxies nothing, so no timeouts; a prefix here would deny documents.
        problems.check(all(p["pathType"] == "Exact" for p in paths), where, "denies every address on a path that is not Exact")
        return
    for name in ("proxy-read-timeout", "proxy-send-timeout"):
        value = int(annotations.get(f"nginx.ingress.kubernetes.io/{name}", "60"))
        problems.check(value > heartbeat, where, f"{name} {value} s does not exceed the heartbeat interval {heartbeat} s")
    if any(p["pathType"] == "Prefix" for p in paths):
        problems.check(annotations.get("nginx.ingress.kubernetes.io/upstream-hash-by", "").startswith("$"), where, "no sticky routing (upstream-hash-by)")


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def covers(prefix, path):
    """Whether an Ingress `Prefix` path matches `path` (element-wise)."""
    prefix = prefix.rstrip("/")
    return path == prefix or path.startswith(prefix + "/")


def check_metrics_exposure(objects, where, problems):
    """The metrics ports stay inside the cluster; Prometheus finds them."""
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    ingresses = [o for o in objects if o["kind"] == "Ingress"]
    pods = []  # (command, pod labels, metrics container port)
    for deployment in (o for o in objects if o["kind"] == "Deployment"):
        container = weft_container(deployment)
        if container:
            labels = deployment["spec"]["template"]["metadata"].get("labels", {})
            pods.append(((container.get("args") or [""])[0], labels, named_ports(container).get("metrics")))
    metrics_ports = {port for _, _, port in pods if port}

    def carries_metrics(service):
        return any(p.get("targetPort") == "metrics" or p.get("targetPort") in metrics_ports for p in service["spec"].get("ports", []))

    # Public: what an Ingress sends to, or what is reachable from outside.
    public = {p["backend"]["service"]["name"] for i in ingresses for r in i["spec"]["rules"] for p in r["http"]["paths"] if "service" in p["backend"]}
    public |= {n for n, s in services.items() if s["spec"].get("type") in ("NodePort", "LoadBalancer")}
    for name in sorted(public):
        service = services.get(name)
        problems.check(service is not None, where, f"an Ingress sends to Service {name}, which is not rendered")
        if service is not None:
            problems.check(not carries_metrics(service), where, f"Service/{name} is public and carries a metrics port")

    # The nodes' metrics port has a Service of its own.
    for command, labels, port in pods:
        if command != "serve":
            continue
        own = [n for n, s in services.items() if selects(s["spec"].get("selector"), labels) and carries_metrics(s) and n not in public]
        problems.check(own, where, f"no private Service carries the nodes' metrics port {port}")

    # Each ServiceMonitor selects Services whose named port is a metrics port
    # of pods that have one.
    for monitor in (o for o in objects if o["kind"] == "ServiceMonitor"):
        here = f"{where}: ServiceMonitor/{monitor['metadata']['name']}"
        selector = monitor["spec"].get("selector", {}).get("matchLabels", {})
        chosen = [s for s in services.values() if selects(selector, s["metadata"].get("labels", {}))]
        problems.check(chosen, here, "selects no rendered Service")
        for service in chosen:
            name = service["metadata"]["name"]
            problems.check(name not in public, here, f"scrapes the public Service {name}")
            problems.check(any(selects(service["spec"].get("selector"), labels) and port for _, labels, port in pods), here, f"Service/{name} selects no pod with a metrics port")
            by_name = {p.get("name"): p for p in service["spec"].get("ports", [])}
            for endpoint in monitor["spec"].get("endpoints", []):
                port = by_name.get(endpoint.get("port"))
                problems.check(port and (port.get("targetPort") == "metrics" or port.get("targetPort") in metrics_ports), here, f"endpoint port {endpoint.get('port')} is not a metrics port of Service/{name}")

    # /metrics through the Ingress: a prefix that covers it must be overruled,
    # on the same host and controller, by an exact /metrics denied to all.
    routes = {}
    for ingress in ingresses:
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                routes.setdefault(rule.get("host", "*"), []).append((ingress, path))
    for host, paths in sorted(routes.items()):
        prefixes = [(i, p) for i, p in paths if p["pathType"] != "Exact" and covers(p["path"], "/metrics")]
        exact = [(i, p) for i, p in paths if p["pathType"] == "Exact" and p["path"] == "/metrics"]
        if not prefixes and not exact:
            continue
        names = ", ".join(sorted({i["metadata"]["name"] for i, _ in prefixes}))
        problems.check(exact, where, f"host {host}: Ingress {names} routes /metrics to the nodes, and no Ingress denies the exact path /metrics")
        classes = {i["spec"].get("ingressClassName") for i, _ in prefixes}
        for ingress, _ in exact:
            name = ingress["metadata"]["name"]
            problems.check(denies_everyone(ingress), where, f"host {host}: Ingress {name} routes /metrics without denying it ({DENYLIST}: 0.0.0.0/0,::/0)")
            problems.check(classes <= {ingress["spec"].get("ingressClassName")}, where, f"host {host}: Ingress {name} denies /metrics on another ingress class than the one routing /")


def check_otel_config(obj, where, problems):
    config = yaml.safe_load(obj["data"]["config.yaml"])
    service = config["service"]
    for extension in service.get("extensions", []):
        problems.check(extension in config.get("extensions", {}), where, f"extension {extension} is not configured")
    for name, pipeline in service["pipelines"].items():
        for section in ("receivers", "processors", "exporters"):
            for component in pipeline.get(section, []):
                problems.check(component in config.get(section, {}), where, f"pipeline {name}: {section[:-1]} {component} is not configured")
    problems.check("otlp" in config.get("receivers", {}), where, "no OTLP receiver")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubernetes-version", required=True)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()

    failures = 0
    for path in args.files:
        with open(path, encoding="utf-8") as handle:
            objects = [o for o in yaml.safe_load_all(handle) if o]
        problems = Problems()
        config_maps = {o["metadata"]["name"]: o.get("data", {}) for o in objects if o["kind"] == "ConfigMap"}
        node_config = next((c for c in config_maps.values() if "WEFT_HEARTBEAT_INTERVAL" in c), {})
        heartbeat = seconds(node_config.get("WEFT_HEARTBEAT_INTERVAL", "30s"))
        validated = skipped = 0
        for obj in objects:
            kind, api_version = obj["kind"], obj["apiVersion"]
            where = f"{path}: {kind}/{obj['metadata']['name']}"
            custom = CUSTOM_RESOURCES.get((api_version, kind))
            if custom:
                print(f"SKIPPED schema of {kind}/{obj['metadata']['name']}: {api_version} {kind} is a custom resource of {custom}, unknown offline; checked by hand instead")
                skipped += 1
                if kind == "KafkaTopic":
                    check_kafka_topic(obj, where, problems)
                else:
                    check_service_monitor(obj, where, problems)
                continue
            try:
                kubernetes_validate.validate(obj, args.kubernetes_version, strict=True)
                validated += 1
            except ValidationError as error:
                location = ".".join(str(p) for p in error.path)
                problems.check(False, where, f"invalid for Kubernetes {args.kubernetes_version}: {location}: {error.message}")
            except SchemaNotFoundError as error:
                problems.check(False, where, f"{error.message} (add it to CUSTOM_RESOURCES if it is a custom resource)")
            if kind == "Deployment":
                check_deployment(obj, where, config_maps, problems)
            elif kind == "Ingress":
                check_ingress(obj, where, heartbeat, problems)
            elif kind == "ConfigMap" and "config.yaml" in obj.get("data", {}):
                check_otel_config(obj, where, problems)
        check_metrics_exposure(objects, path, problems)
        for message in problems.messages:
            print(f"ERROR {message}")
        failures += len(problems.messages)
        print(f"{path}: {len(objects)} objects, {validated} valid against Kubernetes {args.kubernetes_version} (strict), {skipped} custom resources skipped, {len(problems.messages)} problems")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
