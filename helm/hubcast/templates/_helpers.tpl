{{/*
Names, labels and the checks every rendering goes through.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "hubcast.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Prefix of every resource name: fullnameOverride, or the release name (plus the chart
name unless the release name already contains it). 63 characters at most; the longest
suffix added to it is "-metrics" / "-redis", so it is cut at 55.
*/}}
{{- define "hubcast.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 55 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* chart-version, for the helm.sh/chart label. */}}
{{- define "hubcast.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every resource, without the component. */}}
{{- define "hubcast.commonLabels" -}}
helm.sh/chart: {{ include "hubcast.chart" . }}
app.kubernetes.io/name: {{ include "hubcast.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: hubcast
{{- end }}

{{/* Labels of the hubcast resources (component "node"). */}}
{{- define "hubcast.labels" -}}
{{ include "hubcast.commonLabels" . }}
app.kubernetes.io/component: node
{{- end }}

{{/* Labels of the in-chart Redis resources (component "redis"). */}}
{{- define "hubcast.redisLabels" -}}
{{ include "hubcast.commonLabels" . }}
app.kubernetes.io/component: redis
{{- end }}

{{/* Labels that select the hubcast pods (never change them: Deployment selectors are immutable). */}}
{{- define "hubcast.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hubcast.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: node
{{- end }}

{{/* Labels that select the in-chart Redis pod. */}}
{{- define "hubcast.redisSelectorLabels" -}}
app.kubernetes.io/name: {{ include "hubcast.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end }}

{{/* The ServiceAccount the pods use. */}}
{{- define "hubcast.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hubcast.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image reference: repository@digest, or repository:tag (default appVersion). */}}
{{- define "hubcast.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding the keys: existingSecret, or the chart's own. */}}
{{- define "hubcast.secretName" -}}
{{- default (include "hubcast.fullname" .) .Values.auth.existingSecret }}
{{- end }}

{{/* Name of the in-chart Redis Deployment and Service. */}}
{{- define "hubcast.redisName" -}}
{{- printf "%s-redis" (include "hubcast.fullname" .) }}
{{- end }}

{{/*
HUBCAST_REDIS_URL built from redis.cluster.nodes or redis.sentinel.nodes (modes cluster
and sentinel). With redis.password.existingSecret the password is $(REDIS_PASSWORD), an
environment variable the Deployment defines just before it (the kubelet expands it).
*/}}
{{- define "hubcast.redisNodesUrl" -}}
{{- $r := .Values.redis }}
{{- $cluster := eq $r.mode "cluster" }}
{{- $tls := ternary $r.cluster.tls $r.sentinel.tls $cluster }}
{{- $scheme := printf "%s+%s" (ternary "rediss" "redis" $tls) $r.mode }}
{{- $auth := ternary ":$(REDIS_PASSWORD)@" "" (not (empty $r.password.existingSecret)) }}
{{- $hosts := join "," (ternary $r.cluster.nodes $r.sentinel.nodes $cluster) }}
{{- printf "%s://%s%s" $scheme $auth $hosts }}
{{- if not $cluster }}{{ printf "/%s" $r.sentinel.masterName }}{{ end }}
{{- end }}

{{/*
"true" when the in-chart Redis is deployed: redis.inChart.enabled=true, or left unset
(null) while nothing else names a Redis (standalone mode, no redis.url, no
redis.existingSecret). Empty otherwise.
*/}}
{{- define "hubcast.redisInChart" -}}
{{- $r := .Values.redis }}
{{- if kindIs "bool" $r.inChart.enabled }}
{{- if $r.inChart.enabled }}true{{ end }}
{{- else if and (eq $r.mode "standalone") (not $r.url) (not $r.existingSecret) }}
{{- print "true" }}
{{- end }}
{{- end }}

{{/*
Whether the chart's Secret holds key `name` (accessKey, tokenKey or masterKey): given as
a value, or generated (auth.generate, outside development mode). "true" or empty.
*/}}
{{- define "hubcast.chartHasKey" -}}
{{- $v := .root.Values }}
{{- if or (get $v.auth .name) (and $v.auth.generate (not $v.insecure)) }}true{{ end }}
{{- end }}

{{/*
The data of the chart's Secret, as JSON (key name inside the Secret → base64 value).
Each key is, in this order: the value given (auth.accessKey, …); else the one already in
`existing` (the Secret of a previous install or upgrade, which secret.yaml looks up), so
generated keys survive upgrades; else, with auth.generate, 48 random letters and digits.
`existing` is the lookup's result: an empty dict when there is none (and always under
`helm template` or a client-side dry run, which cannot reach the cluster).
*/}}
{{- define "hubcast.secretData" -}}
{{- $v := .root.Values }}
{{- $names := $v.auth.existingSecretKeys }}
{{- $old := (.existing | default dict).data | default dict }}
{{- $data := dict }}
{{- range $key := list "accessKey" "tokenKey" "masterKey" }}
{{- $name := get $names $key }}
{{- $given := get $v.auth $key }}
{{- if $given }}
{{- $_ := set $data $name (b64enc $given) }}
{{- else if and $v.auth.generate (not $v.insecure) }}
{{- if hasKey $old $name }}
{{- $_ := set $data $name (get $old $name) }}
{{- else }}
{{- $_ := set $data $name (randAlphaNum 48 | b64enc) }}
{{- end }}
{{- end }}
{{- end }}
{{- toJson $data }}
{{- end }}

{{/* Name of the metrics Service (also the Prometheus job label the ServiceMonitor gives). */}}
{{- define "hubcast.metricsName" -}}
{{- printf "%s-metrics" (include "hubcast.fullname" .) }}
{{- end }}

{{/* Path of the config file inside the pod. */}}
{{- define "hubcast.configPath" -}}
/etc/hubcast/hubcast.toml
{{- end }}

{{/*
The auth mode of every hub the node will serve, as a dict name → mode: the seven
default hubs (unless config.default_hubs is false), replaced or extended by config.hubs
(whose auth defaults to "token", as in the binary).
*/}}
{{- define "hubcast.hubAuthModes" -}}
{{- $modes := dict }}
{{- if .Values.config.default_hubs }}
{{- range $hub := list "spend" "tasks" "video-generation" "image-generation" "webhooks" "notifications" }}
{{- $_ := set $modes $hub "token" }}
{{- end }}
{{- $_ := set $modes "admin-notifications" "master-key" }}
{{- end }}
{{- range $hub := .Values.config.hubs }}
{{- $_ := set $modes $hub.name (default "token" $hub.auth) }}
{{- end }}
{{- toJson $modes }}
{{- end }}

{{/*
Checks that values.schema.json cannot express. Each failure names the values to change.
Included once, from the Deployment.
*/}}
{{- define "hubcast.validate" -}}
{{- $v := .Values }}
{{- /* Every problem is collected, then reported at once, so one try shows all that is missing. */}}
{{- $errs := list }}
{{- /* A Redis is always required: see values.yaml and docs/kubernetes.md. */}}
{{- $r := $v.redis }}
{{- $mode := $r.mode }}
{{- if and (ne $mode "cluster") $r.cluster.nodes }}
{{- $errs = append $errs (printf "redis.cluster.nodes is set, but redis.mode is %s: set redis.mode=cluster to use a Redis Cluster, or leave redis.cluster.nodes empty" $mode) }}
{{- end }}
{{- if and (ne $mode "sentinel") $r.sentinel.nodes }}
{{- $errs = append $errs (printf "redis.sentinel.nodes is set, but redis.mode is %s: set redis.mode=sentinel to use Redis Sentinel, or leave redis.sentinel.nodes empty" $mode) }}
{{- end }}
{{- if and (ne $mode "cluster") $r.cluster.tls }}
{{- $errs = append $errs (printf "redis.cluster.tls is set, but redis.mode is %s: it applies only with redis.mode=cluster" $mode) }}
{{- end }}
{{- if and (ne $mode "sentinel") $r.sentinel.tls }}
{{- $errs = append $errs (printf "redis.sentinel.tls is set, but redis.mode is %s: it applies only with redis.mode=sentinel" $mode) }}
{{- end }}
{{- if eq $mode "standalone" }}
{{- $redisSources := 0 }}
{{- if $r.url }}{{ $redisSources = add1 $redisSources }}{{ end }}
{{- if $r.existingSecret }}{{ $redisSources = add1 $redisSources }}{{ end }}
{{- if $r.inChart.enabled }}{{ $redisSources = add1 $redisSources }}{{ end }}
{{- if and (eq $redisSources 0) (not (include "hubcast.redisInChart" .)) }}
{{- $errs = append $errs "hubcast needs a Redis, and redis.inChart.enabled=false turns off the in-chart one: set redis.url (e.g. --set redis.url=redis://my-redis:6379), or redis.existingSecret (a Secret holding the URL), or leave redis.inChart.enabled unset (a single-replica Redis in this release); for a Redis Cluster set redis.mode=cluster and redis.cluster.nodes, for Sentinel redis.mode=sentinel and redis.sentinel.nodes (see values.yaml).\nIt is required even with one replica: a rolling update runs two pods at once, and without a shared backplane each delivers only to its own clients." }}
{{- end }}
{{- if gt $redisSources 1 }}
{{- $errs = append $errs "set only one of redis.url, redis.existingSecret and redis.inChart.enabled" }}
{{- end }}
{{- if $r.password.existingSecret }}
{{- $errs = append $errs "redis.password.existingSecret is used only with redis.mode=cluster or sentinel (the chart puts it into the URL it builds from the nodes); for a standalone Redis with a password put the whole URL in a Secret and set redis.existingSecret" }}
{{- end }}
{{- else }}
{{- $nodes := ternary $r.cluster.nodes $r.sentinel.nodes (eq $mode "cluster") }}
{{- if $r.inChart.enabled }}
{{- $errs = append $errs (printf "redis.inChart.enabled deploys a standalone Redis, but redis.mode is %s: turn one of them off" $mode) }}
{{- end }}
{{- if $r.url }}
{{- $errs = append $errs (printf "redis.url is for redis.mode=standalone; with redis.mode=%s list the nodes in redis.%s.nodes (or put the whole URL in a Secret and set redis.existingSecret)" $mode $mode) }}
{{- end }}
{{- if and (not $nodes) (not $r.existingSecret) }}
{{- $errs = append $errs (printf "redis.mode=%s needs its nodes: set redis.%s.nodes (host:port, e.g. --set 'redis.%s.nodes={redis-0.example:%s}'), or put the whole URL in a Secret and set redis.existingSecret" $mode $mode $mode (ternary "6379" "26379" (eq $mode "cluster"))) }}
{{- end }}
{{- if and $nodes $r.existingSecret }}
{{- $errs = append $errs (printf "set only one of redis.%s.nodes and redis.existingSecret (a Secret holding the whole URL)" $mode) }}
{{- end }}
{{- if and $r.existingSecret $r.password.existingSecret }}
{{- $errs = append $errs "redis.password.existingSecret applies to the URL the chart builds from the nodes; with redis.existingSecret the password belongs in that URL" }}
{{- end }}
{{- if and $r.existingSecret (ternary $r.cluster.tls $r.sentinel.tls (eq $mode "cluster")) }}
{{- $errs = append $errs (printf "redis.%s.tls applies to the URL the chart builds from the nodes; with redis.existingSecret write rediss+%s:// in that URL instead" $mode $mode) }}
{{- end }}
{{- end }}
{{- if and $r.url (regexMatch "^[a-z+]+://[^/@]*:[^/@]*@" $r.url) }}
{{- $errs = append $errs "redis.url holds a password, which would be stored in the release in plain text: put the URL in a Secret and set redis.existingSecret instead" }}
{{- end }}
{{- /* Keys: every key a served hub's auth mode needs. */}}
{{- if and (not $v.insecure) (not $v.auth.existingSecret) (not $v.auth.generate) }}
{{- if not $v.auth.accessKey }}
{{- $errs = append $errs "hubcast needs a publish API key: set auth.existingSecret (a Secret with access-key, token-key and master-key; see docs/kubernetes.md) or auth.accessKey, or leave auth.generate on" }}
{{- end }}
{{- $modes := include "hubcast.hubAuthModes" . | fromJson }}
{{- $tokenHubs := list }}
{{- $masterHubs := list }}
{{- range $hub, $mode := $modes }}
{{- if eq $mode "token" }}{{ $tokenHubs = append $tokenHubs $hub }}{{ end }}
{{- if eq $mode "master-key" }}{{ $masterHubs = append $masterHubs $hub }}{{ end }}
{{- end }}
{{- if and $tokenHubs (not $v.auth.tokenKey) }}
{{- $errs = append $errs (printf "hubs %s authenticate clients with tokens: set auth.tokenKey or auth.existingSecret, or leave auth.generate on" (join ", " $tokenHubs)) }}
{{- end }}
{{- if and $masterHubs (not $v.auth.masterKey) }}
{{- $errs = append $errs (printf "hubs %s authenticate clients with the master key: set auth.masterKey or auth.existingSecret, or leave auth.generate on" (join ", " $masterHubs)) }}
{{- end }}
{{- end }}
{{- if not $v.insecure }}
{{- $modes := include "hubcast.hubAuthModes" . | fromJson }}
{{- range $hub, $mode := $modes }}
{{- if and (eq $mode "connect-proxy") (not $v.auth.connectProxyUrl) }}
{{- $errs = append $errs (printf "hub '%s' uses auth = \"connect-proxy\": set auth.connectProxyUrl" $hub) }}
{{- end }}
{{- end }}
{{- end }}
{{- /* Settings the binary would refuse at start-up, caught at install time instead. */}}
{{- $t := $v.config.timeouts }}
{{- if ge (int64 $t.keepalive_ms) (int64 $t.client_timeout_ms) }}
{{- $errs = append $errs (printf "config.timeouts.keepalive_ms (%d) must be less than config.timeouts.client_timeout_ms (%d)" (int64 $t.keepalive_ms) (int64 $t.client_timeout_ms)) }}
{{- end }}
{{- $c := $v.config.cluster }}
{{- if gt (mul 2 (int64 $c.heartbeat_interval_ms)) (int64 $c.heartbeat_ttl_ms) }}
{{- $errs = append $errs (printf "config.cluster.heartbeat_interval_ms (%d) must be at most half of config.cluster.heartbeat_ttl_ms (%d)" (int64 $c.heartbeat_interval_ms) (int64 $c.heartbeat_ttl_ms)) }}
{{- end }}
{{- $pct := 0 }}
{{- range $i, $th := $v.config.flows.budget_thresholds }}
{{- if and (gt $i 0) (le (int64 $th.percent) (int64 $pct)) }}
{{- $errs = append $errs "config.flows.budget_thresholds: percents must be strictly ascending" }}
{{- end }}
{{- $pct = $th.percent }}
{{- end }}
{{- if and (not $v.config.default_hubs) (not $v.config.hubs) }}
{{- $errs = append $errs "config.default_hubs is false and config.hubs is empty: no hub would be served" }}
{{- end }}
{{- /* Shutdown: the endpoints controller's delay, then the drain, inside the grace period. */}}
{{- $drainSeconds := div (add (int64 $t.shutdown_ms) 999) 1000 }}
{{- $needed := add (int64 $v.lifecycle.preStopSleepSeconds) $drainSeconds }}
{{- if ge $needed (int64 $v.terminationGracePeriodSeconds) }}
{{- $errs = append $errs (printf "terminationGracePeriodSeconds (%d) must exceed lifecycle.preStopSleepSeconds (%d) + config.timeouts.shutdown_ms (%d s), or pods are killed mid-drain" (int64 $v.terminationGracePeriodSeconds) (int64 $v.lifecycle.preStopSleepSeconds) $drainSeconds) }}
{{- end }}
{{- if and $v.autoscaling.enabled (gt (int64 $v.autoscaling.minReplicas) (int64 $v.autoscaling.maxReplicas)) }}
{{- $errs = append $errs "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- if and $v.autoscaling.enabled (eq (int64 $v.autoscaling.targetCPUUtilizationPercentage) 0) (eq (int64 $v.autoscaling.targetMemoryUtilizationPercentage) 0) (not $v.autoscaling.connectionsPerPod.enabled) }}
{{- $errs = append $errs "autoscaling.enabled needs a metric: targetCPUUtilizationPercentage, targetMemoryUtilizationPercentage or connectionsPerPod.enabled" }}
{{- end }}
{{- if and $v.podDisruptionBudget.enabled (eq (toString $v.podDisruptionBudget.maxUnavailable) "") (eq (toString $v.podDisruptionBudget.minAvailable) "") }}
{{- $errs = append $errs "podDisruptionBudget.enabled needs maxUnavailable or minAvailable" }}
{{- end }}
{{- if $errs }}
{{- fail (printf "\n\nhubcast cannot be installed with these values (%d to fix):\n\n- %s\n" (len $errs) (join "\n\n- " $errs)) }}
{{- end }}
{{- end }}

{{/*
Label matchers that pick this release's series in PromQL: the job the ServiceMonitor
gives (the metrics Service's name) and the namespace, unless metrics.prometheusRule.selector is set.
*/}}
{{- define "hubcast.promSelector" -}}
{{- if .Values.metrics.prometheusRule.selector }}
{{- .Values.metrics.prometheusRule.selector }}
{{- else }}
{{- printf "job=%q, namespace=%q" (include "hubcast.metricsName" .) .Release.Namespace }}
{{- end }}
{{- end }}
