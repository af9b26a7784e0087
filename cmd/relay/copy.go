package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/urfave/cli/v2"

	"github.com/relaydev/relay/internal/wire"
	"github.com/relaydev/relay/pkg/config"
	"github.com/relaydev/relay/pkg/oci"
)

// withCopyArgs makes the copy step's command also `relay copy SRC DST...`.
func withCopyArgs(cmd *cli.Command, getenv func(string) string, optsOf func(*cli.Context) (Options, error)) {
	cmd.UsageText = `relay copy [--state .relay/state.json]     # the pipeline's copy step
   relay copy SRC DST [DST...] [--tag v1.2.3 --tag latest]   # on its own, like crane copy, with referrers
   relay copy ghcr.io/acme/app@sha256:abc... docker.io/acme/app --tag v1.2.3`
	cmd.Description = "Without arguments: the copy step of the pipeline. With SRC and one or more DST: copies SRC (every platform, by digest) into each repository DST with its OCI referrers and cosign's .sig/.att/.sbom tags, reading each source blob once for all destinations, and applies tags only when given --tag. Prints DST@digest per destination."
	cmd.Flags = append(commonFlags(), outputFlag, &cli.StringSliceFlag{Name: "tag", EnvVars: []string{"RELAY_TAG"}, Usage: "with SRC DST: tag the copy (repeatable); without it nothing is tagged"},
		&cli.StringSliceFlag{Name: "platform", EnvVars: []string{"RELAY_PLATFORM"}, Usage: "with SRC DST: copy only these platforms of an index (repeatable); the new index gets its own digest"})
	step := cmd.Action
	cmd.Action = func(c *cli.Context) error {
		if c.Args().Len() < 2 {
			return step(c)
		}
		o, err := optsOf(c)
		if err != nil {
			return err
		}
		f := flagReader{c: c, getenv: getenv}
		tags, plats := f.list("tag"), f.list("platform")
		if f.err != nil {
			return f.err
		}
		return copyCmd(c.Context, o, c.Args().First(), c.Args().Tail(), tags, plats)
	}
}

// copyArgs checks relay copy's arguments before anything is read.
func copyArgs(src string, dsts, tags, platforms []string) (name.Reference, []name.Repository, []v1.Platform, error) {
	srcRef, err := name.ParseReference(src)
	if err != nil {
		return nil, nil, nil, &usageError{Err: fmt.Errorf("SRC %q is not an image reference: %v", src, err)}
	}
	var repos []name.Repository
	for _, dst := range dsts {
		if strings.Contains(dst, "@") || strings.Contains(dst[strings.LastIndex(dst, "/")+1:], ":") {
			return nil, nil, nil, &usageError{Err: fmt.Errorf("DST %q names a tag or digest: DST is a repository; pass tags with --tag", dst)}
		}
		r, err := name.NewRepository(dst)
		if err != nil {
			return nil, nil, nil, &usageError{Err: fmt.Errorf("DST %q is not a repository: %v", dst, err)}
		}
		repos = append(repos, r)
	}
	for _, t := range tags {
		if !config.ValidTag(t) {
			return nil, nil, nil, &usageError{Err: fmt.Errorf("--tag %q is not a valid tag (up to 128 of [A-Za-z0-9_.-], not starting with . or -)", t)}
		}
	}
	var plats []v1.Platform
	for _, p := range platforms {
		pl, err := v1.ParsePlatform(p)
		if err != nil || !strings.Contains(p, "/") {
			return nil, nil, nil, &usageError{Err: fmt.Errorf("--platform %q is not OS/ARCH[/VARIANT], e.g. linux/arm64", p)}
		}
		plats = append(plats, *pl)
	}
	return srcRef, repos, plats, nil
}

// copyCmd is `relay copy SRC DST`: crane copy's job, by digest, with referrers and cosign's
// classic attachments, and tags only when asked.
func copyCmd(ctx context.Context, o Options, src string, dsts []string, tags, platforms []string) error {
	srcRef, repos, plats, err := copyArgs(src, dsts, tags, platforms)
	if err != nil {
		return err
	}
	if o.Local {
		return &usageError{Err: fmt.Errorf("relay copy SRC DST works on real registries; --local applies to the pipeline")}
	}
	logger, cid, err := newLogger(o)
	if err != nil {
		return err
	}
	client, ov, done, err := copyClient(ctx, o.wiring(logger, cid), o.DryRun)
	if err != nil {
		return err
	}
	defer done()
	r, err := client.Resolve(ctx, srcRef)
	if err != nil {
		return err
	}
	from := srcRef.Context().Digest(r.Digest)
	var outs []name.Digest
	if len(plats) > 0 {
		for _, dst := range repos {
			out, err := client.CopyPlatforms(ctx, from, dst, plats)
			if err != nil {
				return err
			}
			outs = append(outs, out)
		}
	} else if outs, err = client.CopyMulti(ctx, from, repos); err != nil {
		return err
	}
	// Tags only once every destination holds the whole image: the commit point.
	for _, out := range outs {
		for _, t := range tags {
			if err := client.Tag(ctx, out, t); err != nil {
				return err
			}
			logger.Info("tagged", "image", out.Context().Tag(t).String(), "digest", out.DigestStr())
		}
	}
	if ov != nil {
		printCopyPlan(o.Stdout, from, len(r.Manifests), outs, ov)
		return nil
	}
	for _, out := range outs {
		fmt.Fprintln(o.Stdout, out.String())
	}
	return nil
}

// printCopyPlan says what a dry run's copy would have made and written.
func printCopyPlan(w io.Writer, from name.Digest, platforms int, outs []name.Digest, ov *oci.Overlay) {
	for _, out := range outs {
		fmt.Fprintf(w, "would copy %s (%d platform(s), with referrers) to %s\n", from, platforms, out)
	}
	plans, _ := wire.RepositoryPlans(ov)
	fmt.Fprintln(w, "writes the copy would make (none was made):")
	printRepositoryPlans(w, plans)
	if len(plans) == 0 {
		fmt.Fprintln(w, "  none: every destination holds the image and its tags already")
	}
	fmt.Fprintln(w, "dry run: nothing was written")
}

// copyClient is relay copy's registry client (it reads no relay.yaml: no insecure hosts,
// default retry budgets). A dry run gets one whose writes go into an overlay, so the same
// copy and tag code runs and the overlay says what it would have written.
func copyClient(ctx context.Context, o wire.Options, dry bool) (*oci.Client, *oci.Overlay, func(), error) {
	if dry {
		return wire.DryRegistry(ctx, o, nil)
	}
	c, err := wire.RegistryClient(ctx, o, nil, false)
	return c, nil, func() {}, err
}
