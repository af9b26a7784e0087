package steps

import (
	"context"
	"fmt"
	"strings"

	"github.com/relaydev/relay/pkg/attest"
)

// Provenance attaches signed SLSA v1 provenance to the index of every image; its subjects
// are every digest pushed for the image.
type Provenance struct{}

// Name implements Step.
func (Provenance) Name() string { return "provenance" }

// Plan implements Step.
func (Provenance) Plan(env *Env, st *State) Plan {
	p := Plan{Step: "provenance", Done: st.Done("provenance")}
	if !env.Config.ProvenanceEnabled() {
		p.Does = []string{"nothing: provenance.enabled is false"}
		return p
	}
	p.Missing = needCopies(env, st)
	if st.Source == nil {
		p.Missing = append(p.Missing, "the checkout (step checkout)")
	}
	also := ""
	if len(env.Config.Release.Assets) > 0 {
		also = " and the release.assets files"
	}
	for _, im := range env.Config.Images {
		p.Does = append(p.Does, fmt.Sprintf("write SLSA v1 provenance for %s (subjects: index and platform digests%s; invocationId %s), sign it, attach it", im.Name, also, env.CorrelationID))
	}
	return p
}

// Run implements Step.
func (Provenance) Run(ctx context.Context, env *Env, st *State) error {
	if !env.Config.ProvenanceEnabled() {
		st.Provenance = nil
		return nil
	}
	// The project's own release files are subjects too: the provenance vouches for the
	// binaries on the release page as for the images.
	assets, err := projectAssets(env.Config)
	if err != nil {
		return err
	}
	var out []Attestation
	for _, im := range env.Config.Images {
		copies := st.CopiesOf(im.Name)
		var subjects []attest.Subject
		for _, d := range digestsOf(copies[0]) {
			subjects = append(subjects, attest.Subject{Name: copies[0].Repository, Digest: d.digest})
		}
		subjects = append(subjects, assetSubjects(assets)...)
		in := attest.ProvenanceInput{
			Subjects:     subjects,
			Repository:   st.Source.Repo,
			Ref:          st.Source.Ref,
			Commit:       st.Source.Commit,
			Workflow:     env.Workflow,
			ConfigDigest: env.Config.Digest,
			BuilderID:    builderID(env),
			InvocationID: st.CorrelationID,
			StartedOn:    st.CreatedAt,
			FinishedOn:   env.Now(),
			RelayVersion: env.Version,
		}
		if b := st.Build(im.Name); b != nil {
			in.Builder = b.Builder
			in.BuilderRunIDs = map[string]string{im.Name: b.RunID}
			in.BaseImages = b.BaseImages
			for _, base := range b.Bases {
				in.Bases = append(in.Bases, attest.BaseRef{Name: base.Name, Digest: base.Digest, Platform: base.Platform})
			}
			if b.LogDigest != "" {
				in.BuildLogs = map[string]string{im.Name: b.LogDigest}
			}
		}
		want, err := attest.Provenance(in)
		if err != nil {
			return err
		}
		invocation := in.InvocationID
		// Another run's provenance is reused only when it says what this run's would (a
		// retry from scratch); after a config change it is not this release's.
		att, _, err := ensureAttached(ctx, env, copies, attachRequest{
			image: im.Name, subject: copies[0].Digest, predicateType: attest.PredicateSLSA, kind: "provenance",
			statement: func(context.Context) ([]byte, error) { return want, nil },
			accept: func(v *attest.Verified) bool {
				diff, inv, err := attest.ProvenanceDiff(v.Statement, want)
				if err != nil || len(diff) > 0 {
					env.Logger.Info("attached provenance describes another build: not reused", "image", im.Name, "differs_in", strings.Join(diff, ", "), "error", err)
					return false
				}
				invocation = inv
				return true
			},
		})
		if err != nil {
			return err
		}
		att.InvocationID = invocation
		out = append(out, *att)
	}
	st.Provenance, st.Assets = out, assets
	return nil
}

// builderID is the runner's identity: the Actions runner when inside a job, else relay on
// this host.
func builderID(env *Env) string {
	if env.Mode == ModeLocal {
		return attest.DefaultBuilderIDURI + "/local/" + env.RunnerName
	}
	return attest.DefaultBuilderIDURI + "/" + env.RunnerName
}
