// Command healthcheck evaluates custom health checks the way Argo CD and Flux do, with the same
// engines (github.com/yuin/gopher-lua, github.com/google/cel-go):
//
//	healthcheck lua SCRIPT.lua < objects.yaml
//	    Argo CD: the script sees the object as the global `obj` and returns a table with
//	    `status` (Healthy, Progressing, Degraded, Suspended, Missing, Unknown) and `message`.
//	healthcheck cel CHECKS.yaml < objects.yaml
//	    Flux (Kustomization spec.healthCheckExprs): CHECKS.yaml is that list; for the entry of
//	    the object's apiVersion and kind, `inProgress`, `failed` and `current` are evaluated in
//	    that order with the object's top-level fields (apiVersion, kind, metadata, spec, status)
//	    as variables; the first that holds gives InProgress, Failed or Current, none InProgress.
//
// Objects are a YAML stream; one JSON line per object is printed:
// {"kind":"...","name":"...","status":"...","message":"..."}. Exit 2 on bad input.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/google/cel-go/cel"
	lua "github.com/yuin/gopher-lua"
	"sigs.k8s.io/yaml"
)

type verdict struct {
	Kind    string `json:"kind"`
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message,omitempty"`
}

func main() {
	if len(os.Args) != 3 || (os.Args[1] != "lua" && os.Args[1] != "cel") {
		fail(errors.New("usage: healthcheck lua SCRIPT.lua | cel CHECKS.yaml  < objects.yaml"))
	}
	definition, err := os.ReadFile(os.Args[2])
	if err != nil {
		fail(err)
	}
	objects, err := readObjects(os.Stdin)
	if err != nil {
		fail(err)
	}
	out := json.NewEncoder(os.Stdout)
	for _, obj := range objects {
		var v verdict
		if os.Args[1] == "lua" {
			v, err = evalLua(string(definition), obj)
		} else {
			v, err = evalCEL(definition, obj)
		}
		if err != nil {
			fail(err)
		}
		meta, _ := obj["metadata"].(map[string]interface{})
		v.Kind, _ = obj["kind"].(string)
		v.Name, _ = meta["name"].(string)
		if err := out.Encode(v); err != nil {
			fail(err)
		}
	}
}

func readObjects(r io.Reader) ([]map[string]interface{}, error) {
	data, err := io.ReadAll(bufio.NewReader(r))
	if err != nil {
		return nil, err
	}
	var out []map[string]interface{}
	for _, doc := range strings.Split(string(data), "\n---") {
		if strings.TrimSpace(strings.TrimPrefix(doc, "---")) == "" {
			continue
		}
		var obj map[string]interface{}
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			return nil, fmt.Errorf("cannot read an object: %w", err)
		}
		if obj != nil {
			out = append(out, obj)
		}
	}
	return out, nil
}

// toLua converts decoded JSON into Lua values (objects and arrays become tables, arrays
// 1-based), as Argo CD's health Lua sees a resource.
func toLua(L *lua.LState, v interface{}) lua.LValue {
	switch x := v.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(x)
	case float64:
		return lua.LNumber(x)
	case string:
		return lua.LString(x)
	case []interface{}:
		t := L.NewTable()
		for _, item := range x {
			t.Append(toLua(L, item))
		}
		return t
	case map[string]interface{}:
		t := L.NewTable()
		for k, item := range x {
			t.RawSetString(k, toLua(L, item))
		}
		return t
	default:
		return lua.LString(fmt.Sprint(x))
	}
}

func evalLua(script string, obj map[string]interface{}) (verdict, error) {
	L := lua.NewState()
	defer L.Close()
	raw, err := json.Marshal(obj)
	if err != nil {
		return verdict{}, err
	}
	var decoded interface{}
	if err := json.Unmarshal(raw, &decoded); err != nil {
		return verdict{}, err
	}
	L.SetGlobal("obj", toLua(L, decoded))
	if err := L.DoString(script); err != nil {
		return verdict{}, fmt.Errorf("the Lua script failed: %w", err)
	}
	hs, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		return verdict{}, errors.New("the Lua script did not return a table")
	}
	return verdict{Status: lua.LVAsString(hs.RawGetString("status")),
		Message: lua.LVAsString(hs.RawGetString("message"))}, nil
}

type celCheck struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Current    string `json:"current"`
	Failed     string `json:"failed"`
	InProgress string `json:"inProgress"`
}

func evalCEL(definition []byte, obj map[string]interface{}) (verdict, error) {
	var checks []celCheck
	if err := yaml.Unmarshal(definition, &checks); err != nil {
		return verdict{}, fmt.Errorf("cannot read the checks: %w", err)
	}
	for _, c := range checks {
		if c.APIVersion != obj["apiVersion"] || c.Kind != obj["kind"] {
			continue
		}
		names := []string{"apiVersion", "kind", "metadata", "spec", "status"}
		var opts []cel.EnvOption
		vars := map[string]interface{}{}
		for _, n := range names {
			opts = append(opts, cel.Variable(n, cel.DynType))
			if v, ok := obj[n]; ok {
				vars[n] = v
			} else {
				vars[n] = map[string]interface{}{}
			}
		}
		env, err := cel.NewEnv(opts...)
		if err != nil {
			return verdict{}, err
		}
		for _, step := range []struct{ expr, status string }{
			{c.InProgress, "InProgress"}, {c.Failed, "Failed"}, {c.Current, "Current"}} {
			if step.expr == "" {
				continue
			}
			ast, iss := env.Compile(step.expr)
			if iss.Err() != nil {
				return verdict{}, fmt.Errorf("%s: %w", step.expr, iss.Err())
			}
			prg, err := env.Program(ast)
			if err != nil {
				return verdict{}, err
			}
			out, _, err := prg.Eval(vars)
			if err != nil {
				return verdict{}, fmt.Errorf("%s: %w", step.expr, err)
			}
			if b, ok := out.Value().(bool); ok && b {
				return verdict{Status: step.status}, nil
			}
		}
		return verdict{Status: "InProgress"}, nil
	}
	return verdict{}, fmt.Errorf("no check for %v %v", obj["apiVersion"], obj["kind"])
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "healthcheck: %v\n", err)
	os.Exit(2)
}
