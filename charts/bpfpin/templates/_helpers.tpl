{{/*
Names. Object names start with the full name (the release name, plus the chart name when the
release name does not contain it): release "bpfpin" gives bpfpin-operator, bpfpin-agent.
*/}}
{{- define "bpfpin.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "bpfpin.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "bpfpin.operator.fullname" -}}
{{- printf "%s-operator" (include "bpfpin.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "bpfpin.agent.fullname" -}}
{{- printf "%s-agent" (include "bpfpin.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "bpfpin.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "bpfpin.labels" -}}
helm.sh/chart: {{ include "bpfpin.chart" . }}
app.kubernetes.io/name: {{ include "bpfpin.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: bpfpin
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "operator"). */}}
{{- define "bpfpin.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bpfpin.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "bpfpin.componentLabels" -}}
{{ include "bpfpin.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "bpfpin.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (include "bpfpin.operator.fullname" .) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "bpfpin.agent.serviceAccountName" -}}
{{- if .Values.agent.serviceAccount.create -}}
{{- default (include "bpfpin.agent.fullname" .) .Values.agent.serviceAccount.name -}}
{{- else -}}
{{- required "agent.serviceAccount.name is required when agent.serviceAccount.create is false" .Values.agent.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* An image reference: (dict "image" .Values.agent.image "ctx" $). A digest wins over the tag. */}}
{{- define "bpfpin.image" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) -}}
{{- end -}}
{{- end -}}
