{{- /* Adapted from github.com/elastic/crd-ref-docs v0.3.0, templates/markdown/type_members.tpl (Apache License 2.0). */ -}}
{{- define "type_members" -}}
{{- $field := . -}}
{{- if eq $field.Name "metadata" -}}
Refer to Kubernetes API documentation for fields of `metadata`.
{{- else -}}
{{ markdownRenderFieldDoc $field.Doc }}
{{- end -}}
{{- end -}}
