{{- /* Adapted from github.com/elastic/crd-ref-docs v0.3.0, templates/markdown/type.tpl (Apache License 2.0). */ -}}
{{- define "type" -}}
{{- $type := . -}}
{{- if markdownShouldRenderType $type -}}

#### {{ $type.Name }}

{{ if $type.IsAlias }}_Underlying type:_ _{{ markdownRenderTypeLink $type.UnderlyingType  }}_{{ end }}

{{ $type.Doc }}

{{ if $type.Validation -}}
_Validation:_
{{- range $type.Validation }}
- {{ . }}
{{- end }}
{{- end }}

{{ with index $type.Markers "kubebuilder:validation:XValidation" -}}
_Validation rules (CEL):_
{{- range . }}
- `{{ .Rule }}`: {{ .Message }}
{{- end }}
{{- end }}

{{ if $type.References -}}
_Appears in:_
{{- range $type.SortedReferences }}
- {{ markdownRenderTypeLink . }}
{{- end }}
{{- end }}

{{ if $type.Members -}}
| Field | Description | Default | Validation |
| --- | --- | --- | --- |
{{ if $type.GVK -}}
| `apiVersion` _string_ | `{{ $type.GVK.Group }}/{{ $type.GVK.Version }}` | | |
| `kind` _string_ | `{{ $type.GVK.Kind }}` | | |
{{ end -}}

{{ range $type.Members -}}
| `{{ .Name  }}` _{{ markdownRenderType .Type }}_ | {{ template "type_members" . }} | {{ markdownRenderDefault .Default }} | {{ template "field_validation" (dict "field" . "parent" $type) }} |
{{ end -}}

{{ end -}}

{{ if $type.EnumValues -}} 
| Field | Description |
| --- | --- |
{{ range $type.EnumValues -}}
| `{{ .Name }}` | {{ markdownRenderFieldDoc .Doc }} |
{{ end -}}
{{ end -}}


{{- end -}}
{{- end -}}

{{- /*
  The Validation cell of a field: "Required" (Optional is the default and
  left out), the OpenAPI validations with plain numbers, the list type, and
  the field's own CEL rules (a struct type's rules are listed under it).
*/ -}}
{{- define "field_validation" -}}
{{- $f := .field -}}
{{- $parts := list -}}
{{- range $f.Validation -}}
{{- if eq . "Required: {}" -}}
{{- $parts = append $parts "Required" -}}
{{- else if ne . "Optional: {}" -}}
{{- $parts = append $parts (. | replace "1e+15" "1000000000000000" | replace "1e+06" "1000000" | markdownRenderFieldDoc) -}}
{{- end -}}
{{- end -}}
{{- with index $f.Markers "listType" -}}
{{- $lt := printf "%v" (last .) -}}
{{- if eq $lt "map" -}}
{{- $parts = append $parts (printf "List: map keyed by `%v`" (last (index $f.Markers "listMapKey"))) -}}
{{- else -}}
{{- $parts = append $parts (printf "List: %s" $lt) -}}
{{- end -}}
{{- end -}}
{{- if not (and (eq $f.Type.Package .parent.Package) $f.Type.Fields) -}}
{{- range index $f.Markers "kubebuilder:validation:XValidation" -}}
{{- $parts = append $parts (printf "`%s`: %s" .Rule .Message | replace "|" "\\|") -}}
{{- end -}}
{{- end -}}
{{- join " <br />" $parts -}}
{{- end -}}
