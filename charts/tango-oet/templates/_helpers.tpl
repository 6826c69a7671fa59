{{/* Names ------------------------------------------------------------------ */}}

{{- define "tango-oet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tango-oet.fullname" -}}
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

{{- define "tango-oet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tango-oet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tango-oet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tango-oet.labels" -}}
helm.sh/chart: {{ include "tango-oet.chart" . }}
{{ include "tango-oet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: tango-device-server
app.kubernetes.io/part-of: tango-oet
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "tango-oet.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "tango-oet.tangoHost" -}}
{{- required "tangoHost is required: the host:port of an existing Tango database, e.g. --set tangoHost=tango-databaseds.tango:10000" .Values.tangoHost }}
{{- end }}

{{/* Where the ConfigMap (devices.json and the pod-ordinal lookup files) is mounted. */}}
{{- define "tango-oet.configDir" -}}/etc/tango-oet{{- end }}

{{/*
DNS name under which the pod publishes its CORBA endpoint; $(POD_NAME) is filled
in by the shell in the container.
*/}}
{{- define "tango-oet.publishHost" -}}
{{- printf "${POD_NAME}.%s.%s.svc.%s" (include "tango-oet.fullname" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{/*
Shell snippet: the instance name and first device of this pod, looked up by the
pod's ordinal (the suffix of POD_NAME) in the files the ConfigMap provides.
*/}}
{{- define "tango-oet.resolveInstance" -}}
ordinal="${POD_NAME##*-}"
instance="$(cat "{{ include "tango-oet.configDir" . }}/instance-${ordinal}")"
device="$(cat "{{ include "tango-oet.configDir" . }}/device-${ordinal}")"
{{- end }}

{{/* Property values ---------------------------------------------------------- */}}

{{/*
One Tango property value as the dsconfig list of strings. Integral numbers are
printed without exponent or decimals (YAML numbers arrive as float64).
*/}}
{{- define "tango-oet.propertyStrings" -}}
{{- $out := list }}
{{- $items := ternary . (list .) (kindIs "slice" .) }}
{{- range $v := $items }}
{{- if kindIs "bool" $v }}
{{- $out = append $out (ternary "true" "false" $v) }}
{{- else if kindIs "float64" $v }}
{{- if eq (float64 (int64 $v)) $v }}
{{- $out = append $out (printf "%d" (int64 $v)) }}
{{- else }}
{{- $out = append $out (toString $v) }}
{{- end }}
{{- else }}
{{- $out = append $out (toString $v) }}
{{- end }}
{{- end }}
{{- dict "v" $out | toJson }}
{{- end }}

{{/* Set property $key in $props, replacing any key that differs only in case
(Tango property names are case-insensitive). */}}
{{- define "tango-oet.setProperty" -}}
{{- $props := .props }}
{{- range $existing := keys $props }}
{{- if eq (lower $existing) (lower $.key) }}
{{- $_ := unset $props $existing }}
{{- end }}
{{- end }}
{{- $_ := set $props .key (get (include "tango-oet.propertyStrings" .value | fromJson) "v") }}
{{- end }}

{{/*
Properties of one device, as JSON: chart-wide .Values.properties (camelCase keys
mapped to Tango names: poolSize -> PoolSize), then the device's own properties,
then DataDirectory = persistence.mountPath.
*/}}
{{- define "tango-oet.deviceProperties" -}}
{{- $root := .root }}
{{- $props := dict }}
{{- range $key, $value := $root.Values.properties }}
{{- if not (kindIs "invalid" $value) }}
{{- $tangoName := printf "%s%s" (upper (substr 0 1 $key)) (substr 1 (len $key) $key) }}
{{- include "tango-oet.setProperty" (dict "props" $props "key" $tangoName "value" $value) }}
{{- end }}
{{- end }}
{{- range $key, $value := (.device.properties | default dict) }}
{{- if eq (lower $key) "datadirectory" }}
{{- fail (printf "device %s: DataDirectory is set by the chart from persistence.mountPath; do not set it in instances[].devices[].properties" $.device.name) }}
{{- end }}
{{- if not (kindIs "invalid" $value) }}
{{- include "tango-oet.setProperty" (dict "props" $props "key" $key "value" $value) }}
{{- end }}
{{- end }}
{{- include "tango-oet.setProperty" (dict "props" $props "key" "DataDirectory" "value" $root.Values.persistence.mountPath) }}
{{- $props | toJson }}
{{- end }}

{{/*
The device definitions in dsconfig format:
{"servers": {<serverName>: {<instance>: {<className>: {<device>: {"properties": {...}}}}}}}
*/}}
{{- define "tango-oet.dsconfig" -}}
{{- $instances := dict }}
{{- $seenDevices := dict }}
{{- range $inst := .Values.instances }}
{{- $instName := toString $inst.name }}
{{- if hasKey $instances $instName }}
{{- fail (printf "instances: instance name %q is listed twice" $instName) }}
{{- end }}
{{- $devices := dict }}
{{- range $dev := $inst.devices }}
{{- $key := lower $dev.name }}
{{- if hasKey $seenDevices $key }}
{{- fail (printf "instances: device %q is listed twice (instances %s and %s)" $dev.name (get $seenDevices $key) $instName) }}
{{- end }}
{{- $_ := set $seenDevices $key $instName }}
{{- $props := include "tango-oet.deviceProperties" (dict "root" $ "device" $dev) | fromJson }}
{{- $_ := set $devices $dev.name (dict "properties" $props) }}
{{- end }}
{{- $_ := set $instances $instName (dict $.Values.className $devices) }}
{{- end }}
{{- dict "servers" (dict .Values.serverName $instances) | toPrettyJson }}
{{- end }}
