package build

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// remoteFailure runs one failure case of a cloud builder's single-platform build. With
// cancel, ctx is cancelled once the remote run exists (what SIGTERM does to relay mid-build)
// and the remote run must have been cancelled. Every want must be in the error; a build that
// ended on the remote side must be a *RemoteBuildError.
func remoteFailure(t *testing.T, build func(context.Context) error, setSleep func(func(context.Context, time.Duration) error),
	started, cancelled func() bool, cancel bool, want ...string) {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	if cancel {
		setSleep(func(ctx context.Context, _ time.Duration) error {
			if started() {
				stop()
			}
			return ctx.Err()
		})
	}
	err := build(ctx)
	for _, w := range want {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Fatalf("error %v lacks %q", err, w)
		}
	}
	var rbe *RemoteBuildError
	if strings.Contains(strings.Join(want, "|"), "ended ") != errors.As(err, &rbe) {
		t.Fatalf("%T: a remote end should be a *RemoteBuildError, nothing else", err)
	}
	if cancel && !cancelled() {
		t.Fatal("the remote run was not cancelled")
	}
}

func onePlatform() func(Request) Request {
	return func(r Request) Request {
		r.Image.Platforms = []string{"linux/amd64"}
		return r
	}
}
