// gitops-check reads a Kubernetes object (JSON, a file or "-" for stdin) and prints, as JSON, what
// the GitOps tools make of it: the kstatus library Flux and `kubectl wait`-style pollers use, and
// Argo CD's Lua engine running a health check or a resource action the way an argocd-cm
// customization runs.
//
//	gitops-check kstatus OBJ                 {"status": "Current", "message": "..."}
//	gitops-check argocd-health LUA OBJ       {"status": "Healthy", "message": "..."}
//	gitops-check argocd-discovery LUA OBJ    {"refresh": {...}}
//	gitops-check argocd-action LUA OBJ       {"object": {...}, "patch": {...}}
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	jsonpatch "github.com/evanphx/json-patch"
	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	luajson "layeh.com/gopher-json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	out, err := run(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "gitops-check:", err)
		os.Exit(1)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "gitops-check:", err)
		os.Exit(1)
	}
}

const usage = "usage: gitops-check kstatus OBJ | argocd-health LUA OBJ | argocd-discovery LUA OBJ | argocd-action LUA OBJ"

func run(args []string) (any, error) {
	if len(args) == 2 && args[0] == "kstatus" {
		obj, err := readObject(args[1])
		if err != nil {
			return nil, err
		}
		res, err := status.Compute(obj)
		if err != nil {
			return nil, err
		}
		return map[string]string{"status": res.Status.String(), "message": res.Message}, nil
	}
	if len(args) != 3 {
		return nil, errors.New(usage)
	}
	script, err := os.ReadFile(args[1])
	if err != nil {
		return nil, err
	}
	obj, err := readObject(args[2])
	if err != nil {
		return nil, err
	}
	switch args[0] {
	case "argocd-health":
		return health(string(script), obj)
	case "argocd-discovery":
		return discovery(string(script), obj)
	case "argocd-action":
		return action(string(script), obj)
	}
	return nil, errors.New(usage)
}

// readObject decodes like the API machinery does (integers stay int64, which kstatus requires).
func readObject(path string) (*unstructured.Unstructured, error) {
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(os.Stdin)
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, err
	}
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(data); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return obj, nil
}

// The health statuses Argo CD accepts; anything else it shows as Unknown.
var healthStatuses = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true,
	"Suspended": true, "Missing": true, "Unknown": true,
}

type healthResult struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

func health(script string, obj *unstructured.Unstructured) (any, error) {
	ret, err := runLua(script, obj)
	if err != nil {
		return nil, err
	}
	if ret.Type() != lua.LTTable {
		return nil, fmt.Errorf("health script returned %s, not a table", ret.Type())
	}
	raw, err := luajson.Encode(ret)
	if err != nil {
		return nil, err
	}
	var hs healthResult
	if err := json.Unmarshal(raw, &hs); err != nil {
		return nil, fmt.Errorf("health script returned %s: %w", raw, err)
	}
	if !healthStatuses[hs.Status] {
		return healthResult{Status: "Unknown", Message: "Lua returned an invalid health status"}, nil
	}
	return hs, nil
}

func discovery(script string, obj *unstructured.Unstructured) (any, error) {
	ret, err := runLua(script, obj)
	if err != nil {
		return nil, err
	}
	if ret.Type() != lua.LTTable {
		return nil, fmt.Errorf("discovery script returned %s, not a table", ret.Type())
	}
	raw, err := luajson.Encode(ret)
	if err != nil {
		return nil, err
	}
	return json.RawMessage(raw), nil
}

// action runs a patch-style action and prints the object it returns and the JSON merge patch
// from the live object to it, which is what Argo CD sends to the API server.
func action(script string, obj *unstructured.Unstructured) (any, error) {
	live, err := obj.MarshalJSON()
	if err != nil {
		return nil, err
	}
	ret, err := runLua(script, obj)
	if err != nil {
		return nil, err
	}
	if ret.Type() != lua.LTTable {
		return nil, fmt.Errorf("action script returned %s, not a table", ret.Type())
	}
	raw, err := luajson.Encode(ret)
	if err != nil {
		return nil, err
	}
	var changed map[string]any
	if err := json.Unmarshal(raw, &changed); err != nil {
		return nil, fmt.Errorf("action script returned %s: %w", raw, err)
	}
	var before map[string]any
	if err := json.Unmarshal(live, &before); err != nil {
		return nil, err
	}
	restoreEmptyMaps(changed, before)
	modified, err := json.Marshal(changed)
	if err != nil {
		return nil, err
	}
	patch, err := jsonpatch.CreateMergePatch(live, modified)
	if err != nil {
		return nil, err
	}
	return map[string]json.RawMessage{"object": modified, "patch": patch}, nil
}

// restoreEmptyMaps undoes a Lua round trip's one ambiguity, as Argo CD does before patching: an
// empty table encodes as [], so an empty map of the live object would otherwise become a list.
func restoreEmptyMaps(changed, live map[string]any) {
	for k, old := range live {
		switch n := changed[k].(type) {
		case map[string]any:
			if o, ok := old.(map[string]any); ok {
				restoreEmptyMaps(n, o)
			}
		case []any:
			if _, ok := old.(map[string]any); ok && len(n) == 0 {
				changed[k] = map[string]any{}
			} else if o, ok := old.([]any); ok {
				for i := range min(len(n), len(o)) {
					nm, ok1 := n[i].(map[string]any)
					om, ok2 := o[i].(map[string]any)
					if ok1 && ok2 {
						restoreEmptyMaps(nm, om)
					}
				}
			}
		}
	}
}

// runLua runs a script in the environment Argo CD gives argocd-cm customizations (no
// `resource.customizations.useOpenLibs`): only the package, base and table libraries and an os
// library reduced to time and date, the object as the global `obj`, and a 1 s limit. It returns
// the script's result.
func runLua(script string, obj *unstructured.Unstructured) (lua.LValue, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	libs := []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.OsLibName, openSafeOs},
	}
	for _, lib := range libs {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), Protect: true}, lua.LString(lib.name)); err != nil {
			return nil, err
		}
	}
	l.PreloadModule(lua.OsLibName, func(l *lua.LState) int {
		l.Push(l.SetFuncs(l.NewTable(), safeOsFuncs()))
		return 1
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("actionParams", l.NewTable())
	l.SetGlobal("obj", toLua(l, obj.Object))
	if err := l.DoString(script); err != nil {
		return nil, err
	}
	return l.Get(-1), nil
}

func openSafeOs(l *lua.LState) int {
	l.Push(l.RegisterModule(lua.OsLibName, safeOsFuncs()))
	return 1
}

// safeOsFuncs are gopher-lua's own os.time and os.date, nothing else of its os library.
func safeOsFuncs() map[string]lua.LGFunction {
	full := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer full.Close()
	full.Push(full.NewFunction(lua.OpenOs))
	full.Call(0, 1)
	lib := full.Get(-1).(*lua.LTable)
	funcs := map[string]lua.LGFunction{}
	for _, name := range []string{"time", "date"} {
		funcs[name] = lib.RawGetString(name).(*lua.LFunction).GFunction
	}
	return funcs
}

// toLua converts a decoded object to Lua values as Argo CD does: maps to tables keyed by
// string, lists to tables indexed from 1, numbers to Lua numbers.
func toLua(l *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case map[string]any:
		t := l.CreateTable(0, len(v))
		for k, item := range v {
			t.RawSetString(k, toLua(l, item))
		}
		return t
	case []any:
		t := l.CreateTable(len(v), 0)
		for _, item := range v {
			t.Append(toLua(l, item))
		}
		return t
	case string:
		return lua.LString(v)
	case bool:
		return lua.LBool(v)
	case int64:
		return lua.LNumber(v)
	case float64:
		return lua.LNumber(v)
	}
	return lua.LNil
}
