{{- /*
  Labels, following Z2JH's conventions (jupyterhub/templates/_helpers.tpl):
  the legacy component/app/release/chart/heritage labels plus
  app.kubernetes.io/*. Selectors (matchLabels) use component, app and
  release only. The component is the folder of the template
  (templates/controller/... -> controller) unless the context sets
  componentLabel, e.g. (merge (dict "componentLabel" "x") .).

  The operator's pods are never labelled component: singleuser-server, so the
  pod webhook never sees them.
*/}}

{{- define "hubcredits.componentLabel" -}}
{{- if .componentLabel }}
{{- .componentLabel }}
{{- else }}
{{- .Template.Name | dir | base }}
{{- end }}
{{- end }}

{{- define "hubcredits.chartLabel" -}}
{{- printf "%s-%s" .Chart.Name (.Chart.Version | replace "+" "_") | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "hubcredits.matchLabels" -}}
component: {{ include "hubcredits.componentLabel" . }}
app: {{ include "hubcredits.name" . }}
release: {{ .Release.Name }}
{{- end }}

{{- define "hubcredits.labels" -}}
{{ include "hubcredits.matchLabels" . }}
chart: {{ include "hubcredits.chartLabel" . }}
heritage: {{ .Release.Service }}
app.kubernetes.io/name: {{ include "hubcredits.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: {{ include "hubcredits.componentLabel" . }}
app.kubernetes.io/part-of: hubcredits
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "hubcredits.chartLabel" . }}
{{- end }}

{{- /*
  A LabelSelector (matchLabels/matchExpressions) as a selector string for
  --singleuser-selector, so the operator and the pod webhook select the same
  pods.
*/}}
{{- define "hubcredits.selectorString" -}}
{{- $parts := list }}
{{- range $k, $v := .matchLabels }}
{{- $parts = append $parts (printf "%s=%s" $k $v) }}
{{- end }}
{{- range .matchExpressions }}
{{- if eq .operator "In" }}
{{- $parts = append $parts (printf "%s in (%s)" .key (join "," .values)) }}
{{- else if eq .operator "NotIn" }}
{{- $parts = append $parts (printf "%s notin (%s)" .key (join "," .values)) }}
{{- else if eq .operator "Exists" }}
{{- $parts = append $parts .key }}
{{- else if eq .operator "DoesNotExist" }}
{{- $parts = append $parts (printf "!%s" .key) }}
{{- end }}
{{- end }}
{{- join "," $parts }}
{{- end }}

{{- /*
  The namespaceSelector of both webhooks: the hub namespace only, and never
  kube-system or (when it differs from the hub's) the operator's namespace.
*/}}
{{- define "hubcredits.webhookNamespaceSelector" -}}
{{- $hub := include "hubcredits.hubNamespace" . }}
{{- $never := list "kube-system" }}
{{- if ne $hub .Release.Namespace }}
{{- $never = append $never .Release.Namespace }}
{{- end }}
matchExpressions:
  - key: kubernetes.io/metadata.name
    operator: In
    values:
      - {{ $hub | quote }}
  - key: kubernetes.io/metadata.name
    operator: NotIn
    values:
      {{- range $never }}
      - {{ . | quote }}
      {{- end }}
{{- end }}

{{- define "hubcredits.allowedCreators" -}}
{{- if kindIs "slice" .Values.billing.allowedCreators }}
{{- join "," .Values.billing.allowedCreators }}
{{- else }}
{{- printf "system:serviceaccount:%s:%s" (include "hubcredits.hubNamespace" .) .Values.hubServiceAccount }}
{{- end }}
{{- end }}

{{- define "hubcredits.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- /* Fail early on combinations the schema cannot express. */}}
{{- define "hubcredits.validate" -}}
{{- $hub := include "hubcredits.hubNamespace" . }}
{{- if eq $hub "kube-system" }}
{{- fail "hubNamespace must not be kube-system" }}
{{- end }}
{{- $ml := .Values.webhooks.pods.objectSelector.matchLabels | default dict }}
{{- if ne (get $ml "component") "singleuser-server" }}
{{- fail "webhooks.pods.objectSelector.matchLabels must keep component: singleuser-server (the operator bills only KubeSpawner's user pods)" }}
{{- end }}
{{- end }}
