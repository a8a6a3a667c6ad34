// Command lua runs an Argo CD resource health script against one Kubernetes object, the way
// Argo CD does: the object (JSON or YAML, from a file or "-" for standard input) becomes the
// global table `obj`, the script returns a table `hs`, and its `status` and `message` are
// printed as two lines. It uses github.com/yuin/gopher-lua, the Lua VM Argo CD embeds, and
// opens only the libraries Argo CD opens for health scripts (package, base, table; Argo CD's
// restricted `os` is left out), so a script that needs more fails here as it would there.
//
//	lua health.lua object.yaml
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	lua "github.com/yuin/gopher-lua"
	"sigs.k8s.io/yaml"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: lua SCRIPT OBJECT (OBJECT is a JSON or YAML file, - for stdin)")
		os.Exit(2)
	}
	status, message, err := run(os.Args[1], os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
	fmt.Println(status)
	fmt.Println(message)
}

func run(scriptPath, objectPath string) (string, string, error) {
	script, err := os.ReadFile(scriptPath)
	if err != nil {
		return "", "", err
	}
	var raw []byte
	if objectPath == "-" {
		raw, err = io.ReadAll(os.Stdin)
	} else {
		raw, err = os.ReadFile(objectPath)
	}
	if err != nil {
		return "", "", err
	}
	// YAML is a superset of JSON: one conversion handles both.
	jsonBytes, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return "", "", fmt.Errorf("parsing the object: %w", err)
	}
	var object map[string]interface{}
	if err := json.Unmarshal(jsonBytes, &object); err != nil {
		return "", "", fmt.Errorf("the object is not a map: %w", err)
	}

	// Argo CD opens only these libraries for health scripts (no string, math or io).
	state := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer state.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		state.Push(state.NewFunction(lib.open))
		state.Push(lua.LString(lib.name))
		state.Call(1, 0)
	}
	state.SetGlobal("obj", toLua(state, object))
	if err := state.DoString(string(script)); err != nil {
		return "", "", err
	}
	result, ok := state.Get(-1).(*lua.LTable)
	if !ok {
		return "", "", fmt.Errorf("the script returned %s, not a table", state.Get(-1).Type())
	}
	status := result.RawGetString("status")
	message := result.RawGetString("message")
	if status == lua.LNil {
		return "", "", fmt.Errorf("the returned table has no status")
	}
	msg := ""
	if message != lua.LNil {
		msg = message.String()
	}
	return status.String(), msg, nil
}

// toLua converts decoded JSON into Lua values: objects and arrays become tables (arrays
// 1-based), numbers become Lua numbers, null becomes nil.
func toLua(state *lua.LState, value interface{}) lua.LValue {
	switch v := value.(type) {
	case map[string]interface{}:
		table := state.NewTable()
		for key, item := range v {
			table.RawSetString(key, toLua(state, item))
		}
		return table
	case []interface{}:
		table := state.NewTable()
		for _, item := range v {
			table.Append(toLua(state, item))
		}
		return table
	case string:
		return lua.LString(v)
	case float64:
		return lua.LNumber(v)
	case bool:
		return lua.LBool(v)
	default:
		return lua.LNil
	}
}
