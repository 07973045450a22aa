{{/*
Names and labels shared by every template.

Objects in the release namespace have fixed names (wingman-operator, wingman-gateway, ...): one
release per namespace. Cluster-scoped objects, and Roles the chart puts into target namespaces,
carry the release namespace in their name ("wingman-<namespace>-..."), so a test and a prd
release coexist on one cluster.
*/}}

{{- define "wingman.clusterPrefix" -}}
wingman-{{ .Release.Namespace }}
{{- end }}

{{- define "wingman.labels" -}}
app.kubernetes.io/name: wingman
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: wingman
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
wingman.dev/environment: {{ .Values.environment }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels plus app.kubernetes.io/component; call with (dict "ctx" $ "component" "operator"). */}}
{{- define "wingman.componentLabels" -}}
{{ include "wingman.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "wingman.operatorSelector" -}}
app.kubernetes.io/name: wingman
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "wingman.chatSelector" -}}
app.kubernetes.io/name: wingman
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: chat
{{- end }}

{{/* The operator ServiceAccount's user name, as the API server authenticates it. */}}
{{- define "wingman.operatorUser" -}}
system:serviceaccount:{{ .Release.Namespace }}:wingman-operator
{{- end }}

{{/*
RBAC subjects from a {groups, users, serviceAccounts} block; call with
(dict "ctx" $ "who" .Values.rbac.workers). Renders nothing when the block is empty.
*/}}
{{- define "wingman.subjects" -}}
{{- range .who.groups }}
- kind: Group
  apiGroup: rbac.authorization.k8s.io
  name: {{ . | quote }}
{{- end }}
{{- range .who.users }}
- kind: User
  apiGroup: rbac.authorization.k8s.io
  name: {{ . | quote }}
{{- end }}
{{- range .who.serviceAccounts }}
- kind: ServiceAccount
  name: {{ .name | quote }}
  namespace: {{ .namespace | default $.ctx.Release.Namespace | quote }}
{{- end }}
{{- end }}

{{/*
The gateway's default rules in a target namespace: exactly what
`kubectl rollout restart deployment/x` (get + patch of the Deployment) and
`kubectl scale deployment/x --replicas=N` (the scale subresource) need, plus reading the
ReplicaSets kubectl inspects while doing so.
*/}}
{{- define "wingman.gatewayDefaultRules" -}}
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, patch]
- apiGroups: [apps]
  resources: [deployments/scale]
  verbs: [get, patch, update]
- apiGroups: [apps]
  resources: [replicasets]
  verbs: [get, list]
{{- end }}

{{/*
What one gateway target rule grants beyond running the reviewed command itself, as
"<verbs> on <resource>: <why>" parts joined by "; " (empty when nothing): rights that reach
other identities' credentials or code (pod streams and proxies, Secrets, tokens), that start
pods able to run as any ServiceAccount of the namespace (creating a pod or workload, built-in
or custom: wingman.customWorkloads and values gateway.customWorkloads), that
place a pod on a node past the scheduler (a binding: the nodes and taints admission keeps a
workload's pods off), that redirect or unshield other workloads' traffic (writes to Services,
Endpoints, EndpointSlices, NetworkPolicies, Ingresses and Gateway API routes), or that hand out rights (RBAC writes,
impersonate, escalate, bind). Resources are matched whatever the apiGroup (fail closed). Patching or updating an existing workload controller is not listed:
`kubectl rollout restart` and `kubectl scale` need it (though a patch may point a controller's
pods at another ServiceAccount of the namespace: the review of each command is what catches
that). Wildcards are checked apart (rbac-gateway.yaml): they are never granted. Call with
(dict "ctx" $ "rule" <the rule>).
*/}}
{{- define "wingman.gatewayRuleReach" -}}
{{- $rule := .rule }}
{{- $verbs := $rule.verbs | default list }}
{{- $any := dict
  "pods/exec" "runs any command in any pod of the namespace, as that pod's ServiceAccount"
  "pods/attach" "attaches to any pod's running processes, as that pod's ServiceAccount"
  "pods/ephemeralcontainers" "adds a container to a running pod: any command, as that pod's ServiceAccount"
  "pods/binding" "places a pending pod on a node of the caller's choosing, past the scheduler (nodeSelector, taints, affinity)"
  "bindings" "places a pending pod on a node of the caller's choosing, past the scheduler (nodeSelector, taints, affinity)"
  "pods/portforward" "opens connections to any pod's ports, past NetworkPolicies"
  "pods/proxy" "sends requests to any pod through the API server, past NetworkPolicies"
  "services/proxy" "sends requests to any service through the API server, past NetworkPolicies"
  "nodes/proxy" "reaches the kubelet API, which runs commands in any pod of the node"
  "serviceaccounts/token" "mints tokens of any ServiceAccount of the namespace"
  "secrets" "reads or writes the namespace's Secrets, other identities' credentials among them" }}
{{- $workloads := list "pods" "replicationcontrollers" "deployments" "daemonsets" "statefulsets" "replicasets" "jobs" "cronjobs" }}
{{- $rbac := list "roles" "rolebindings" "clusterroles" "clusterrolebindings" }}
{{- $writes := list "create" "update" "patch" "delete" "deletecollection" }}
{{- $traffic := dict
  "services" "a Service's selector, externalIPs or ExternalName send traffic meant for other workloads anywhere"
  "services/status" "a LoadBalancer Service's status sends traffic for its addresses anywhere"
  "endpoints" "points a Service's traffic, other workloads' among it, at any address"
  "endpointslices" "points a Service's traffic, other workloads' among it, at any address"
  "networkpolicies" "removes or widens what shields other workloads' pods from traffic"
  "ingresses" "routes outside traffic to any Service of the namespace (and ingress controllers act on their annotations, snippets of their own configuration among them, with the controller's rights)"
  "httproutes" "routes a Gateway's traffic, other workloads' among it, to any Service of the namespace"
  "grpcroutes" "routes a Gateway's traffic, other workloads' among it, to any Service of the namespace"
  "tlsroutes" "routes a Gateway's traffic, other workloads' among it, to any Service of the namespace"
  "tcproutes" "routes a Gateway's traffic, other workloads' among it, to any Service of the namespace"
  "udproutes" "routes a Gateway's traffic, other workloads' among it, to any Service of the namespace"
  "referencegrants" "lets routes of other namespaces send traffic to the namespace's Services" }}
{{- $custom := concat (include "wingman.customWorkloads" . | fromYamlArray) (.ctx.Values.gateway.customWorkloads | default list) }}
{{- $out := list }}
{{- if has "create" $verbs }}
{{- range $r := $rule.resources | default list }}
{{- range $g := $rule.apiGroups | default list }}
{{- if has (printf "%s.%s" $r $g) $custom }}
{{- $out = append $out (printf "create on %s.%s: starts pods (through its controller) that may run as any ServiceAccount of the namespace and mount any of its Secrets" $r $g) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- range $r := $rule.resources | default list }}
{{- if hasKey $any $r }}
{{- $out = append $out (printf "%s on %s: %s" (join "/" $verbs) $r (get $any $r)) }}
{{- end }}
{{- if and (has $r $workloads) (has "create" $verbs) }}
{{- $out = append $out (printf "create on %s: starts pods that may run as any ServiceAccount of the namespace and mount any of its Secrets" $r) }}
{{- end }}
{{- if and (eq $r "pods") (or (has "update" $verbs) (has "patch" $verbs)) }}
{{- $out = append $out "update/patch on pods: swaps a running pod's image, so any code runs as that pod's ServiceAccount" }}
{{- end }}
{{- if hasKey $traffic $r }}
{{- $w := list }}
{{- range $v := $verbs }}{{ if has $v $writes }}{{ $w = append $w $v }}{{ end }}{{ end }}
{{- if $w }}
{{- $out = append $out (printf "%s on %s: %s" (join "/" $w) $r (get $traffic $r)) }}
{{- end }}
{{- end }}
{{- if has $r $rbac }}
{{- range $v := $verbs }}
{{- if has $v $writes }}
{{- $out = append $out (printf "%s on %s: RBAC objects hand out any right in the namespace" $v $r) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- range $v := list "impersonate" "escalate" "bind" }}
{{- if has $v $verbs }}
{{- $out = append $out (printf "verb %s: %s" $v (ternary "acts as another identity of the namespace" "grants rights the executor does not hold itself" (eq $v "impersonate"))) }}
{{- end }}
{{- end }}
{{- join "; " $out }}
{{- end }}

{{/*
Custom resources (<plural>.<group>) whose controllers start pods from what the object says,
its ServiceAccount included: creating one escalates like creating a Deployment. The well-known
ones; values gateway.customWorkloads adds a cluster's own. Other custom resources are not
counted (most start no pods: refusing every one would refuse ordinary rules).
*/}}
{{- define "wingman.customWorkloads" -}}
- rollouts.argoproj.io
- workflows.argoproj.io
- cronworkflows.argoproj.io
- sensors.argoproj.io
- eventsources.argoproj.io
- scaledjobs.keda.sh
- taskruns.tekton.dev
- pipelineruns.tekton.dev
- services.serving.knative.dev
- configurations.serving.knative.dev
- virtualmachines.kubevirt.io
- virtualmachineinstances.kubevirt.io
- virtualmachineinstancereplicasets.kubevirt.io
- virtualmachinepools.pool.kubevirt.io
- sparkapplications.sparkoperator.k8s.io
- scheduledsparkapplications.sparkoperator.k8s.io
- rayclusters.ray.io
- rayjobs.ray.io
- rayservices.ray.io
- jobsets.jobset.x-k8s.io
- pytorchjobs.kubeflow.org
- tfjobs.kubeflow.org
- mpijobs.kubeflow.org
- xgboostjobs.kubeflow.org
- paddlejobs.kubeflow.org
- notebooks.kubeflow.org
- trainjobs.trainer.kubeflow.org
- flinkdeployments.flink.apache.org
- clonesets.apps.kruise.io
- broadcastjobs.apps.kruise.io
- advancedcronjobs.apps.kruise.io
{{- end }}

{{/*
The Wingman image reference every component runs: repository@digest when a digest is pinned
(the tag is then not used), else repository:tag with the tag defaulting to the appVersion.
Admission compares gateway pods' images with exactly this string.
*/}}
{{- define "wingman.image" -}}
{{- $i := .Values.image }}
{{- if $i.digest }}
{{- printf "%s@%s" $i.repository $i.digest }}
{{- else }}
{{- printf "%s:%s" $i.repository ($i.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* imagePullSecrets of a ServiceAccount or pod spec (nothing when there are none). */}}
{{- define "wingman.imagePullSecrets" -}}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . | quote }}
  {{- end }}
{{- end }}
{{- end }}

{{/*
The labels of objects the operator creates at run time (gateway Jobs and pods, token Secrets,
the signing key), as JSON for WINGMAN_OBJECT_LABELS: the chart's app.kubernetes.io/* labels,
the environment and commonLabels. The operator adds managed-by (wingman-operator) and the
component itself.
*/}}
{{- define "wingman.runtimeLabels" -}}
{{- $own := dict "app.kubernetes.io/name" "wingman" "app.kubernetes.io/instance" .Release.Name
  "app.kubernetes.io/version" .Chart.AppVersion "app.kubernetes.io/part-of" "wingman"
  "wingman.dev/environment" .Values.environment }}
{{- merge $own (deepCopy (.Values.commonLabels | default dict)) | toJson }}
{{- end }}

{{/* Gateway pod scheduling and resources, as JSON for WINGMAN_GATEWAY_POD. */}}
{{- define "wingman.gatewayPod" -}}
{{- $g := .Values.gateway }}
{{- dict "resources" $g.resources "nodeSelector" $g.nodeSelector "tolerations" $g.tolerations
  "affinity" $g.affinity "priorityClassName" $g.priorityClassName "labels" $g.podLabels
  "annotations" $g.podAnnotations "imagePullPolicy" .Values.image.pullPolicy | toJson }}
{{- end }}

{{/*
The namespaces of gateway.targets, where the executor holds rights, as a JSON array for
WINGMAN_GATEWAY_TARGETS: the review panel's blast-radius voter holds a command that acts
anywhere else (the API server would refuse it).
*/}}
{{- define "wingman.targetNamespaces" -}}
{{- $names := list }}
{{- range .Values.gateway.targets }}
{{- $names = append $names .namespace }}
{{- end }}
{{- $names | toJson }}
{{- end }}

{{/*
The rules of the executor's Role in each gateway target (the entry's rules, or the defaults),
as a JSON object of namespace -> rules for WINGMAN_GATEWAY_TARGET_RULES: the review panel's
blast-radius voter reads what they grant there (a target's own Namespace object, which RBAC
reads as in that namespace).
*/}}
{{- define "wingman.targetRules" -}}
{{- $rules := dict }}
{{- range .Values.gateway.targets }}
{{- $_ := set $rules .namespace (.rules | default (include "wingman.gatewayDefaultRules" $ | fromYamlArray)) }}
{{- end }}
{{- $rules | toJson }}
{{- end }}

{{/* The CEL string literal of the pinned gateway image. */}}
{{- define "wingman.gatewayImageLiteral" -}}
{{ include "wingman.image" . | toJson }}
{{- end }}

{{/*
A pod spec's ServiceAccount token settings, as a CEL list of strings (the argument: the CEL
expression of the PodSpec): automountServiceAccountToken, then each serviceAccountToken
projection as '<volume>/<audience>/<expirationSeconds>'.
*/}}
{{- define "wingman.celTokenSettings" -}}
[has({{ . }}.automountServiceAccountToken) ? string({{ . }}.automountServiceAccountToken)
: 'unset'] + (has({{ . }}.volumes) ? {{ . }}.volumes.filter(v, has(v.projected) &&
has(v.projected.sources)).map(v, v.projected.sources.filter(s, has(s.serviceAccountToken))
.map(s, v.name + '/' + (has(s.serviceAccountToken.audience) ? s.serviceAccountToken.audience
: '') + '/' + (has(s.serviceAccountToken.expirationSeconds)
? string(s.serviceAccountToken.expirationSeconds) : '')).join(',')).filter(x, x != '') : [])
{{- end }}

{{/*
CEL variables for the gateway pod-spec rules; the including policy defines `variables.spec`
(the PodSpec) and `variables.oldSpec` (the old object's, read on UPDATE only) first.
*/}}
{{- define "wingman.podSpecVariables" -}}
- name: image
  expression: {{ include "wingman.gatewayImageLiteral" . | quote }}
- name: containers
  expression: >-
    variables.spec.containers +
    (has(variables.spec.initContainers) ? variables.spec.initContainers : [])
# Containers not on the pinned image: on UPDATE, one whose image is the one its namesake had
# is not counted (a Job, and its pods, made by an earlier release with the image it pinned:
# the operator, the Job controller and the garbage collector must still finish and clean it up)
- name: foreignImages
  expression: >-
    variables.containers.filter(c, c.image != variables.image &&
    !(request.operation == 'UPDATE' && (variables.oldSpec.containers +
    (has(variables.oldSpec.initContainers) ? variables.oldSpec.initContainers : []))
    .exists(o, o.name == c.name && o.image == c.image)))
    .map(c, c.name + "=" + c.image)
- name: foreignEnv
  expression: >-
    variables.containers.map(c, has(c.env) ?
    c.env.filter(e, !e.name.startsWith('WINGMAN_')).map(e, e.name).join(", ") : "")
    .filter(s, s != "")
- name: mountsOutside
  expression: >-
    variables.containers.map(c, has(c.volumeMounts) ? c.volumeMounts.filter(m,
    !(m.mountPath.startsWith('/') && m.mountPath != '/' && !m.mountPath.contains('//') &&
    !m.mountPath.matches('(^|/)[.][.]?(/|$)') &&
    (m.mountPath.startsWith('/etc/wingman/') ||
    !['/usr', '/lib', '/lib32', '/lib64', '/libx32', '/bin', '/sbin', '/opt', '/etc',
    '/boot', '/proc', '/sys', '/dev'].exists(r, m.mountPath == r || m.mountPath == r + '/' ||
    m.mountPath.startsWith(r + '/'))))).map(m, m.mountPath).join(", ") : "")
    .filter(s, s != "")
# The pod's own ServiceAccount token: each serviceAccountToken projection that names an
# audience or lives longer than 600 s (manifests.SERVICE_ACCOUNT_TOKEN_SECONDS; unset is the
# API server's default, 3600 s).
- name: longTokens
  expression: >-
    has(variables.spec.volumes) ? variables.spec.volumes.filter(v, has(v.projected) &&
    has(v.projected.sources)).map(v, v.projected.sources.filter(s, has(s.serviceAccountToken) &&
    ((has(s.serviceAccountToken.audience) && s.serviceAccountToken.audience != '') ||
    !has(s.serviceAccountToken.expirationSeconds) ||
    s.serviceAccountToken.expirationSeconds > 600)).map(s, "volume '" + v.name +
    "' (audience '" + (has(s.serviceAccountToken.audience) ? s.serviceAccountToken.audience
    : '') + "', expirationSeconds " + (has(s.serviceAccountToken.expirationSeconds)
    ? string(s.serviceAccountToken.expirationSeconds) : 'unset') + ")").join(", "))
    .filter(x, x != "") : []
- name: tokenSettings
  expression: >-
    {{- include "wingman.celTokenSettings" "variables.spec" | nindent 4 }}
- name: oldTokenSettings
  expression: >-
    {{- include "wingman.celTokenSettings" "variables.oldSpec" | nindent 4 }}
{{- end }}

{{/*
CEL validations shared by the gateway and preview pod and Job policies; call with
(dict "ctx" $ "entry" "gateway") or (dict "ctx" $ "entry" "preview"): the one `wingman`
subcommand the pod may run.
*/}}
{{- define "wingman.podSpecValidations" -}}
- expression: size(variables.foreignImages) == 0
  messageExpression: >-
    "every container of a {{ .entry }} pod must use the pinned gateway image '" + variables.image +
    "' (values image.repository, image.tag, image.digest); found: " +
    variables.foreignImages.join(", ") + (request.operation == 'UPDATE' ?
    "; a Job or pod an earlier release made keeps its own image on update, but its image " +
    "may only be changed to the pinned one" : "")
  message: >-
    every container of a {{ .entry }} pod must use the pinned gateway image
    {{ include "wingman.image" .ctx }} (values image.repository, image.tag, image.digest); one
    an earlier release made keeps its own image on update
  reason: Forbidden
- expression: >-
    variables.containers.all(c, !has(c.securityContext) ||
    !has(c.securityContext.privileged) || !c.securityContext.privileged)
  message: >-
    {{ .entry }} containers must not be privileged: set securityContext.privileged to false or
    leave it out
  reason: Forbidden
- expression: >-
    variables.containers.all(c, !has(c.securityContext) ||
    !has(c.securityContext.capabilities) || !has(c.securityContext.capabilities.add) ||
    size(c.securityContext.capabilities.add) == 0)
  message: >-
    {{ .entry }} containers must not add Linux capabilities: remove
    securityContext.capabilities.add
  reason: Forbidden
- expression: >-
    !(has(variables.spec.hostNetwork) && variables.spec.hostNetwork) &&
    !(has(variables.spec.hostPID) && variables.spec.hostPID) &&
    !(has(variables.spec.hostIPC) && variables.spec.hostIPC)
  message: >-
    {{ .entry }} pods must not share the node's network, PID or IPC namespace: remove hostNetwork,
    hostPID and hostIPC
  reason: Forbidden
{{- if .ctx.Values.gateway.docker.enabled }}
- expression: >-
    !has(variables.spec.volumes) || variables.spec.volumes.all(v, !has(v.hostPath) ||
    v.hostPath.path == {{ .ctx.Values.gateway.docker.socketPath | toJson }})
  message: >-
    {{ .entry }} pods may mount no hostPath volume except the Docker socket
    {{ .ctx.Values.gateway.docker.socketPath }} (values gateway.docker.socketPath)
  reason: Forbidden
{{- else }}
- expression: >-
    !has(variables.spec.volumes) || variables.spec.volumes.all(v, !has(v.hostPath))
  message: >-
    {{ .entry }} pods must not mount hostPath volumes (the docker executor is disabled: values
    gateway.docker.enabled is false)
  reason: Forbidden
{{- end }}
# Only its own short-lived token: no automounted one (3607 s, which the API server extends to
# a year) and no projection for another audience or of a longer life. Objects made before
# this rule (an earlier release's Jobs and their pods) may still be updated as long as these
# settings stay as they were (they are immutable in pods and Jobs anyway).
- expression: >-
    (request.operation == 'UPDATE' && variables.tokenSettings == variables.oldTokenSettings) ||
    (has(variables.spec.automountServiceAccountToken) &&
    !variables.spec.automountServiceAccountToken && size(variables.longTokens) == 0)
  messageExpression: >-
    "{{ .entry }} pods hold only a ServiceAccount token of their own that lives at most 600 s " +
    "and is for the API server: set automountServiceAccountToken to false (it is " +
    (has(variables.spec.automountServiceAccountToken)
    ? string(variables.spec.automountServiceAccountToken) : "unset") + ") and give every " +
    "serviceAccountToken projection no audience and expirationSeconds of at most 600" +
    (size(variables.longTokens) > 0 ? "; found: " + variables.longTokens.join(", ") : "") +
    "; a Job an earlier release of Wingman made holds the automounted token: create a new " +
    "grant (or request) after the upgrade"
  message: >-
    {{ .entry }} pods hold only a ServiceAccount token of their own that lives at most 600 s
    and is for the API server: automountServiceAccountToken false, and every
    serviceAccountToken projection with no audience and expirationSeconds of at most 600
  reason: Forbidden
- expression: size(variables.foreignEnv) == 0
  messageExpression: >-
    "{{ .entry }} containers take only WINGMAN_* environment variables (PATH, PYTHONPATH or " +
    "LD_PRELOAD would run other code with the {{ .entry }}'s rights); found: " +
    variables.foreignEnv.join(", ")
  reason: Forbidden
- expression: variables.containers.all(c, !has(c.envFrom) && !has(c.workingDir))
  message: >-
    {{ .entry }} containers have no envFrom and no workingDir (they would set what the
    {{ .entry }} loads); remove them
  reason: Forbidden
- expression: >-
    variables.containers.all(c, !has(c.lifecycle) && !has(c.livenessProbe) &&
    !has(c.readinessProbe) && !has(c.startupProbe))
  message: >-
    {{ .entry }} containers have no lifecycle hooks and no probes: an exec hook or probe would
    run another command with the {{ .entry }}'s rights; remove lifecycle and the probes
  reason: Forbidden
- expression: size(variables.mountsOutside) == 0
  messageExpression: >-
    "{{ .entry }} containers mount volumes only outside the image's code and system paths " +
    "(/usr, /lib*, /bin, /sbin, /opt, /etc except /etc/wingman/, /boot, /proc, /sys, /dev, " +
    "the root), as a clean absolute path; found: " + variables.mountsOutside.join(", ")
  reason: Forbidden
# A Job (and its pod) made by an earlier release runs ['wingman', entry] without the init: it
# may still be updated with that command unchanged (the operator patches its Job, the Job
# controller and garbage collector its finalizers), never created.
- expression: >-
    size(variables.spec.containers) == 1 &&
    (!has(variables.spec.initContainers) || size(variables.spec.initContainers) == 0) &&
    variables.spec.containers.all(c, has(c.command) &&
    (c.command == ['/usr/bin/tini', '--', 'wingman', '{{ .entry }}'] ||
    (request.operation == 'UPDATE' && c.command == ['wingman', '{{ .entry }}'] &&
    variables.oldSpec.containers.all(o, has(o.command) && o.command == c.command))) &&
    (!has(c.args) || size(c.args) == 0))
  message: >-
    a {{ .entry }} pod runs exactly one container whose command is
    ["/usr/bin/tini", "--", "wingman", "{{ .entry }}"] with no args and no init containers: the
    pinned image also ships kubectl, which must never run with the {{ .entry }}'s rights outside
    the {{ .entry }}
  reason: Forbidden
{{- end }}

{{/*
NetworkPolicy building blocks (values `networkPolicy`), shared by every component's policy;
a new component's policy is made of these too (see the chat policy in chat.yaml):

  include "wingman.netpol.checks" .                fail with instructions when an address the
                                                   policies need is missing
  include "wingman.netpol.apiServer" .             egress rule: the API server
  include "wingman.netpol.dns" .                   egress rule: DNS (UDP and TCP 53)
  include "wingman.netpol.database" .              egress rule: the audit database (postgres)
  include "wingman.netpol.cidrs" (dict "cidrs" L "ports" L)   egress rule: CIDRs on TCP ports
  include "wingman.netpol.from" (dict "peers" L "ports" L ["anyone" true])
                                                   ingress rule: ports from peers; without
                                                   peers from no pod (no rule), or from
                                                   anyone when "anyone" is true

Each renders list items (or nothing) to place under `egress:` or `ingress:`.
*/}}
{{- define "wingman.netpol.checks" -}}
{{- $np := .Values.networkPolicy }}
{{- if not $np.apiServer.cidrs }}
{{- fail "networkPolicy.enabled needs networkPolicy.apiServer.cidrs: the addresses pods reach the API server at, e.g. from `kubectl get endpointslices -n default -l kubernetes.io/service-name=kubernetes -o jsonpath='{..addresses}'` (each as <ip>/32)" }}
{{- end }}
{{- if and (eq .Values.audit.type "postgres") (not $np.database.cidrs) }}
{{- fail "networkPolicy.enabled with audit.type postgres needs networkPolicy.database.cidrs: the PostgreSQL server's addresses (each as <ip>/32), or the operator and gateway pods cannot write the audit trail" }}
{{- end }}
{{- $llm := false }}
{{- range .Values.policy.panel.voters }}
{{- if ne .type "builtin" }}{{- $llm = true }}{{- end }}
{{- end }}
{{- if and $llm (not $np.llm.cidrs) }}
{{- fail "networkPolicy.enabled with LLM voters in policy.panel.voters needs networkPolicy.llm.cidrs: the addresses of their endpoints (or of your egress proxy), or the voters can only abstain" }}
{{- end }}
{{- if and .Values.audit.checkpoints.witness.url (not $np.witness.cidrs) }}
{{- fail "networkPolicy.enabled with audit.checkpoints.witness.url needs networkPolicy.witness.cidrs: the witness's addresses (or your egress proxy's), or the checkpoints never reach it" }}
{{- end }}
{{- end }}

{{- define "wingman.netpol.cidrs" -}}
{{- if .cidrs }}
- to:
    {{- range .cidrs }}
    - ipBlock:
        cidr: {{ . | quote }}
    {{- end }}
  ports:
    {{- range .ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
{{- end }}
{{- end }}

{{- define "wingman.netpol.apiServer" -}}
{{- include "wingman.netpol.cidrs" (dict "cidrs" .Values.networkPolicy.apiServer.cidrs "ports" .Values.networkPolicy.apiServer.ports) }}
{{- end }}

{{- define "wingman.netpol.database" -}}
{{- if eq .Values.audit.type "postgres" }}
{{- include "wingman.netpol.cidrs" (dict "cidrs" .Values.networkPolicy.database.cidrs "ports" (list .Values.networkPolicy.database.port)) }}
{{- end }}
{{- end }}

{{- define "wingman.netpol.dns" -}}
{{- with .Values.networkPolicy.dns }}
- to:
    {{- toYaml . | nindent 4 }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end }}
{{- end }}

{{- define "wingman.netpol.from" -}}
{{- if or .peers .anyone }}
- ports:
    {{- range .ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
  {{- with .peers }}
  from:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- end }}

{{/*
A Kubernetes quantity (100m, 1.5Gi, 2e9, 3) as a plain number, for comparisons; call with the
quantity (a string or a number), which the schema has checked.
*/}}
{{- define "wingman.quantity" -}}
{{- $q := toString . }}
{{- $suffix := regexFind "([KMGTPE]i|[numkMGTPE])$" $q }}
{{- if regexMatch "[eE][-+]?[0-9]+$" $q }}{{ $suffix = "" }}{{ end }}
{{- $number := float64 (trimSuffix $suffix $q) }}
{{- if has $suffix (list "n" "u" "m") }}
{{- /* divided, not multiplied by 0.001: 300m is then exactly 0.3 */ -}}
{{- divf $number (get (dict "n" 1e9 "u" 1e6 "m" 1e3) $suffix) }}
{{- else }}
{{- mulf $number (get (dict "" 1.0 "k" 1e3 "M" 1e6 "G" 1e9 "T" 1e12 "P" 1e15 "E" 1e18 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "Pi" 1125899906842624.0 "Ei" 1152921504606846976.0) $suffix) }}
{{- end }}
{{- end }}

{{- /*
CEL (for policy ...-executor-workloads): the map entries of the security settings a pod spec or
a container (the CEL expression given, e.g. "c") sets in its securityContext, each a string, ''
where unset. Pod and container security contexts share these field names; the fields only one
of them has are '' in the other.
*/ -}}
{{- /*
The capabilities a container (the CEL expression given) drops, [] when it drops none (one
line, to sit inside a folded YAML scalar).
*/ -}}
{{- define "wingman.celDrops" -}}
{{- printf "(has(%[1]s.securityContext) && has(%[1]s.securityContext.capabilities) && has(%[1]s.securityContext.capabilities.drop) ? %[1]s.securityContext.capabilities.drop.map(x, %[2]s) : [])" . (include "wingman.celCapability" "x") }}
{{- end }}

{{- /*
A capability's name (the CEL expression given) as the container runtime reads it: upper case
(containerd and CRI-O upper-case each name), but ALL only as written: the runtimes take "all"
in any case as ALL, but here a lower-case "all" stays "all", another name, so that a container
dropping "all" instead of "ALL" is refused (write ALL) rather than judged by a spelling.
*/ -}}
{{- define "wingman.celCapability" -}}
{{- printf "(%[1]s.upperAscii() == 'ALL' ? %[1]s : %[1]s.upperAscii())" . }}
{{- end }}

{{- /*
CEL: whether an added capability (the CEL expression given, "x") is in a container's old add
list (the CEL expression "o"), however either spells it: in any case, and with or without the
CAP_ prefix on the added one (CRI-O reads CAP_X as X; containerd prefixes every name with CAP_,
so CAP_X gives nothing there), so that spelling changes no verdict either way: an added CAP_X
is judged as X. An old CAP_X does not hold X (under containerd it held nothing). One line, to
sit inside a folded YAML scalar.
*/ -}}
{{- define "wingman.celCapabilityHeld" -}}
{{- printf "[%[1]s.upperAscii(), %[1]s.upperAscii().startsWith('CAP_') ? %[1]s.upperAscii().substring(4) : %[1]s.upperAscii()].exists(n, n in %[2]s.securityContext.capabilities.add.map(y, y.upperAscii()))" .x .o }}
{{- end }}

{{- /*
CEL (for policy ...-executor-workloads): whether a value (the CEL expression given) is a map
holding a pod spec's field that gives its pods something (an identity, a Secret, the node,
isolation, placement): a pod spec, or a part of one a controller merges into its pods'.
*/ -}}
{{- define "wingman.celPodSpecLike" -}}
{{- printf "(type(%[1]s) == map && %[1]s.exists(f, f in %[2]s))" . (include "wingman.celPodKeys" .) }}
{{- end }}

{{- /* The pod spec's fields of wingman.celPodSpecLike, a CEL list. */ -}}
{{- define "wingman.celPodKeys" -}}
['containers', 'initContainers', 'ephemeralContainers', 'volumes', 'serviceAccountName', 'serviceAccount', 'automountServiceAccountToken', 'hostNetwork', 'hostPID', 'hostIPC', 'hostUsers', 'securityContext', 'nodeName', 'nodeSelector', 'affinity', 'tolerations', 'runtimeClassName', 'priorityClassName', 'shareProcessNamespace', 'resourceClaims', 'hostAliases', 'imagePullSecrets']
{{- end }}

{{- /*
CEL (for policy ...-executor-workloads): whether a value (the CEL expression given) of a custom
resource is shaped like what makes pods: a pod spec (wingman.celPodSpecLike), a pod template
(its spec one) or a Job template (its spec.template.spec one), containers or not (a
controller may merge a template without containers into its own).
*/ -}}
{{- define "wingman.celPodShaped" -}}
{{- printf "(type(%[1]s) == map && (%[2]s || ('spec' in %[1]s && (%[3]s || (type(%[1]s.spec) == map && 'template' in %[1]s.spec && type(%[1]s.spec.template) == map && 'spec' in %[1]s.spec.template && %[4]s)))))" . (include "wingman.celPodSpecLike" .) (include "wingman.celPodSpecLike" (printf "%s.spec" .)) (include "wingman.celPodSpecLike" (printf "%s.spec.template.spec" .)) }}
{{- end }}

{{- define "wingman.celSecuritySettings" -}}
{{- $p := printf "%s.securityContext" . -}}
'seccomp': string(has({{ . }}.securityContext) && has({{ $p }}.seccompProfile) &&
has({{ $p }}.seccompProfile.type) ? string({{ $p }}.seccompProfile.type) +
(has({{ $p }}.seccompProfile.localhostProfile)
? ' ' + string({{ $p }}.seccompProfile.localhostProfile) : '') : ''),
'apparmor': string(has({{ . }}.securityContext) && has({{ $p }}.appArmorProfile) &&
has({{ $p }}.appArmorProfile.type) ? string({{ $p }}.appArmorProfile.type) +
(has({{ $p }}.appArmorProfile.localhostProfile)
? ' ' + string({{ $p }}.appArmorProfile.localhostProfile) : '') : ''),
'selinux': string(has({{ . }}.securityContext) && has({{ $p }}.seLinuxOptions) ?
[string(has({{ $p }}.seLinuxOptions.user) ? {{ $p }}.seLinuxOptions.user : ''),
string(has({{ $p }}.seLinuxOptions.role) ? {{ $p }}.seLinuxOptions.role : ''),
string(has({{ $p }}.seLinuxOptions.type) ? {{ $p }}.seLinuxOptions.type : ''),
string(has({{ $p }}.seLinuxOptions.level) ? {{ $p }}.seLinuxOptions.level : '')].join(':')
: ''),
'runAsUser': string(has({{ . }}.securityContext) && has({{ $p }}.runAsUser) ?
string({{ $p }}.runAsUser) : ''),
'runAsGroup': string(has({{ . }}.securityContext) && has({{ $p }}.runAsGroup) ?
string({{ $p }}.runAsGroup) : ''),
'runAsNonRoot': string(has({{ . }}.securityContext) && has({{ $p }}.runAsNonRoot) ?
string({{ $p }}.runAsNonRoot) : ''),
'allowPrivilegeEscalation': string(has({{ . }}.securityContext) &&
has({{ $p }}.allowPrivilegeEscalation) ? string({{ $p }}.allowPrivilegeEscalation) : ''),
'procMount': string(has({{ . }}.securityContext) && has({{ $p }}.procMount) ?
string({{ $p }}.procMount) : ''),
'hostProcess': string(has({{ . }}.securityContext) && has({{ $p }}.windowsOptions) &&
has({{ $p }}.windowsOptions.hostProcess) ? string({{ $p }}.windowsOptions.hostProcess) : ''),
'runAsUserName': string(has({{ . }}.securityContext) && has({{ $p }}.windowsOptions) &&
has({{ $p }}.windowsOptions.runAsUserName) ? string({{ $p }}.windowsOptions.runAsUserName) : ''),
'gmsaCredentialSpecName': string(has({{ . }}.securityContext) &&
has({{ $p }}.windowsOptions) && has({{ $p }}.windowsOptions.gmsaCredentialSpecName)
? string({{ $p }}.windowsOptions.gmsaCredentialSpecName) : ''),
'gmsaCredentialSpec': string(has({{ . }}.securityContext) && has({{ $p }}.windowsOptions) &&
has({{ $p }}.windowsOptions.gmsaCredentialSpec)
? string({{ $p }}.windowsOptions.gmsaCredentialSpec) : '')
{{- end }}

{{- /*
CEL (for policy ...-executor-workloads): the paths, joined by commas, of the pod templates that
changed in a map M of a custom resource's spec (at path P; CANDS: the old values M may be,
one for a map, each element for a list's element), looked for in M's values and, where one is
a map, in its values. Below that (a map's value's value that is a map or a list, a list's
element that is no pod template) this looks no further: such a value that changed is given
with a leading '~' (it could hold a pod template). Call with (dict "m" M "cands" CANDS "p" P),
each a CEL expression.
*/ -}}
{{- define "wingman.celUnjudged" -}}
{{- $m := .m }}{{ $c := .cands }}{{ $p := .p -}}
{{ $m }}.map(k2, type({{ $m }}[k2]) == map ? ({{ include "wingman.celPodShaped" (printf "%s[k2]" $m) }}
? ({{ $p }} + '.' + k2 != variables.judgedAt && !{{ $c }}.exists(c, type(c) == map &&
k2 in c && c[k2] == {{ $m }}[k2]) ? {{ $p }} + '.' + k2 : '')
: {{ $m }}[k2].map(k3, (type({{ $m }}[k2][k3]) == map || type({{ $m }}[k2][k3]) == list) &&
{{ $p }} + '.' + k2 + '.' + k3 != variables.judgedAt && !{{ $c }}.exists(c, type(c) == map &&
k2 in c && type(c[k2]) == map && k3 in c[k2] && c[k2][k3] == {{ $m }}[k2][k3])
? ({{ include "wingman.celPodShaped" (printf "%s[k2][k3]" $m) }} ? '' : '~') + {{ $p }} + '.' + k2 + '.' + k3 : '').join(','))
: (type({{ $m }}[k2]) == list ? ({{ $m }}[k2].exists(e2,
{{ include "wingman.celPodShaped" "e2" }} && !{{ $c }}.exists(c, type(c) == map && k2 in c &&
type(c[k2]) == list && e2 in c[k2])) ? {{ $p }} + '.' + k2 + '[]' : '') + ',' +
({{ $m }}[k2].exists(e2, (type(e2) == map || type(e2) == list) &&
!{{ include "wingman.celPodShaped" "e2" }} && !{{ $c }}.exists(c, type(c) == map && k2 in c &&
type(c[k2]) == list && e2 in c[k2])) ? '~' + {{ $p }} + '.' + k2 + '[]' : '') : '')).join(',')
{{- end }}
