package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
)

// Event names that the github format turns into log groups.
const (
	EventStepStarted  = "step.started"
	EventStepFinished = "step.finished"
	EventStepFailed   = "step.failed"
	EventStepSkipped  = "step.skipped"
)

// githubHandler writes GitHub Actions workflow commands: a ::group:: per step,
// ::error:: / ::warning:: for those levels, and plain "msg key=value" lines otherwise.
type githubHandler struct {
	w     io.Writer
	level slog.Level
	red   *Redactor
	mu    *sync.Mutex
	attrs []slog.Attr
	group string
}

func (h *githubHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *githubHandler) Handle(_ context.Context, r slog.Record) error {
	var fields []string
	var event, step string
	add := func(prefix string, a slog.Attr) {}
	add = func(prefix string, a slog.Attr) {
		a = h.red.replaceAttr(nil, a)
		if a.Value.Kind() == slog.KindGroup {
			for _, g := range a.Value.Group() {
				add(prefix+a.Key+".", g)
			}
			return
		}
		key := prefix + a.Key
		switch key {
		case "event":
			event = a.Value.String()
		case "step":
			step = a.Value.String()
		}
		// The correlation fields are on every line; in the Actions UI they are noise.
		if key == "correlation_id" || key == "runner.name" {
			return
		}
		fields = append(fields, fmt.Sprintf("%s=%s", key, a.Value.String()))
	}
	prefix := ""
	if h.group != "" {
		prefix = h.group + "."
	}
	for _, a := range h.attrs {
		add("", a)
	}
	r.Attrs(func(a slog.Attr) bool { add(prefix, a); return true })

	line := r.Message
	if len(fields) > 0 {
		line += " " + strings.Join(fields, " ")
	}
	line = escapeData(h.red.Redact(line))
	h.mu.Lock()
	defer h.mu.Unlock()
	var err error
	switch {
	case event == EventStepStarted:
		_, err = fmt.Fprintf(h.w, "::group::%s\n%s\n", step, line)
	case event == EventStepFailed:
		_, err = fmt.Fprintf(h.w, "::endgroup::\n::error title=relay %s::%s\n", step, line)
	case event == EventStepFinished:
		_, err = fmt.Fprintf(h.w, "%s\n::endgroup::\n", line)
	case r.Level >= slog.LevelError:
		_, err = fmt.Fprintf(h.w, "::error::%s\n", line)
	case r.Level >= slog.LevelWarn:
		_, err = fmt.Fprintf(h.w, "::warning::%s\n", line)
	case r.Level < slog.LevelInfo:
		_, err = fmt.Fprintf(h.w, "::debug::%s\n", line)
	default:
		_, err = fmt.Fprintln(h.w, line)
	}
	return err
}

func (h *githubHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr(nil), h.attrs...), as...)
	return &c
}

func (h *githubHandler) WithGroup(name string) slog.Handler {
	c := *h
	if c.group != "" {
		name = c.group + "." + name
	}
	c.group = name
	return &c
}

// escapeData follows the Actions toolkit's escaping of command data.
func escapeData(s string) string {
	s = strings.ReplaceAll(s, "%", "%25")
	s = strings.ReplaceAll(s, "\r", "%0D")
	return strings.ReplaceAll(s, "\n", "%0A")
}
