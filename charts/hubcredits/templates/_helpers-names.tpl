{{- /*
  Names of the chart's objects. A parent chart can call these helpers.
*/}}

{{- define "hubcredits.name" -}}
{{- .Values.nameOverride | default .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- /* Full name of namespaced objects. */}}
{{- define "hubcredits.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "hubcredits.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- /* Cluster-scoped objects carry the release namespace: one release per hub namespace never collides. */}}
{{- define "hubcredits.clusterName" -}}
{{- printf "%s-%s" (include "hubcredits.fullname" .) .Release.Namespace | trunc 52 | trimSuffix "-" }}
{{- end }}

{{- define "hubcredits.hubNamespace" -}}
{{- .Values.hubNamespace | default .Release.Namespace }}
{{- end }}

{{- define "hubcredits.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- .Values.serviceAccount.name | default (include "hubcredits.fullname" .) }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "hubcredits.webhookServiceName" -}}
{{- printf "%s-webhook" (include "hubcredits.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "hubcredits.metricsServiceName" -}}
{{- printf "%s-metrics" (include "hubcredits.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "hubcredits.webhookSecretName" -}}
{{- printf "%s-webhook-cert" (include "hubcredits.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- /* The ConfigMap, in the hub namespace, that keeps deleted accounts' tombstones (--tombstone-configmap). */}}
{{- define "hubcredits.tombstonesName" -}}
{{- printf "%s-tombstones" (include "hubcredits.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "hubcredits.certificateName" -}}
{{- printf "%s-webhook" (include "hubcredits.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "hubcredits.issuerName" -}}
{{- printf "%s-selfsigned" (include "hubcredits.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "hubcredits.mutatingWebhookName" -}}
{{- printf "%s-mutating" (include "hubcredits.clusterName" .) }}
{{- end }}

{{- define "hubcredits.validatingWebhookName" -}}
{{- printf "%s-validating" (include "hubcredits.clusterName" .) }}
{{- end }}

{{- define "hubcredits.hubTokenKey" -}}
{{- .Values.hubAPI.tokenSecret.key | default (printf "hub.services.%s.apiToken" .Values.hubAPI.serviceName) }}
{{- end }}
