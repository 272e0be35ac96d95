{{/*
Names. The full name is "<release>-<chart>" unless the release name already
holds the chart name; both are cut to 63 characters (DNS label).
*/}}
{{- define "weft.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "weft.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "<fullname>-<suffix>", cut so that the suffix survives. */}}
{{- define "weft.componentName" -}}
{{- $root := index . 0 }}
{{- $suffix := index . 1 }}
{{- printf "%s-%s" (include "weft.fullname" $root | trunc (int (sub 62 (len $suffix))) | trimSuffix "-") $suffix }}
{{- end }}

{{- define "weft.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels (Kubernetes recommended labels). Call with (list $ "component").
*/}}
{{- define "weft.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "weft.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "weft.labels" -}}
{{- $root := index . 0 -}}
helm.sh/chart: {{ include "weft.chart" $root }}
{{ include "weft.selectorLabels" . }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: weft
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
{{- with $root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "weft.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "weft.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "weft.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Secrets. The chart's own Secret holds whatever was given as a value; a
Secret of the operator's own is referenced instead when named.
*/}}
{{- define "weft.secretName" -}}
{{- include "weft.fullname" . }}
{{- end }}

{{- define "weft.auth.secretName" -}}
{{- default (include "weft.secretName" .) .Values.auth.existingSecret }}
{{- end }}

{{- define "weft.auth.secretKey" -}}
{{- if .Values.auth.existingSecretKey }}
{{- .Values.auth.existingSecretKey }}
{{- else if eq .Values.auth.mode "publicKey" }}
{{- "jwt-public-key.pem" }}
{{- else }}
{{- "jwt-secret" }}
{{- end }}
{{- end }}

{{/* Whether the chart's Secret carries the JWT key. */}}
{{- define "weft.auth.inChartSecret" -}}
{{- if and (ne .Values.auth.mode "none") (not .Values.auth.existingSecret) }}true{{ end }}
{{- end }}

{{- define "weft.store.hasPassword" -}}
{{- if or .Values.store.password .Values.store.existingSecret }}true{{ end }}
{{- end }}

{{- define "weft.store.secretName" -}}
{{- default (include "weft.secretName" .) .Values.store.existingSecret }}
{{- end }}

{{- define "weft.store.secretKey" -}}
{{- if .Values.store.existingSecret }}
{{- .Values.store.existingSecretPasswordKey }}
{{- else }}
{{- "store-password" }}
{{- end }}
{{- end }}

{{/* Whether the chart renders a Secret at all. */}}
{{- define "weft.secret.enabled" -}}
{{- if or (include "weft.auth.inChartSecret" .) (and .Values.store.password (not .Values.store.existingSecret)) }}true{{ end }}
{{- end }}

{{/* Where the public key file is mounted in node containers. */}}
{{- define "weft.auth.keyDir" -}}
/etc/weft/auth
{{- end }}

{{/*
Grace periods: the kubelet's must outlast the preStop sleep plus Weft's own
drain, or a drain is cut by SIGKILL. Call with (list preStop grace override
"what").
*/}}
{{- define "weft.terminationGrace" -}}
{{- $preStop := int (index . 0) }}
{{- $grace := int (index . 1) }}
{{- $override := index . 2 }}
{{- $minimum := add $preStop $grace }}
{{- if kindIs "invalid" $override }}
{{- add $minimum 10 }}
{{- else if le (int $override) $minimum }}
{{- fail (printf "%s.terminationGracePeriodSeconds (%d) must exceed the preStop sleep plus the shutdown grace (%d s), or the kubelet kills the drain" (index . 3) (int $override) $minimum) }}
{{- else }}
{{- int $override }}
{{- end }}
{{- end }}

{{/* The OTLP endpoint nodes and workers send traces to. */}}
{{- define "weft.otel.endpoint" -}}
{{- if .Values.otel.endpoint }}
{{- .Values.otel.endpoint }}
{{- else if .Values.otel.collector.enabled }}
{{- $port := ternary 4317 4318 (eq .Values.otel.protocol "grpc") }}
{{- printf "http://%s:%d" (include "weft.componentName" (list . "otel-collector")) $port }}
{{- else }}
{{- fail "otel.enabled needs otel.endpoint or otel.collector.enabled" }}
{{- end }}
{{- end }}

{{/*
Environment shared by nodes and workers: the pod's identity from the
downward API (node id, trace resource attributes) and the secrets.
Call with (list $ "service-name").
*/}}
{{- define "weft.commonEnv" -}}
{{- $root := index . 0 -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: K8S_NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
# --node-id: the pod's name, unique in the cluster and stable for its life.
- name: WEFT_NODE_ID
  value: "$(POD_NAME)"
{{- if include "weft.store.hasPassword" $root }}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "weft.store.secretName" $root }}
      key: {{ include "weft.store.secretKey" $root }}
{{- end }}
{{- if $root.Values.otel.enabled }}
- name: OTEL_SERVICE_NAME
  value: {{ index . 1 | quote }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ include "weft.otel.endpoint" $root | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ $root.Values.otel.protocol | quote }}
{{- /* Weft adds service.instance.id (its node id, the pod name here) and service.version itself. */}}
{{- $attributes := list "k8s.pod.name=$(POD_NAME)" "k8s.namespace.name=$(POD_NAMESPACE)" "k8s.node.name=$(K8S_NODE_NAME)" }}
{{- range $key, $value := $root.Values.otel.resourceAttributes }}
{{- $attributes = append $attributes (printf "%s=%s" $key $value) }}
{{- end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ join "," $attributes | quote }}
{{- end }}
{{- end }}

{{/* Prometheus scrape annotations for a pod template. Call with (list $ port). */}}
{{- define "weft.scrapeAnnotations" -}}
{{- if (index . 0).Values.metrics.podAnnotations -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ index . 1 | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end }}

{{/* The Kafka settings nodes and workers share (ConfigMap data lines). */}}
{{- define "weft.kafkaConfig" -}}
WEFT_KAFKA_BROKERS: {{ .Values.kafka.brokers | quote }}
WEFT_KAFKA_TOPIC: {{ .Values.kafka.topic | quote }}
WEFT_KAFKA_PARTITIONS: {{ .Values.kafka.partitions | int64 | quote }}
WEFT_KAFKA_REPLICATION_FACTOR: {{ .Values.kafka.replicationFactor | int64 | quote }}
WEFT_KAFKA_MAX_RECORD_BYTES: {{ .Values.kafka.maxRecordBytes | int64 | quote }}
{{- with .Values.kafka.options }}
# librdkafka values may hold commas, so the variable separates them with ';'.
WEFT_KAFKA_OPTIONS: {{ join ";" . | quote }}
{{- end }}
{{- end }}
