{{/*
Labels. The chart renders what k8s/base renders (kustomize adds app.kubernetes.io/name and part-of
to every object and selector); Helm's own labels go on top-level metadata only, never on selectors
or pod templates (the drift test removes exactly these).
*/}}
{{- define "l2lb.selectorLabels" -}}
app.kubernetes.io/name: l2lb
app.kubernetes.io/part-of: l2lb
{{- end }}

{{- define "l2lb.labels" -}}
{{ include "l2lb.selectorLabels" . }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{/* metadata.labels of an object of component $c: (dict "ctx" $ "component" "allocator") */}}
{{- define "l2lb.componentLabels" -}}
app.kubernetes.io/component: {{ .component }}
{{ include "l2lb.labels" .ctx }}
{{- end }}

{{- define "l2lb.componentSelector" -}}
app.kubernetes.io/component: {{ .component }}
{{ include "l2lb.selectorLabels" .ctx }}
{{- end }}

{{- define "l2lb.image" -}}
{{- $img := index .ctx.Values.images .name -}}
{{- printf "%s:%s" $img.repository (default .ctx.Chart.AppVersion $img.tag) -}}
{{- end }}

{{/* the Secret with the Redis passwords and DSNs */}}
{{- define "l2lb.redisSecret" -}}
{{- default "l2lb-redis" .Values.redis.auth.existingSecret -}}
{{- end }}

{{/* key of a service's DSN in that Secret */}}
{{- define "l2lb.dsnKey" -}}
{{- if eq .ctx.Values.redis.mode "single" -}}
{{ .service }}-dsn-single
{{- else -}}
{{ .service }}-dsn
{{- end -}}
{{- end }}

{{- define "l2lb.poolKinds" -}}
{{- if eq .Values.migration.mode "cilium" }}l2lb,cilium{{ else if eq .Values.migration.mode "metallb" }}l2lb,metallb{{ else }}l2lb{{ end -}}
{{- end }}

{{- define "l2lb.announcerOptIn" -}}
{{- if or .Values.announcer.optIn (ne .Values.migration.mode "none") }}true{{ end -}}
{{- end }}

{{/* --le-* flags when set; $le = .Values.<svc>.leaderElection */}}
{{- define "l2lb.leaderElectionArgs" -}}
{{- $le := . -}}
{{- if $le.leaseDuration }}
- --le-lease-duration={{ $le.leaseDuration }}
{{- end }}
{{- if $le.renewDeadline }}
- --le-renew-deadline={{ $le.renewDeadline }}
{{- end }}
{{- if $le.retryPeriod }}
- --le-retry-period={{ $le.retryPeriod }}
{{- end }}
{{- end }}

{{- define "l2lb.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* the Secret with the bearer token of the announcers' status API (announcer.metrics.expose) */}}
{{- define "l2lb.announcerMetricsSecret" -}}
{{- default "l2lb-announcer-metrics" .Values.announcer.metrics.tokenSecret -}}
{{- end }}
