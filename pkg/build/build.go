// Package build turns a checkout into an image pushed by digest, without a local daemon.
package build

import (
	"context"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/relaydev/relay/pkg/oci"
)

// Request is one image to build.
type Request struct {
	Image      Image
	ContextDir string          // absolute path of the image context inside the checkout
	Repository name.Repository // where the builder pushes, by digest
	Source     SourceInfo
}

// Image is what the builders need of one image; the build step makes it from relay.yaml's
// images[] entry, so this package knows nothing of the config file.
type Image struct {
	Name      string
	Platforms []string    // OS/ARCH[/VARIANT]
	Local     *LocalSpec  // the local builder's settings
	Docker    *DockerSpec // the cloud builders' Dockerfile settings
}

// LocalSpec is an image the local builder assembles without a daemon.
type LocalSpec struct {
	// Base is "scratch", "oci-layout:PATH[@sha256:...]" (PATH absolute or relative to
	// ConfigDir) or a registry image REGISTRY/REPO[:TAG][@sha256:…].
	Base       string
	Go         *GoSpec
	Files      []File
	Entrypoint []string
	Cmd        []string
	Env        []string
	User       string
	Workdir    string
	Labels     map[string]string
	Ports      []string
}

// GoSpec builds a Go main package per platform, ko-style.
type GoSpec struct {
	Main    string // relative to the image context
	Binary  string // absolute path in the image
	Ldflags []string
	Flags   []string
}

// File copies a file or directory of the context into the image.
type File struct {
	Src, Dst string // Src may name the platform: dist/relay_{{ .Os }}_{{ .Arch }}
	Mode     string // octal; empty keeps only the executable bit
	// Platforms limits the file to these platforms (empty: every platform).
	Platforms []string
}

// DockerSpec is how a cloud builder builds the image from its context.
type DockerSpec struct {
	Dockerfile string
	BuildArgs  map[string]string
	Target     string
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
	BaseImages []string       `json:"base_images,omitempty"` // digests of OCI layout bases
	Bases      []Base         `json:"bases,omitempty"`       // registry bases, per platform
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
