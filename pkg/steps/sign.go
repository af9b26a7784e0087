package steps

import (
	"context"
	"fmt"
	"os"

	"golang.org/x/sync/errgroup"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/relaydev/relay/pkg/attest"
)

// Sign signs the index and every platform manifest of every image, by digest.
type Sign struct{}

// Name implements Step.
func (Sign) Name() string { return "sign" }

// Plan implements Step.
func (Sign) Plan(env *Env, st *State) Plan {
	p := Plan{Step: "sign", Done: st.Done("sign")}
	p.Missing = needCopies(env, st)
	signer := env.Config.Signing.Mode
	if env.Signer != nil {
		signer = env.Signer.Identity()
	}
	for _, im := range env.Config.Images {
		p.Does = append(p.Does, fmt.Sprintf("sign %s (index and each platform manifest, by digest) with %s; attach as OCI referrers in every target", im.Name, signer))
	}
	p.Absent = absentSigningFiles(env)
	return p
}

// absentSigningFiles lists the files relay.yaml's signing section names that do not exist;
// --local signs with its own key and needs none of them.
func absentSigningFiles(env *Env) []string {
	if env.Mode == ModeLocal {
		return nil
	}
	s := env.Config.Signing
	files := [][2]string{{"signing.trusted_root", s.TrustedRoot}, {"signing.signing_config", s.SigningConfig}}
	if s.Mode == "key" && !attest.IsKMSKey(s.Key) {
		files = append(files, [2]string{"signing.key", s.Key})
	}
	if s.Mode == "keyless" {
		files = append(files, [2]string{"signing.token_file", s.TokenFile})
	}
	var out []string
	for _, f := range files {
		if f[1] == "" {
			continue
		}
		p := env.Config.ResolvePath(f[1])
		if st, err := os.Stat(p); err != nil || st.IsDir() {
			out = append(out, fmt.Sprintf("%s %s (no such file)", f[0], p))
		}
	}
	return out
}

func needCopies(env *Env, st *State) []string {
	var missing []string
	for _, im := range env.Config.Images {
		if len(st.CopiesOf(im.Name)) == 0 {
			missing = append(missing, "the copies of "+im.Name+" (step copy)")
		}
	}
	return missing
}

// digestsOf lists the index (or single manifest) first, then each platform manifest.
func digestsOf(c CopiedImage) []struct{ digest, platform string } {
	out := []struct{ digest, platform string }{{c.Digest, ""}}
	for _, m := range c.Platforms {
		if m.Digest != c.Digest {
			out = append(out, struct{ digest, platform string }{m.Digest, m.Platform})
		}
	}
	return out
}

// Run implements Step.
func (Sign) Run(ctx context.Context, env *Env, st *State) error {
	// Each signature waits on the transparency log (Rekor v2 integrates entries about once
	// a second), so the digests are signed side by side, up to --jobs at a time.
	type job struct {
		im     string
		copies []CopiedImage
		digest string
		plat   string
	}
	var jobs []job
	for _, im := range env.Config.Images {
		copies := st.CopiesOf(im.Name)
		for _, d := range digestsOf(copies[0]) {
			jobs = append(jobs, job{im.Name, copies, d.digest, d.platform})
		}
	}
	out := make([]Attestation, len(jobs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(1, env.Jobs))
	for i, j := range jobs {
		g.Go(func() error {
			subject := attest.Subject{Name: j.copies[0].Repository, Digest: j.digest}
			att, _, err := ensureAttached(gctx, env, j.copies, attachRequest{
				image: j.im, platform: j.plat, subject: j.digest, predicateType: attest.PredicateSign, kind: "sig",
				statement: func(context.Context) ([]byte, error) {
					return attest.Statement([]attest.Subject{subject}, attest.PredicateSign, nil)
				},
			})
			if err != nil {
				return err
			}
			out[i] = *att
			if env.Classic {
				return ensureClassic(gctx, env, j.copies, j.digest)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	st.Signatures = out
	return nil
}

// classicSigner signs cosign's classic simple-signing payloads: key signers, and keyless
// signers whose signing config has a Rekor v1 log.
type classicSigner interface {
	SignClassic(ctx context.Context, payload []byte) (*attest.Classic, error)
	// ClassicAttestation turns one of its attestation bundles into a classic .att layer.
	ClassicAttestation(bundleJSON []byte) (*attest.Classic, error)
}

// ensureClassic gives digest a classic cosign signature in every target, unless one that
// verifies against the run's trust (key, or certificate identity) is there already.
func ensureClassic(ctx context.Context, env *Env, copies []CopiedImage, digest string) error {
	cs, ok := env.Signer.(classicSigner)
	if !ok {
		return fmt.Errorf("signing.classic: %s cannot make classic signatures", env.Signer.Identity())
	}
	for _, c := range copies {
		repo, err := name.NewRepository(c.Repository)
		if err != nil {
			return err
		}
		d := repo.Digest(digest)
		if classicValid(ctx, env.Registry, d, env.Verifier) == nil {
			continue
		}
		payload, err := attest.SimpleSigningPayload(c.Repository, digest)
		if err != nil {
			return err
		}
		sig, err := cs.SignClassic(ctx, payload)
		if err != nil {
			return fmt.Errorf("classic signature of %s: %w", d, err)
		}
		if err := env.Registry.AddClassicSignature(ctx, d, *sig); err != nil {
			return err
		}
		env.Logger.Info("classic signature attached", "image", c.Repository, "digest", digest)
	}
	return nil
}

// ensureClassicAttestation puts the attestation bundle, as cosign's classic .att layer, in
// every target, unless a classic attestation of the same predicate that verifies is there.
func ensureClassicAttestation(ctx context.Context, env *Env, copies []CopiedImage, digest, predicateType string, bundle []byte) error {
	cs, ok := env.Signer.(classicSigner)
	if !ok {
		return fmt.Errorf("signing.classic: %s cannot make classic attestations", env.Signer.Identity())
	}
	var att *attest.Classic
	for _, c := range copies {
		repo, err := name.NewRepository(c.Repository)
		if err != nil {
			return err
		}
		d := repo.Digest(digest)
		if classicAttestationValid(ctx, env.Registry, d, env.Verifier, predicateType) == nil {
			continue
		}
		if att == nil {
			if att, err = cs.ClassicAttestation(bundle); err != nil {
				return fmt.Errorf("classic attestation of %s: %w", d, err)
			}
		}
		a := *att
		a.PredicateType = predicateType
		if err := env.Registry.AddClassicAttestation(ctx, d, a); err != nil {
			return err
		}
		env.Logger.Info("classic attestation attached", "image", c.Repository, "digest", digest, "predicate_type", predicateType)
	}
	return nil
}
