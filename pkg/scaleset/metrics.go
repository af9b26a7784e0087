package scaleset

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"sync"
	"time"
)

// latencyBuckets are the upper bounds, in seconds, of the message-to-start histogram:
// fine below a second (the listener's target), coarse up to KEDA's polling interval.
var latencyBuckets = []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// Metrics are a listener's counters, served in Prometheus' text format. Labels name the
// scale set only: never a runner, a job or anything secret.
type Metrics struct {
	ScaleSet string

	mu        sync.Mutex
	assigned  int
	available int
	running   int
	counters  map[string]float64 // started, stopped, finished, failures, runners_removed
	buckets   []uint64
	count     uint64
	sum       float64
}

// NewMetrics returns the metrics of a listener of scaleSet.
func NewMetrics(scaleSet string) *Metrics {
	return &Metrics{ScaleSet: scaleSet, counters: map[string]float64{}, buckets: make([]uint64, len(latencyBuckets))}
}

func (m *Metrics) gauges(st *Statistics, running int) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if st != nil {
		m.assigned, m.available = st.TotalAssignedJobs, st.TotalAvailableJobs
	}
	m.running = running
}

func (m *Metrics) add(name string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.counters[name]++
}

// started counts a started execution and, when the assignment it covers is known, the
// time from the message that brought it to the start call.
func (m *Metrics) started(latency time.Duration, known bool) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.counters["started"]++
	if !known {
		return
	}
	s := latency.Seconds()
	for i, b := range latencyBuckets {
		if s <= b {
			m.buckets[i]++
		}
	}
	m.count++
	m.sum += s
}

// Value is a counter's or gauge's current value (tests, doctor).
func (m *Metrics) Value(name string) float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch name {
	case "assigned":
		return float64(m.assigned)
	case "available":
		return float64(m.available)
	case "running":
		return float64(m.running)
	case "latency_count":
		return float64(m.count)
	}
	return m.counters[name]
}

// WriteTo writes the metrics in Prometheus' text exposition format.
func (m *Metrics) WriteTo(w io.Writer) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cw := &countingWriter{w: w}
	l := fmt.Sprintf("{scale_set=%q}", m.ScaleSet)
	gauge := func(name, help string, v int) {
		fmt.Fprintf(cw, "# HELP relay_listener_%s %s\n# TYPE relay_listener_%s gauge\nrelay_listener_%s%s %d\n", name, help, name, name, l, v)
	}
	gauge("assigned_jobs", "Jobs the broker has assigned to the scale set and not yet completed.", m.assigned)
	gauge("available_jobs", "Jobs available to the scale set, not yet acquired.", m.available)
	gauge("running_executions", "Executions this listener started that have not ended.", m.running)
	help := map[string]string{
		"started":         "Executions started.",
		"finished":        "Executions that ended.",
		"stopped":         "Executions stopped because their runner never registered.",
		"failures":        "Failed calls to the scale set service or the starter.",
		"runners_removed": "Runner registrations removed by the listener.",
	}
	names := make([]string, 0, len(help))
	for n := range help {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(cw, "# HELP relay_listener_%s_total %s\n# TYPE relay_listener_%s_total counter\nrelay_listener_%s_total%s %g\n", n, help[n], n, n, l, m.counters[n])
	}
	const h = "relay_listener_start_latency_seconds"
	fmt.Fprintf(cw, "# HELP %s Time from the broker's message assigning a job to the start call of its execution.\n# TYPE %s histogram\n", h, h)
	for i, b := range latencyBuckets {
		fmt.Fprintf(cw, "%s_bucket{scale_set=%q,le=\"%g\"} %d\n", h, m.ScaleSet, b, m.buckets[i])
	}
	fmt.Fprintf(cw, "%s_bucket{scale_set=%q,le=\"+Inf\"} %d\n%s_sum%s %g\n%s_count%s %d\n", h, m.ScaleSet, m.count, h, l, m.sum, h, l, m.count)
	return cw.n, cw.err
}

// ServeHTTP serves /metrics.
func (m *Metrics) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	m.WriteTo(w)
}

type countingWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.err = err
	return n, err
}
