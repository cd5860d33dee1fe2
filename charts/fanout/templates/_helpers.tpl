{{/*
Names, labels and images shared by the templates.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "fanout.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "<release>-fanout" (or the release name when it already contains the chart name), or fullnameOverride. */}}
{{- define "fanout.fullname" -}}
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

{{/* "fanout-0.1.0", for the helm.sh/chart label. */}}
{{- define "fanout.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select one component's pods. Call with (dict "ctx" $ "component" "operator"). */}}
{{- define "fanout.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fanout.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Labels of every object. Call with (dict "ctx" $ "component" "operator"). */}}
{{- define "fanout.labels" -}}
helm.sh/chart: {{ include "fanout.chart" .ctx }}
{{ include "fanout.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: fanout
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The chart's image: repository and tag (the appVersion unless image.tag is set). */}}
{{- define "fanout.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* The default pool's worker image: sfuWorker.image, falling back to the chart's. */}}
{{- define "fanout.workerImage" -}}
{{- $repository := .Values.sfuWorker.image.repository | default .Values.image.repository }}
{{- $tag := .Values.sfuWorker.image.tag | default .Values.image.tag | default .Chart.AppVersion }}
{{- printf "%s:%s" $repository $tag }}
{{- end }}

{{/* Name of the operator's ServiceAccount. */}}
{{- define "fanout.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- .Values.operator.serviceAccount.name | default (printf "%s-operator" (include "fanout.fullname" .)) }}
{{- else }}
{{- .Values.operator.serviceAccount.name | default "default" }}
{{- end }}
{{- end }}

{{/* Name of the signalling ServiceAccount. */}}
{{- define "fanout.signalling.serviceAccountName" -}}
{{- if .Values.signalling.serviceAccount.create }}
{{- .Values.signalling.serviceAccount.name | default (printf "%s-signalling" (include "fanout.fullname" .)) }}
{{- else }}
{{- .Values.signalling.serviceAccount.name | default "default" }}
{{- end }}
{{- end }}

{{/* The Lease the operator replicas elect a leader on. */}}
{{- define "fanout.operator.leaseName" -}}
{{- .Values.operator.leaderElection.leaseName | default (printf "%s-operator" (include "fanout.fullname" .)) }}
{{- end }}

{{/* Name of the Secret with the workers' API token. */}}
{{- define "fanout.workerTokenSecretName" -}}
{{- .Values.workerApiToken.existingSecret | default (printf "%s-worker-token" (include "fanout.fullname" .)) }}
{{- end }}

{{/* Name of the Secret with the JWT secret or public key. */}}
{{- define "fanout.jwtSecretName" -}}
{{- .Values.signalling.jwt.existingSecret | default (printf "%s-jwt" (include "fanout.fullname" .)) }}
{{- end }}

{{/* Key of the JWT secret or public key in that Secret. */}}
{{- define "fanout.jwtSecretKey" -}}
{{- if .Values.signalling.jwt.secretKey }}
{{- .Values.signalling.jwt.secretKey }}
{{- else if eq (include "fanout.jwtAlgorithm" .) "HS256" }}
{{- "secret" }}
{{- else }}
{{- "public-key.pem" }}
{{- end }}
{{- end }}

{{/* signalling.jwt.algorithm, upper-cased and checked. */}}
{{- define "fanout.jwtAlgorithm" -}}
{{- $algorithm := upper .Values.signalling.jwt.algorithm }}
{{- if not (has $algorithm (list "HS256" "RS256" "ES256")) }}
{{- fail (printf "signalling.jwt.algorithm must be HS256, RS256 or ES256, not %q" .Values.signalling.jwt.algorithm) }}
{{- end }}
{{- $algorithm }}
{{- end }}

{{/* Name of the default SfuWorker. */}}
{{- define "fanout.sfuWorkerName" -}}
{{- .Values.sfuWorker.name | default (printf "%s-worker" (include "fanout.fullname" .)) | trunc 50 | trimSuffix "-" }}
{{- end }}

{{/*
A random value that stays the same across upgrades: the existing Secret's value for that key
when there is one (lookup), a new random one otherwise. Already base64-encoded for data:.
Call with (dict "ctx" $ "name" "<secret name>" "key" "<key>").
*/}}
{{- define "fanout.stableRandom" -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace .name | default dict }}
{{- $data := get $existing "data" | default dict }}
{{- get $data .key | default (randAlphaNum 48 | b64enc) }}
{{- end }}

{{/* Name of the Secret with the TURN REST API shared secret. */}}
{{- define "fanout.turnSecretName" -}}
{{- .Values.turn.existingSecret | default (printf "%s-turn" (include "fanout.fullname" .)) }}
{{- end }}

{{/*
The TURN URLs signalling hands out, comma-separated: turn.urls, or else the chart's coturn at
turn.coturn.host (TLS first: it passes the strictest firewalls).
*/}}
{{- define "fanout.turnUrls" -}}
{{- if .Values.turn.urls }}
{{- join "," .Values.turn.urls }}
{{- else if .Values.turn.coturn.enabled }}
{{- $c := .Values.turn.coturn }}
{{- $host := required "turn.coturn.host (the name browsers reach coturn at) is required with turn.coturn.enabled" $c.host }}
{{- $urls := list }}
{{- if $c.tls.enabled }}
{{- $urls = append $urls (printf "turns:%s:%d?transport=tcp" $host ($c.tls.port | int)) }}
{{- end }}
{{- if gt ($c.plainPort | int) 0 }}
{{- $urls = append $urls (printf "turn:%s:%d?transport=udp" $host ($c.plainPort | int)) }}
{{- $urls = append $urls (printf "turn:%s:%d?transport=tcp" $host ($c.plainPort | int)) }}
{{- end }}
{{- if not $urls }}
{{- fail "turn.coturn needs tls.enabled or a plainPort: it would listen nowhere" }}
{{- end }}
{{- join "," $urls }}
{{- else }}
{{- fail "turn.enabled needs turn.urls (an existing TURN service) or turn.coturn.enabled" }}
{{- end }}
{{- end }}

{{/*
Whether the chart deploys its own Redis: bundled on, and no Redis of yours named.
*/}}
{{- define "fanout.redis.bundled" -}}
{{- if and .Values.redis.bundled.enabled (not .Values.redis.url) (not .Values.redis.existingSecret) -}}
true
{{- end -}}
{{- end -}}
