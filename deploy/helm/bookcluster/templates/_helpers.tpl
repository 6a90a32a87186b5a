{{/* Names and labels shared by every object of a region's release. */}}
{{- define "bookcluster.prefix" -}}
bookcluster-{{ required "region: generate the values with `bookcluster deploy helm-values --region R`" .Values.region }}
{{- end }}

{{- define "bookcluster.labels" -}}
app.kubernetes.io/name: bookcluster
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
bookcluster.io/region: {{ .Values.region }}
{{- end }}

{{- define "bookcluster.selector" -}}
app.kubernetes.io/name: bookcluster
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "bookcluster.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end }}

{{/* Every secret as a file of the Kubernetes Secret (`topology/secrets.py` reads
BOOKCLUSTER_<NAME>_FILE); a key the Secret lacks is a missing secret, named at start-up. */}}
{{- define "bookcluster.secretEnv" -}}
{{- range .Values.secrets.names }}
- name: BOOKCLUSTER_{{ upper . }}_FILE
  value: /etc/bookcluster/secrets/{{ . }}
{{- end }}
{{- end }}

{{- define "bookcluster.volumes" -}}
- name: topology
  configMap:
    name: {{ include "bookcluster.prefix" . }}-topology
- name: secrets
  secret:
    secretName: {{ .Values.secrets.existingSecret }}
    defaultMode: 0440
{{- end }}

{{- define "bookcluster.mounts" -}}
- name: topology
  mountPath: /etc/bookcluster/topology.yaml
  subPath: topology.yaml
  readOnly: true
- name: secrets
  mountPath: /etc/bookcluster/secrets
  readOnly: true
{{- end }}

{{/* The image's user (compose/Dockerfile): PostgreSQL refuses root. */}}
{{- define "bookcluster.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
{{- end }}

{{- define "bookcluster.containerSecurity" -}}
allowPrivilegeEscalation: false
capabilities:
  drop: ["ALL"]
{{- end }}
