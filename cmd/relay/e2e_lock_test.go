//go:build integration

package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/relaydev/relay/internal/testutil"
	"github.com/relaydev/relay/pkg/attest"
	"github.com/relaydev/relay/pkg/oci"
)

// TestE2ETwoRunsOnOneState: a CI retry while the first job still runs, against Debian's
// distribution 2.8 (no referrers API: every attachment rewrites a tag index, where two
// writers lose each other's updates). Exactly one run proceeds; the other exits 2 at once
// naming the holder; the registry ends with exactly one signature, SBOM and provenance per
// digest; and a SIGKILLed holder's lock does not block the next run.
func TestE2ETwoRunsOnOneState(t *testing.T) {
	cosign := testutil.Tool(t, "cosign", "go install github.com/sigstore/cosign/v2/cmd/cosign@v2.6.5")
	d := testutil.StartDistribution(t)
	keys := t.TempDir()
	gen := exec.Command(cosign, "generate-key-pair")
	gen.Dir, gen.Env = keys, append(os.Environ(), "COSIGN_PASSWORD=pw", "HOME="+keys)
	if out, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("cosign generate-key-pair: %v\n%s", err, out)
	}
	dockerCfg := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte(d.User + ":" + d.Password))
	os.WriteFile(filepath.Join(dockerCfg, "config.json"), []byte(fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, d.Host, auth)), 0o600)
	dir := realExample(t, d.Host, fmt.Sprintf("signing: {mode: key, key: %s, classic: false, tlog: false}\nregistries: [{host: %q, insecure: true}]\n", filepath.Join(keys, "cosign.key"), d.Host))
	env := []string{"COSIGN_PASSWORD=pw", "DOCKER_CONFIG=" + dockerCfg}

	// start runs relay and returns once it logged its first step: it holds the lock then.
	type running struct {
		cmd  *exec.Cmd
		logs *strings.Builder
		done chan error
	}
	start := func(args ...string) running {
		t.Helper()
		cmd := relayCmd(context.Background(), dir, args...)
		cmd.Env = append(cmd.Env, env...)
		pr, pw := io.Pipe()
		cmd.Stderr = pw
		var logs strings.Builder
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		started := make(chan struct{})
		go func() {
			sc := bufio.NewScanner(pr)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			once := false
			for sc.Scan() {
				logs.WriteString(sc.Text() + "\n")
				if !once && strings.Contains(sc.Text(), `"step started"`) {
					once = true
					close(started)
				}
			}
			if !once {
				close(started)
			}
		}()
		done := make(chan error, 1)
		go func() { err := cmd.Wait(); pw.Close(); done <- err }()
		select {
		case <-started:
		case <-time.After(2 * time.Minute): // a guard against a hang, not synchronisation
			cmd.Process.Kill()
			t.Fatalf("relay %v never started a step:\n%s", args, logs.String())
		}
		return running{cmd, &logs, done}
	}

	first := start("run")
	second := runRelayEnv(t, dir, env, "run")
	if second.code != exitUsage || !strings.Contains(second.stderr, "is in use by pid "+strconv.Itoa(first.cmd.Process.Pid)) || !strings.Contains(second.stderr, "--wait-lock") {
		t.Fatalf("the second run: exit %d\n%s", second.code, second.stderr)
	}
	if err := <-first.done; err != nil {
		t.Fatalf("the first run: %v\n%s", err, first.logs.String())
	}

	client, err := oci.New(oci.WithTransport(d.Transport), oci.WithKeychain(d.Keychain()))
	if err != nil {
		t.Fatal(err)
	}
	im := readLock(t, filepath.Join(dir, "dist")).Images[0]
	repo, _ := name.NewRepository(im.Repository)
	count := func() map[string]int {
		n := map[string]int{}
		for _, dg := range []string{im.Digest, im.Platforms[0].Digest, im.Platforms[1].Digest} {
			atts, err := client.Bundles(context.Background(), repo.Digest(dg), "")
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range atts {
				n[dg[:19]+" "+a.PredicateType]++
			}
		}
		return n
	}
	want := map[string]int{
		im.Digest[:19] + " " + attest.PredicateSign: 1, im.Digest[:19] + " " + attest.PredicateSLSA: 1,
	}
	for _, p := range im.Platforms {
		for _, pt := range []string{attest.PredicateSign, attest.PredicateSPDX, attest.PredicateCycloneDX} {
			want[p.Digest[:19]+" "+pt] = 1
		}
	}
	if got := count(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("referrers after two runs on one state:\n%v\nwant one of each:\n%v", got, want)
	}

	// A holder killed with SIGKILL (an OOM kill) runs no clean-up; its lock goes with it.
	killed := start("run", "--restart")
	killed.cmd.Process.Kill()
	<-killed.done
	if r := runRelayEnv(t, dir, env, "run"); r.code != 0 {
		t.Fatalf("after the holder was SIGKILLed: exit %d\n%s", r.code, r.stderr)
	}
	if got := count(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("referrers after the resumed run:\n%v\nwant:\n%v", got, want)
	}
}
