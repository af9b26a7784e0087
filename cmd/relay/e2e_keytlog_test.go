//go:build integration

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/relaydev/relay/internal/testutil"
)

// TestE2EKeyReleaseVerifiesByDefault: a key-signed release is logged in Rekor, as cosign
// does by default, so a consumer's plain `cosign verify --key` and `verify-attestation
// --key` pass with cosign v2 (classic .sig/.att with their Rekor v1 entries) and v3
// (bundles), with no --insecure-ignore-tlog; the local Sigstore stack's Rekor v1 stands
// in for the public-good one.
func TestE2EKeyReleaseVerifiesByDefault(t *testing.T) {
	if !testutil.InNetNS(t) {
		return
	}
	var hdrs headerLog // every request Rekor v1 and the TSA get
	st := testutil.StartSigstore(t, testutil.WithRekorV1(), testutil.WithRequestHook(hdrs.add))
	keys := t.TempDir()
	gen := exec.Command(st.Cosign, "generate-key-pair")
	gen.Dir, gen.Env = keys, append(os.Environ(), "COSIGN_PASSWORD=pw-for-test", "HOME="+keys)
	if out, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("cosign generate-key-pair: %v\n%s", err, out)
	}
	reg := testutil.Registry(t, true)
	dir := realExample(t, reg, fmt.Sprintf("signing:\n  mode: key\n  key: %s\n  trusted_root: %s\n  signing_config: %s\n",
		filepath.Join(keys, "cosign.key"), st.TrustedRoot, st.SigningConfig))
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	r := runRelayEnv(t, dir, []string{"COSIGN_PASSWORD=pw-for-test", "TRACEPARENT=00-" + traceID + "-00f067aa0ba902b7-01"}, "run")
	if r.code != 0 {
		t.Fatalf("key release with a transparency log: exit %d\n%s", r.code, r.stderr)
	}
	checkHeaders(t, hdrs.since(0), traceID, 8) // Rekor v1 entries, classic and bundles
	im := readLock(t, filepath.Join(dir, "dist")).Images[0]
	pub := filepath.Join(keys, "cosign.pub")
	cosign := func(bin string, args ...string) error {
		cmd := exec.Command(bin, append(args[:1:1], append([]string{"--key", pub, "--trusted-root", st.TrustedRoot, "--allow-insecure-registry"}, args[1:]...)...)...)
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
		}
		return nil
	}
	for _, c := range [][]string{
		{st.Cosign, "verify", im.Reference},
		{st.Cosign, "verify-attestation", "--type", "slsaprovenance1", im.Reference},
		{st.Cosign, "verify-attestation", "--type", "spdxjson", im.Repository + "@" + im.Platforms[0].Digest},
		{st.Cosign3, "verify", im.Reference},
		{st.Cosign3, "verify-attestation", "--type", "slsaprovenance1", im.Reference},
	} {
		if err := cosign(c[0], c[1:]...); err != nil {
			t.Error(err)
		}
	}
	// A re-run reuses every logged signature: no new log entries, no new referrers.
	r2 := runRelayEnv(t, dir, []string{"COSIGN_PASSWORD=pw-for-test"}, "run", "--restart")
	if r2.code != 0 {
		t.Fatalf("second run: exit %d\n%s", r2.code, r2.stderr)
	}
	for _, rec := range r2.logs {
		if rec["msg"] == "classic signature attached" || rec["msg"] == "attached" && rec["reused"] != true {
			t.Errorf("the re-run signed again: %v", rec)
		}
	}
}
