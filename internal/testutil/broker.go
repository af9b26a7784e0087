package testutil

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Broker is a fake of GitHub Actions' runner scale set service, following the protocol of
// github.com/actions/scaleset: the runner-registration exchange (registration token → the
// service URL and an admin JWT), runner groups, scale sets, one message session per scale
// set (409 for a second, 404 once the scale set is deleted), a message queue long-polled
// with a max-capacity header and acknowledged by DELETE, job acquisition (an acquired job
// is then assigned, in a later message), JIT configs, and runner removal. It records every
// request.
type Broker struct {
	*httptest.Server
	// RegistrationToken is the one runner-registration accepts, besides those GitHub
	// issued when set: then the rest of the REST API under /api is GitHub's (the App's
	// installation tokens, registration tokens, actions/runner's releases).
	RegistrationToken string
	GitHub            *GitHubRunners
	// AdminTTL is the admin token's lifetime; PollTimeout how long an empty poll waits;
	// SessionIdle how long a session nobody polls is held before another may take it
	// (a listener that was killed never deletes its session).
	AdminTTL, PollTimeout, SessionIdle time.Duration
	Now                                func() time.Time

	mu         sync.Mutex
	changed    chan struct{} // closed and replaced whenever the queue changes
	requests   []string
	capacities []int
	connects   int
	admin      map[string]time.Time // admin token -> expiry
	scaleSets  map[int]*brokerScaleSet
	nextID     int
	runners    map[int64]*brokerRunner
	jit        map[string]int64 // encoded config -> runner id
	jitUsed    map[string]bool
	assignedAt []time.Time // when each JobAssigned message was first delivered
	tokenN     int
	failNext   int // service requests still to answer 503
}

type brokerScaleSet struct {
	ID      int               `json:"id"`
	Name    string            `json:"name"`
	GroupID int               `json:"runnerGroupId"`
	Labels  []json.RawMessage `json:"labels"`

	session    string
	owner      string
	queueToken string
	messages   []brokerMessage // not yet acknowledged
	nextMsg    int
	available  map[int64]bool // runner request id -> not yet acquired
	assigned   int
	waiting    []int64 // assigned jobs no runner took yet
	lastPoll   time.Time
}

type brokerRunner struct {
	name     string
	scaleSet int
	busy     bool
	request  int64 // the job it runs
}

type brokerMessage struct {
	ID        int
	Jobs      []map[string]any
	delivered bool
}

// StartBroker starts the fake on 127.0.0.1; its REST API is URL+"/api".
func StartBroker(t testing.TB) *Broker {
	b := &Broker{RegistrationToken: "reg-token-1", AdminTTL: time.Hour, PollTimeout: 50 * time.Millisecond, SessionIdle: 2 * time.Minute, Now: time.Now,
		changed: make(chan struct{}), admin: map[string]time.Time{}, scaleSets: map[int]*brokerScaleSet{}, runners: map[int64]*brokerRunner{}, jit: map[string]int64{}, jitUsed: map[string]bool{}}
	b.Server = httptest.NewServer(http.HandlerFunc(b.serve))
	t.Cleanup(b.Close)
	return b
}

// APIURL is the fake's GitHub REST API.
func (b *Broker) APIURL() string { return b.URL + "/api" }

// Requests are "METHOD PATH" of every request so far.
func (b *Broker) Requests() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.requests...)
}

// Connects counts runner-registration exchanges; Capacities are the max-capacity headers polls sent.
func (b *Broker) Connects() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.connects
}

func (b *Broker) Capacities() []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]int(nil), b.capacities...)
}

// QueueJobs makes n jobs available to scale set id, 50 per message as the broker batches.
func (b *Broker) QueueJobs(id, n int) []int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.scaleSets[id]
	var ids []int64
	var batch []map[string]any
	for i := 0; i < n; i++ {
		rid := int64(1000 + len(s.available) + s.assigned + i)
		s.available[rid] = true
		ids = append(ids, rid)
		batch = append(batch, map[string]any{"messageType": "JobAvailable", "runnerRequestId": rid, "jobId": fmt.Sprintf("job-%d", rid),
			"repositoryName": "shop", "ownerName": "acme", "requestLabels": []string{s.Name}})
		if len(batch) == 50 || i == n-1 {
			b.enqueue(s, batch)
			batch = nil
		}
	}
	return ids
}

// CompleteJobs ends n of scale set id's assigned jobs, as their runners finish them.
func (b *Broker) CompleteJobs(id, n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.scaleSets[id]
	n = min(n, s.assigned)
	s.assigned -= n
	s.waiting = s.waiting[min(n, len(s.waiting)):]
	var done []map[string]any
	for i := 0; i < n; i++ {
		done = append(done, map[string]any{"messageType": "JobCompleted", "result": "succeeded"})
	}
	if n > 0 {
		b.enqueue(s, done)
	}
}

// FailNext makes the next n requests to the service answer 503.
func (b *Broker) FailNext(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failNext = n
}

// DeleteScaleSet removes a scale set, as an administrator would.
func (b *Broker) DeleteScaleSet(id int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.scaleSets, id)
	b.notify()
}

// ExpireQueueTokens makes every session's queue token stale (the next poll gets 401).
func (b *Broker) ExpireQueueTokens() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range b.scaleSets {
		s.queueToken = "expired"
	}
}

// Runner says which runner a JIT config registers (0: not one the broker made).
func (b *Broker) Runner(encoded string) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.jit[encoded]
}

// Registered is the number of runners registered and not removed.
func (b *Broker) Registered() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.runners)
}

// AssignedAt are the times JobAssigned messages were first delivered, one per job, in order.
func (b *Broker) AssignedAt() []time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]time.Time(nil), b.assignedAt...)
}

// TakeJob is the fake runner connecting with its JIT config: refused if the broker never
// made it, it was used before (single use), or its runner was removed. The runner takes
// the oldest assigned job no runner took (JobStarted); with none it stays idle.
func (b *Broker) TakeJob(encoded string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	id, ok := b.jit[encoded]
	switch {
	case !ok:
		return fmt.Errorf("not a JIT config the broker made")
	case b.jitUsed[encoded]:
		return fmt.Errorf("JIT config of runner %d used twice", id)
	case b.runners[id] == nil:
		return fmt.Errorf("runner %d was removed", id)
	}
	b.jitUsed[encoded] = true
	rn := b.runners[id]
	s := b.scaleSets[rn.scaleSet]
	if s == nil || len(s.waiting) == 0 {
		return nil
	}
	rn.busy, rn.request, s.waiting = true, s.waiting[0], s.waiting[1:]
	b.enqueue(s, []map[string]any{{"messageType": "JobStarted", "runnerRequestId": rn.request, "jobId": fmt.Sprintf("job-%d", rn.request),
		"runnerId": id, "runnerName": rn.name}})
	return nil
}

// FinishJob ends the job of the runner the JIT config registered (JobCompleted); the
// ephemeral runner is then gone. false: the runner had no job.
func (b *Broker) FinishJob(encoded, result string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	id := b.jit[encoded]
	rn := b.runners[id]
	if rn == nil || !rn.busy {
		return false
	}
	delete(b.runners, id)
	if s := b.scaleSets[rn.scaleSet]; s != nil {
		s.assigned--
		b.enqueue(s, []map[string]any{{"messageType": "JobCompleted", "runnerRequestId": rn.request, "jobId": fmt.Sprintf("job-%d", rn.request),
			"runnerId": id, "runnerName": rn.name, "result": result}})
	}
	return true
}

// Unacknowledged is the number of scale set id's messages not yet acknowledged.
func (b *Broker) Unacknowledged(id int) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.scaleSets[id].messages)
}

// Waiting is the number of scale set id's assigned jobs that no runner took.
func (b *Broker) Waiting(id int) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.scaleSets[id].waiting)
}

func (b *Broker) enqueue(s *brokerScaleSet, jobs []map[string]any) {
	s.nextMsg++
	s.messages = append(s.messages, brokerMessage{ID: s.nextMsg, Jobs: jobs})
	b.notify()
}

func (b *Broker) notify() {
	close(b.changed)
	b.changed = make(chan struct{})
}

func (b *Broker) token(prefix string) string {
	b.tokenN++
	return fmt.Sprintf("%s-%d", prefix, b.tokenN)
}

func (b *Broker) stats(s *brokerScaleSet) map[string]int {
	busy := 0
	for _, r := range b.runners {
		if r.busy {
			busy++
		}
	}
	return map[string]int{"totalAvailableJobs": len(s.available), "totalAssignedJobs": s.assigned, "totalRegisteredRunners": len(b.runners),
		"totalBusyRunners": busy, "totalIdleRunners": len(b.runners) - busy}
}

func (b *Broker) serve(w http.ResponseWriter, r *http.Request) {
	b.mu.Lock()
	b.requests = append(b.requests, r.Method+" "+r.URL.Path)
	b.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	path := r.URL.Path
	switch {
	case path == "/api/actions/runner-registration" && r.Method == http.MethodPost:
		b.register(w, r)
	case path == "/_fake/take" || path == "/_fake/finish": // what a fake runner process calls
		jit, _ := io.ReadAll(r.Body)
		var err error
		if path == "/_fake/take" {
			err = b.TakeJob(string(jit))
		} else if !b.FinishJob(string(jit), "succeeded") {
			err = fmt.Errorf("the runner has no job")
		}
		if err != nil {
			writeJSON(w, http.StatusConflict, map[string]string{"message": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{})
	case strings.HasPrefix(path, "/tenant/"):
		b.mu.Lock()
		fail := b.failNext > 0
		if fail {
			b.failNext--
		}
		b.mu.Unlock()
		if fail {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"message": "the service is unavailable"})
			return
		}
		if !b.adminOK(r) {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"message": "admin token invalid or expired"})
			return
		}
		b.service(w, r, strings.TrimPrefix(path, "/tenant/"))
	case strings.HasPrefix(path, "/queue/"):
		b.queue(w, r, strings.Split(strings.TrimPrefix(path, "/queue/"), "/"))
	case strings.HasPrefix(path, "/api/") && b.GitHub != nil:
		r2 := r.Clone(r.Context())
		r2.URL.Path = strings.TrimPrefix(path, "/api")
		b.GitHub.Handler().ServeHTTP(w, r2)
	default:
		http.NotFound(w, r)
	}
}

func (b *Broker) register(w http.ResponseWriter, r *http.Request) {
	var in struct {
		URL         string `json:"url"`
		RunnerEvent string `json:"runner_event"`
	}
	json.NewDecoder(r.Body).Decode(&in)
	reg := strings.TrimPrefix(r.Header.Get("Authorization"), "RemoteAuth ")
	ok := reg == b.RegistrationToken || b.GitHub != nil && b.GitHub.RegistrationIssued(reg)
	if !ok || in.RunnerEvent != "register" || in.URL == "" {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"message": "bad registration"})
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.connects++
	exp := b.Now().Add(b.AdminTTL)
	claims, _ := json.Marshal(map[string]any{"exp": exp.Unix(), "n": b.connects})
	tok := "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString(claims) + ".c2ln"
	b.admin[tok] = exp
	writeJSON(w, http.StatusOK, map[string]string{"url": b.URL + "/tenant/", "token": tok})
}

func (b *Broker) adminOK(r *http.Request) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	if exp, ok := b.admin[tok]; ok && b.Now().Before(exp) {
		return true
	}
	// acquirejobs carries the session's queue token instead.
	for _, s := range b.scaleSets {
		if s.queueToken == tok && strings.HasSuffix(r.URL.Path, "/acquirejobs") {
			return true
		}
	}
	return false
}

func (b *Broker) service(w http.ResponseWriter, r *http.Request, path string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	parts := strings.Split(strings.Trim(path, "/"), "/")
	q := r.URL.Query()
	switch {
	case path == "_apis/runtime/runnergroups" || path == "_apis/runtime/runnergroups/":
		name := q.Get("groupName")
		if strings.EqualFold(name, "default") {
			writeJSON(w, http.StatusOK, map[string]any{"count": 1, "value": []any{map[string]any{"id": 1, "name": name, "isDefaultGroup": true}}})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"count": 0, "value": []any{}})
	case path == "_apis/runtime/runnerscalesets" && r.Method == http.MethodGet:
		var found []any
		for _, s := range b.scaleSets {
			if s.Name == q.Get("name") && strconv.Itoa(s.GroupID) == q.Get("runnerGroupId") {
				found = append(found, s)
			}
		}
		writeJSON(w, http.StatusOK, map[string]any{"count": len(found), "value": found})
	case path == "_apis/runtime/runnerscalesets" && r.Method == http.MethodPost:
		var s brokerScaleSet
		json.NewDecoder(r.Body).Decode(&s)
		b.nextID++
		s.ID, s.available = b.nextID, map[int64]bool{}
		b.scaleSets[s.ID] = &s
		writeJSON(w, http.StatusOK, &s)
	case len(parts) >= 4 && parts[2] == "runnerscalesets":
		id, _ := strconv.Atoi(parts[3])
		s := b.scaleSets[id]
		if s == nil {
			writeJSON(w, http.StatusNotFound, map[string]string{"message": fmt.Sprintf("runner scale set %d not found", id)})
			return
		}
		b.scaleSet(w, r, s, parts[4:])
	case len(parts) == 6 && parts[4] == "agents" && r.Method == http.MethodDelete:
		id, _ := strconv.ParseInt(parts[5], 10, 64)
		rn, ok := b.runners[id]
		if !ok {
			writeJSON(w, http.StatusNotFound, map[string]string{"message": "no such runner"})
			return
		}
		if rn.busy { // as GitHub refuses to remove a runner in the middle of a job
			writeJSON(w, http.StatusUnprocessableEntity, map[string]string{"message": "Runner \"" + rn.name + "\" is still running a job"})
			return
		}
		delete(b.runners, id)
		w.WriteHeader(http.StatusNoContent)
	default:
		http.NotFound(w, r)
	}
}

func (b *Broker) scaleSet(w http.ResponseWriter, r *http.Request, s *brokerScaleSet, rest []string) {
	switch {
	case len(rest) == 1 && rest[0] == "sessions" && r.Method == http.MethodPost:
		if s.session != "" && b.Now().Sub(s.lastPoll) > b.SessionIdle {
			s.session = "" // its listener is gone: the session lapsed
		}
		if s.session != "" {
			writeJSON(w, http.StatusConflict, map[string]string{"message": "The actions runner scale set " + s.Name + " already has an active session for owner " + s.owner + "."})
			return
		}
		var in struct {
			OwnerName string `json:"ownerName"`
		}
		json.NewDecoder(r.Body).Decode(&in)
		s.session, s.owner, s.queueToken, s.lastPoll = b.token("session"), in.OwnerName, b.token("queue"), b.Now()
		b.notify() // a poll of the lapsed session ends
		writeJSON(w, http.StatusOK, b.session(s))
	case len(rest) == 2 && rest[0] == "sessions" && rest[1] == s.session && r.Method == http.MethodPatch:
		s.queueToken = b.token("queue")
		writeJSON(w, http.StatusOK, b.session(s))
	case len(rest) == 2 && rest[0] == "sessions" && rest[1] == s.session && r.Method == http.MethodDelete:
		s.session, s.owner, s.queueToken = "", "", ""
		b.notify()
		w.WriteHeader(http.StatusNoContent)
	case len(rest) == 1 && rest[0] == "acquirejobs" && r.Method == http.MethodPost:
		var ids []int64
		json.NewDecoder(r.Body).Decode(&ids)
		var got []int64
		var assigned []map[string]any
		for _, id := range ids {
			if s.available[id] {
				delete(s.available, id)
				s.assigned++
				s.waiting = append(s.waiting, id)
				got = append(got, id)
				assigned = append(assigned, map[string]any{"messageType": "JobAssigned", "runnerRequestId": id, "jobId": fmt.Sprintf("job-%d", id)})
			}
		}
		if len(assigned) > 0 {
			b.enqueue(s, assigned)
		}
		writeJSON(w, http.StatusOK, map[string]any{"count": len(got), "value": got})
	case len(rest) == 1 && rest[0] == "generatejitconfig" && r.Method == http.MethodPost:
		var in struct {
			Name string `json:"name"`
		}
		json.NewDecoder(r.Body).Decode(&in)
		id := int64(100 + len(b.jit))
		b.runners[id] = &brokerRunner{name: in.Name, scaleSet: s.ID}
		enc := EncodeJITConfig(id, in.Name, s.Name, b.URL+"/tenant/", b.token("private-key"))
		b.jit[enc] = id
		writeJSON(w, http.StatusOK, map[string]any{"runner": map[string]any{"id": id, "name": in.Name, "runnerScaleSetId": s.ID}, "encodedJITConfig": enc})
	default:
		http.NotFound(w, r)
	}
}

func (b *Broker) session(s *brokerScaleSet) map[string]any {
	return map[string]any{"sessionId": s.session, "ownerName": s.owner, "messageQueueUrl": b.URL + "/queue/" + s.session,
		"messageQueueAccessToken": s.queueToken, "statistics": b.stats(s)}
}

// queue serves GET /queue/SESSION (the long poll) and DELETE /queue/SESSION/ID (the ack).
func (b *Broker) queue(w http.ResponseWriter, r *http.Request, parts []string) {
	deadline := time.After(b.PollTimeout)
	for {
		b.mu.Lock()
		var s *brokerScaleSet
		for _, x := range b.scaleSets {
			if x.session != "" && x.session == parts[0] {
				s = x
			}
		}
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		switch {
		case s == nil:
			b.mu.Unlock()
			writeJSON(w, http.StatusNotFound, map[string]string{"message": "no such session"})
			return
		case tok != s.queueToken:
			b.mu.Unlock()
			writeJSON(w, http.StatusUnauthorized, map[string]string{"message": "queue token expired"})
			return
		case r.Method == http.MethodDelete && len(parts) == 2:
			id, _ := strconv.Atoi(parts[1])
			for i, m := range s.messages {
				if m.ID == id {
					s.messages = append(s.messages[:i], s.messages[i+1:]...)
					break
				}
			}
			b.mu.Unlock()
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if r.Method != http.MethodGet {
			b.mu.Unlock()
			http.NotFound(w, r)
			return
		}
		c, _ := strconv.Atoi(r.Header.Get("X-ScaleSetMaxCapacity"))
		last, _ := strconv.Atoi(r.URL.Query().Get("lastMessageId"))
		s.lastPoll = b.Now()
		for i, m := range s.messages {
			if m.ID > last {
				if !m.delivered {
					s.messages[i].delivered = true
					for _, j := range m.Jobs {
						if j["messageType"] == "JobAssigned" {
							b.assignedAt = append(b.assignedAt, b.Now())
						}
					}
				}
				body, _ := json.Marshal(m.Jobs)
				out := map[string]any{"messageId": m.ID, "messageType": "RunnerScaleSetJobMessages", "body": string(body), "statistics": b.stats(s)}
				b.capacities = append(b.capacities, c)
				b.mu.Unlock()
				writeJSON(w, http.StatusOK, out)
				return
			}
		}
		changed := b.changed
		b.mu.Unlock()
		select {
		case <-changed:
		case <-deadline:
			b.mu.Lock()
			b.capacities = append(b.capacities, c)
			b.mu.Unlock()
			w.WriteHeader(http.StatusAccepted)
			return
		case <-r.Context().Done():
			return
		}
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// EncodeJITConfig encodes a runner's JIT config as the service does: base64 JSON of the
// runner's own files, .runner (its settings), .credentials and .credentials_rsaparams
// (here key stands for the private key).
func EncodeJITConfig(id int64, name, pool, server, key string) string {
	file := func(v any) string { j, _ := json.Marshal(v); return base64.StdEncoding.EncodeToString(j) }
	cfg, _ := json.Marshal(map[string]string{
		".runner":                file(map[string]any{"agentId": id, "agentName": name, "poolId": 1, "poolName": pool, "serverUrl": server, "workFolder": "_work", "ephemeral": true}),
		".credentials":           file(map[string]any{"scheme": "OAuth", "data": map[string]string{"clientId": fmt.Sprintf("client-%d", id), "authorizationUrl": server + "token"}}),
		".credentials_rsaparams": file(map[string]string{"d": key}),
	})
	return base64.StdEncoding.EncodeToString(cfg)
}
