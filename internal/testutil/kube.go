package testutil

import (
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// KubeAPI is a fake of the Kubernetes API server's batch/v1 Jobs and v1 Secrets in one
// namespace: it records every call with its body, checks the bearer token, and keeps Jobs
// (with uids and conditions) so a lister sees what it made. Deny makes a verb refused (403).
type KubeAPI struct {
	*httptest.Server
	Token string
	// CertFile is the server's certificate (the service account's ca.crt, in a test).
	CertFile string
	// Started receives each Job's name when it is let run (unsuspended), as a kubelet
	// would then start its pod.
	Started chan string

	mu      sync.Mutex
	Calls   []KubeCall
	Jobs    map[string]map[string]any
	Secrets map[string]map[string]any
	Deny    map[string]bool // "create jobs", "create secrets", "patch jobs", "list jobs", "get jobs"
	// LosePatchAnswers applies each patch and then answers 503, as a connection cut
	// after the API server acted would look to the client.
	LosePatchAnswers bool
	Now              func() time.Time
	uid              int
	// holdAfter: Job creations past this many wait until Release (or their client goes).
	holdAfter int
	created   int
	release   chan struct{}
}

// HoldAfter makes Job creations past n wait, creating nothing, until Release; one whose
// client goes away meanwhile (a listener killed mid-burst) is never made.
func (k *KubeAPI) HoldAfter(n int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.holdAfter, k.release = n, make(chan struct{})
}

// Release lets held creations go on.
func (k *KubeAPI) Release() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.release != nil {
		close(k.release)
		k.release, k.holdAfter = nil, 0
	}
}

// KubeCall is one request: "METHOD PATH" and its body.
type KubeCall struct {
	Method, Path, ContentType string
	Body                      []byte
	At                        time.Time // when it arrived
}

// StartKubeAPI starts the fake for namespace ns on 127.0.0.1.
func StartKubeAPI(t testing.TB, ns string) *KubeAPI {
	k := &KubeAPI{Token: "sa-token-1", Now: time.Now, Jobs: map[string]map[string]any{}, Secrets: map[string]map[string]any{}, Deny: map[string]bool{},
		Started: make(chan string, 1000)}
	k.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { k.serve(w, r, ns) }))
	t.Cleanup(k.Close)
	k.CertFile = t.TempDir() + "/ca.crt"
	if err := writeFile(k.CertFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: k.Certificate().Raw})); err != nil {
		t.Fatal(err)
	}
	return k
}

// Complete marks a Job finished, as the Job controller would; false if there is none.
func (k *KubeAPI) Complete(name string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.Jobs[name] == nil {
		return false
	}
	k.Jobs[name]["status"] = map[string]any{"conditions": []any{map[string]any{"type": "Complete", "status": "True"}}}
	return true
}

// CallLog returns the calls so far.
func (k *KubeAPI) CallLog() []KubeCall {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]KubeCall(nil), k.Calls...)
}

// JIT is the JIT config in the Secret of Job name, as its pod would read the mounted file.
func (k *KubeAPI) JIT(name string) string {
	k.mu.Lock()
	defer k.mu.Unlock()
	sec := k.Secrets[name]
	if sec == nil {
		return ""
	}
	data, _ := sec["data"].(map[string]any)
	v, _ := base64.StdEncoding.DecodeString(fmt.Sprint(data["jitconfig"]))
	return string(v)
}

func (k *KubeAPI) serve(w http.ResponseWriter, r *http.Request, ns string) {
	body, _ := io.ReadAll(r.Body)
	if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/jobs") {
		k.mu.Lock()
		k.created++
		hold, release := k.holdAfter > 0 && k.created > k.holdAfter, k.release
		k.mu.Unlock()
		if hold {
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.Calls = append(k.Calls, KubeCall{Method: r.Method, Path: r.URL.Path, ContentType: r.Header.Get("Content-Type"), Body: body, At: time.Now()})
	w.Header().Set("Content-Type", "application/json")
	if r.Header.Get("Authorization") != "Bearer "+k.Token {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"kind": "Status", "message": "Unauthorized"})
		return
	}
	if r.URL.Path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews" && r.Method == http.MethodPost {
		var rev struct {
			Spec struct {
				ResourceAttributes struct{ Namespace, Verb, Resource string } `json:"resourceAttributes"`
			} `json:"spec"`
		}
		json.Unmarshal(body, &rev)
		a := rev.Spec.ResourceAttributes
		allowed := a.Namespace == ns && !k.Deny[a.Verb+" "+a.Resource]
		writeJSON(w, http.StatusCreated, map[string]any{"kind": "SelfSubjectAccessReview", "status": map[string]any{"allowed": allowed}})
		return
	}
	jobs, secrets := "/apis/batch/v1/namespaces/"+ns+"/jobs", "/api/v1/namespaces/"+ns+"/secrets"
	verb := map[string]string{http.MethodPost: "create", http.MethodGet: "list", http.MethodPatch: "patch", http.MethodDelete: "delete"}[r.Method]
	if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, jobs+"/") {
		verb = "get"
	}
	res := "jobs"
	if strings.HasPrefix(r.URL.Path, secrets) {
		res = "secrets"
	}
	if k.Deny[verb+" "+res] {
		writeJSON(w, http.StatusForbidden, map[string]string{"kind": "Status", "message": fmt.Sprintf(`%s is forbidden: User "system:serviceaccount:%s:listener" cannot %s resource %q`, res, ns, verb, res)})
		return
	}
	var obj map[string]any
	json.Unmarshal(body, &obj)
	switch {
	case r.URL.Path == jobs && r.Method == http.MethodPost:
		meta := obj["metadata"].(map[string]any)
		name := meta["name"].(string)
		if k.Jobs[name] != nil {
			writeJSON(w, http.StatusConflict, map[string]string{"kind": "Status", "message": "jobs.batch \"" + name + "\" already exists"})
			return
		}
		k.uid++
		meta["uid"] = fmt.Sprintf("uid-%d", k.uid)
		meta["creationTimestamp"] = k.Now().UTC().Format(time.RFC3339)
		k.Jobs[name] = obj
		writeJSON(w, http.StatusCreated, obj)
	case strings.HasPrefix(r.URL.Path, jobs+"/") && r.Method == http.MethodGet:
		j := k.Jobs[strings.TrimPrefix(r.URL.Path, jobs+"/")]
		if j == nil {
			writeJSON(w, http.StatusNotFound, map[string]string{"kind": "Status", "message": "not found"})
			return
		}
		writeJSON(w, http.StatusOK, j)
	case r.URL.Path == jobs && r.Method == http.MethodGet:
		sel := r.URL.Query().Get("labelSelector")
		var items []any
		for _, j := range k.Jobs {
			labels, _ := j["metadata"].(map[string]any)["labels"].(map[string]any)
			key, val, _ := strings.Cut(sel, "=")
			if labels[key] == val {
				items = append(items, j)
			}
		}
		writeJSON(w, http.StatusOK, map[string]any{"kind": "JobList", "items": items})
	case strings.HasPrefix(r.URL.Path, jobs+"/") && r.Method == http.MethodPatch:
		j := k.Jobs[strings.TrimPrefix(r.URL.Path, jobs+"/")]
		if j == nil {
			writeJSON(w, http.StatusNotFound, map[string]string{"kind": "Status", "message": "not found"})
			return
		}
		if spec, ok := obj["spec"].(map[string]any); ok {
			was := j["spec"].(map[string]any)["suspend"]
			for key, v := range spec {
				j["spec"].(map[string]any)[key] = v
			}
			if was == true && spec["suspend"] == false {
				k.Started <- strings.TrimPrefix(r.URL.Path, jobs+"/")
			}
		}
		if k.LosePatchAnswers {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"kind": "Status", "message": "the answer was lost"})
			return
		}
		writeJSON(w, http.StatusOK, j)
	case strings.HasPrefix(r.URL.Path, jobs+"/") && r.Method == http.MethodDelete:
		name := strings.TrimPrefix(r.URL.Path, jobs+"/")
		if k.Jobs[name] == nil {
			writeJSON(w, http.StatusNotFound, map[string]string{"kind": "Status", "message": "jobs.batch \"" + name + "\" not found"})
			return
		}
		delete(k.Jobs, name)
		for s, sec := range k.Secrets { // garbage collection of what the Job owns
			refs, _ := sec["metadata"].(map[string]any)["ownerReferences"].([]any)
			for _, ref := range refs {
				if ref.(map[string]any)["name"] == name {
					delete(k.Secrets, s)
				}
			}
		}
		writeJSON(w, http.StatusOK, map[string]string{"kind": "Status", "status": "Success"})
	case r.URL.Path == secrets && r.Method == http.MethodPost:
		k.Secrets[obj["metadata"].(map[string]any)["name"].(string)] = obj
		writeJSON(w, http.StatusCreated, obj)
	default:
		writeJSON(w, http.StatusNotFound, map[string]string{"kind": "Status", "message": "not found"})
	}
}
