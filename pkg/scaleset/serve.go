package scaleset

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/relaydev/relay/internal/backoff"
)

// ServeOptions configure Serve: the scale set to hold, and Listen's options (its
// ScaleSetID is filled in).
type ServeOptions struct {
	Name        string
	RunnerGroup string // default "Default"
	Labels      []string
	// RepoScope: a repository's runners are all in the Default group (no group look-up).
	RepoScope bool
	Listener  ListenerOptions
}

// ErrNoRunnerGroup is a runner group the scope does not have.
var ErrNoRunnerGroup = errors.New("runner group not found")

// Serve reuses the scale set of that name in the runner group or creates it, and listens
// on it until ctx ends (nil); a scale set deleted meanwhile is made again.
func Serve(ctx context.Context, o ServeOptions) error {
	if o.RunnerGroup == "" {
		o.RunnerGroup = "Default"
	}
	lg := o.Listener.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	for attempt := 0; ; attempt++ {
		ss, err := o.scaleSet(ctx, lg)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		lo := o.Listener
		lo.ScaleSetID = ss.ID
		err = Listen(ctx, lo)
		if !errors.Is(err, ErrNotFound) || ctx.Err() != nil {
			return err
		}
		lg.Warn("the scale set was deleted: recreating it", "event", "scale_set.deleted", "scale_set_id", ss.ID)
		if err := backoff.Sleep(ctx, time.Duration(min(attempt+1, 30))*time.Second); err != nil {
			return nil
		}
	}
}

func (o ServeOptions) scaleSet(ctx context.Context, lg *slog.Logger) (*ScaleSet, error) {
	c := o.Listener.Client
	groupID := 1
	if !o.RepoScope || !strings.EqualFold(o.RunnerGroup, "default") {
		g, err := c.RunnerGroup(ctx, o.RunnerGroup)
		if errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("%w: %q: create it in the Actions settings, or name another", ErrNoRunnerGroup, o.RunnerGroup)
		}
		if err != nil {
			return nil, err
		}
		groupID = g.ID
	}
	ss, err := c.ScaleSet(ctx, groupID, o.Name)
	if err == nil {
		lg.Info("scale set reused", "event", "scale_set.reused", "scale_set_id", ss.ID, "runner_group_id", groupID)
		return ss, nil
	}
	if !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	var labels []Label
	for _, l := range o.Labels {
		labels = append(labels, Label{Name: l})
	}
	if ss, err = c.CreateScaleSet(ctx, ScaleSet{Name: o.Name, RunnerGroupID: groupID, Labels: labels}); err != nil {
		return nil, err
	}
	lg.Info("scale set created", "event", "scale_set.created", "scale_set_id", ss.ID, "runner_group_id", groupID)
	return ss, nil
}
