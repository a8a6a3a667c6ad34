{{/* Chart name, cut to the 63 characters of a label value. */}}
{{- define "flowline.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: release-scoped, and the name of every object the chart creates. Cluster-scoped
objects (ClusterRoles, ClusterRoleBindings) carry it too, so two releases never collide.
*/}}
{{- define "flowline.fullname" -}}
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

{{- define "flowline.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "flowline.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flowline.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "flowline.labels" -}}
helm.sh/chart: {{ include "flowline.chart" . }}
{{ include "flowline.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "flowline.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "flowline.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "flowline.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The namespace holding the leader-election Lease. */}}
{{- define "flowline.leaseNamespace" -}}
{{- default .Release.Namespace .Values.leaderElection.leaseNamespace }}
{{- end }}

{{/*
The controller's environment: every setting of `flowline controller` (flags and FLOWLINE_*
variables, see `flowline controller --help`). Optional settings left empty are not set, so
the controller's own default (none) applies.
*/}}
{{- define "flowline.env" -}}
{{- $env := list }}
{{- /* Downward API: the pod's identity (event reporting instance, Lease holder and namespace). */}}
{{- $env = append $env (dict "name" "POD_NAME" "valueFrom" (dict "fieldRef" (dict "fieldPath" "metadata.name"))) }}
{{- $env = append $env (dict "name" "POD_NAMESPACE" "valueFrom" (dict "fieldRef" (dict "fieldPath" "metadata.namespace"))) }}
{{- $c := .Values.controller }}
{{- $d := .Values.flowDefaults }}
{{- $set := dict
  "FLOWLINE_WATCH_NAMESPACE" .Values.watchNamespace
  "FLOWLINE_LEADER_ELECTION" .Values.leaderElection.enabled
  "FLOWLINE_LEASE_NAME" .Values.leaderElection.leaseName
  "FLOWLINE_LEASE_NAMESPACE" .Values.leaderElection.leaseNamespace
  "FLOWLINE_HTTP_ADDR" (printf "0.0.0.0:%d" (int .Values.http.port))
  "FLOWLINE_WORKERS" $c.workers
  "FLOWLINE_DRIFT_INTERVAL_SECONDS" $c.driftIntervalSeconds
  "FLOWLINE_RECHECK_INTERVAL_SECONDS" $c.recheckIntervalSeconds
  "FLOWLINE_RUNNABLE_TIMEOUT_SECONDS" $c.runnableTimeoutSeconds
  "FLOWLINE_KEEP_SUCCEEDED_RUNS" $c.keepSucceededRuns
  "FLOWLINE_KEEP_FAILED_RUNS" $c.keepFailedRuns
  "FLOWLINE_DISCOVERY_INTERVAL_SECONDS" $c.discoveryIntervalSeconds
  "FLOWLINE_CACHE_EVICTION_INTERVAL_SECONDS" $c.cacheEvictionIntervalSeconds
  "FLOWLINE_TRACKING_CALLS_PER_SECOND" $c.trackingCallsPerSecond
  "FLOWLINE_TRACKING_HISTORY_CALLS_PER_SECOND" $c.trackingHistoryCallsPerSecond
  "FLOWLINE_EXECUTION_EVENTS" $c.executionEvents
  "FLOWLINE_EXECUTION_EVENTS_QUEUE_URL" $c.executionEventsQueueUrl
  "RUST_LOG" $c.logLevel
  "FLOWLINE_ALLOWED_ROLES" (join "," .Values.tenancy.allowedRoles)
  "FLOWLINE_ALLOWED_JOB_QUEUES" (join "," .Values.tenancy.allowedJobQueues)
  "FLOWLINE_ALLOWED_SECRETS" (join "," .Values.tenancy.allowedSecrets)
  "FLOWLINE_ALLOWED_TRIGGER_BUCKETS" (join "," .Values.tenancy.allowedTriggerBuckets)
  "AWS_REGION" .Values.aws.region
  "FLOWLINE_AWS_ACCOUNT" .Values.aws.accountId
  "AWS_ENDPOINT_URL" .Values.aws.endpointUrl
  "FLOWLINE_S3_ROOT" $d.s3Root
  "FLOWLINE_JOB_QUEUE" $d.jobQueue
  "FLOWLINE_JOB_ROLE" $d.jobRole
  "FLOWLINE_EXECUTION_ROLE" $d.executionRole
  "FLOWLINE_STATES_ROLE" $d.statesRole
  "FLOWLINE_EVENTS_ROLE" $d.eventsRole
  "FLOWLINE_NAME_PREFIX" $d.namePrefix
  "FLOWLINE_CONTAINER_REGISTRY" $d.containerRegistry
  "FLOWLINE_DEFAULT_IMAGE" $d.defaultImage
  "FLOWLINE_S3_ENDPOINT" $d.s3Endpoint
  "FLOWLINE_S3_FORCE_PATH_STYLE" $d.s3ForcePathStyle
  "FLOWLINE_S3_SSE" $d.s3ServerSideEncryption
  "FLOWLINE_S3_KMS_KEY_ID" $d.s3KmsKeyId
  "FLOWLINE_S3_RETRY_COUNT" $d.s3RetryCount
  "FLOWLINE_S3_WORKER_COUNT" $d.s3WorkerCount
  "FLOWLINE_STEP_TIMEOUT_SECONDS" $d.stepTimeoutSeconds
  "FLOWLINE_SECRETS_REGION" $d.secretsRegion
  "FLOWLINE_SECRETS_ROLE" $d.secretsRole
}}
{{- /* Booleans and numbers are always set (false and 0 are values); strings only when non-empty. */}}
{{- range $name := keys $set | sortAlpha }}
{{- $value := get $set $name }}
{{- if or (kindIs "bool" $value) (kindIs "float64" $value) (kindIs "int" $value) (kindIs "int64" $value) (ne (toString $value) "") }}
{{- $env = append $env (dict "name" $name "value" (toString $value)) }}
{{- end }}
{{- end }}
{{- /* The Lease lives in the pod's own namespace unless another one is named. */}}
{{- if not .Values.leaderElection.leaseNamespace }}
{{- $env = append $env (dict "name" "FLOWLINE_LEASE_NAMESPACE" "valueFrom" (dict "fieldRef" (dict "fieldPath" "metadata.namespace"))) }}
{{- end }}
{{- toYaml $env }}
{{- end }}

{{/*
Name of the cluster-scoped objects (ClusterRoles, ClusterRoleBindings): release names are
unique only within a namespace, so the namespace is part of it.
*/}}
{{- define "flowline.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "flowline.fullname" .) | trunc 253 | trimSuffix "-" }}
{{- end }}
