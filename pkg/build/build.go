// Package build turns a checkout into an image pushed by digest, without a local daemon.
package build

import (
	"context"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/relaydev/relay/pkg/config"
	"github.com/relaydev/relay/pkg/oci"
)

// Request is one image to build.
type Request struct {
	Image      config.Image
	ContextDir string          // absolute path of the image context inside the checkout
	Repository name.Repository // where the builder pushes, by digest
	Source     SourceInfo
}

// SourceInfo is what a build knows of its source.
type SourceInfo struct {
	Repo       string
	Commit     string
	Tag        string
	CommitTime time.Time // SOURCE_DATE_EPOCH: the only timestamp that enters the image
}

// Result is a pushed image.
type Result struct {
	Ref        string         `json:"ref"` // repository@digest
	Digest     string         `json:"digest"`
	MediaType  string         `json:"media_type"`
	Size       int64          `json:"size"`
	Platforms  []oci.Manifest `json:"platforms"`
	BaseImages []string       `json:"base_images,omitempty"` // digests of base images
	Builder    string         `json:"builder"`
	RunID      string         `json:"run_id,omitempty"`
	Log        []byte         `json:"-"`
}

// Builder builds one image and pushes it by digest; it never tags.
type Builder interface {
	Name() string
	Build(ctx context.Context, req Request) (*Result, error)
}

// InputError is a build input that is wrong (a missing file, a platform the toolchain
// cannot build): a retry fails the same way, so the CLI exits 2 for it.
type InputError struct{ Err error }

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

// PermanentInput marks the error as one a retry cannot fix.
func (e *InputError) PermanentInput() bool { return true }
