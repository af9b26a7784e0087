//go:build integration

package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relaydev/relay/internal/testutil"
	"github.com/relaydev/relay/internal/wire"
)

// TestE2EKeylessRelease runs a real (not --local) release of the example against a local
// Sigstore (Fulcio, Rekor v2, TSA, an OIDC issuer) and a local registry: keyless signatures,
// SBOM and provenance attestations, the pipeline's own verify step; then a consumer's
// `relay verify` and cosign v2's and v3's verify accept the result, a wrong identity is refused, and
// a second run reuses every bundle instead of signing again.
func TestE2EKeylessRelease(t *testing.T) {
	if !testutil.InNetNS(t) {
		return
	}
	var hdrs headerLog // every request Fulcio, Rekor and the TSA get
	st := testutil.StartSigstore(t, testutil.WithRequestHook(hdrs.add))
	reg := testutil.Registry(t, true)
	dir := realExample(t, reg, fmt.Sprintf("signing:\n  mode: keyless\n  trusted_root: %s\n  signing_config: %s\n", st.TrustedRoot, st.SigningConfig))
	const identity = "release@example.com"
	env := []string{"SIGSTORE_ID_TOKEN=" + st.OIDC.Token(t, identity)}

	// A dry run first: the token's claims and every Sigstore service are checked, the
	// steps run with a stand-in signer, and an expired token is refused before any step.
	if d := runRelayEnv(t, dir, env, "run", "--dry-run"); d.code != 0 || !strings.Contains(d.stdout, "ok   signing identity (keyless): identity token from SIGSTORE_ID_TOKEN: Fulcio would take it (subject "+identity+")") ||
		!strings.Contains(d.stdout, "ok   Fulcio "+st.FulcioURL+": answers") || !strings.Contains(d.stdout, "ok   timestamp authority "+st.TSAURL+": answers") ||
		!strings.Contains(d.stdout, "ok   Rekor v2 ") || !strings.Contains(d.stdout, "every check passed") {
		t.Fatalf("keyless dry run: exit %d\n%s\n%s", d.code, d.stdout, d.stderr)
	}
	expired := "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString([]byte(fmt.Sprintf(`{"iss":%q,"sub":%q,"email":%q,"email_verified":true,"aud":"sigstore","exp":%d}`,
		st.OIDC.URL, identity, identity, time.Now().Add(-time.Hour).Unix()))) + ".c2ln"
	if d := runRelayEnv(t, dir, []string{"SIGSTORE_ID_TOKEN=" + expired}, "run", "--dry-run"); d.code != exitStepFailed || !strings.Contains(d.stdout, "FAIL signing identity (keyless):") ||
		!strings.Contains(d.stdout, "expired at") || strings.Contains(d.stdout, "steps run on the dry implementations") {
		t.Fatalf("expired token: exit %d\n%s\n%s", d.code, d.stdout, d.stderr)
	}

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	before := hdrs.len()
	r := runRelayEnv(t, dir, append(env, "TRACEPARENT=00-"+traceID+"-00f067aa0ba902b7-01"), "run")
	if r.code != 0 {
		t.Fatalf("keyless release: exit %d\n%s", r.code, r.stderr)
	}
	// One Fulcio certificate, 8 signatures each timestamped and logged.
	checkHeaders(t, hdrs.since(before), traceID, 1+8+8)
	lock := readLock(t, filepath.Join(dir, "dist"))
	im := lock.Images[0]
	if len(im.Referrers) != 3+4+1 {
		t.Fatalf("%d referrers, want 8 (3 signatures, 4 SBOMs, 1 provenance)", len(im.Referrers))
	}
	certs := 0
	for _, rec := range r.logs {
		if rec["msg"] == "signing certificate issued" {
			certs++
		}
	}
	if certs != 1 {
		t.Fatalf("%d Fulcio certificates for 8 bundles, want 1", certs)
	}

	// A consumer's check: relay verify, by identity and issuer, against the private root.
	verifyArgs := func(id string) []string {
		return []string{"verify", im.Reference, "--trusted-root", st.TrustedRoot, "--certificate-identity", id, "--certificate-oidc-issuer", st.OIDC.URL}
	}
	v := runRelayEnv(t, dir, nil, verifyArgs(identity)...)
	if v.code != 0 || strings.Count(v.stdout, ": verified") != 3 || !strings.Contains(v.stdout, "https://slsa.dev/provenance/v1") || !strings.Contains(v.stdout, "https://spdx.dev/Document") {
		t.Fatalf("relay verify: exit %d\n%s\n%s", v.code, v.stdout, v.stderr)
	}
	if bad := runRelayEnv(t, dir, nil, verifyArgs("mallory@example.com")...); bad.code != 1 || !strings.Contains(bad.stdout, "NOT VERIFIED") {
		t.Fatalf("wrong identity: exit %d\n%s", bad.code, bad.stdout)
	}
	// cosign v2's and v3's own verification code accept the signature and the attestations.
	for _, bin := range []string{st.Cosign, st.Cosign3} {
		for _, args := range [][]string{
			{"verify", "--certificate-identity", identity, im.Reference},
			{"verify-attestation", "--type", "slsaprovenance1", "--certificate-identity", identity, im.Reference},
			{"verify-attestation", "--type", "cyclonedx", "--certificate-identity", identity, im.Repository + "@" + im.Platforms[1].Digest},
		} {
			base := []string{"--allow-insecure-registry", "--trusted-root", st.TrustedRoot,
				"--use-signed-timestamps", "--insecure-ignore-sct", "--certificate-oidc-issuer", st.OIDC.URL}
			if bin == st.Cosign {
				base = append(base, "--new-bundle-format")
			}
			cmd := exec.Command(bin, append(append(args[:1:1], base...), args[1:]...)...)
			cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), args[0], err, out)
			}
		}
	}

	// A dry run over the release predicts what a re-run does: every bundle the identity
	// signed is reused, so no registry write at all (the identity is read from the token's
	// claims, not from a certificate Fulcio would have to issue).
	dry := runRelayEnv(t, dir, []string{"SIGSTORE_ID_TOKEN=" + st.OIDC.Token(t, identity)}, "run", "--dry-run", "--output", "json")
	var rep wire.Report
	if err := json.Unmarshal([]byte(dry.stdout), &rep); dry.code != 0 || err != nil || !rep.OK {
		t.Fatalf("dry run over the keyless release: exit %d, %v\n%s\n%s", dry.code, err, dry.stdout, dry.stderr)
	}
	if w := predictedWrites(&rep); len(w) != 0 {
		t.Fatalf("a dry run over the keyless release predicts %d writes, a re-run makes none: %v", len(w), w)
	}

	// Again from scratch, with a fresh token: every bundle is reused, nothing is re-signed.
	r2 := runRelayEnv(t, dir, []string{"SIGSTORE_ID_TOKEN=" + st.OIDC.Token(t, identity)}, "run", "--restart")
	if r2.code != 0 {
		t.Fatalf("second run: exit %d\n%s", r2.code, r2.stderr)
	}
	reused := 0
	for _, rec := range r2.logs {
		if rec["msg"] == "attached" && rec["reused"] == true {
			reused++
		}
	}
	if lock2 := readLock(t, filepath.Join(dir, "dist")); reused != 8 || len(lock2.Images[0].Referrers) != 8 {
		t.Fatalf("second run reused %d bundles and lists %d referrers, want 8 and 8", reused, len(lock2.Images[0].Referrers))
	}
}

// realExample is the example as a git repository tagged v0.1.0, with a relay.yaml for a real
// release into the registry reg, the given signing (and release) sections, and by default a
// dir release in dist/.
func realExample(t testing.TB, reg, signing string) string {
	t.Helper()
	dir := exampleCopy(t)
	commitAndTag(t, dir, "v0.1.0")
	cfg := fmt.Sprintf(`version: 1
source: {repo: %s, ref: v0.1.0, url: https://github.com/acme/hello}
builder: {kind: local, registry: %s/build}
images:
  - name: hello
    platforms: [linux/amd64, linux/arm64]
    local: {base: scratch, go: {main: .}}
    targets: [%s/acme/hello]
    tags: ["{{ .Version }}"]
%s`, dir, reg, reg, signing)
	if !strings.Contains(signing, "release:") {
		cfg += fmt.Sprintf("release: {target: dir, dir: %s}\n", filepath.Join(dir, "dist"))
	}
	os.WriteFile(filepath.Join(dir, "relay.yaml"), []byte(cfg), 0o644)
	return dir
}

// TestE2EKeyRelease signs a real release with a key made by `cosign generate-key-pair`, as
// Sigstore bundles and as cosign's classic .sig signatures; cosign v2 (both formats) and v3
// verify it with the public key, and so does `relay verify --key`.
func TestE2EKeyRelease(t *testing.T) {
	if !testutil.InNetNS(t) { // cosign may look for the public TUF repository: let it find nothing
		return
	}
	cosign := testutil.Tool(t, "cosign", "go install github.com/sigstore/cosign/v2/cmd/cosign@v2.6.5")
	keys := t.TempDir()
	gen := exec.Command(cosign, "generate-key-pair")
	gen.Dir, gen.Env = keys, append(os.Environ(), "COSIGN_PASSWORD=pw-for-test", "HOME="+keys)
	if out, err := gen.CombinedOutput(); err != nil {
		t.Fatalf("cosign generate-key-pair: %v\n%s", err, out)
	}
	reg := testutil.Registry(t, true)
	// Without a transparency log (signing.tlog: false): consumers pass --insecure-ignore-tlog.
	dir := realExample(t, reg, "signing: {mode: key, key: "+filepath.Join(keys, "cosign.key")+", classic: true, tlog: false}\n")
	if r := runRelayEnv(t, dir, []string{"COSIGN_PASSWORD=wrong"}, "run"); r.code != exitUsage || !strings.Contains(r.stderr, "COSIGN_PASSWORD") {
		t.Fatalf("wrong password: exit %d\n%s", r.code, r.stderr)
	}
	r := runRelayEnv(t, dir, []string{"COSIGN_PASSWORD=pw-for-test"}, "run", "--restart")
	if r.code != 0 {
		t.Fatalf("key release: exit %d\n%s", r.code, r.stderr)
	}
	if strings.Contains(r.stderr, "pw-for-test") {
		t.Fatal("the key's password reached the logs")
	}
	im := readLock(t, filepath.Join(dir, "dist")).Images[0]
	if v := runRelay(t, dir, "verify", im.Reference, "--key", filepath.Join(keys, "cosign.pub")); v.code != 0 || strings.Count(v.stdout, ": verified") != 3 {
		t.Fatalf("relay verify --key: exit %d\n%s\n%s", v.code, v.stdout, v.stderr)
	}
	// The classic .sig signature on its own: cosign reads it from the tag and checks it.
	dl := exec.Command(cosign, "download", "signature", "--allow-insecure-registry", im.Reference)
	dl.Env = append(os.Environ(), "HOME="+keys)
	out, err := dl.Output()
	if err != nil {
		t.Fatalf("cosign download signature: %v", err)
	}
	var classic struct {
		Base64Signature string
		Payload         string
	}
	if err := json.Unmarshal(bytes.SplitN(out, []byte("\n"), 2)[0], &classic); err != nil || classic.Base64Signature == "" {
		t.Fatalf("cosign found no classic signature: %v\n%s", err, out)
	}
	payload, _ := base64.StdEncoding.DecodeString(classic.Payload)
	os.WriteFile(filepath.Join(keys, "payload.json"), payload, 0o644)
	if !strings.Contains(string(payload), im.Digest) {
		t.Fatalf("the classic payload names another digest: %s", payload)
	}
	// An empty trusted root: the key is the trust, and cosign must not go looking for the
	// public-good TUF repository.
	emptyRoot := filepath.Join(keys, "trusted_root.json")
	os.WriteFile(emptyRoot, []byte(`{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}`), 0o644)
	cosign3 := testutil.Tool(t, "cosign3", "see .ci/run")
	for _, args := range [][]string{
		{cosign, "verify", "--new-bundle-format"},
		{cosign3, "verify"},
	} {
		cmd := exec.Command(args[0], append(args[1:], "--key", filepath.Join(keys, "cosign.pub"), "--trusted-root", emptyRoot,
			"--insecure-ignore-tlog", "--allow-insecure-registry", im.Reference)...)
		cmd.Env = append(os.Environ(), "HOME="+keys)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s verify --key: %v\n%s", filepath.Base(args[0]), err, out)
		}
	}
	// The attestations as classic .att envelopes, as cosign v2 reads them by default.
	for _, args := range [][]string{{"--type", "slsaprovenance1", im.Reference}, {"--type", "spdxjson", im.Repository + "@" + im.Platforms[0].Digest}} {
		cmd := exec.Command(cosign, append([]string{"verify-attestation", "--key", filepath.Join(keys, "cosign.pub"), "--trusted-root", emptyRoot,
			"--insecure-ignore-tlog", "--allow-insecure-registry"}, args...)...)
		cmd.Env = append(os.Environ(), "HOME="+keys)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("cosign v2 verify-attestation %s --key (classic .att): %v\n%s", args[1], err, out)
		}
	}
	vb := exec.Command(cosign, "verify-blob", "--key", filepath.Join(keys, "cosign.pub"), "--signature", classic.Base64Signature,
		"--insecure-ignore-tlog", filepath.Join(keys, "payload.json"))
	vb.Env = append(os.Environ(), "HOME="+keys)
	if out, err := vb.CombinedOutput(); err != nil {
		t.Fatalf("cosign verify-blob of the classic signature: %v\n%s", err, out)
	}
}

// runRelayEnv is runRelay with extra environment variables; a run that hangs is killed after
// five minutes.
func runRelayEnv(t testing.TB, dir string, env []string, args ...string) result {
	t.Helper()
	return runRelayFor(t, 5*time.Minute, dir, env, args...)
}

// runRelayFor is runRelayEnv with another limit, for runs that compile Go cold.
func runRelayFor(t testing.TB, limit time.Duration, dir string, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := relayCmd(ctx, dir, args...)
	cmd.Env = append(cmd.Env, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{code: code, stdout: out.String(), stderr: errb.String(), logs: parseLogs(t, errb.String())}
}

// TestE2EGitHubRelease releases the example to a GitHub release (the fake API shaped on
// recorded api.github.com responses): a draft, every asset, then published; a second run
// uploads nothing; a run whose assets changed fails until --replace swaps them.
func TestE2EGitHubRelease(t *testing.T) {
	gh := testutil.NewGitHub(t)
	reg := testutil.Registry(t, true)
	keyFile := testKeyFile(t)
	dir := realExample(t, reg, fmt.Sprintf(`signing: {mode: key, key: %s, tlog: false}
release:
  target: github
  github: {repository: %s, base_url: %s, attestations: true}
`, keyFile, testutil.FakeGitHubRepo, gh.BaseURL()))
	env := []string{"GITHUB_TOKEN=" + gh.Token}
	var agents sync.Map // every User-Agent the fake saw
	gh.Fail = func(_ int, r *http.Request) int { agents.Store(r.UserAgent(), true); return 0 }
	// GHES uploads live under /api/uploads/: go-github derives it from the base URL.
	r := runRelayEnv(t, dir, env, "run")
	if r.code != 0 {
		t.Fatalf("github release: exit %d\n%s", r.code, r.stderr)
	}
	if strings.Contains(r.stderr, gh.Token) || strings.Contains(r.stdout, gh.Token) {
		t.Fatal("the token reached the output")
	}
	// Every GitHub request (API and uploads) carries relay's version and the correlation id.
	seen := 0
	agents.Range(func(k, _ any) bool {
		seen++
		if ua := k.(string); !strings.HasPrefix(ua, "relay/") || !strings.Contains(ua, "(correlation_id=e2e-run)") {
			t.Errorf("a GitHub request with User-Agent %q", ua)
		}
		return true
	})
	if seen == 0 {
		t.Fatal("the fake recorded no User-Agent: the check proves nothing")
	}
	gh.Fail = nil
	rels := gh.Releases()
	if len(rels) != 1 || rels[0].Draft || rels[0].Tag != "v0.1.0" {
		t.Fatalf("releases: %+v", rels)
	}
	names := map[string]bool{}
	for _, a := range rels[0].Assets {
		if a.State != "uploaded" || names[a.Name] {
			t.Fatalf("asset %s: state %s, duplicate %v", a.Name, a.State, names[a.Name])
		}
		names[a.Name] = true
	}
	for _, want := range []string{"SHA256SUMS", "SHA256SUMS.sigstore.json", "images.lock.json", "images.txt", "release.json", "relay-signing.pub"} {
		if !names[want] {
			t.Errorf("release lacks %s (has %v)", want, names)
		}
	}
	// The verify command the release notes print works as printed, with the assets a
	// consumer downloads (relay-signing.pub) in the current directory.
	consumer := t.TempDir()
	for _, a := range rels[0].Assets {
		os.WriteFile(filepath.Join(consumer, a.Name), a.Data, 0o644)
	}
	var verifyLine string
	for _, l := range strings.Split(rels[0].Body, "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, "relay verify ") {
			verifyLine = l
		}
	}
	if verifyLine == "" {
		t.Fatalf("the release notes print no verify command:\n%s", rels[0].Body)
	}
	if v := runRelay(t, consumer, strings.Fields(verifyLine)[1:]...); v.code != 0 || strings.Count(v.stdout, ": verified") != 3 {
		t.Fatalf("the notes' %q: exit %d\n%s\n%s", verifyLine, v.code, v.stdout, v.stderr)
	}
	state := gh.State()
	before := gh.CallCount()
	r2 := runRelayEnv(t, dir, env, "run", "--restart")
	if r2.code != 0 || gh.State() != state {
		t.Fatalf("second run: exit %d, release changed:\n%s\n%s", r2.code, gh.State(), r2.stderr)
	}
	t.Logf("first run %d API calls, second %d", before, gh.CallCount()-before)
}

// TestE2EKeylessClassicRekorV1 signs keylessly on a stack with Rekor v1 (Trillian on
// MariaDB) and signing.classic: the classic .sig signatures carry the certificate, chain
// and Rekor bundle, so cosign v2's default verify (no --new-bundle-format) accepts the
// release by identity and refuses another identity; cosign v3 verifies the bundles; a second
// run reuses every classic signature.
func TestE2EKeylessClassicRekorV1(t *testing.T) {
	if !testutil.InNetNS(t) {
		return
	}
	st := testutil.StartSigstore(t, testutil.WithRekorV1())
	reg := testutil.Registry(t, true)
	dir := realExample(t, reg, fmt.Sprintf("signing:\n  mode: keyless\n  classic: true\n  trusted_root: %s\n  signing_config: %s\n", st.TrustedRoot, st.SigningConfig))
	const identity = "release@example.com"
	r := runRelayEnv(t, dir, []string{"SIGSTORE_ID_TOKEN=" + st.OIDC.Token(t, identity)}, "run")
	if r.code != 0 {
		t.Fatalf("keyless classic release: exit %d\n%s", r.code, r.stderr)
	}
	attached := func(r result) int {
		n := 0
		for _, rec := range r.logs {
			if rec["msg"] == "classic signature attached" {
				n++
			}
		}
		return n
	}
	if n := attached(r); n != 3 {
		t.Fatalf("%d classic signatures attached, want 3 (index and 2 platforms)", n)
	}
	im := readLock(t, filepath.Join(dir, "dist")).Images[0]
	cosignVerify := func(bin, id string, extra ...string) ([]byte, error) {
		args := append([]string{"verify", "--allow-insecure-registry", "--trusted-root", st.TrustedRoot, "--insecure-ignore-sct",
			"--certificate-identity", id, "--certificate-oidc-issuer", st.OIDC.URL}, extra...)
		cmd := exec.Command(bin, append(args, im.Reference)...)
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
		return cmd.CombinedOutput()
	}
	if out, err := cosignVerify(st.Cosign, identity); err != nil {
		t.Fatalf("cosign v2 verify (classic format): %v\n%s", err, out)
	}
	// The attestations as classic .att layers, each with its Rekor v1 entry.
	for _, args := range [][]string{{"--type", "slsaprovenance1", im.Reference}, {"--type", "cyclonedx", im.Repository + "@" + im.Platforms[1].Digest}} {
		cmd := exec.Command(st.Cosign, append([]string{"verify-attestation", "--allow-insecure-registry", "--trusted-root", st.TrustedRoot, "--insecure-ignore-sct",
			"--certificate-identity", identity, "--certificate-oidc-issuer", st.OIDC.URL}, args...)...)
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("cosign v2 verify-attestation %s (classic format): %v\n%s", args[1], err, out)
		}
	}
	if out, err := cosignVerify(st.Cosign, "mallory@example.com"); err == nil {
		t.Fatalf("cosign v2 verify accepted another identity:\n%s", out)
	}
	if out, err := cosignVerify(st.Cosign3, identity); err != nil {
		t.Fatalf("cosign v3 verify: %v\n%s", err, out)
	}
	v := runRelayEnv(t, dir, nil, "verify", im.Reference, "--trusted-root", st.TrustedRoot, "--certificate-identity", identity, "--certificate-oidc-issuer", st.OIDC.URL)
	if v.code != 0 || strings.Count(v.stdout, "(cosign classic .sig)") != 3 {
		t.Fatalf("relay verify: exit %d\n%s\n%s", v.code, v.stdout, v.stderr)
	}
	bad := runRelayEnv(t, dir, nil, "verify", im.Reference, "--trusted-root", st.TrustedRoot, "--certificate-identity", "mallory@example.com", "--certificate-oidc-issuer", st.OIDC.URL, "--output", "json")
	if bad.code != 1 || strings.Contains(bad.stdout, "(cosign classic .sig)") || !strings.Contains(bad.stdout, "classic signature: ") {
		t.Fatalf("relay verify, another identity: exit %d\n%s", bad.code, bad.stdout)
	}
	r2 := runRelayEnv(t, dir, []string{"SIGSTORE_ID_TOKEN=" + st.OIDC.Token(t, identity)}, "run", "--restart")
	if r2.code != 0 || attached(r2) != 0 {
		t.Fatalf("second run: exit %d, %d classic signatures attached again\n%s", r2.code, attached(r2), r2.stderr)
	}
}

// testKeyFile writes an unencrypted PKCS#8 P-256 signing key and returns its path.
func testKeyFile(t *testing.T) string {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	keyFile := filepath.Join(t.TempDir(), "release.key")
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	return keyFile
}
