package steps

import (
	"context"
	"fmt"
	"os"

	"golang.org/x/sync/errgroup"

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
				return env.attacher().EnsureClassicSignature(gctx, repositories(j.copies), j.digest)
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
