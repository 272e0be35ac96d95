{{/*
TLS and SASL: every credential and CA comes from a Secret of the
operator's own, mounted read-only under /etc/weft/<name>/ (or, for nothing
here, read into a variable). Kubernetes updates mounted Secrets in place.
*/}}

{{/* Whether nodes serve TLS themselves. */}}
{{- define "weft.tls.enabled" -}}
{{- if .Values.tls.enabled }}true{{ end }}
{{- end }}

{{/*
Environment for the Kafka, PostgreSQL and OTLP security settings, shared by
nodes and workers.
*/}}
{{- define "weft.securityEnv" -}}
{{- $kafka := .Values.kafka.security -}}
- name: WEFT_KAFKA_SECURITY_PROTOCOL
  value: {{ $kafka.protocol | quote }}
{{- with $kafka.saslMechanism }}
- name: WEFT_KAFKA_SASL_MECHANISM
  value: {{ . | quote }}
{{- end }}
{{- with $kafka.saslUsername }}
- name: WEFT_KAFKA_SASL_USERNAME
  value: {{ . | quote }}
{{- end }}
{{- if $kafka.saslPasswordSecret }}
- name: WEFT_KAFKA_SASL_PASSWORD_FILE
  value: {{ printf "/etc/weft/kafka-sasl/%s" $kafka.saslPasswordKey | quote }}
{{- end }}
{{- if $kafka.caSecret }}
- name: WEFT_KAFKA_SSL_CA
  value: {{ printf "/etc/weft/kafka-ca/%s" $kafka.caKey | quote }}
{{- end }}
{{- if $kafka.clientCertSecret }}
- name: WEFT_KAFKA_SSL_CERTIFICATE
  value: /etc/weft/kafka-client/tls.crt
- name: WEFT_KAFKA_SSL_KEY
  value: /etc/weft/kafka-client/tls.key
{{- end }}
{{- with .Values.store.tls.sslmode }}
- name: PGSSLMODE
  value: {{ . | quote }}
{{- end }}
{{- if .Values.store.tls.caSecret }}
- name: PGSSLROOTCERT
  value: {{ printf "/etc/weft/store-ca/%s" .Values.store.tls.caKey | quote }}
{{- end }}
{{- if and .Values.otel.enabled .Values.otel.tls.caSecret }}
- name: OTEL_EXPORTER_OTLP_CERTIFICATE
  value: {{ printf "/etc/weft/otel-ca/%s" .Values.otel.tls.caKey | quote }}
{{- end }}
{{- end }}

{{/*
The mounted Secrets: (name, Secret, mount path) for this pod. Call with
(list $ "node") or (list $ "persist"); only nodes serve TLS.
*/}}
{{- define "weft.securitySecrets" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- $kafka := $root.Values.kafka.security -}}
{{- $secrets := list -}}
{{- if and (eq $component "node") $root.Values.tls.enabled }}
{{- $secrets = append $secrets (list "tls" $root.Values.tls.existingSecret) }}
{{- end }}
{{- with $kafka.saslPasswordSecret }}
{{- $secrets = append $secrets (list "kafka-sasl" .) }}
{{- end }}
{{- with $kafka.caSecret }}
{{- $secrets = append $secrets (list "kafka-ca" .) }}
{{- end }}
{{- with $kafka.clientCertSecret }}
{{- $secrets = append $secrets (list "kafka-client" .) }}
{{- end }}
{{- with $root.Values.store.tls.caSecret }}
{{- $secrets = append $secrets (list "store-ca" .) }}
{{- end }}
{{- if $root.Values.otel.enabled }}
{{- with $root.Values.otel.tls.caSecret }}
{{- $secrets = append $secrets (list "otel-ca" .) }}
{{- end }}
{{- end }}
{{- toJson $secrets }}
{{- end }}

{{/* volumeMounts lines for the Secrets above. */}}
{{- define "weft.securityMounts" -}}
{{- range (include "weft.securitySecrets" . | fromJsonArray) }}
- name: {{ index . 0 }}
  mountPath: /etc/weft/{{ index . 0 }}
  readOnly: true
{{- end }}
{{- end }}

{{/* volumes lines for the Secrets above. */}}
{{- define "weft.securityVolumes" -}}
{{- range (include "weft.securitySecrets" . | fromJsonArray) }}
- name: {{ index . 0 }}
  secret:
    secretName: {{ index . 1 }}
{{- end }}
{{- end }}
