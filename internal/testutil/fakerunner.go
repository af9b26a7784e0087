package testutil

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// MaybeFakeRunner turns this test binary into the Actions runner when run.sh or config.sh
// of a FakeRunnerDir exec it; call it first in TestMain.
func MaybeFakeRunner() {
	if len(os.Args) > 2 && os.Args[1] == "__fake_runner__" {
		os.Exit(fakeRunner(os.Args[2], os.Args[3:]))
	}
}

// fakeRunner prints the real runner's lines for the scenario in ./scenario and exits with
// its codes; it records its environment and arguments for the tests to inspect.
func fakeRunner(mode string, args []string) int {
	raw, _ := os.ReadFile("scenario")
	scenario := strings.TrimSpace(string(raw))
	var env []string
	env = append(env, os.Environ()...)
	os.WriteFile(mode+".env", []byte(strings.Join(env, "\n")), 0o644)
	os.WriteFile(mode+".args", []byte(strings.Join(args, "\n")), 0o644)
	flag := func(name string) string {
		for i, a := range args {
			if a == name && i+1 < len(args) {
				return args[i+1]
			}
		}
		return ""
	}
	post := func(path string, body any) error {
		u := flag("--url")
		if u == "" { // config.sh remove: the registration's own settings know the server
			b, _ := os.ReadFile(".url")
			u = string(b)
		}
		os.WriteFile(".url", []byte(u), 0o644)
		if i := strings.Index(u[len("http://"):], "/"); i >= 0 {
			u = u[:len("http://")+i]
		}
		b, _ := json.Marshal(body)
		resp, err := http.Post(u+path, "application/json", bytes.NewReader(b))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode >= 300 {
			return fmt.Errorf("%s: %d", path, resp.StatusCode)
		}
		return nil
	}
	switch mode {
	case "config":
		if len(args) > 0 && args[0] == "remove" {
			if err := post("/_fake/remove", map[string]any{"token": flag("--token")}); err != nil {
				fmt.Println("Failed: removing runner from the server", err)
				return 1
			}
			fmt.Println("# Runner removal\n\n√ Runner removed successfully")
			return 0
		}
		if err := post("/_fake/register", map[string]any{"token": flag("--token"), "name": flag("--name"), "labels": strings.Split(flag("--labels"), ",")}); err != nil {
			fmt.Println("Http response code: NotFound", err)
			return 1
		}
		fmt.Println("\n√ Connected to GitHub\n\n# Runner Registration\n\n√ Runner successfully added\n√ Runner connection is good\n\n# Runner settings\n\n√ Settings Saved.")
		return 0
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM, syscall.SIGINT)
	os.WriteFile("pid", []byte(fmt.Sprint(os.Getpid())), 0o644)
	ts := func() string { return time.Now().UTC().Format("2006-01-02 15:04:05Z") }
	fmt.Printf("\n√ Connected to GitHub\n\nCurrent runner version: '%s'\n%s: Listening for Jobs\n", FakeRunnerVersion, ts())
	switch scenario {
	case "deprecated":
		// What the listener and run.sh print when the broker refuses the version.
		fmt.Printf("An error occurred: Runner version v%s is deprecated and cannot receive messages.\n", FakeRunnerVersion)
		if os.Getenv("ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE") == "1" {
			fmt.Println("Runner listener exit with deprecated version exit code: 7.\nExiting runner...")
			return 7
		}
		fmt.Println("Runner listener exit with terminated error, stop the service, no retry needed.\nExiting runner...")
		return 0
	case "success", "fail":
		result := map[string]string{"success": "Succeeded", "fail": "Failed"}[scenario]
		fmt.Printf("%s: Running job: build\n", ts())
		fmt.Printf("%s: Job build completed with result: %s\n", ts(), result)
		return 0
	case "orphan":
		// A process the runner starts and never waits for: when the runner exits it is
		// re-parented to PID 1, which must reap it.
		p, err := os.StartProcess("/bin/true", []string{"true"}, &os.ProcAttr{})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		for { // until it has exited (a zombie of ours), read from /proc, not timed
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.Pid))
			if f := strings.Fields(string(b)); len(f) > 2 && f[2] == "Z" {
				break
			}
			runtime.Gosched()
		}
		os.WriteFile("orphan.pid", []byte(fmt.Sprint(p.Pid)), 0o644)
		fmt.Printf("%s: Running job: build\n%s: Job build completed with result: Succeeded\n", ts(), ts())
		return 0
	case "scaleset":
		// A runner of a scale set: it connects with its JIT config to the service the
		// config names (the fake broker), takes its job and finishes it.
		jit := flag("--jitconfig")
		server, err := jitServer(jit)
		if err != nil {
			fmt.Fprintln(os.Stderr, "Unhandled exception.", err)
			return 1
		}
		for _, step := range []string{"take", "finish"} {
			resp, err := http.Post(server+"_fake/"+step, "text/plain", strings.NewReader(jit))
			if err != nil || resp.StatusCode != http.StatusOK {
				fmt.Fprintln(os.Stderr, "An error occurred: the broker refused the runner:", step, err, resp)
				return 1
			}
			resp.Body.Close()
			if step == "take" {
				fmt.Printf("%s: Running job: build\n", ts())
			}
		}
		fmt.Printf("%s: Job build completed with result: Succeeded\n", ts())
		return 0
	case "crash":
		fmt.Fprintln(os.Stderr, "Unhandled exception. System.IO.IOException: No space left on device")
		return 134
	case "idle":
		<-term
		fmt.Println("Exiting...\nRunner listener exit with 0 return code, stop the service, no retry needed.")
		return 0
	case "job-forever":
		fmt.Printf("%s: Running job: deploy\n", ts())
		<-term
		fmt.Printf("%s: Job deploy completed with result: Canceled\n", ts())
		return 0
	}
	fmt.Fprintln(os.Stderr, "unknown scenario", scenario)
	return 2
}

// jitServer is the service URL of a JIT config's .runner settings.
func jitServer(encoded string) (string, error) {
	raw, err := base64.StdEncoding.DecodeString(encoded)
	if err != nil {
		return "", err
	}
	var files map[string]string
	if err := json.Unmarshal(raw, &files); err != nil {
		return "", err
	}
	settings, _ := base64.StdEncoding.DecodeString(files[".runner"])
	var rs struct {
		ServerURL string `json:"serverUrl"`
	}
	if err := json.Unmarshal(settings, &rs); err != nil || rs.ServerURL == "" {
		return "", fmt.Errorf("no serverUrl in the JIT config")
	}
	return strings.TrimSuffix(rs.ServerURL, "tenant/"), nil
}

// FakeRunnerDir is an Actions runner directory whose run.sh and config.sh exec this test
// binary (see MaybeFakeRunner) to play scenario: success, fail, idle, crash, job-forever,
// deprecated (GitHub refuses the version), orphan, scaleset (takes its job from the fake
// broker its JIT config names).
// The fake writes run.env/run.args (config.env/config.args) and its pid there.
func FakeRunnerDir(t testing.TB, scenario string) string {
	t.Helper()
	dir := t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]string{"run.sh": "run", "config.sh": "config"} {
		// exec_at: when the runner was exec'd (ns), for the start-to-exec benchmark.
		script := fmt.Sprintf("#!/bin/sh\ndate +%%s%%N > %s.exec_at\nexec %q __fake_runner__ %s \"$@\"\n", mode, exe, mode)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(dir, "scenario"), []byte(scenario), 0o644)
	// The .NET manifest a runner release ships, where relay reads the version.
	os.MkdirAll(filepath.Join(dir, "bin"), 0o755)
	deps := fmt.Sprintf(`{"runtimeTarget":{"name":".NETCoreApp,Version=v8.0/linux-x64"},"libraries":{"Runner.Listener/%s":{"type":"project","serviceable":false,"sha512":""},"Newtonsoft.Json/13.0.3":{"type":"package"}}}`, FakeRunnerVersion)
	os.WriteFile(filepath.Join(dir, "bin", "Runner.Listener.deps.json"), []byte(deps), 0o644)
	return dir
}
