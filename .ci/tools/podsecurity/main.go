// Command podsecurity evaluates Kubernetes objects against a Pod Security Standards level with
// the upstream evaluator (k8s.io/pod-security-admission/policy), the code the API server's
// PodSecurity admission runs.
//
//	podsecurity [-level restricted|baseline|privileged] [-version latest|v1.N] < objects.yaml
//
// It reads a YAML stream (documents separated by ---, or List objects) and prints one JSON
// object per line for every object that carries a pod spec (Pod, and the templates of
// Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob):
//
//	{"kind":"Job","namespace":"ns","name":"x","level":"restricted","version":"latest",
//	 "allowed":false,"forbidden":[{"reason":"host namespaces","detail":"hostNetwork=true"}]}
//
// The exit code is 0 when every such object is allowed, 1 when one is not, 2 on bad input.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
)

type forbidden struct {
	Reason string `json:"reason"`
	Detail string `json:"detail,omitempty"`
}

type result struct {
	Kind      string      `json:"kind"`
	Namespace string      `json:"namespace,omitempty"`
	Name      string      `json:"name"`
	Level     string      `json:"level"`
	Version   string      `json:"version"`
	Allowed   bool        `json:"allowed"`
	Forbidden []forbidden `json:"forbidden"`
}

// podTemplatePath is where each workload kind keeps its pod template.
var podTemplatePath = map[string][]string{
	"Deployment":  {"spec", "template"},
	"StatefulSet": {"spec", "template"},
	"DaemonSet":   {"spec", "template"},
	"ReplicaSet":  {"spec", "template"},
	"Job":         {"spec", "template"},
	"CronJob":     {"spec", "jobTemplate", "spec", "template"},
}

func main() {
	levelFlag := flag.String("level", "restricted", "Pod Security Standards level")
	versionFlag := flag.String("version", "latest", "version of the standard (latest or v1.N)")
	flag.Parse()
	level, err := api.ParseLevel(*levelFlag)
	if err != nil {
		fail(err)
	}
	version, err := api.ParseVersion(*versionFlag)
	if err != nil {
		fail(err)
	}
	evaluator, err := policy.NewEvaluator(policy.DefaultChecks())
	if err != nil {
		fail(err)
	}
	lv := api.LevelVersion{Level: level, Version: version}
	decoder := utilyaml.NewYAMLOrJSONDecoder(bufio.NewReader(os.Stdin), 4096)
	out := json.NewEncoder(os.Stdout)
	allAllowed := true
	for {
		var raw map[string]interface{}
		if err := decoder.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			fail(fmt.Errorf("cannot read the input: %w", err))
		}
		if raw == nil {
			continue
		}
		objects := []*unstructured.Unstructured{{Object: raw}}
		if list := (&unstructured.Unstructured{Object: raw}); list.IsList() {
			objects = nil
			if err := list.EachListItem(func(o runtime.Object) error {
				objects = append(objects, o.(*unstructured.Unstructured))
				return nil
			}); err != nil {
				fail(err)
			}
		}
		for _, obj := range objects {
			meta, spec, ok, err := podOf(obj)
			if err != nil {
				fail(fmt.Errorf("%s %s: %w", obj.GetKind(), obj.GetName(), err))
			}
			if !ok {
				continue
			}
			res := result{Kind: obj.GetKind(), Namespace: obj.GetNamespace(), Name: obj.GetName(),
				Level: string(level), Version: version.String(), Allowed: true,
				Forbidden: []forbidden{}}
			for _, check := range evaluator.EvaluatePod(lv, meta, spec) {
				if !check.Allowed {
					res.Allowed = false
					res.Forbidden = append(res.Forbidden,
						forbidden{Reason: check.ForbiddenReason, Detail: check.ForbiddenDetail})
				}
			}
			allAllowed = allAllowed && res.Allowed
			if err := out.Encode(res); err != nil {
				fail(err)
			}
		}
	}
	if !allAllowed {
		os.Exit(1)
	}
}

// podOf returns the pod metadata and spec an object carries, if any.
func podOf(obj *unstructured.Unstructured) (*metav1.ObjectMeta, *corev1.PodSpec, bool, error) {
	if obj.GetKind() == "Pod" {
		var pod corev1.Pod
		if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(
			obj.Object, &pod, true); err != nil {
			return nil, nil, false, err
		}
		return &pod.ObjectMeta, &pod.Spec, true, nil
	}
	path, ok := podTemplatePath[obj.GetKind()]
	if !ok {
		return nil, nil, false, nil
	}
	template, found, err := unstructured.NestedMap(obj.Object, path...)
	if err != nil || !found {
		return nil, nil, false, fmt.Errorf("no pod template at .%v: %v", path, err)
	}
	var pts corev1.PodTemplateSpec
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(
		template, &pts, true); err != nil {
		return nil, nil, false, err
	}
	return &pts.ObjectMeta, &pts.Spec, true, nil
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "podsecurity: %v\n", err)
	os.Exit(2)
}
