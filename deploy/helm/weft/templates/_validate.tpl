{{/*
Settings that each parse but do not fit together. values.schema.json
checks types and shapes; these checks need two values at once. Each
failure names the value to change.
*/}}
{{- define "weft.validate" -}}
{{- $auth := .Values.auth }}
{{- if and (eq $auth.mode "hs256") (not $auth.hs256Secret) (not $auth.existingSecret) }}
{{- fail "auth.mode is hs256: set auth.hs256Secret or auth.existingSecret" }}
{{- end }}
{{- if and (eq $auth.mode "publicKey") (not $auth.publicKeyPem) (not $auth.existingSecret) }}
{{- fail "auth.mode is publicKey: set auth.publicKeyPem or auth.existingSecret" }}
{{- end }}
{{- if and $auth.hs256Secret (ne $auth.mode "hs256") }}
{{- fail (printf "auth.hs256Secret is set but auth.mode is %s: set auth.mode=hs256 or drop the secret" $auth.mode) }}
{{- end }}
{{- if and $auth.publicKeyPem (ne $auth.mode "publicKey") }}
{{- fail (printf "auth.publicKeyPem is set but auth.mode is %s: set auth.mode=publicKey or drop the key" $auth.mode) }}
{{- end }}
{{- if and (eq $auth.mode "none") .Values.ingress.enabled (not $auth.allowOpenIngress) }}
{{- fail "auth.mode is none and ingress.enabled is true: anyone reaching the Ingress could read and write every document. Set auth.mode (hs256 or publicKey), or auth.allowOpenIngress=true if that is intended" }}
{{- end }}
{{- if eq .Values.cluster.mode "ownership" }}
{{- if not .Values.cluster.existingSecret }}
{{- fail "cluster.mode is ownership: set cluster.existingSecret, a Secret holding the cluster secret every node shares" }}
{{- end }}
{{- if .Values.tls.enabled }}
{{- fail "cluster.mode is ownership with tls.enabled: nodes forward sessions to each other over plain ws://; terminate TLS at the Ingress instead" }}
{{- end }}
{{- end }}
{{- if regexMatch "^[a-z]+://[^/@]*:[^/@]*@" .Values.store.url }}
{{- fail "store.url holds a password, and the URL goes into a ConfigMap (and Weft's start-up errors): give it as store.password or store.existingSecret (PGPASSWORD) instead" }}
{{- end }}
{{- if eq (int .Values.metrics.port) (int .Values.node.port) }}
{{- fail "metrics.port equals node.port: the node's metrics listener needs a port of its own" }}
{{- end }}
{{- if le (int .Values.node.heartbeatTimeoutSeconds) (int .Values.node.heartbeatIntervalSeconds) }}
{{- fail "node.heartbeatTimeoutSeconds must exceed node.heartbeatIntervalSeconds" }}
{{- end }}
{{- if and .Values.ingress.enabled (le (int .Values.ingress.proxyTimeoutSeconds) (int .Values.node.heartbeatIntervalSeconds)) }}
{{- fail "ingress.proxyTimeoutSeconds must exceed node.heartbeatIntervalSeconds, or the proxy cuts idle sessions between two pings" }}
{{- end }}
{{- $topics := .Values.kafka.strimziTopics }}
{{- if and $topics.enabled (gt (int $topics.minInsyncReplicas) (int .Values.kafka.replicationFactor)) }}
{{- fail "kafka.strimziTopics.minInsyncReplicas exceeds kafka.replicationFactor: with acks=all no update could ever be acknowledged" }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.existingSecret) }}
{{- fail "tls.enabled needs tls.existingSecret: a Secret of type kubernetes.io/tls holding the nodes' certificate and key" }}
{{- end }}
{{- $kafka := .Values.kafka.security }}
{{- if and (hasPrefix "sasl_" $kafka.protocol) (or (not $kafka.saslMechanism) (not $kafka.saslUsername) (not $kafka.saslPasswordSecret)) }}
{{- fail (printf "kafka.security.protocol is %s: set kafka.security.saslMechanism, saslUsername and saslPasswordSecret" $kafka.protocol) }}
{{- end }}
{{- if and (not (hasPrefix "sasl_" $kafka.protocol)) (or $kafka.saslMechanism $kafka.saslPasswordSecret) }}
{{- fail (printf "kafka.security SASL settings are set but protocol is %s: use sasl_ssl" $kafka.protocol) }}
{{- end }}
{{- if and (not (has $kafka.protocol (list "ssl" "sasl_ssl"))) (or $kafka.caSecret $kafka.clientCertSecret) }}
{{- fail (printf "kafka.security.caSecret/clientCertSecret need protocol ssl or sasl_ssl, not %s" $kafka.protocol) }}
{{- end }}
{{- if and .Values.otel.collector.enabled (not .Values.otel.enabled) }}
{{- fail "otel.collector.enabled needs otel.enabled (nothing would send it traces)" }}
{{- end }}
{{- end }}
