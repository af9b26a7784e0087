//go:build integration

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/relaydev/relay/internal/testutil"
)

// TestE2EKMSRelease releases the example signed by a key that never leaves its KMS (AWS KMS,
// Vault transit, Azure Key Vault: fakes of their APIs, reached through the providers' own
// clients and credential chains), as Sigstore bundles and classic .sig signatures; the
// published public key is the KMS's, and relay verify, cosign v2 (classic) and cosign v3
// (bundles) accept the release with it. (Cloud KMS's fake is exercised in pkg/attest: its
// client has no endpoint setting a relay process could be pointed with.)
func TestE2EKMSRelease(t *testing.T) {
	if !testutil.InNetNS(t) { // cosign may look for the public TUF repository: let it find nothing
		return
	}
	cosign := testutil.Tool(t, "cosign", "go install github.com/sigstore/cosign/v2/cmd/cosign@v2.6.5")
	cosign3 := testutil.Tool(t, "cosign3", "see .ci/run")
	for _, tc := range []struct {
		name  string
		start func(t *testing.T, k testutil.KMSKey) (uri string, env []string, signs func() int)
	}{
		{"awskms", func(t *testing.T, k testutil.KMSKey) (string, []string, func() int) {
			f := testutil.StartAWSKMS(t, map[string]testutil.KMSKey{"relay-release": k})
			return "awskms:///alias/relay-release", []string{"AWS_ACCESS_KEY_ID=" + testutil.FakeAWSCredentials.AccessKeyID,
				"AWS_SECRET_ACCESS_KEY=" + testutil.FakeAWSCredentials.SecretAccessKey, "AWS_REGION=eu-west-1", "AWS_ENDPOINT_URL_KMS=" + f.URL,
				"AWS_CONFIG_FILE=/nonexistent", "AWS_SHARED_CREDENTIALS_FILE=/nonexistent", "AWS_EC2_METADATA_DISABLED=true"}, func() int { return f.Calls("sign") }
		}},
		{"hashivault", func(t *testing.T, k testutil.KMSKey) (string, []string, func() int) {
			f := testutil.StartVault(t, map[string]testutil.KMSKey{"relay-release": k})
			return "hashivault://relay-release", []string{"VAULT_ADDR=" + f.URL, "VAULT_TOKEN=" + f.Token}, func() int { return f.Calls("sign") }
		}},
		{"azurekms", func(t *testing.T, k testutil.KMSKey) (string, []string, func() int) {
			f := testutil.StartAzureKeyVault(t, map[string]testutil.KMSKey{"relay-release": k})
			return "azurekms://" + f.Host + "/relay-release", f.Env, func() int { return f.Calls("sign") }
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := testutil.NewKMSKey(t, false)
			uri, env, signs := tc.start(t, key)
			reg := testutil.Registry(t, true)
			dir := realExample(t, reg, "signing: {mode: key, key: \""+uri+"\", classic: true, tlog: false}\n")
			if r := runRelayEnv(t, dir, env, "run", "--dry-run"); r.code != 0 || !strings.Contains(r.stdout, "the KMS returned its public key") {
				t.Fatalf("dry run: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
			}
			r := runRelayEnv(t, dir, env, "run")
			if r.code != 0 {
				t.Fatalf("release signed with %s: exit %d\n%s", uri, r.code, r.stderr)
			}
			if n := signs(); n < 6 { // 3 bundles and 3 classic signatures at least, plus SBOMs and provenance
				t.Fatalf("the KMS signed %d times", n)
			}
			pub := filepath.Join(dir, "dist", "relay-signing.pub")
			got, err := os.ReadFile(pub)
			if err != nil || string(got) != key.PublicPEM() {
				t.Fatalf("published public key is not the KMS key's (%v):\n%s", err, got)
			}
			im := readLock(t, filepath.Join(dir, "dist")).Images[0]
			if v := runRelay(t, dir, "verify", im.Reference, "--key", pub); v.code != 0 || strings.Count(v.stdout, ": verified") != 3 {
				t.Fatalf("relay verify --key: exit %d\n%s\n%s", v.code, v.stdout, v.stderr)
			}
			home := t.TempDir()
			emptyRoot := filepath.Join(home, "trusted_root.json")
			os.WriteFile(emptyRoot, []byte(`{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}`), 0o644)
			for _, args := range [][]string{
				{cosign, "verify"}, // the classic .sig signature
				{cosign3, "verify"},
			} {
				cmd := exec.Command(args[0], append(args[1:], "--key", pub, "--trusted-root", emptyRoot,
					"--insecure-ignore-tlog", "--allow-insecure-registry", im.Reference)...)
				cmd.Env = append(os.Environ(), "HOME="+home)
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("%s verify --key: %v\n%s", filepath.Base(args[0]), err, out)
				}
			}
		})
	}
}
