{{/* Names, labels and shared pieces of the notification chart's templates. */}}

{{- define "notification.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's base name; components append "-ingest", "-gateway", ... */}}
{{- define "notification.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "notification.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "notification.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one component: include with (dict "root" $ "component" "ingest"). */}}
{{- define "notification.selectorLabels" -}}
app.kubernetes.io/name: {{ include "notification.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "notification.componentLabels" -}}
{{ include "notification.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "notification.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The Secret holding DATABASE_URL, JWT_KEYS and REDIS_URL. */}}
{{- define "notification.secretName" -}}
{{- default (include "notification.fullname" .) .Values.secret.existingSecret }}
{{- end }}

{{/* The Secret's environment: DATABASE_URL, and REDIS_URL when it holds one. */}}
{{- define "notification.storeEnv" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "notification.secretName" . }}
      key: DATABASE_URL
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "notification.secretName" . }}
      key: REDIS_URL
      optional: true
{{- /* Set here only if the Secret has it; otherwise the ConfigMap's (redis.clusterNodes), if any. */}}
- name: REDIS_CLUSTER_NODES
  valueFrom:
    secretKeyRef:
      name: {{ include "notification.secretName" . }}
      key: REDIS_CLUSTER_NODES
      optional: true
{{- end }}

{{/* An HTTP probe on the admin port: include with (dict "path" "/healthz" "probe" .Values.x.livenessProbe). */}}
{{- define "notification.probe" -}}
httpGet:
  path: {{ .path }}
  port: admin
{{- with .probe }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Refuses values that would deploy a broken release. */}}
{{- define "notification.validate" -}}
{{- if and .Values.redis.clusterNodes .Values.secret.redisClusterNodes (not .Values.secret.existingSecret) }}
{{- fail "set either redis.clusterNodes or secret.redisClusterNodes, not both" }}
{{- end }}
{{- if and (or .Values.redis.clusterNodes .Values.secret.redisClusterNodes) (eq (index (default dict .Values.gateway.env) "REDIS_SUBSCRIBE" | default "") "pattern") }}
{{- fail "REDIS_SUBSCRIBE=pattern has no sharded form: a Redis Cluster needs the default per-user subscriptions" }}
{{- end }}
{{- if gt (int .Values.ingest.replicas) (int .Values.kafka.partitions) }}
{{- fail (printf "ingest.replicas (%d) exceeds kafka.partitions (%d): the instances beyond the partition count would idle" (int .Values.ingest.replicas) (int .Values.kafka.partitions)) }}
{{- end }}
{{- $ingestEnv := default dict .Values.ingest.env }}
{{- $storeParallelism := int (default (default 2 .Values.ingest.storeParallelism) (index $ingestEnv "INGEST_STORE_PARALLELISM")) }}
{{- $ingestPool := int (default .Values.database.maxConnections (index $ingestEnv "DATABASE_MAX_CONNECTIONS")) }}
{{- if gt $storeParallelism $ingestPool }}
{{- fail (printf "ingest's store parallelism (%d) exceeds its database pool (%d, database.maxConnections): each concurrent store transaction holds a pooled connection, and one that waits 5 s for a connection is taken for a database outage" $storeParallelism $ingestPool) }}
{{- end }}
{{- if le (int .Values.ingest.terminationGracePeriodSeconds) (mul 2 (int .Values.ingest.shutdownDeadlineSeconds)) }}
{{- fail "ingest.terminationGracePeriodSeconds must exceed twice ingest.shutdownDeadlineSeconds (the store wait, then the publish wait)" }}
{{- end }}
{{- if le (int .Values.gateway.terminationGracePeriodSeconds) (add 10 (int .Values.gateway.preStopSleepSeconds)) }}
{{- fail "gateway.terminationGracePeriodSeconds must exceed gateway.preStopSleepSeconds plus the gateway's 10 s drain" }}
{{- end }}
{{- if and .Values.gateway.autoscaling.enabled (gt (int .Values.gateway.autoscaling.minReplicas) (int .Values.gateway.autoscaling.maxReplicas)) }}
{{- fail "gateway.autoscaling.minReplicas exceeds maxReplicas" }}
{{- end }}
{{- if and .Values.gateway.autoscaling.enabled (not .Values.gateway.autoscaling.targetCPUUtilizationPercentage) (not .Values.gateway.autoscaling.sessions.enabled) }}
{{- fail "gateway.autoscaling needs a metric: targetCPUUtilizationPercentage or sessions.enabled" }}
{{- end }}
{{- end }}
