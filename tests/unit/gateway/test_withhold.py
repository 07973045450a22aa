"""Which kubectl output templates the gateway withholds whole (``redaction.withholds``).

A template prints bare values no text rule can recognise, so it is read before the command's
output is: only templates whose every printed field is a known scalar leaf
(``.metadata.name``, ``.status.phase``, ``.spec.replicas``) are shown. One that selects a
parent (``{.spec}``, ``{@}``, ``{{.}}``) prints everything below it, environment values
under neutral names among it; one this cannot read is withheld too (fail closed). What each
template really prints is checked with the real kubectl, on a Deployment whose environment
holds a value under a name no rule would recognise.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from wingman.gateway.redaction import WITHHELD, redact, withholds

VALUE = "Zq8mW3vX5tK9"  # an environment value under a neutral name: FOO
DEPLOYMENT = f"""\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {{app: web, app.kubernetes.io/name: web}}
  annotations: {{note: {VALUE}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      serviceAccountName: web
      containers:
      - name: web
        image: nginx:1.27
        args: [--config, {VALUE}]
        ports: [{{containerPort: 8080, protocol: TCP}}]
        env: [{{name: FOO, value: {VALUE}}}]
status:
  conditions: [{{type: Available, status: "True", reason: MinimumReplicasAvailable}}]
"""

# (output format, runs on the Deployment above: what kubectl prints of it holds VALUE)
WITHHELD_TEMPLATES = [
    # a parent field prints everything below it (Go map or JSON form)
    ("jsonpath={.spec}", True),
    ("jsonpath={.spec.template}", True),
    ("jsonpath={.spec.template.spec.containers[0]}", True),
    ("jsonpath={.spec.template.spec.containers[*]}", True),
    ("jsonpath={.spec.template.spec.containers[-1:]}", True),
    ("jsonpath={.items[*].spec}", False),
    ("jsonpath={@}", True),
    ("jsonpath={.}", False),
    ("jsonpath={$}", True),
    ("jsonpath={.metadata.name}{.spec}", True),
    ("jsonpath={.metadata.*}", True),
    ("jsonpath={.spec.template.spec.*}", True),
    ("jsonpath-as-json={.spec.template.spec}", True),
    ("jsonpath={.spec.template.spec['containers']}", True),
    # recursive descent: a field of any name anywhere below
    ("jsonpath={..containers}", True),
    ("jsonpath={..env}", True),
    ("jsonpath={..image}", False),
    ("jsonpath={..name}", False),
    # a filter selects, the item it selects is printed whole
    ('jsonpath={.spec.template.spec.containers[?(@.name=="web")]}', True),
    ("jsonpath={.spec.template.spec.containers[?(@.image)]}", True),
    # a filter comparing a value it may not print is an oracle on that value
    ('jsonpath={.spec.template.spec.containers[?(@.args=="x")].name}', False),
    # a range makes the current item what it iterates: {@} prints it whole
    ("jsonpath={range .spec.template.spec.containers[*]}{@}{end}", True),
    (r'jsonpath={range .spec.template.spec.containers[*]}{.name}{"\t"}{@}{end}', True),
    ("jsonpath={range .items[*]}{.spec}{end}", False),
    # a union of fields
    ("jsonpath={.spec.template.spec.containers[0]['name','env']}", False),
    # a leaf's name for the object's own status: a map
    ("jsonpath={.status}", False),
    ("jsonpath={.items[*].status}", False),
    ("go-template={{.status}}", False),
    ("custom-columns=STATUS:.status", False),
    # values by their field's name, whatever prints them
    ("jsonpath={.spec.template.spec.containers[*].env[*].value}", True),
    ("jsonpath={.spec.template.spec.containers[*].args}", True),
    ("jsonpath={.metadata.annotations}", True),
    ("jsonpath={.metadata.annotations.note}", True),
    # go-templates
    ("go-template={{.}}", True),
    ("go-template={{ . }}", True),
    ("go-template={{.spec}}", True),
    ("go-template={{range .items}}{{.spec}}{{end}}", False),
    ("go-template={{with .spec}}{{.}}{{end}}", True),
    ("go-template={{with .spec.template}}{{.spec}}{{end}}", True),
    ("go-template={{range .spec.template.spec.containers}}{{.}}{{end}}", True),
    ("go-template={{range .spec.template.spec.containers}}{{.name}}{{else}}{{.}}{{end}}",
     False),
    ("go-template={{if .spec}}{{.}}{{end}}", True),
    ('go-template={{printf "%v" .spec}}', True),
    ('go-template={{.spec | printf "%v"}}', True),
    ("go-template={{print .metadata.name .spec}}", True),
    ('go-template={{index .spec "template"}}', True),
    ("go-template={{json .spec}}", False),
    ("go-template={{toJson .spec}}", False),
    ("go-template={{.metadata.name}}{{/* comment */}}", False),
    ("go-template={{$x := .spec}}{{$x}}", True),
    ("go-template={{range $i, $c := .spec.template.spec.containers}}{{$c}}{{end}}", True),
    ("go-template={{$.spec}}", True),
    ('go-template={{define "x"}}{{.}}{{end}}{{template "x" .spec}}', True),
    ("go-template={{(.spec)}}", True),
    ("go-template={{.metadata.name", False),
    ("go-template={{range .spec.template.spec.containers}}{{.name}}", False),
    ('go-template={{"}}"}}{{.spec}}', True),
    ("template={{.spec}}", True),
    # a range over a map makes each value current whatever its key: annotations' among them
    ("go-template={{range .metadata}}{{.note}}{{end}}", False),
    ("go-template={{range .spec.template}}{{.name}}{{end}}", False),
    ("go-template={{range .}}{{.name}}{{end}}", False),
    # custom columns: each column's path (only ``kubectl get`` prints them: it needs a server)
    ("custom-columns=X:.spec", False),
    ("custom-columns=NAME:.metadata.name,SPEC:.spec.template.spec", False),
    ("custom-columns=X:spec.template.spec.containers[0]", False),
    ("custom-columns=X:{.spec}", False),
    ("custom-columns=X:.metadata.annotations", False),
]

SHOWN_TEMPLATES = [
    "jsonpath={.metadata.name}",
    "jsonpath={.items[*].metadata.name}",
    r'jsonpath={range .items[*]}{.metadata.name}{"\t"}{.status.phase}{"\n"}{end}',
    "custom-columns=NAME:.metadata.name,READY:.status.readyReplicas",
    r'go-template={{range .items}}{{.metadata.name}}{{"\n"}}{{end}}',
    "jsonpath={.spec.template.spec.containers[*].image}",
    "jsonpath={.spec.replicas}",
    "jsonpath={.kind} {.apiVersion} {.metadata.namespace}",
    "jsonpath={.metadata.labels}",
    "jsonpath={.metadata.labels.app\\.kubernetes\\.io/name}",
    "jsonpath={.metadata.labels['app.kubernetes.io/name']}",
    "jsonpath={$.metadata.name}",
    "jsonpath={.spec.template.spec.serviceAccountName}",
    "jsonpath={.spec.template.spec.containers[0].ports[*].containerPort}",
    'jsonpath={.status.conditions[?(@.type=="Available")].status}',
    "jsonpath={.items[*].status.addresses[?(@.type=='InternalIP')].address}",
    r'jsonpath={range .spec.template.spec.containers[*]}{@.name}={@.image}{"\n"}{end}',
    "jsonpath={range .spec.template.spec.containers[*].image}{@}{end}",
    "jsonpath-as-json={.spec.template.spec.containers[*].name}",
    "go-template={{.metadata.name}}",
    "go-template={{ .spec.replicas }}",
    'go-template={{- range .spec.template.spec.containers }}{{ .name }}{{ "\\n" }}{{- end }}',
    'go-template={{.metadata.name | printf "%s\\n"}}',
    'go-template={{printf "%s %v" .metadata.name .spec.replicas}}',
    "go-template={{with .spec.template.spec}}{{.serviceAccountName}}{{end}}",
    "go-template={{range .spec.template.spec.containers}}{{.name}}{{else}}none{{end}}",
    'go-template={{range .items}}{{if eq .status.phase "Running"}}{{.metadata.name}}'
    "{{end}}{{end}}",
    "go-template={{if .spec.paused}}paused{{else}}{{.metadata.name}}{{end}}",
    "template={{.metadata.name}}",
    "go-template={{range .metadata.labels}}{{.}} {{end}}",
    "custom-columns=NAME:metadata.name,IMAGE:.spec.template.spec.containers[*].image",
    "custom-columns=NAME:{.metadata.name}",
]


def _kubectl(manifest: Path, output: str) -> subprocess.CompletedProcess[str]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl must be on PATH ($HOME/.cache/wingman/bin)"
    # --local: no server; the Deployment is printed back through the output template
    return subprocess.run([kubectl, "set", "image", "--local", "-f", str(manifest),
                           "web=nginx:1.28", "-o", output], capture_output=True, text=True,
                          timeout=60, env={"KUBECONFIG": "/dev/null", "HOME": "/nonexistent"})


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("withhold") / "deployment.yaml"
    path.write_text(DEPLOYMENT)
    return path


@pytest.mark.parametrize(("output", "leaks"), WITHHELD_TEMPLATES)
def test_templates_printing_more_than_scalar_leaves_are_withheld_whole(
        output: str, leaks: bool, manifest: Path) -> None:
    command = ["kubectl", "get", "deployment", "web", "-o", output]
    assert withholds(command)
    assert redact(f"map[name:FOO value:{VALUE}]\n", command=command) == WITHHELD
    if leaks:  # what kubectl really prints of it: the value under a neutral name
        assert VALUE in _kubectl(manifest, output).stdout


@pytest.mark.parametrize("output", SHOWN_TEMPLATES)
def test_templates_printing_scalar_leaves_are_shown(output: str, manifest: Path) -> None:
    command = ["kubectl", "get", "deployment", "web", "-o", output]
    assert not withholds(command)
    assert redact("web\tRunning\n", command=command) == "web\tRunning\n"
    printed = _kubectl(manifest, output)
    assert VALUE not in printed.stdout + printed.stderr


@pytest.mark.parametrize(("argv", "shown"), [
    # --template is read in the language -o names (go-template when it names none)
    (["--template", "{{.spec}}"], False),
    (["--template={{.}}"], False),
    (["-o", "go-template", "--template", "{{with .spec}}{{.}}{{end}}"], False),
    (["-o", "jsonpath", "--template", "{.spec}"], False),
    (["-o", "jsonpath", "--template={..env}"], False),
    (["--template", "{{.metadata.name}}"], True),
    (["-o", "jsonpath", "--template", "{.metadata.name}"], True),
    # a format this does not know, given a template: nothing can read it
    (["-o", "jsonpath-whatever={.spec}"], False),
    (["-ojsonpath={.spec}"], False),
    (["-o=jsonpath={.spec}"], False),
    (["--output", "custom-columns=X:.spec"], False),
    (["-ojsonpath={.metadata.name}"], True),
    # one-letter flags joined (kubectl reads -Ao as -A -o)
    (["-Ao", "jsonpath={.items[*].spec}"], False),
    (["-Aojsonpath={.items[*].spec}"], False),
    (["-Ro=go-template={{.}}"], False),
    (["-Ao", "jsonpath={.items[*].metadata.name}"], True),
    (["-Ao", "yaml"], True),
    (["-nfoo", "-o", "jsonpath={.metadata.name}"], True),
    # a file's template cannot be read before it runs
    (["-o", "jsonpath-file=t.txt"], False),
    (["-o", "yaml"], True),
    # a ``--`` a flag takes as its value ends no flags: the -o after it is read
    (["--field-manager", "--", "-o", "jsonpath={.spec}"], False),
    (["-l", "--", "-o", "jsonpath={.spec}"], False),
    (["-n", "--", "-o", "jsonpath={.spec}"], False),
    (["--", "-o", "jsonpath={.spec}"], True),
])
def test_template_flags_in_any_spelling(argv: list[str], shown: bool) -> None:
    assert withholds(["kubectl", "get", "deployment", "web", *argv]) is not shown


@pytest.mark.parametrize("argv", [
    "kubectl get secret db -o jsonpath={.metadata.name}",
    "kubectl get secrets -o go-template={{range|.items}}{{.metadata.name}}{{end}}",
    "kubectl get secrets -o custom-columns=NAME:.metadata.name",
    "kubectl get secrets -Ao jsonpath={.items[*].metadata.name}",
    "kubectl get secrets -Aojsonpath={.items[*].metadata.name}",
    "kubectl get -Rf manifests/ -o jsonpath={.items[*].metadata.name}",
])
def test_templates_over_secrets_are_withheld_whatever_they_select(argv: str) -> None:
    assert withholds([arg.replace("|", " ") for arg in argv.split(" ")])


def test_the_withheld_message_says_what_to_do_instead() -> None:
    assert ".metadata.name" in WITHHELD and "-o yaml" in WITHHELD and "-o json" in WITHHELD


@pytest.mark.parametrize("argv", [
    "kubectl exec web -it -- cmd -o a=b",
    "kubectl exec web -c app -- cmd -o a=b",
    "kubectl exec web --stdin --tty -- cmd -o jsonpath={.x}",
    "kubectl run web --image=busybox -it --rm -- cmd -o jsonpath={.x}",
    # every flag that takes no value ends the flags before a --, as in scope.SWITCH_FLAGS
    "kubectl debug web -it --image=busybox --share-processes -- cmd -o jsonpath={.x}",
    "kubectl run web --image=busybox -i --restart=Never --pod-running-timeout=1m --command "
    "-- cmd -o jsonpath={.x}",
])
def test_what_kubectl_exec_runs_after_the_double_dash_is_no_output_format(argv: str) -> None:
    assert not withholds(argv.split(" "))


def test_a_range_over_a_map_is_withheld(tmp_path: Path) -> None:
    # go-template's range over a map makes each value current, whatever its key: an
    # annotation's value under a leaf's name is printed as the ``name`` of a map it skipped
    manifest = tmp_path / "deployment.yaml"
    manifest.write_text(DEPLOYMENT.replace("metadata: {labels: {app: web}}",
                                           f"metadata: {{annotations: {{name: {VALUE}}}, "
                                           "labels: {app: web}}"))
    output = "go-template={{range .spec.template.metadata}}{{.name}}{{end}}"
    assert VALUE in _kubectl(manifest, output).stdout
    assert withholds(["kubectl", "get", "deployment", "web", "-o", output])


def test_a_wildcard_over_a_map_is_withheld(tmp_path: Path) -> None:
    # ``.*`` is every value of a map whatever its name: a ConfigMap's data among them
    command = ["kubectl", "create", "configmap", "web", f"--from-literal=name={VALUE}",
               "--dry-run=client", "-o", "jsonpath={.*.name}"]
    printed = subprocess.run(command, capture_output=True, text=True, timeout=60,
                             env={"KUBECONFIG": "/dev/null", "HOME": "/nonexistent",
                                  "PATH": str(Path(shutil.which("kubectl") or "").parent)})
    assert VALUE in printed.stdout
    assert withholds(command)
    assert withholds(["kubectl", "get", "deployment", "web", "-o", "custom-columns=X:.*.name"])


@pytest.mark.parametrize("output", [
    # leaves only, but a field of a string fails as it runs: kubectl then prints the whole
    # object, for debugging the template, with the environment's values
    "go-template={{range .spec.template.spec.containers}}{{.image.name}}{{end}}",
    "jsonpath={.metadata.name[0]}",
])
def test_a_template_failing_as_it_runs_is_withheld(output: str, manifest: Path) -> None:
    command = ["kubectl", "get", "deployment", "web", "-o", output]
    assert not withholds(command)
    printed = _kubectl(manifest, output)
    assert printed.returncode != 0 and VALUE in printed.stdout + printed.stderr
    assert redact(printed.stdout + printed.stderr, command=command) == WITHHELD
    assert redact(printed.stdout + printed.stderr) != WITHHELD  # what only kubectl prints
