{{/* The chart's name, shortened to what a label allows. */}}
{{- define "weir.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's base name. Pod names add "-coordinator-N" / "-worker-N" and
must stay valid DNS labels, so it is kept to 40 characters.
*/}}
{{- define "weir.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else if contains (include "weir.name" .) .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "weir.name" .) | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "weir.coordinator" -}}{{ include "weir.fullname" . }}-coordinator{{- end }}
{{- define "weir.worker" -}}{{ include "weir.fullname" . }}-worker{{- end }}

{{- define "weir.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "weir.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component ("coordinator" or "worker"). */}}
{{- define "weir.selectorLabels" -}}
app.kubernetes.io/name: {{ include "weir.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "weir.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "weir.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "weir.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ $tag }}
{{- end -}}
{{- end }}

{{/* The coordinator's gRPC address, as workers dial it. */}}
{{/*
The raft group's members (`--peers`): every coordinator pod by its name in
the headless Service, ids by ordinal.
*/}}
{{- define "weir.coordinatorPeers" -}}
{{- $peers := list -}}
{{- range $i := until (int .Values.coordinator.replicas) -}}
{{- $peers = append $peers (printf "%d=%s-%d.%s-headless.%s.svc.%s:%v" $i (include "weir.coordinator" $) $i (include "weir.coordinator" $) $.Release.Namespace $.Values.clusterDomain $.Values.coordinator.ports.grpc) -}}
{{- end -}}
{{- join "," $peers -}}
{{- end }}

{{/*
Where workers dial the coordinator: the Service; with a raft group, every
coordinator pod by its headless name (reachable while not ready, as during
an election), and the worker finds the leader among them.
*/}}
{{- define "weir.coordinatorGrpc" -}}
{{- if gt (int .Values.coordinator.replicas) 1 -}}
{{- $pods := list -}}
{{- range $i := until (int .Values.coordinator.replicas) -}}
{{- $pods = append $pods (printf "%s-%d.%s-headless.%s.svc.%s:%v" (include "weir.coordinator" $) $i (include "weir.coordinator" $) $.Release.Namespace $.Values.clusterDomain $.Values.coordinator.ports.grpc) -}}
{{- end -}}
{{- join "," $pods -}}
{{- else -}}
{{ include "weir.coordinator" . }}.{{ .Release.Namespace }}.svc.{{ .Values.clusterDomain }}:{{ .Values.coordinator.ports.grpc }}
{{- end -}}
{{- end }}

{{/*
The job spec as the coordinator reads it: the values' spec, with what the
chart decides filled in (the state directory on the pod's volume, the
environment variables the chart sets from Secrets).
*/}}
{{- define "weir.jobSpec" -}}
{{- $spec := deepCopy .Values.job.spec -}}
{{- $state := default dict $spec.state -}}
{{- $_ := set $state "dir" "/var/lib/weir/data" -}}
{{- $_ := set $spec "state" $state -}}
{{- $source := default dict $spec.source -}}
{{- if and .Values.secrets.pulsarToken.existingSecret $source.pulsar -}}
{{- $pulsar := $source.pulsar -}}
{{- if not $pulsar.token_env -}}
{{- $_ := set $pulsar "token_env" "PULSAR_TOKEN" -}}
{{- end -}}
{{- end -}}
{{- toYaml $spec -}}
{{- end }}

{{/* The environment variable the Pulsar token is read from, if any. */}}
{{- define "weir.pulsarTokenEnv" -}}
{{- $source := default dict .Values.job.spec.source -}}
{{- $pulsar := default dict $source.pulsar -}}
{{- default "PULSAR_TOKEN" $pulsar.token_env -}}
{{- end }}

{{/* The environment variable the ClickHouse password is read from. */}}
{{- define "weir.clickhousePasswordEnv" -}}
{{- $sink := default dict .Values.job.spec.sink -}}
{{- $ch := default dict $sink.clickhouse -}}
{{- default "CLICKHOUSE_PASSWORD" $ch.password_env -}}
{{- end }}

{{/*
Environment both roles share: logging, S3 (region, endpoint, static keys
when IRSA is not used), and the secrets the job reads.
*/}}
{{- define "weir.env" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: WEIR_LOG
  value: {{ .Values.logLevel | quote }}
- name: WEIR_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
{{- with .Values.s3.region }}
- name: AWS_REGION
  value: {{ . | quote }}
{{- end }}
{{- with .Values.s3.endpoint }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.s3.credentialsSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: AWS_ACCESS_KEY_ID
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: AWS_SECRET_ACCESS_KEY
{{- end }}
{{- with .Values.secrets.clickhousePassword.existingSecret }}
- name: {{ include "weir.clickhousePasswordEnv" $ }}
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.secrets.clickhousePassword.key }}
{{- end }}
{{- with .Values.secrets.pulsarToken.existingSecret }}
- name: {{ include "weir.pulsarTokenEnv" $ }}
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.secrets.pulsarToken.key }}
{{- end }}
{{- with .Values.secrets.clusterSecret.existingSecret }}
- name: WEIR_CLUSTER_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.secrets.clusterSecret.key }}
{{- end }}
{{- end }}

{{/*
Refuses value combinations that would render but not run.
*/}}
{{- define "weir.validate" -}}
{{- if and .Values.tls.enabled (not .Values.tls.existingSecret) -}}
{{- fail "tls.enabled needs tls.existingSecret: a kubernetes.io/tls Secret with tls.crt, tls.key and ca.crt" -}}
{{- end -}}
{{- if and .Values.secrets.adminToken.forReads (not .Values.secrets.adminToken.existingSecret) -}}
{{- fail "secrets.adminToken.forReads needs secrets.adminToken.existingSecret" -}}
{{- end -}}
{{- if and (gt (int .Values.coordinator.replicas) 1) (not .Values.coordinator.raft.persistence.enabled) -}}
{{- fail "coordinator.replicas: 3 needs coordinator.raft.persistence.enabled: a coordinator that loses its raft store cannot rejoin the group" -}}
{{- end -}}
{{- $ckpt := default dict .Values.job.spec.checkpoint -}}
{{- $store := default "" $ckpt.store -}}
{{- if and (not (hasPrefix "s3://" $store)) (not .Values.allowLocalCheckpointStore) -}}
{{- fail "job.spec.checkpoint.store must be s3://BUCKET/PREFIX: every pod must reach the same checkpoints (set allowLocalCheckpointStore for a directory on a shared volume)" -}}
{{- end -}}
{{- end }}

{{/*
TLS flags of every process (the mounted Secret's files); with tls.enabled.
*/}}
{{- define "weir.tlsArgs" -}}
- --tls-cert=/etc/weir-tls/tls.crt
- --tls-key=/etc/weir-tls/tls.key
- --tls-ca=/etc/weir-tls/ca.crt
{{- end }}

{{/*
The TLS Secret's volume mount and volume; with tls.enabled.
*/}}
{{- define "weir.tlsVolumeMount" -}}
- name: tls
  mountPath: /etc/weir-tls
  readOnly: true
{{- end }}

{{- define "weir.tlsVolume" -}}
- name: tls
  secret:
    secretName: {{ .Values.tls.existingSecret }}
{{- end }}
