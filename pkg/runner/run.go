package runner

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/relaydev/relay/internal/telemetry"
)

// The Actions runner's own lines that mark its lifecycle.
var (
	reConnected = regexp.MustCompile(`Connected to GitHub`)
	reListening = regexp.MustCompile(`Listening for Jobs`)
	reRunning   = regexp.MustCompile(`Running job: (.+?)\s*$`)
	reCompleted = regexp.MustCompile(`Job (.+?) completed with result: (\w+)`)
	reRefused   = regexp.MustCompile(`Runner version v?(\S+) is deprecated and cannot receive messages`)
)

// exitVersionRefused is the listener's exit code for a version GitHub refuses, when
// ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE=1 asks for it (run.sh passes it on).
const exitVersionRefused = 7

// Run registers a runner, runs the Actions runner until it finishes one job, gives up
// waiting for one, or relay is told to stop (ctx), and removes the registration. The
// Result's ExitCode is the process's exit code.
func Run(ctx context.Context, o Options) (*Result, error) {
	if err := o.validate(); err != nil {
		return &Result{ExitCode: ExitConfig, Outcome: "config-error"}, &Error{Code: ExitConfig, Err: err}
	}
	a, err := newAPI(&o)
	if err != nil {
		return &Result{ExitCode: ExitConfig, Outcome: "config-error"}, &Error{Code: ExitConfig, Err: err}
	}
	r := &run{o: &o, api: a, started: o.Now()}
	r.res.Name = runnerName(o.NamePrefix, r.started, o.Rand())
	if o.JITConfig != "" {
		name, id, _ := jitRunner(o.JITConfig) // validated
		switch {
		case name != "":
			r.res.Name = name
		case o.Getenv("RELAY_RUNNER_NAME") != "": // what the listener named it
			r.res.Name = o.Getenv("RELAY_RUNNER_NAME")
		}
		r.res.RunnerID = id
	}
	r.logger = o.Logger.With("runner_name", r.res.Name)
	return r.run(ctx)
}

type run struct {
	o       *Options
	api     api
	logger  *slog.Logger
	res     Result
	started time.Time
	// registration: a JIT config, or a registration token for config.sh
	jitConfig string
	regToken  string

	mu                            sync.Mutex
	listeningAt, jobAt, jobDoneAt time.Time
	job, jobResult                string
	stopReason                    string // idle, job-timeout, terminated
	refused                       bool   // the runner said GitHub refuses its version
	version                       versionFacts
	onJob                         func()
	childCode                     int
}

func (r *run) run(ctx context.Context) (*Result, error) {
	lg := r.logger
	if r.o.Token != nil && r.o.OrphanAge > 0 {
		r.sweep(ctx)
	}
	// The release look-up overlaps the registration; its facts are logged before the start.
	vctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	version := make(chan versionFacts, 1)
	go func() { version <- r.checkVersion(vctx) }()
	if err := r.register(ctx); err != nil {
		r.res.ExitCode, r.res.Outcome = ExitRegistration, "registration-failed"
		if ctx.Err() != nil {
			r.res.ExitCode, r.res.Outcome = ExitTerminated, "terminated"
		}
		lg.Error("registration failed", "event", "runner.registration_failed", "error", err.Error())
		r.cleanup(ctx)
		r.exited()
		return &r.res, &Error{Code: r.res.ExitCode, Err: err}
	}
	r.version = <-version
	if r.version.token != "" {
		r.o.secret(r.version.token)
	}
	r.version.log(r.logger)
	err := r.supervise(ctx)
	r.cleanup(ctx)
	r.exited()
	if err != nil {
		return &r.res, &Error{Code: r.res.ExitCode, Err: err}
	}
	return &r.res, nil
}

// sweep removes offline registrations of this prefix older than OrphanAge: what replicas
// that were killed before they could clean up left behind.
func (r *run) sweep(ctx context.Context) {
	list, err := r.api.list(ctx, "")
	if err != nil {
		r.logger.Warn("listing runners for orphans failed", "error", err.Error())
		return
	}
	for _, x := range list {
		t, ok := nameTime(r.o.NamePrefix, x.Name)
		if !ok || x.Status != "offline" || x.Busy || r.o.Now().Sub(t) < r.o.OrphanAge {
			continue
		}
		existed, err := r.api.remove(ctx, x.ID)
		if err != nil {
			r.logger.Warn("removing an orphaned runner failed", "orphan", x.Name, "orphan_id", x.ID, "error", err.Error())
			continue
		}
		r.logger.Info("orphaned runner removed", "event", "runner.orphan_removed", "orphan", x.Name, "orphan_id", x.ID, "existed", existed)
	}
}

func (r *run) register(ctx context.Context) error {
	method := "jit"
	switch {
	case r.o.JITConfig != "":
		r.jitConfig, method = strings.TrimSpace(r.o.JITConfig), "jit-handed-in"
		r.o.Secrets = append(r.o.Secrets, r.jitConfig)
	case r.o.RegistrationToken != "":
		r.regToken, method = r.o.RegistrationToken, "registration-token"
	default:
		rn, cfg, err := r.api.jit(ctx, r.res.Name)
		if errors.Is(err, errNoJIT) {
			r.logger.Info("no just-in-time configuration on this server: registering with config.sh", "api", r.o.APIURL)
			if r.regToken, err = r.api.registrationToken(ctx); err != nil {
				return err
			}
			method = "config.sh"
			break
		}
		if err != nil {
			return err
		}
		r.res.RunnerID, r.jitConfig = rn.ID, cfg
		r.o.Secrets = append(r.o.Secrets, cfg)
	}
	if r.regToken != "" {
		r.o.Secrets = append(r.o.Secrets, r.regToken)
		if err := r.configSh(ctx); err != nil {
			return err
		}
		if r.o.Token != nil {
			if list, err := r.api.list(ctx, r.res.Name); err == nil && len(list) == 1 {
				r.res.RunnerID = list[0].ID
			}
		}
	}
	if r.res.RunnerID != 0 { // every later record carries it
		r.logger = r.logger.With("runner_id", r.res.RunnerID)
	}
	if r.o.JITConfig != "" { // the scale set's labels and group, not relay's flags
		r.logger.Info("runner registered", "event", "runner.registered", "method", method)
		return nil
	}
	r.logger.Info("runner registered", "event", "runner.registered", "method", method,
		"scope", r.o.Scope.String(), "labels", r.o.Labels, "group_id", r.o.GroupID)
	return nil
}

// configSh registers with a registration token, for servers without JIT and for tokens
// handed in by the platform.
func (r *run) configSh(ctx context.Context) error {
	args := []string{"--unattended", "--ephemeral", "--disableupdate", "--replace",
		"--url", r.o.WebURL + r.o.Scope.webPath(), "--token", r.regToken, "--name", r.res.Name,
		"--labels", strings.Join(r.o.Labels, ","), "--work", r.o.WorkFolder}
	if r.o.GroupID != 1 {
		args = append(args, "--runnergroup", fmt.Sprint(r.o.GroupID))
	}
	cmd := exec.CommandContext(ctx, filepath.Join(r.o.RunnerDir, "config.sh"), args...)
	cmd.Dir = r.o.RunnerDir
	env, err := r.childEnv(args)
	if err != nil {
		return err
	}
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			r.logger.Info("config.sh", "event", "runner.output", "stream", "config", "line", l)
		}
	}
	if err != nil {
		return fmt.Errorf("config.sh failed: %w", err)
	}
	return nil
}

// baseEnv is what the Actions runner needs of relay's environment; everything else must be
// named with PassEnv.
var baseEnv = []string{"PATH", "HOME", "USER", "LANG", "LC_ALL", "TZ", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR",
	"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"}

// blocked are never passed, whatever PassEnv says: relay's own settings and API tokens.
func blocked(name string) bool {
	return strings.HasPrefix(name, "RELAY_") || name == "GITHUB_TOKEN" || name == "GH_TOKEN" || name == "ACTIONS_RUNNER_INPUT_JITCONFIG"
}

// childEnv builds the child's environment and refuses to start it if a secret would reach
// it (in a variable or in args).
func (r *run) childEnv(args []string) ([]string, error) {
	allowed := map[string]bool{}
	for _, n := range append(append([]string(nil), baseEnv...), r.o.PassEnv...) {
		if !blocked(n) {
			allowed[n] = true
		}
	}
	var env []string
	for _, kv := range r.o.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if allowed[name] || strings.HasPrefix(name, "ACTIONS_RUNNER_HOOK_") {
			env = append(env, kv)
		}
	}
	for _, s := range r.o.Secrets {
		if s == "" || s == r.jitConfig || s == r.regToken { // these two are meant for the runner's own arguments
			continue
		}
		for _, kv := range append(append([]string(nil), env...), args...) {
			if strings.Contains(kv, s) {
				name, _, _ := strings.Cut(kv, "=")
				return nil, fmt.Errorf("refusing to start the runner: a secret would reach it through %s", name)
			}
		}
	}
	return env, nil
}

// supervise starts run.sh and follows it to its end.
func (r *run) supervise(ctx context.Context) error {
	var args []string
	if r.jitConfig != "" {
		args = []string{"--jitconfig", r.jitConfig}
	}
	env, err := r.childEnv(args)
	if err != nil {
		r.res.ExitCode, r.res.Outcome = ExitConfig, "config-error"
		return err
	}
	// The job runs under a span of the runner's: its steps (relay's included) continue it.
	jctx, span := telemetry.Tracer(ctx).Start(ctx, "relay runner job", trace.WithAttributes(attribute.String("cicd.worker.name", r.res.Name)))
	defer span.End()
	env = append(slices.DeleteFunc(env, func(kv string) bool {
		return strings.HasPrefix(kv, "TRACEPARENT=") || strings.HasPrefix(kv, "TRACESTATE=")
	}), telemetry.Environ(jctx)...)
	// A refused version then ends the runner with its own exit code, not "no retry needed".
	env = append(env, "ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE=1")
	cmd := exec.Command(filepath.Join(r.o.RunnerDir, "run.sh"), args...)
	cmd.Dir, cmd.Env = r.o.RunnerDir, env
	ownProcessGroup(cmd) // signals reach run.sh and the listener it starts
	outR, outW, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = outW, outW
	// Signals must be caught before the child exists, or a SIGTERM in between is lost.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	var reaper *reaper
	if r.o.Reap {
		reaper = startReaper(func(pid, code int) {
			r.logger.Debug("reaped an orphaned process", "event", "runner.reaped", "pid", pid, "exit_code", code)
		})
		defer reaper.stop()
	}
	if err := cmd.Start(); err != nil {
		outW.Close()
		outR.Close()
		r.res.ExitCode, r.res.Outcome = ExitRunner, "runner-failed"
		return fmt.Errorf("starting the Actions runner: %w", err)
	}
	outW.Close()
	if reaper != nil {
		reaper.expect(cmd.Process.Pid)
	}
	r.logger.Info("runner started", "event", "runner.started", "pid", cmd.Process.Pid, "since_start_ms", r.o.Now().Sub(r.started).Milliseconds())
	jobCh := make(chan struct{})
	r.mu.Lock()
	r.onJob = func() { close(jobCh) }
	r.mu.Unlock()
	lines := make(chan struct{})
	go func() { r.follow(outR); close(lines) }()
	exit := make(chan int, 1)
	go func() {
		var code int
		if reaper != nil {
			code = reaper.wait(cmd.Process.Pid)
		} else {
			cmd.Wait()
			code = cmd.ProcessState.ExitCode()
		}
		exit <- code
	}()

	idle := time.NewTimer(r.o.IdleTimeout)
	defer idle.Stop()
	var jobTimer <-chan time.Time
	jobStarted := jobCh
	var code int
	var killAt <-chan time.Time
	stop := func(reason string) {
		r.mu.Lock()
		if r.stopReason == "" {
			r.stopReason = reason
		}
		r.mu.Unlock()
		signalGroup(cmd, false)
		if killAt == nil {
			killAt = time.After(r.o.StopGrace)
		}
	}
	ctxDone := ctx.Done()
loop:
	for {
		select {
		case code = <-exit:
			break loop
		case <-jobStarted:
			jobStarted = nil
			idle.Stop()
			if r.o.JobTimeout > 0 {
				jobTimer = time.After(r.o.JobTimeout)
			}
		case <-idle.C:
			if !r.hasJob() {
				r.logger.Info("no job before the idle deadline: stopping", "event", "runner.idle", "idle_timeout_s", r.o.IdleTimeout.Seconds())
				stop("idle")
			}
		case <-jobTimer:
			r.logger.Warn("job ran past the job timeout: stopping it", "event", "job.timeout", "job", r.currentJob(), "job_timeout_s", r.o.JobTimeout.Seconds())
			stop("job-timeout")
		case s := <-sigs:
			r.logger.Info("stop signal: passing it to the runner", "event", "runner.signal", "signal", s.String())
			stop("terminated")
		case <-ctxDone:
			ctxDone = nil
			stop("terminated")
		case <-killAt:
			r.logger.Warn("runner did not exit in time: killing it", "grace_s", r.o.StopGrace.Seconds())
			signalGroup(cmd, true)
		}
	}
	<-lines
	r.decide(code)
	switch r.res.ExitCode {
	case ExitRunner:
		return fmt.Errorf("the Actions runner exited with code %d without a job result", code)
	case ExitConfig:
		err := fmt.Errorf("GitHub refuses Actions runner %s (\"deprecated and cannot receive messages\"): restarting will not help; re-pin the runner image on a release less than 30 days old (docs/runner.md, The image)", r.version.installed())
		r.logger.Error("GitHub refuses this runner version", "event", "runner.version_refused", "runner_version", r.version.installed(), "error", err.Error())
		return err
	}
	return nil
}

// decide turns what happened into the outcome and exit code.
func (r *run) decide(childCode int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.res.Job, r.res.JobResult = r.job, r.jobResult
	switch {
	case r.jobResult == "Succeeded":
		r.res.ExitCode, r.res.Outcome = ExitOK, "job-succeeded"
	case r.stopReason == "job-timeout":
		r.res.ExitCode, r.res.Outcome = ExitJobTimeout, "job-timeout"
	case r.jobResult != "" && r.stopReason != "terminated":
		r.res.ExitCode, r.res.Outcome = ExitJobFailed, "job-failed"
	case r.stopReason == "terminated":
		r.res.ExitCode, r.res.Outcome = ExitTerminated, "terminated"
	case r.stopReason == "idle":
		r.res.ExitCode, r.res.Outcome = ExitOK, "no-job"
	case r.refused || childCode == exitVersionRefused:
		r.res.ExitCode, r.res.Outcome = ExitConfig, "runner-version-refused"
	default:
		r.res.ExitCode, r.res.Outcome = ExitRunner, "runner-failed"
	}
	r.childCode = childCode
}

// follow turns the child's lines into log records and lifecycle events.
func (r *run) follow(out io.ReadCloser) {
	defer out.Close()
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		r.logger.Info("runner output", "event", "runner.output", "line", line)
		now := r.o.Now()
		switch {
		case reListening.MatchString(line):
			r.mu.Lock()
			first := r.listeningAt.IsZero()
			if first {
				r.listeningAt = now
			}
			r.mu.Unlock()
			if first {
				r.logger.Info("runner listening for jobs", "event", "runner.listening", "start_to_listening_ms", now.Sub(r.started).Milliseconds())
			}
		case reConnected.MatchString(line):
			r.logger.Info("runner connected to GitHub", "event", "runner.connected")
		case reRefused.MatchString(line):
			r.mu.Lock()
			r.refused = true
			r.mu.Unlock()
		}
		if m := reRunning.FindStringSubmatch(line); m != nil {
			r.mu.Lock()
			r.job, r.jobAt = m[1], now
			onJob := r.onJob
			r.onJob = nil
			r.mu.Unlock()
			r.logger.Info("job started", "event", "job.started", "job", m[1])
			if onJob != nil {
				onJob()
			}
		}
		if m := reCompleted.FindStringSubmatch(line); m != nil {
			r.mu.Lock()
			r.jobResult, r.jobDoneAt = m[2], now
			if r.job == "" {
				r.job = m[1]
			}
			r.mu.Unlock()
			r.logger.Info("job completed", "event", "job.completed", "job", m[1], "result", m[2])
		}
	}
}

func (r *run) hasJob() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.job != ""
}

func (r *run) currentJob() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.job
}

// cleanup removes the registration if it still exists, whatever happened; it runs on its
// own deadline, since ctx may be what ended the run (its values, not its end, carry over).
func (r *run) cleanup(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	switch {
	case r.o.Token != nil && r.res.RunnerID != 0:
		existed, err := r.api.remove(ctx, r.res.RunnerID)
		if err != nil {
			r.logger.Error("removing the runner registration failed", "event", "runner.remove_failed", "runner_id", r.res.RunnerID, "error", err.Error())
			return
		}
		r.logger.Info("runner registration removed", "event", "runner.removed", "runner_id", r.res.RunnerID, "existed", existed)
	case r.regToken != "" && !r.hasJob():
		// Only config.sh knows this registration: it removes it with the same token.
		cmd := exec.CommandContext(ctx, filepath.Join(r.o.RunnerDir, "config.sh"), "remove", "--token", r.regToken)
		cmd.Dir = r.o.RunnerDir
		cmd.Env, _ = r.childEnv(nil)
		if out, err := cmd.CombinedOutput(); err != nil {
			r.logger.Error("config.sh remove failed", "event", "runner.remove_failed", "error", err.Error(), "output", strings.TrimSpace(string(out)))
			return
		}
		r.logger.Info("runner registration removed", "event", "runner.removed", "runner_id", r.res.RunnerID, "existed", true)
	case r.regToken != "":
		r.logger.Info("runner registration removed by GitHub after its job (ephemeral)", "event", "runner.removed", "runner_id", r.res.RunnerID, "existed", false)
	case r.o.JITConfig != "":
		r.logger.Info("the registration is the listener's to remove", "event", "runner.handed_back", "runner_id", r.res.RunnerID, "took_job", r.hasJob())
	}
}

// exited logs the run's end with its durations.
func (r *run) exited() {
	r.mu.Lock()
	defer r.mu.Unlock()
	attrs := []any{"event", "runner.exited", "exit_code", r.res.ExitCode, "outcome", r.res.Outcome, "runner_id", r.res.RunnerID, "child_exit_code", r.childCode,
		"total_ms", r.o.Now().Sub(r.started).Milliseconds()}
	if !r.listeningAt.IsZero() {
		attrs = append(attrs, "start_to_listening_ms", r.listeningAt.Sub(r.started).Milliseconds())
		if !r.jobAt.IsZero() {
			attrs = append(attrs, "listening_to_job_ms", r.jobAt.Sub(r.listeningAt).Milliseconds())
		}
	}
	if !r.jobAt.IsZero() {
		end := r.jobDoneAt
		if end.IsZero() {
			end = r.o.Now()
		}
		attrs = append(attrs, "job", r.job, "job_result", r.jobResult, "job_ms", end.Sub(r.jobAt).Milliseconds())
	}
	r.logger.Info("runner exited", attrs...)
}

// reaper reaps every child that exits, as PID 1 must (orphans are re-parented to it), and
// hands the runner's own exit status to wait.
type reaper struct {
	orphan   func(pid, code int) // reaped a process that is not the runner
	mu       sync.Mutex
	status   map[int]int
	waiters  map[int]chan int
	childPID int
	sig      chan os.Signal
	done     chan struct{}
}

func startReaper(orphan func(pid, code int)) *reaper {
	rp := &reaper{orphan: orphan, status: map[int]int{}, waiters: map[int]chan int{}, sig: make(chan os.Signal, 8), done: make(chan struct{})}
	notifyChildExit(rp.sig)
	go func() {
		for {
			select {
			case <-rp.sig:
				rp.reapAll()
			case <-rp.done:
				return
			}
		}
	}()
	return rp
}

func (rp *reaper) expect(pid int) {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	rp.childPID = pid
}

func (rp *reaper) child() int {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return rp.childPID
}

func (rp *reaper) wait(pid int) int {
	rp.mu.Lock()
	if code, ok := rp.status[pid]; ok {
		delete(rp.status, pid)
		rp.mu.Unlock()
		return code
	}
	ch := make(chan int, 1)
	rp.waiters[pid] = ch
	rp.mu.Unlock()
	rp.reapAll() // a SIGCHLD may have come before the waiter existed
	return <-ch
}

func (rp *reaper) stop() {
	signal.Stop(rp.sig)
	close(rp.done)
}
