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

{{/*
TANGO_HOST of every pod: global.tango_host when set (SKA umbrella charts give every
subchart the same database that way), else tangoHost.
*/}}
{{- define "tango-oet.tangoHost" -}}
{{- $global := "" }}
{{- with .Values.global }}{{ $global = toString (.tango_host | default "") }}{{ end }}
{{- if $global }}
{{- if not (regexMatch "^[^\\s:,]+:[0-9]+(,[^\\s:,]+:[0-9]+)*$" $global) }}
{{- fail (printf "global.tango_host %q is not host:port[,host:port...]" $global) }}
{{- end }}
{{- $global }}
{{- else }}
{{- required "tangoHost is required (or global.tango_host): the host:port of an existing Tango database, e.g. --set tangoHost=tango-databaseds.tango:10000" .Values.tangoHost }}
{{- end }}
{{- end }}

{{/* Where the instance's ConfigMap (devices.json) is mounted. */}}
{{- define "tango-oet.configDir" -}}/etc/tango-oet{{- end }}

{{/* Per-instance objects ----------------------------------------------------- */}}

{{/*
The DNS-label form of an instance name ("Subarray_1" -> "subarray-1"): the suffix of
the instance's StatefulSet, Service, ConfigMap and PDB, and its selector label value.
*/}}
{{- define "tango-oet.instanceSlug" -}}
{{- regexReplaceAll "[^a-z0-9]+" (lower (toString .)) "-" | trimAll "-" }}
{{- end }}

{{/*
Name of the objects of one instance ({"root": $, "instance": <instances[i]>}).
At most 52 characters: the StatefulSet controller adds "-<10-character hash>" to it
in the controller-revision-hash label, which must fit in 63.
*/}}
{{- define "tango-oet.instanceFullname" -}}
{{- $name := printf "%s-%s" (include "tango-oet.fullname" .root) (include "tango-oet.instanceSlug" .instance.name) }}
{{- if gt (len $name) 52 }}
{{- fail (printf "instance %v: object name %q is longer than 52 characters; shorten the instance name or set fullnameOverride" .instance.name $name) }}
{{- end }}
{{- $name }}
{{- end }}

{{/* Selector labels of one instance's pods ({"root": $, "instance": ...}). */}}
{{- define "tango-oet.instanceSelectorLabels" -}}
{{ include "tango-oet.selectorLabels" .root }}
tango-oet/server-instance: {{ include "tango-oet.instanceSlug" .instance.name | quote }}
{{- end }}

{{- define "tango-oet.instanceLabels" -}}
{{ include "tango-oet.labels" .root }}
tango-oet/server-instance: {{ include "tango-oet.instanceSlug" .instance.name | quote }}
{{- end }}

{{/*
Fails rendering on instance lists the per-instance layout cannot serve: duplicate
instance names, names that map to the same object names, a device in two instances.
*/}}
{{- define "tango-oet.validateInstances" -}}
{{- $names := dict }}
{{- $slugs := dict }}
{{- $seenDevices := dict }}
{{- range $inst := .Values.instances }}
{{- $instName := toString $inst.name }}
{{- if hasKey $names $instName }}
{{- fail (printf "instances: instance name %q is listed twice" $instName) }}
{{- end }}
{{- $_ := set $names $instName true }}
{{- $slug := include "tango-oet.instanceSlug" $instName }}
{{- if hasKey $slugs $slug }}
{{- fail (printf "instances: instance names %q and %q both give the object name suffix %q" (get $slugs $slug) $instName $slug) }}
{{- end }}
{{- $_ := set $slugs $slug $instName }}
{{- $_ := include "tango-oet.instanceFullname" (dict "root" $ "instance" $inst) }}
{{- range $dev := $inst.devices }}
{{- $key := lower $dev.name }}
{{- if hasKey $seenDevices $key }}
{{- fail (printf "instances: device %q is listed twice (instances %s and %s)" $dev.name (get $seenDevices $key) $instName) }}
{{- end }}
{{- $_ := set $seenDevices $key $instName }}
{{- end }}
{{- end }}
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
The device definitions of ONE instance ({"root": $, "instance": ...}) in dsconfig
format: {"servers": {<serverName>: {<instance>: {<className>: {<device>: {"properties": {...}}}}}}}.
Only this instance's values and the chart-wide ones enter it, so its checksum (on
the instance's pod template) changes only when this instance's definition does.
*/}}
{{- define "tango-oet.dsconfig" -}}
{{- $root := .root }}
{{- $devices := dict }}
{{- range $dev := .instance.devices }}
{{- $props := include "tango-oet.deviceProperties" (dict "root" $root "device" $dev) | fromJson }}
{{- $_ := set $devices $dev.name (dict "properties" $props) }}
{{- end }}
{{- $instances := dict (toString .instance.name) (dict $root.Values.className $devices) }}
{{- dict "servers" (dict $root.Values.serverName $instances) | toPrettyJson }}
{{- end }}
