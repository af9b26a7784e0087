package testutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"golang.org/x/crypto/bcrypt"
)

// Distribution is Debian's docker-registry (distribution 2.8: no referrers API) serving
// TLS with htpasswd auth on 127.0.0.1.
type Distribution struct {
	Host      string // 127.0.0.1:port
	User      string
	Password  string
	Transport http.RoundTripper // trusts the registry's self-signed certificate
}

// Keychain returns the registry's credentials for its host (and for the proxies in front
// of it named in also) and anonymous elsewhere.
func (d *Distribution) Keychain(also ...string) authn.Keychain {
	return staticKeychain{hosts: append([]string{d.Host}, also...), auth: &authn.Basic{Username: d.User, Password: d.Password}}
}

type staticKeychain struct {
	hosts []string
	auth  authn.Authenticator
}

func (k staticKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	for _, h := range k.hosts {
		if r.RegistryStr() == h {
			return k.auth, nil
		}
	}
	return authn.Anonymous, nil
}

// StartDistribution runs docker-registry for the test. The binary comes from Debian's
// docker-registry package, which .ci/run installs; the integration tier fails without it.
func StartDistribution(t testing.TB) *Distribution {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Fatal("docker-registry is not installed: apt-get install -y docker-registry (.ci/run does this)")
	}
	dir := t.TempDir()
	certPEM, keyPEM := selfSigned(t)
	os.WriteFile(filepath.Join(dir, "cert.pem"), certPEM, 0o644)
	os.WriteFile(filepath.Join(dir, "key.pem"), keyPEM, 0o600)
	hash, err := bcrypt.GenerateFromPassword([]byte("relay-pass"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "htpasswd"), []byte("relay:"+string(hash)+"\n"), 0o644)
	port := freePort(t)
	cfg := fmt.Sprintf(`version: 0.1
log: {level: error}
storage:
  filesystem: {rootdirectory: %s}
  delete: {enabled: true}
http:
  addr: 127.0.0.1:%d
  secret: test-only
  tls: {certificate: %s, key: %s}
auth:
  htpasswd: {realm: relay-test, path: %s}
`, filepath.Join(dir, "data"), port, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "htpasswd"))
	os.WriteFile(filepath.Join(dir, "config.yml"), []byte(cfg), 0o644)
	cmd := exec.Command(bin, "serve", filepath.Join(dir, "config.yml"))
	out, _ := os.Create(filepath.Join(dir, "registry.log"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	d := &Distribution{Host: fmt.Sprintf("127.0.0.1:%d", port), User: "relay", Password: "relay-pass", Transport: tr}
	// Ready when /v2/ answers (401 without credentials); bounded, no fixed sleep.
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := (&http.Client{Transport: tr, Timeout: time.Second}).Get("https://" + d.Host + "/v2/")
		if err == nil {
			resp.Body.Close()
			return d
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "registry.log"))
			t.Fatalf("docker-registry did not start: %v\n%s", err, log)
		}
		time.Sleep(20 * time.Millisecond) // polling a process we do not control, not synchronising our own code
	}
}

// handedOut are the ports freePort gave this process: the kernel may give a closed port
// again, and two services of one stack then fight over it ("bind: address already in use").
var handedOut = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

func freePort(t testing.TB) int {
	handedOut.Lock()
	defer handedOut.Unlock()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !handedOut.ports[port] {
			handedOut.ports[port] = true
			return port
		}
	}
}

func selfSigned(t testing.TB) (certPEM, keyPEM []byte) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalPKCS8PrivateKey(k)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})
}
