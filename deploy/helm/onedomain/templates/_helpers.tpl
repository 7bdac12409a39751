{{/* Names ----------------------------------------------------------------------------------- */}}

{{- define "onedomain.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "onedomain.fullname" -}}
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

{{- define "onedomain.controlplane.fullname" -}}
{{- printf "%s-controlplane" (include "onedomain.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "onedomain.dataplane.fullname" -}}
{{- printf "%s-dataplane" (include "onedomain.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "onedomain.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "onedomain.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Labels ---------------------------------------------------------------------------------- */}}

{{- define "onedomain.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "onedomain.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: onedomain
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: include "onedomain.selectorLabels" (list . "dataplane") */}}
{{- define "onedomain.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "onedomain.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "onedomain.componentLabels" -}}
{{ include "onedomain.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "onedomain.image" -}}
{{- $root := index . 0 -}}
{{- $repo := index . 1 -}}
{{- $tag := default $root.Chart.AppVersion $root.Values.image.tag -}}
{{- if $root.Values.image.registry -}}
{{- printf "%s/%s:%s" (trimSuffix "/" $root.Values.image.registry) $repo $tag -}}
{{- else -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}
{{- end -}}

{{/* Drain: everything derives from .Values.drain.seconds (see values.yaml) ------------------- */}}

{{- define "onedomain.drain.timeout" -}}
{{- $t := int .Values.drain.seconds -}}
{{- if lt $t 12 -}}{{- fail (printf "drain.seconds must be at least 12, got %d" $t) -}}{{- end -}}
{{- $t -}}
{{- end -}}

{{- define "onedomain.drain.delay" -}}
{{- div (int (include "onedomain.drain.timeout" .)) 6 -}}
{{- end -}}

{{- define "onedomain.drain.spread" -}}
{{- div (int (include "onedomain.drain.timeout" .)) 6 -}}
{{- end -}}

{{- define "onedomain.drain.grace" -}}
{{- div (int (include "onedomain.drain.timeout" .)) 3 -}}
{{- end -}}

{{- define "onedomain.drain.preStop" -}}
{{- if eq .Values.dataplane.preStop "none" -}}0{{- else -}}{{- include "onedomain.drain.delay" . -}}{{- end -}}
{{- end -}}

{{- define "onedomain.drain.readinessPeriod" -}}
{{- div (int (include "onedomain.drain.timeout" .)) 12 -}}
{{- end -}}

{{/* preStop + drain.timeout + drain.delay + 5s: the data plane has exited (drain.timeout after
     SIGTERM) well before the kubelet's SIGKILL, even with no preStop hook. */}}
{{- define "onedomain.drain.terminationGrace" -}}
{{- $t := int (include "onedomain.drain.timeout" .) -}}
{{- add (int (include "onedomain.drain.preStop" .)) $t (int (include "onedomain.drain.delay" .)) 5 -}}
{{- end -}}

{{/* Secrets --------------------------------------------------------------------------------- */}}

{{- define "onedomain.adminToken.secretName" -}}
{{- if .Values.adminToken.existingSecret -}}
{{- .Values.adminToken.existingSecret -}}
{{- else if .Values.adminToken.create -}}
{{- printf "%s-admin-token" (include "onedomain.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "onedomain.nodeToken.secretName" -}}
{{- default (printf "%s-node-token" (include "onedomain.fullname" .)) .Values.nodeToken.existingSecret -}}
{{- end -}}

{{- define "onedomain.tls.secretName" -}}
{{- if .Values.tls.existingSecret -}}
{{- .Values.tls.existingSecret -}}
{{- else if .Values.tls.create -}}
{{- printf "%s-tls" (include "onedomain.fullname" .) -}}
{{- else -}}
{{- fail "tls.enabled needs tls.existingSecret, or tls.create with tls.certificate and tls.key" -}}
{{- end -}}
{{- end -}}

{{/* Paths inside the containers --------------------------------------------------------------- */}}
{{- define "onedomain.paths.config" -}}/etc/onedomain/config{{- end -}}
{{- define "onedomain.paths.tls" -}}/etc/onedomain/tls{{- end -}}
{{- define "onedomain.paths.cpTls" -}}/etc/onedomain/controlplane-tls{{- end -}}
{{- define "onedomain.paths.etcdTls" -}}/etc/onedomain/etcd-tls{{- end -}}
{{- define "onedomain.paths.auth" -}}/etc/onedomain/auth{{- end -}}
{{- define "onedomain.paths.nodeToken" -}}/etc/onedomain/node-token{{- end -}}
{{- define "onedomain.paths.state" -}}/var/lib/onedomain{{- end -}}
{{- define "onedomain.paths.cache" -}}/var/cache/onedomain{{- end -}}

{{/* The Snapshot (proto YAML) shared by the control plane's seed and the data planes' fallback.
     The chart owns the listener and the WebSocket drain timers; the rest comes from values. */}}
{{- define "onedomain.snapshot" -}}
{{- $s := deepCopy .Values.snapshot -}}
{{- if hasKey $s "listeners" -}}
{{- fail "snapshot.listeners is set by the chart: use dataplane.ports.http, dataplane.listener and tls.*" -}}
{{- end -}}
{{- $listener := dict "name" (ternary "https" "http" .Values.tls.enabled) "address" "0.0.0.0" "port" (int .Values.dataplane.ports.http) -}}
{{- if .Values.tls.enabled -}}
{{- $_ := include "onedomain.tls.secretName" . -}}
{{- $tlsDir := include "onedomain.paths.tls" . -}}
{{- $_ := set $listener "tls" (dict "cert_file" (printf "%s/tls.crt" $tlsDir) "key_file" (printf "%s/tls.key" $tlsDir) "min_version" .Values.tls.minVersion) -}}
{{- end -}}
{{- with .Values.dataplane.listener.forwardedProto -}}
{{- $_ := set $listener "forwarded_proto" . -}}
{{- end -}}
{{- with .Values.dataplane.listener.limits -}}
{{- $_ := set $listener "limits" . -}}
{{- end -}}
{{- $_ := set $s "listeners" (list $listener) -}}
{{- $ws := dict -}}
{{- if hasKey $s "websocket_policy" -}}{{- $ws = get $s "websocket_policy" -}}{{- end -}}
{{- range $k := list "drain_spread" "drain_grace" "drainSpread" "drainGrace" -}}
{{- if hasKey $ws $k -}}
{{- fail (printf "snapshot.websocket_policy.%s is derived from drain.seconds: set that instead" $k) -}}
{{- end -}}
{{- end -}}
{{- range $i, $r := (default list (get $s "routes")) -}}
{{- if and (hasKey $r "websocket_policy") (or (hasKey $r.websocket_policy "drain_spread") (hasKey $r.websocket_policy "drain_grace")) -}}
{{- fail (printf "snapshot.routes[%d].websocket_policy drain timers are derived from drain.seconds: remove them" $i) -}}
{{- end -}}
{{- end -}}
{{- $_ := set $ws "drain_spread" (printf "%ss" (include "onedomain.drain.spread" .)) -}}
{{- $_ := set $ws "drain_grace" (printf "%ss" (include "onedomain.drain.grace" .)) -}}
{{- $_ := set $s "websocket_policy" $ws -}}
{{- /* In the order of snapshot.proto, for readers; unknown keys last, for the binary to reject. */ -}}
{{- $order := list "version" "site" "listeners" "clusters" "routes" "cookie_policy" "websocket_policy" -}}
{{- range $k := $order -}}
{{- if hasKey $s $k }}
{{ toYaml (dict $k (get $s $k)) }}
{{- end -}}
{{- end -}}
{{- range $k, $v := $s -}}
{{- if not (has $k $order) }}
{{ toYaml (dict $k $v) }}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Pod and container security contexts: non-root, read-only root, no capabilities.
     podSecurityContext takes (dict "Values" .Values "seccomp" PROFILE); no PROFILE: the
     runtime's default seccomp profile. */}}
{{- define "onedomain.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.fsGroup }}
seccompProfile:
  {{- toYaml (.seccomp | default (dict "type" "RuntimeDefault")) | nindent 2 }}
{{- end -}}

{{- define "onedomain.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}
