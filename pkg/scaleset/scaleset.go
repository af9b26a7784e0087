package scaleset

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
)

// Label is a scale set label; jobs whose runs-on names it are the scale set's.
type Label struct {
	Type string `json:"type"`
	Name string `json:"name"`
}

// ScaleSet is a runner scale set.
type ScaleSet struct {
	ID              int         `json:"id,omitempty"`
	Name            string      `json:"name,omitempty"`
	RunnerGroupID   int         `json:"runnerGroupId,omitempty"`
	RunnerGroupName string      `json:"runnerGroupName,omitempty"`
	Labels          []Label     `json:"labels,omitempty"`
	Statistics      *Statistics `json:"statistics,omitempty"`
}

// Statistics are the broker's counts for a scale set.
type Statistics struct {
	TotalAvailableJobs     int `json:"totalAvailableJobs"`
	TotalAcquiredJobs      int `json:"totalAcquiredJobs"`
	TotalAssignedJobs      int `json:"totalAssignedJobs"`
	TotalRunningJobs       int `json:"totalRunningJobs"`
	TotalRegisteredRunners int `json:"totalRegisteredRunners"`
	TotalBusyRunners       int `json:"totalBusyRunners"`
	TotalIdleRunners       int `json:"totalIdleRunners"`
}

// RunnerGroup is a runner group of the scope.
type RunnerGroup struct {
	ID        int    `json:"id"`
	Name      string `json:"name"`
	IsDefault bool   `json:"isDefaultGroup"`
}

// Runner is a registered runner.
type Runner struct {
	ID         int64  `json:"id"`
	Name       string `json:"name"`
	ScaleSetID int    `json:"runnerScaleSetId"`
}

// JITConfig is a single-use runner configuration: the runner it registers, and the
// encoded config (a secret: whoever holds it can take the runner's job).
type JITConfig struct {
	Runner  *Runner `json:"runner"`
	Encoded string  `json:"encodedJITConfig"`
}

// ScaleSet returns the scale set of that name in the runner group, or ErrNotFound.
func (c *Client) ScaleSet(ctx context.Context, groupID int, name string) (*ScaleSet, error) {
	var out struct {
		Count int        `json:"count"`
		Value []ScaleSet `json:"value"`
	}
	q := url.Values{"runnerGroupId": {strconv.Itoa(groupID)}, "name": {name}}
	if err := c.call(ctx, http.MethodGet, scaleSetPath, q, "", nil, &out, http.StatusOK); err != nil {
		return nil, err
	}
	switch out.Count {
	case 0:
		return nil, fmt.Errorf("scale set %q in runner group %d: %w", name, groupID, ErrNotFound)
	case 1:
		return &out.Value[0], nil
	}
	return nil, fmt.Errorf("scale set service: %d scale sets named %q in runner group %d", out.Count, name, groupID)
}

// CreateScaleSet makes a scale set; its name is also a label, as GitHub requires.
func (c *Client) CreateScaleSet(ctx context.Context, s ScaleSet) (*ScaleSet, error) {
	if s.Name == "" || s.RunnerGroupID == 0 {
		return nil, errors.New("a scale set needs a name and a runner group")
	}
	has := false
	for i, l := range s.Labels {
		if l.Type == "" {
			s.Labels[i].Type = "System"
		}
		has = has || l.Name == s.Name
	}
	if !has {
		s.Labels = append([]Label{{Type: "System", Name: s.Name}}, s.Labels...)
	}
	var out ScaleSet
	if err := c.call(ctx, http.MethodPost, scaleSetPath, nil, "", s, &out, http.StatusOK, http.StatusCreated); err != nil {
		return nil, err
	}
	return &out, nil
}

// RunnerGroup returns the scope's runner group of that name, or ErrNotFound.
func (c *Client) RunnerGroup(ctx context.Context, name string) (*RunnerGroup, error) {
	var out struct {
		Count int           `json:"count"`
		Value []RunnerGroup `json:"value"`
	}
	if err := c.call(ctx, http.MethodGet, groupsPath, url.Values{"groupName": {name}}, "", nil, &out, http.StatusOK); err != nil {
		return nil, err
	}
	for _, g := range out.Value {
		if g.Name == name {
			return &g, nil
		}
	}
	return nil, fmt.Errorf("runner group %q: %w", name, ErrNotFound)
}

// JITConfig mints a single-use config for a runner named name in the scale set.
func (c *Client) JITConfig(ctx context.Context, scaleSetID int, name string) (*JITConfig, error) {
	var out JITConfig
	in := map[string]string{"name": name, "workFolder": "_work"}
	if err := c.call(ctx, http.MethodPost, fmt.Sprintf("%s/%d/generatejitconfig", scaleSetPath, scaleSetID), nil, "", in, &out, http.StatusOK); err != nil {
		return nil, err
	}
	if out.Runner == nil || out.Encoded == "" {
		return nil, errors.New("scale set service: generatejitconfig answered without a runner or config")
	}
	return &out, nil
}

// ErrRunnerBusy is a runner the service would not remove: it is running a job.
var ErrRunnerBusy = errors.New("the runner is running a job")

// RemoveRunner deregisters a runner (one whose execution never started, never took a job,
// or ended); existed is false when it was already gone. A runner running a job is not
// removed: ErrRunnerBusy.
func (c *Client) RemoveRunner(ctx context.Context, id int64) (existed bool, err error) {
	err = c.call(ctx, http.MethodDelete, fmt.Sprintf("%s/%d", runnersPath, id), nil, "", nil, nil, http.StatusNoContent, http.StatusOK)
	var se *Error
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, ErrNotFound):
		return false, nil // already gone: what removal wanted
	case errors.As(err, &se) && (se.Status == http.StatusBadRequest || se.Status == http.StatusConflict || se.Status == http.StatusUnprocessableEntity):
		return true, fmt.Errorf("runner %d: %w (%s)", id, ErrRunnerBusy, se.Message)
	}
	return true, err
}
