{{/* Chart name, truncated to the 63 characters a label allows. */}}
{{- define "keeper-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: the release name, plus the chart name unless it already holds it. */}}
{{- define "keeper-operator.fullname" -}}
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

{{- define "keeper-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "keeper-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "keeper-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "keeper-operator.labels" -}}
helm.sh/chart: {{ include "keeper-operator.chart" . }}
{{ include "keeper-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "keeper-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "keeper-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "keeper-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Leader election is needed as soon as more than one replica can run the controller. */}}
{{- define "keeper-operator.leaderElect" -}}
{{- if gt (int .Values.replicaCount) 1 }}true{{ end }}
{{- end }}

{{/*
Sharding: the label that assigns a KeeperSecret to a shard, and the shards as a JSON list: ""
for the default Deployment (every KeeperSecret without the label), then each of sharding.shards.
*/}}
{{- define "keeper-operator.shardKey" -}}
sharding.keeper-operator.dev/key
{{- end }}

{{- define "keeper-operator.shards" -}}
{{- prepend (.Values.sharding.shards | default list) "" | toJson }}
{{- end }}

{{/*
The parts of one shard's Deployment, called with (dict "root" $ "shard" NAME): the default
shard's ("") are the unsharded chart's, so turning sharding on changes none of its selectors
(immutable in a Deployment). A named shard's name, and its app.kubernetes.io/name, end in
-NAME: no selector of one shard matches another shard's Pods.
*/}}
{{- define "keeper-operator.shard.fullname" -}}
{{- $full := include "keeper-operator.fullname" .root }}
{{- if .shard }}
{{- printf "%s-%s" ($full | trunc (int (sub 62 (len .shard))) | trimSuffix "-") .shard }}
{{- else }}
{{- $full }}
{{- end }}
{{- end }}

{{- define "keeper-operator.shard.selectorLabels" -}}
{{- $name := include "keeper-operator.name" .root }}
{{- if .shard }}
{{- $name = printf "%s-%s" ($name | trunc (int (sub 62 (len .shard))) | trimSuffix "-") .shard }}
{{- end -}}
app.kubernetes.io/name: {{ $name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end }}

{{- define "keeper-operator.shard.labels" -}}
helm.sh/chart: {{ include "keeper-operator.chart" .root }}
{{ include "keeper-operator.shard.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end }}

{{/* The --watch-label-selector of a shard; none without sharding. */}}
{{- define "keeper-operator.shard.selector" -}}
{{- $key := include "keeper-operator.shardKey" .root }}
{{- if .shard }}
{{- printf "%s=%s" $key .shard }}
{{- else if .root.Values.sharding.shards }}
{{- printf "!%s" $key }}
{{- end }}
{{- end }}
