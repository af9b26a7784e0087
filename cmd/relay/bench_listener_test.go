//go:build integration

package main

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/relaydev/relay/internal/testutil"
)

// BenchmarkListener measures `relay listener` (RELAY_BENCH_BIN, else this test binary as
// relay) against the fake broker and the fake Kubernetes API server on loopback, the broker
// holding empty polls 50 s as GitHub's does:
//   - start latency: 200 jobs one at a time, from the broker delivering the message that
//     assigns each to the start call of its execution (the Job's creation);
//   - a burst of 200 jobs queued at once: until the last execution's start call;
//   - idle: RSS and CPU of the listener holding its session with nothing to do (IDLE_SECONDS,
//     default 20).
func BenchmarkListener(b *testing.B) {
	bin := os.Getenv("RELAY_BENCH_BIN")
	if bin == "" {
		bin = os.Args[0]
	}
	idle := 20 * time.Second
	if s := os.Getenv("IDLE_SECONDS"); s != "" {
		n, _ := strconv.Atoi(s)
		idle = time.Duration(n) * time.Second
	}
	for i := 0; i < b.N; i++ {
		f := startListenerFakes(b)
		gh, br, kube := f.gh, f.b, f.kube
		br.PollTimeout = 50 * time.Second
		cmd := exec.Command(bin, append(append([]string{"listener"}, f.kubeArgs()...), "--scale-set", "bench", "--max-runners", "500",
			"--log-format", "json", "--log-level", "warn", "--metrics-address", "")...)
		cmd.Args[0] = "relay"
		cmd.Env = append(os.Environ(), "RELAY_E2E_EXEC=1", "RELAY_GITHUB_APP_ID="+gh.AppID, "RELAY_GITHUB_APP_KEY="+string(gh.AppKey))
		logs := &testutil.SyncBuffer{}
		cmd.Stderr = logs
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		var id int
		until(b, "the session", func() bool {
			for _, q := range br.Requests() {
				if strings.HasSuffix(q, "/sessions") && strings.HasPrefix(q, "POST") {
					id = 1
					return true
				}
			}
			return false
		})
		creates := func() []time.Time {
			var out []time.Time
			for _, c := range kube.CallLog() {
				if c.Method == http.MethodPost && strings.HasSuffix(c.Path, "/jobs") {
					out = append(out, c.At)
				}
			}
			return out
		}
		serve := func(name string) {
			jit := kube.JIT(name)
			if err := br.TakeJob(jit); err != nil {
				b.Fatal(err)
			}
			br.FinishJob(jit, "succeeded")
			kube.Complete(name)
		}
		b.ResetTimer()
		// One at a time.
		const n = 200
		for j := 0; j < n; j++ {
			br.QueueJobs(id, 1)
			select {
			case name := <-kube.Started:
				serve(name)
			case <-time.After(60 * time.Second):
				b.Fatalf("job %d never started\n%s", j, logs)
			}
		}
		lat := latencies(br.AssignedAt(), creates())
		// A burst.
		t0 := time.Now()
		br.QueueJobs(id, n)
		var names []string
		for j := 0; j < n; j++ {
			select {
			case name := <-kube.Started:
				names = append(names, name)
			case <-time.After(60 * time.Second):
				b.Fatalf("%d of the burst started\n%s", j, logs)
			}
		}
		all := creates()
		burst := all[len(all)-1].Sub(t0)
		// In a burst the listener starts from the statistics, often before the message
		// naming a job's assignment arrives: measure from the queueing instead.
		var burstLat []time.Duration
		for _, c := range all[n:] {
			burstLat = append(burstLat, c.Sub(t0))
		}
		b.StopTimer()
		for _, name := range names {
			serve(name)
		}
		until(b, "the burst's completions, acknowledged", func() bool { return br.Waiting(id) == 0 && br.Unacknowledged(id) == 0 })
		time.Sleep(time.Second) // the last acknowledgement's reconcile ends before the window opens
		cpu0, _, _ := procCPU(cmd.Process.Pid)
		w0 := time.Now()
		time.Sleep(idle) // the idle window itself is what is measured
		cpu1, rss, anon := procCPU(cmd.Process.Pid)
		cpuPct := (cpu1 - cpu0).Seconds() / time.Since(w0).Seconds() * 100
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		b.ReportMetric(pct(lat, 50), "start-p50-ms")
		b.ReportMetric(pct(lat, 99), "start-p99-ms")
		b.ReportMetric(burst.Seconds()*1000, "burst-200-ms")
		b.ReportMetric(pct(burstLat, 50), "burst-queue-to-start-p50-ms")
		b.ReportMetric(pct(burstLat, 99), "burst-queue-to-start-p99-ms")
		b.ReportMetric(float64(rss)/(1<<20), "idle-rss-MiB")
		b.ReportMetric(float64(anon)/(1<<20), "idle-anon-MiB")
		b.ReportMetric(cpuPct, "idle-cpu-%")
	}
}

// latencies pairs the i-th assignment with the i-th start call.
func latencies(assigned, started []time.Time) []time.Duration {
	var out []time.Duration
	for i := 0; i < min(len(assigned), len(started)); i++ {
		out = append(out, started[i].Sub(assigned[i]))
	}
	return out
}

func pct(ds []time.Duration, p int) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := min(len(s)-1, (len(s)*p+99)/100-1)
	return float64(s[max(i, 0)].Microseconds()) / 1000
}

// procCPU reads a process's CPU time (user + system), resident set and its anonymous part
// (the rest is the binary's pages) from /proc.
func procCPU(pid int) (time.Duration, int64, int64) {
	stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	var rss, anon int64
	for _, l := range strings.Split(string(status), "\n") {
		if f := strings.Fields(l); len(f) > 1 && (f[0] == "VmRSS:" || f[0] == "RssAnon:") {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			if f[0] == "VmRSS:" {
				rss = kb << 10
			} else {
				anon = kb << 10
			}
		}
	}
	const tick = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / tick, rss, anon
}
