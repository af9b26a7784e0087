package steps

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/template"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/relaydev/relay/pkg/config"
	"github.com/relaydev/relay/pkg/release"
)

// Release applies the tags (the commit point), then publishes the assets.
type Release struct{}

// Name implements Step.
func (Release) Name() string { return "release" }

// Plan implements Step.
func (Release) Plan(env *Env, st *State) Plan {
	p := Plan{Step: "release", Done: st.Done("release"), Missing: needCopies(env, st)}
	if !st.Done("verify") {
		p.Missing = append(p.Missing, "a passed verification (step verify)")
	}
	for _, im := range env.Config.Images {
		tags, err := renderTags(im.Tags, st)
		if err != nil {
			tags = im.Tags
		}
		p.Does = append(p.Does, fmt.Sprintf("tag %s in %v as %v", im.Name, im.Targets, tags))
	}
	target := env.Config.Release.Target
	if env.Publisher != nil {
		target = env.Publisher.Name()
	}
	p.Does = append(p.Does, "publish the release ("+target+"): SBOMs, provenance and signature bundles, images.lock.json, images.txt, SHA256SUMS, release.json")
	return p
}

// TagData is what tag templates see.
type TagData struct {
	Version     string // the tag, else the short commit
	Tag         string
	Commit      string
	ShortCommit string
}

func renderTags(tpls []string, st *State) ([]string, error) {
	d := TagData{}
	if st.Source != nil {
		d.Tag, d.Commit = st.Source.Tag, st.Source.Commit
		if len(d.Commit) >= 12 {
			d.ShortCommit = d.Commit[:12]
		}
		d.Version = d.Tag
		if d.Version == "" {
			d.Version = d.ShortCommit
		}
	}
	var out []string
	for _, t := range tpls {
		tp, err := template.New("tag").Option("missingkey=error").Parse(t)
		if err != nil {
			return nil, fmt.Errorf("tag template %q: %w", t, err)
		}
		var b bytes.Buffer
		if err := tp.Execute(&b, d); err != nil {
			return nil, fmt.Errorf("tag template %q: %w", t, err)
		}
		tag := b.String()
		if !config.ValidTag(tag) {
			return nil, fmt.Errorf("tag template %q gives %q, which is not a valid tag (up to 128 of [A-Za-z0-9_.-], not starting with . or -)", t, tag)
		}
		out = append(out, tag)
	}
	return out, nil
}

// Run implements Step.
func (Release) Run(ctx context.Context, env *Env, st *State) error {
	rec := &ReleaseRecord{Target: env.Publisher.Name()}
	lock := &release.Lock{Version: release.LockVersion, Release: st.Source.Tag, Commit: st.Source.Commit}
	atts := append(append(append([]Attestation(nil), st.Signatures...), st.SBOMs...), st.Provenance...)

	// Tags first: they are the commit point, applied only to digests present in the target.
	for _, im := range env.Config.Images {
		tags, err := renderTags(im.Tags, st)
		if err != nil {
			return err
		}
		for _, c := range st.CopiesOf(im.Name) {
			d, err := name.NewDigest(c.Ref())
			if err != nil {
				return err
			}
			for _, t := range tags {
				if err := env.Registry.Tag(ctx, d, t); err != nil {
					return err
				}
				rec.Tags = append(rec.Tags, c.Repository+":"+t)
				env.Logger.Info("tagged", "image", c.Repository+":"+t, "digest", c.Digest)
			}
			li := release.LockedImage{Name: im.Name, Reference: c.Ref(), Repository: c.Repository, Digest: c.Digest, MediaType: c.MediaType, Tags: tags}
			for _, m := range c.Platforms {
				li.Platforms = append(li.Platforms, release.LockedPlatform{Platform: m.Platform, Digest: m.Digest})
			}
			for _, a := range atts {
				if r, ok := a.Referrers[c.Repository]; ok && a.Image == im.Name {
					li.Referrers = append(li.Referrers, release.LockedReferrer{Digest: r, Subject: a.Subject, PredicateType: a.PredicateType})
				}
			}
			lock.Images = append(lock.Images, li)
		}
	}

	var assets []release.Asset
	add := func(nm, rel string) error {
		b, err := os.ReadFile(filepath.Join(env.StateDir, rel))
		if err != nil {
			return fmt.Errorf("reading %s for the release: %w", rel, err)
		}
		assets = append(assets, release.Asset{Name: nm, Data: b})
		return nil
	}
	for _, a := range st.SBOMs {
		if err := add(filepath.Base(a.Document), a.Document); err != nil {
			return err
		}
	}
	for _, a := range atts {
		if err := add(filepath.Base(a.Bundle), a.Bundle); err != nil {
			return err
		}
	}
	lockJSON, err := lock.JSON()
	if err != nil {
		return err
	}
	assets = append(assets, release.Asset{Name: "images.lock.json", Data: lockJSON}, release.Asset{Name: "images.txt", Data: lock.Text()})
	if len(env.PublicKey) > 0 {
		assets = append(assets, release.Asset{Name: "relay-signing.pub", Data: env.PublicKey})
	}
	sort.Slice(assets, func(i, j int) bool { return assets[i].Name < assets[j].Name })
	var names []string
	for _, a := range assets {
		names = append(names, a.Name)
	}
	meta := map[string]any{
		"tag":            st.Source.Tag,
		"commit":         st.Source.Commit,
		"repository":     st.Source.Repo,
		"correlation_id": env.CorrelationID,
		"images":         lock.Images,
		"assets":         names,
		"tags":           rec.Tags,
		"relay_version":  env.Version,
	}
	mj, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return err
	}
	assets = append(assets, release.Asset{Name: "release.json", Data: append(mj, '\n')})
	assets = append(assets, release.Asset{Name: "SHA256SUMS", Data: release.Checksums(assets)})

	res, err := env.Publisher.Publish(ctx, release.Release{
		Tag: st.Source.Tag, Name: st.Source.Tag, Notes: notes(lock), Assets: assets,
	})
	if err != nil {
		return fmt.Errorf("publishing the release: %w", err)
	}
	rec.URL = res.URL
	for _, a := range assets {
		rec.Assets = append(rec.Assets, a.Name)
	}
	st.Release = rec
	return nil
}

func notes(l *release.Lock) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Release %s (%s)\n\n", l.Release, l.Commit)
	for _, im := range l.Images {
		fmt.Fprintf(&b, "- %s\n", im.Reference)
	}
	return b.String()
}
