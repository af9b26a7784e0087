// Package logging builds relay's slog handlers: json, text and GitHub workflow commands,
// each carrying the correlation fields and redacting known secret values.
package logging

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
)

// Formats lists the accepted --log-format values.
var Formats = []string{"json", "text", "github"}

// Options configure New.
type Options struct {
	Format        string // json, text or github
	Level         slog.Level
	CorrelationID string
	RunnerName    string
	Redactor      *Redactor
}

// New returns a logger writing to w in the chosen format. Every record carries
// correlation_id and runner.name.
func New(w io.Writer, o Options) (*slog.Logger, error) {
	red := o.Redactor
	if red == nil {
		red = NewRedactor()
	}
	hopts := &slog.HandlerOptions{Level: o.Level, ReplaceAttr: red.replaceAttr}
	var h slog.Handler
	switch o.Format {
	case "json":
		h = slog.NewJSONHandler(w, hopts)
	case "text":
		h = slog.NewTextHandler(w, hopts)
	case "github":
		h = &githubHandler{w: w, level: o.Level, red: red, mu: &sync.Mutex{}}
		// Mask in the runner's own log before anything can print it: the secrets known
		// now, and each one learnt later.
		red.mu.Lock()
		for _, s := range red.secrets {
			addMask(w, s)
		}
		red.onAdd = func(secret string) { addMask(w, secret) }
		red.mu.Unlock()
	default:
		return nil, fmt.Errorf("unknown log format %q: use one of %s", o.Format, strings.Join(Formats, ", "))
	}
	h = &redactHandler{Handler: h, red: red}
	return slog.New(h).With(
		slog.String("correlation_id", o.CorrelationID),
		slog.Group("runner", slog.String("name", o.RunnerName)),
	), nil
}

// addMask writes ::add-mask:: for a secret, one line at a time: a workflow command ends at
// the newline, so the rest of a multi-line secret (a PEM key) would print in the clear.
func addMask(w io.Writer, secret string) {
	for _, l := range strings.Split(secret, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			fmt.Fprintf(w, "::add-mask::%s\n", l)
		}
	}
}

// ParseLevel accepts debug, info, warn and error.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("unknown log level %q: use debug, info, warn or error", s)
	}
	return l, nil
}

// Discard is the default logger of every library: silent.
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// CorrelationID follows DESIGN.md: RELAY_CORRELATION_ID, else the GitHub run triple, else random.
func CorrelationID(getenv func(string) string) string {
	if id := getenv("RELAY_CORRELATION_ID"); id != "" {
		return id
	}
	if run := getenv("GITHUB_RUN_ID"); run != "" {
		attempt := getenv("GITHUB_RUN_ATTEMPT")
		if attempt == "" {
			attempt = "1"
		}
		return run + "-" + attempt + "-" + getenv("GITHUB_JOB")
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "relay-" + hex.EncodeToString(b[:])
}

// RunnerName is the Actions runner's name when running in a job, else the host name.
func RunnerName(getenv func(string) string) string {
	if n := getenv("RUNNER_NAME"); n != "" {
		return n
	}
	if h, err := os.Hostname(); err == nil {
		return h
	}
	return "unknown"
}

// Redactor replaces known secret values wherever they would be printed.
type Redactor struct {
	mu      sync.RWMutex
	secrets []string
	onAdd   func(string)
}

// NewRedactor returns an empty redactor.
func NewRedactor() *Redactor { return &Redactor{} }

// Add registers a secret value; values shorter than 4 bytes are ignored to avoid
// masking ordinary text. Its URL-encoded forms are registered too (a password inside a
// URL is printed encoded), and each line of a multi-line secret (a PEM key), so a part
// of it that a server echoes is masked as well.
func (r *Redactor) Add(secret string) {
	forms := []string{secret, url.QueryEscape(secret), url.PathEscape(secret)}
	if strings.Contains(secret, "\n") {
		for _, l := range strings.Split(secret, "\n") {
			if l = strings.TrimSpace(l); len(l) >= 16 && !strings.HasPrefix(l, "-----") {
				forms = append(forms, l)
			}
		}
	}
	for _, f := range forms {
		r.add(f)
	}
}

func (r *Redactor) add(secret string) {
	if len(secret) < 4 {
		return
	}
	r.mu.Lock()
	for _, s := range r.secrets {
		if s == secret {
			r.mu.Unlock()
			return
		}
	}
	r.secrets = append(r.secrets, secret)
	// Longest first: a secret that contains another is masked whole.
	sort.SliceStable(r.secrets, func(i, j int) bool { return len(r.secrets[i]) > len(r.secrets[j]) })
	on := r.onAdd
	r.mu.Unlock()
	if on != nil {
		on(secret)
	}
}

// Shapes of credentials masked wherever they appear, known or not: what a server echoes
// in an error body (an Authorization header, a token it was sent) is caught without
// relay having registered the value.
var secretShapes = []struct {
	re   *regexp.Regexp
	repl string
	// plain, when set, says the value (the last group) is ordinary text after all.
	plain func(value string) bool
}{
	// JSON Web Tokens: OIDC ID tokens, GitHub App JWTs, cloud access tokens.
	{regexp.MustCompile(`eyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{6,}`), "***", nil},
	// GitHub tokens: installation, user, OAuth, refresh, fine-grained.
	{regexp.MustCompile(`\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})\b`), "***", nil},
	// Authorization header values.
	{regexp.MustCompile(`(?i)\b(bearer|basic)(\s+)([A-Za-z0-9._~+/=-]{8,})`), "$1$2***", lettersOnly},
	// Passwords in URLs and in user:password@host references.
	{regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://[^/@\s:"']+):[^/@\s"']+@`), "$1:***@", nil},
	{regexp.MustCompile(`(^|[\s"'(=])([^/@\s:"'(=]+):[^/@\s"']+@([^/\s"'@]+/)`), "$1$2:***@$3", nil},
	// key: value and key=value pairs of credential-named fields, quoted or not.
	{regexp.MustCompile(`(?i)("?\b(?:authorization|proxy-authorization|x-api-key|api[_-]?key|access[_-]?token|refresh[_-]?token|id[_-]?token|client[_-]?secret|secret[_-]?access[_-]?key|session[_-]?token|password|passwd|private[_-]?key)"?\s*[:=]\s*["'` + "`" + `]?)([^"'` + "`" + `\s,&;(){}]{4,})`), "$1***", plainWord},
}

// Redact returns s with every known secret, and anything shaped like a credential,
// replaced by "***".
func (r *Redactor) Redact(s string) string {
	r.mu.RLock()
	for _, sec := range r.secrets {
		if strings.Contains(s, sec) {
			s = strings.ReplaceAll(s, sec, "***")
		}
	}
	r.mu.RUnlock()
	for _, sh := range secretShapes {
		if sh.plain == nil {
			s = sh.re.ReplaceAllString(s, sh.repl)
			continue
		}
		s = sh.re.ReplaceAllStringFunc(s, func(m string) string {
			g := sh.re.FindStringSubmatch(m)
			if sh.plain(g[len(g)-1]) {
				return m
			}
			return sh.re.ReplaceAllString(m, sh.repl)
		})
	}
	return s
}

// lettersOnly: "basic authentication" is prose; credentials hold digits or symbols.
func lettersOnly(v string) bool {
	for _, c := range v {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

// plainWord: a short all-lower-case word ("id-token: write", "password: required"), maybe
// ending a clause ("id-token: write: not running"), is prose, not a credential.
func plainWord(v string) bool {
	v = strings.TrimRight(v, ".:")
	switch strings.ToLower(v) {
	case "bearer", "basic", "token":
		return true // the scheme of a header value masked on its own
	}
	if strings.HasPrefix(v, "***") {
		return true // masked already
	}
	if len(v) > 12 {
		return false
	}
	for _, c := range v {
		if c < 'a' || c > 'z' {
			return false
		}
	}
	return true
}

func (r *Redactor) replaceAttr(_ []string, a slog.Attr) slog.Attr {
	switch a.Value.Kind() {
	case slog.KindString:
		if v := a.Value.String(); v != "" {
			if red := r.Redact(v); red != v {
				return slog.String(a.Key, red)
			}
		}
	case slog.KindAny:
		if err, ok := a.Value.Any().(error); ok {
			return slog.String(a.Key, r.Redact(err.Error()))
		}
		if s, ok := a.Value.Any().(fmt.Stringer); ok {
			return slog.String(a.Key, r.Redact(s.String()))
		}
	}
	return a
}

// redactHandler redacts the message; attributes are redacted by ReplaceAttr.
type redactHandler struct {
	slog.Handler
	red *Redactor
}

func (h *redactHandler) Handle(ctx context.Context, r slog.Record) error {
	if m := h.red.Redact(r.Message); m != r.Message {
		r2 := slog.NewRecord(r.Time, r.Level, m, r.PC)
		r.Attrs(func(a slog.Attr) bool { r2.AddAttrs(a); return true })
		r = r2
	}
	return h.Handler.Handle(ctx, r)
}

func (h *redactHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &redactHandler{Handler: h.Handler.WithAttrs(as), red: h.red}
}

func (h *redactHandler) WithGroup(name string) slog.Handler {
	return &redactHandler{Handler: h.Handler.WithGroup(name), red: h.red}
}

// Writer redacts known secrets from everything written through it; relay's human output
// (plans, summaries) goes through one.
func (r *Redactor) Writer(w io.Writer) io.Writer { return redactWriter{w: w, r: r} }

type redactWriter struct {
	w io.Writer
	r *Redactor
}

func (rw redactWriter) Write(p []byte) (int, error) {
	if _, err := io.WriteString(rw.w, rw.r.Redact(string(p))); err != nil {
		return 0, err
	}
	return len(p), nil
}
