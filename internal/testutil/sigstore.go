package testutil

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Tool finds a binary the integration tier needs: on PATH, or where `go install` put it
// (.ci/run installs the pinned versions).
func Tool(t testing.TB, name, install string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{os.Getenv("GOBIN"), filepath.Join(goPath(), "bin")} {
		if dir == "" {
			continue
		}
		if p := filepath.Join(dir, name); isExec(p) {
			return p
		}
	}
	t.Fatalf("%s is not installed: %s (.ci/run does this)", name, install)
	return ""
}

func goPath() string {
	if p := os.Getenv("GOPATH"); p != "" {
		return strings.Split(p, string(os.PathListSeparator))[0]
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		return strings.TrimSpace(string(out))
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, "go")
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// InNetNS runs the calling test again inside a private network namespace where only
// loopback exists, and returns false in the parent (whose job is then done) and true in
// the child. Fulcio and the timestamp authority open metrics ports on every interface
// with no flag to change it; in the namespace that reaches nobody. Needs root (CI is).
func InNetNS(t *testing.T) bool {
	t.Helper()
	if os.Getenv("RELAY_TEST_NETNS") == "1" {
		return true
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"-n", "--", "sh", "-c", `ip link set lo up && exec "$@"`, "sh",
		exe, "-test.run", "^" + t.Name() + "$", "-test.count=1", "-test.v"}
	cmd := exec.Command("unshare", args...)
	cmd.Env = append(os.Environ(), "RELAY_TEST_NETNS=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	if err != nil || testing.Verbose() {
		t.Log(out.String())
	}
	if err != nil {
		t.Fatalf("%s failed inside its network namespace (unshare -n, needs root): %v", t.Name(), err)
	}
	if !strings.Contains(out.String(), "--- PASS: "+t.Name()) {
		t.Fatalf("%s did not run inside the namespace:\n%s", t.Name(), out.String())
	}
	return false
}

// OIDCIssuer is a minimal OpenID provider: discovery, JWKS and RS256 ID tokens, what
// Fulcio needs to check a token.
type OIDCIssuer struct {
	URL string
	key *rsa.PrivateKey
}

// StartOIDCIssuer serves the issuer on 127.0.0.1 for the test.
func StartOIDCIssuer(t testing.TB) *OIDCIssuer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	o := &OIDCIssuer{key: key}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{
			"issuer": o.URL, "jwks_uri": o.URL + "/jwks", "authorization_endpoint": o.URL + "/auth",
			"token_endpoint": o.URL + "/token", "response_types_supported": []string{"id_token"},
			"subject_types_supported": []string{"public"}, "id_token_signing_alg_values_supported": []string{"RS256"},
		})
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]string{{
			"kty": "RSA", "alg": "RS256", "use": "sig", "kid": "k1",
			"n": b64url(key.N.Bytes()), "e": b64url(big.NewInt(int64(key.E)).Bytes()),
		}}})
	})
	s := httptest.NewServer(mux)
	t.Cleanup(s.Close)
	o.URL = s.URL
	return o
}

func b64url(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// Token mints an ID token for email, audience sigstore, valid ten minutes from now.
func (o *OIDCIssuer) Token(t testing.TB, email string) string {
	t.Helper()
	now := time.Now()
	hdr, _ := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": "k1"})
	claims, _ := json.Marshal(map[string]any{
		"iss": o.URL, "sub": email, "aud": "sigstore", "iat": now.Unix(), "nbf": now.Unix(),
		"exp": now.Add(10 * time.Minute).Unix(), "email": email, "email_verified": true,
	})
	signing := b64url(hdr) + "." + b64url(claims)
	sum := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, o.key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return signing + "." + b64url(sig)
}

// Sigstore is a local Sigstore instance: Fulcio with an ephemeral CA and no CT log, Rekor
// v2 (rekor-tiles POSIX, files only) or with WithRekorV1 Rekor v1, a timestamp authority, the OIDC issuer, and the
// trusted_root.json and signing_config.json that describe them (made by cosign).
type Sigstore struct {
	OIDC                        *OIDCIssuer
	FulcioURL, RekorURL, TSAURL string
	TrustedRoot, SigningConfig  string // file paths
	Cosign                      string // cosign v2 binary, a reference verifier
	Cosign3                     string // cosign v3, the other one
	Dir                         string
}

// Pinned versions: newer rekor-tiles needs Go 1.27, v2.3.0 rejects DSSE entries.
const (
	installFulcio  = "go install github.com/sigstore/fulcio@v1.8.8"
	installTSA     = "go install github.com/sigstore/timestamp-authority/cmd/timestamp-server@v1.2.9"
	installRekor   = "go install github.com/sigstore/rekor-tiles/v2/cmd/rekor-server/posix@v2.2.1"
	installCosign  = "go install github.com/sigstore/cosign/v2/cmd/cosign@v2.6.5"
	installCosign3 = "GOBIN=$(mktemp -d) go install github.com/sigstore/cosign/v3/cmd/cosign@v3.1.3, then move it to $(go env GOPATH)/bin/cosign3"
)

// SigstoreOption changes the stack StartSigstore starts.
type SigstoreOption func(*sigstoreOptions)

type sigstoreOptions struct {
	rekorV1 bool
	hook    func(*http.Request)
}

// WithRequestHook puts a proxy in front of Fulcio, Rekor and the TSA that shows hook every
// request before passing it on; the signing config and trusted root name the proxies.
func WithRequestHook(hook func(*http.Request)) SigstoreOption {
	return func(o *sigstoreOptions) { o.hook = hook }
}

// hooked is a reverse proxy to target (scheme://host[/path]) that shows hook each request.
func hooked(t testing.TB, target string, hook func(*http.Request)) string {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	path := u.Path
	u.Path = ""
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hook(r)
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + path
}

// WithRekorV1 runs Rekor v1 (Trillian on MariaDB) instead of Rekor v2: the log that cosign's
// classic signature format needs (its entries come with a signed entry timestamp).
func WithRekorV1() SigstoreOption { return func(o *sigstoreOptions) { o.rekorV1 = true } }

// StartSigstore starts the stack for the test; call it inside InNetNS.
func StartSigstore(t testing.TB, opts ...SigstoreOption) *Sigstore {
	t.Helper()
	if os.Getenv("RELAY_TEST_NETNS") != "1" {
		t.Fatal("StartSigstore outside a private network namespace: wrap the test in InNetNS")
	}
	var o sigstoreOptions
	for _, f := range opts {
		f(&o)
	}
	fulcio, tsa := Tool(t, "fulcio", installFulcio), Tool(t, "timestamp-server", installTSA)
	s := &Sigstore{Dir: t.TempDir(), Cosign: Tool(t, "cosign", installCosign), Cosign3: Tool(t, "cosign3", installCosign3), OIDC: StartOIDCIssuer(t)}
	dir := s.Dir

	fulcioCfg, _ := json.Marshal(map[string]any{"OIDCIssuers": map[string]any{s.OIDC.URL: map[string]string{
		"IssuerURL": s.OIDC.URL, "ClientID": "sigstore", "Type": "email"}}})
	write(t, filepath.Join(dir, "fulcio.json"), fulcioCfg, 0o644)
	fp := freePort(t)
	s.FulcioURL = fmt.Sprintf("http://127.0.0.1:%d", fp)
	start(t, dir, "fulcio", fulcio, "serve", "--ca", "ephemeralca", "--config-path", filepath.Join(dir, "fulcio.json"),
		"--ct-log-url", "", "--host", "127.0.0.1", "--port", fmt.Sprint(fp), "--grpc-host", "127.0.0.1",
		"--grpc-port", fmt.Sprint(freePort(t)), "--metrics-port", fmt.Sprint(freePort(t)), "--log_type", "prod")

	tp := freePort(t)
	s.TSAURL = fmt.Sprintf("http://127.0.0.1:%d/api/v1/timestamp", tp)
	start(t, dir, "tsa", tsa, "serve", "--host", "127.0.0.1", "--port", fmt.Sprint(tp), "--timestamp-signer", "memory",
		"--disable-ntp-monitoring", "--log-type", "prod")

	rekorAPI, rekorOrigin := "2", ",origin=127.0.0.1"
	if o.rekorV1 {
		s.RekorURL = startRekorV1(t, dir)
		rekorAPI, rekorOrigin = "1", ""
	} else {
		s.RekorURL = startRekorV2(t, dir)
	}
	root := waitGet(t, s.FulcioURL+"/api/v1/rootCert")
	chain := waitGet(t, fmt.Sprintf("http://127.0.0.1:%d/api/v1/timestamp/certchain", tp))
	write(t, filepath.Join(dir, "fulcio-root.pem"), root, 0o644)
	write(t, filepath.Join(dir, "tsa-chain.pem"), chain, 0o644)
	if o.hook != nil {
		s.FulcioURL, s.TSAURL, s.RekorURL = hooked(t, s.FulcioURL, o.hook), hooked(t, s.TSAURL, o.hook), hooked(t, s.RekorURL, o.hook)
	}

	const since = "2020-01-01T00:00:00Z"
	s.TrustedRoot, s.SigningConfig = filepath.Join(dir, "trusted_root.json"), filepath.Join(dir, "signing_config.json")
	run(t, dir, s.Cosign, "trusted-root", "create",
		"--fulcio=url="+s.FulcioURL+",certificate-chain="+filepath.Join(dir, "fulcio-root.pem"),
		"--rekor=url="+s.RekorURL+",public-key="+filepath.Join(dir, "rekor.pub")+",start-time="+since+rekorOrigin,
		"--tsa=url="+s.TSAURL+",certificate-chain="+filepath.Join(dir, "tsa-chain.pem"),
		"--out", s.TrustedRoot)
	run(t, dir, s.Cosign, "signing-config", "create",
		"--fulcio=url="+s.FulcioURL+",api-version=1,start-time="+since+",operator=local",
		"--rekor=url="+s.RekorURL+",api-version="+rekorAPI+",start-time="+since+",operator=local", "--rekor-config=ANY",
		"--oidc-provider=url="+s.OIDC.URL+",api-version=1,start-time="+since+",operator=local",
		"--tsa=url="+s.TSAURL+",api-version=1,start-time="+since+",operator=local", "--tsa-config=ANY",
		"--out", s.SigningConfig)
	return s
}

// startRekorV2 starts rekor-tiles (POSIX: files only) and writes its key to DIR/rekor.pub.
func startRekorV2(t testing.TB, dir string) string {
	t.Helper()
	rekor := Tool(t, "posix", installRekor)
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	write(t, filepath.Join(dir, "rekor.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	pubDER, _ := x509.MarshalPKIXPublicKey(priv.Public())
	write(t, filepath.Join(dir, "rekor.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644)
	os.MkdirAll(filepath.Join(dir, "tiles"), 0o755)
	rp := freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", rp)
	start(t, dir, "rekor", rekor, "serve", "--storage-dir", filepath.Join(dir, "tiles"), "--signer-filepath", filepath.Join(dir, "rekor.key"),
		"--hostname", "127.0.0.1", "--http-address", "127.0.0.1", "--http-port", fmt.Sprint(rp), "--grpc-address", "127.0.0.1",
		"--grpc-port", fmt.Sprint(freePort(t)), "--http-metrics-port", fmt.Sprint(freePort(t)), "--checkpoint-interval", "1s")
	waitGet(t, url+"/healthz")
	return url
}

// Rekor v1 and its Trillian; Trillian's MySQL schema is read from the module cache, where
// installing Trillian puts it.
const (
	installTrillian = "go install github.com/google/trillian/cmd/trillian_log_server@v1.8.0 github.com/google/trillian/cmd/trillian_log_signer@v1.8.0 github.com/google/trillian/cmd/createtree@v1.8.0"
	installRekorV1  = "go install github.com/sigstore/rekor/cmd/rekor-server@v1.5.4"
	trillianModule  = "github.com/google/trillian@v1.8.0"
)

// startRekorV1 starts MariaDB (unix socket only), Trillian's log server and signer, a tree,
// and Rekor v1 in front of them, and writes Rekor's key to DIR/rekor.pub.
func startRekorV1(t testing.TB, dir string) string {
	t.Helper()
	logServer, logSigner, createTree := Tool(t, "trillian_log_server", installTrillian), Tool(t, "trillian_log_signer", installTrillian), Tool(t, "createtree", installTrillian)
	rekor := Tool(t, "rekor-server", installRekorV1)
	mariadbd, installDB, client := sbinTool(t, "mariadbd"), sbinTool(t, "mariadb-install-db"), sbinTool(t, "mariadb")
	schema := filepath.Join(modCache(), trillianModule, "storage", "mysql", "schema", "storage.sql")
	if _, err := os.Stat(schema); err != nil {
		t.Fatalf("Trillian's schema is not in the module cache (%v): go mod download %s", err, trillianModule)
	}

	data, sock := filepath.Join(dir, "db"), filepath.Join(dir, "db.sock")
	out, err := exec.Command(installDB, "--no-defaults", "--datadir="+data, "--user=root", "--auth-root-authentication-method=normal", "--skip-test-db").CombinedOutput()
	if err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s", err, tail(out, 10))
	}
	start(t, dir, "mariadb", mariadbd, "--no-defaults", "--datadir="+data, "--socket="+sock, "--skip-networking", "--user=root",
		"--pid-file="+filepath.Join(dir, "db.pid"), "--innodb-buffer-pool-size=32M")
	sql := func(stdin io.Reader, args ...string) error {
		cmd := exec.Command(client, append([]string{"--no-defaults", "--socket=" + sock, "-uroot"}, args...)...)
		cmd.Stdin = stdin
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	retry(t, "MariaDB", func() error { return sql(nil, "-e", "CREATE DATABASE trillian") })
	f, err := os.Open(schema)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := sql(f, "trillian"); err != nil {
		t.Fatalf("loading Trillian's schema: %v", err)
	}

	uri := "root@unix(" + sock + ")/trillian"
	rpc := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	start(t, dir, "trillian-server", logServer, "--storage_system=mysql", "--quota_system=mysql", "--mysql_uri="+uri,
		"--rpc_endpoint="+rpc, fmt.Sprintf("--http_endpoint=127.0.0.1:%d", freePort(t)))
	start(t, dir, "trillian-signer", logSigner, "--storage_system=mysql", "--quota_system=mysql", "--mysql_uri="+uri, "--force_master",
		fmt.Sprintf("--rpc_endpoint=127.0.0.1:%d", freePort(t)), fmt.Sprintf("--http_endpoint=127.0.0.1:%d", freePort(t)), "--sequencer_interval=50ms")
	var tree string
	retry(t, "Trillian", func() error {
		out, err := exec.Command(createTree, "--admin_server="+rpc).Output()
		if err != nil {
			return err
		}
		lines := strings.Fields(string(out))
		if len(lines) == 0 {
			return fmt.Errorf("createtree printed no tree id")
		}
		tree = lines[len(lines)-1]
		return nil
	})
	host, port, _ := strings.Cut(rpc, ":")
	rp := freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", rp)
	// Rekor's search index goes to the same MariaDB, so no Redis is needed.
	start(t, dir, "rekor", rekor, "serve", "--trillian_log_server.address="+host, "--trillian_log_server.port="+port,
		"--trillian_log_server.tlog_id="+tree, "--rekor_server.address=127.0.0.1", fmt.Sprintf("--port=%d", rp),
		"--rekor_server.hostname=127.0.0.1", "--rekor_server.signer=memory", "--log_type=prod",
		"--search_index.storage_provider=mysql", "--search_index.mysql.dsn="+uri)
	write(t, filepath.Join(dir, "rekor.pub"), waitGet(t, url+"/api/v1/log/publicKey"), 0o644)
	return url
}

// sbinTool finds a Debian server binary, which may live outside a non-root PATH.
func sbinTool(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range []string{"/usr/sbin", "/usr/bin"} {
		if p := filepath.Join(d, name); isExec(p) {
			return p
		}
	}
	t.Fatalf("%s is not installed: apt-get install -y mariadb-server (.ci/run does this)", name)
	return ""
}

func modCache() string {
	if p := os.Getenv("GOMODCACHE"); p != "" {
		return p
	}
	if out, err := exec.Command("go", "env", "GOMODCACHE").Output(); err == nil {
		return strings.TrimSpace(string(out))
	}
	return filepath.Join(goPath(), "pkg", "mod")
}

// retry polls a server we started until f succeeds; bounded like waitGet.
func retry(t testing.TB, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not come up: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func write(t testing.TB, path string, b []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, b, mode); err != nil {
		t.Fatal(err)
	}
}

// start runs a server for the test's lifetime, its output in DIR/NAME.log.
func start(t testing.TB, dir, name, bin string, args ...string) {
	t.Helper()
	log, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr, cmd.Dir = log, log, dir
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		log.Close()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, name+".log"))
			t.Logf("%s log:\n%s", name, tail(b, 30))
		}
	})
}

func run(t testing.TB, dir, bin string, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+dir) // cosign must not look for a TUF cache elsewhere
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args[:2], " "), err, out)
	}
}

// waitGet polls a server we started until it answers 200; bounded, not a synchronisation
// of our own code.
func waitGet(t testing.TB, url string) []byte {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	c := &http.Client{Timeout: time.Second}
	for {
		resp, err := c.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return b
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not come up: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
