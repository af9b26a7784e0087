// Package source checks out the repository to release with go-git.
package source

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
)

// Options describe one checkout.
type Options struct {
	Repo  string // URL or local path of a git repository
	Ref   string // tag, branch or full commit id
	Depth int    // 0: shallow (1) for remote repositories, full for local paths
	Token string // HTTP basic-auth token; never logged
	Dir   string // where to check out; replaced if it holds another commit
}

// Result is what a checkout records.
type Result struct {
	Repo       string    `json:"repo"`
	Ref        string    `json:"ref"`
	Commit     string    `json:"commit"`
	Tag        string    `json:"tag,omitempty"`
	Tree       string    `json:"tree"`
	CommitTime time.Time `json:"commit_time"`
	Dir        string    `json:"dir"`
}

// NotFoundError says a ref does not exist in the repository.
type NotFoundError struct{ Repo, Ref string }

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("ref %q not found in %s: push the tag or branch, or correct source.ref", e.Ref, e.Repo)
}

// PermanentInput marks an input error a retry cannot fix: the CLI exits 2 for it.
func (e *NotFoundError) PermanentInput() bool { return true }

// Checkout clones opts.Repo at opts.Ref into opts.Dir.
func Checkout(ctx context.Context, logger *slog.Logger, opts Options) (*Result, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if opts.Repo == "" || opts.Ref == "" || opts.Dir == "" {
		return nil, errors.New("source: repo, ref and dir are required")
	}
	// Reuse a previous checkout of the same commit: a re-run converges without re-cloning.
	if r, err := open(opts); err == nil {
		logger.Debug("checkout reused", "dir", opts.Dir, "commit", r.Commit)
		return r, nil
	}
	if err := os.RemoveAll(opts.Dir); err != nil {
		return nil, fmt.Errorf("clearing %s: %w", opts.Dir, err)
	}
	local := isLocal(opts.Repo)
	remoteURL, auth := credentials(opts)
	co := &git.CloneOptions{URL: remoteURL, Tags: git.AllTags, Auth: auth}
	if !local {
		co.Depth = opts.Depth
		if co.Depth == 0 {
			co.Depth = 1
		}
		co.SingleBranch = true
	}
	var repo *git.Repository
	var err error
	if !plumbing.IsHash(opts.Ref) {
		rn, err := ResolveRef(ctx, opts)
		if err != nil {
			return nil, err
		}
		co.ReferenceName = rn
		repo, err = git.PlainCloneContext(ctx, opts.Dir, false, co)
		if err != nil {
			return nil, fmt.Errorf("cloning %s at %s: %w", RedactURL(opts.Repo), opts.Ref, err)
		}
	} else {
		co.Depth, co.SingleBranch = 0, false
		repo, err = git.PlainCloneContext(ctx, opts.Dir, false, co)
		if err != nil {
			return nil, fmt.Errorf("cloning %s: %w", RedactURL(opts.Repo), err)
		}
		wt, err := repo.Worktree()
		if err != nil {
			return nil, err
		}
		if err := wt.Checkout(&git.CheckoutOptions{Hash: plumbing.NewHash(opts.Ref), Force: true}); err != nil {
			return nil, &NotFoundError{Repo: RedactURL(opts.Repo), Ref: opts.Ref}
		}
	}
	r, err := describe(repo, opts)
	if err != nil {
		return nil, err
	}
	logger.Info("checked out", "repo", RedactURL(opts.Repo), "ref", opts.Ref, "commit", r.Commit)
	return r, nil
}

// ResolveRef finds the tag or branch named opts.Ref in the remote without cloning.
func ResolveRef(ctx context.Context, opts Options) (plumbing.ReferenceName, error) {
	remoteURL, auth := credentials(opts)
	rem := git.NewRemote(nil, &config.RemoteConfig{Name: "origin", URLs: []string{remoteURL}})
	lo := &git.ListOptions{Auth: auth}
	refs, err := rem.ListContext(ctx, lo)
	if err != nil {
		return "", fmt.Errorf("listing refs of %s: %w", RedactURL(opts.Repo), err)
	}
	want := []plumbing.ReferenceName{plumbing.NewTagReferenceName(opts.Ref), plumbing.NewBranchReferenceName(opts.Ref)}
	for _, w := range want {
		for _, r := range refs {
			if r.Name() == w {
				return w, nil
			}
		}
	}
	return "", &NotFoundError{Repo: RedactURL(opts.Repo), Ref: opts.Ref}
}

func open(opts Options) (*Result, error) {
	repo, err := git.PlainOpen(opts.Dir)
	if err != nil {
		return nil, err
	}
	r, err := describe(repo, opts)
	if err != nil {
		return nil, err
	}
	// The checkout must be the commit the ref names now, and unmodified.
	want, err := remoteCommit(opts)
	if err != nil || want != r.Commit {
		return nil, errors.New("stale checkout")
	}
	wt, err := repo.Worktree()
	if err != nil {
		return nil, err
	}
	st, err := wt.Status()
	if err != nil || !st.IsClean() {
		return nil, errors.New("modified checkout")
	}
	return r, nil
}

// remoteCommit resolves the ref in a local source repository without cloning; remote
// repositories always return an error, so a remote source is cloned afresh.
func remoteCommit(opts Options) (string, error) {
	if !isLocal(opts.Repo) {
		return "", errors.New("remote")
	}
	repo, err := git.PlainOpen(strings.TrimPrefix(opts.Repo, "file://"))
	if err != nil {
		return "", err
	}
	h, err := repo.ResolveRevision(plumbing.Revision(opts.Ref))
	if err != nil {
		return "", err
	}
	c, err := repo.CommitObject(*h)
	if err != nil {
		return "", err
	}
	return c.Hash.String(), nil
}

func describe(repo *git.Repository, opts Options) (*Result, error) {
	head, err := repo.Head()
	if err != nil {
		return nil, fmt.Errorf("reading HEAD of checkout: %w", err)
	}
	c, err := repo.CommitObject(head.Hash())
	if err != nil {
		return nil, fmt.Errorf("reading commit %s: %w", head.Hash(), err)
	}
	r := &Result{
		Repo:       RedactURL(opts.Repo),
		Ref:        opts.Ref,
		Commit:     c.Hash.String(),
		Tree:       c.TreeHash.String(),
		CommitTime: c.Committer.When.UTC(),
		Dir:        opts.Dir,
	}
	tags, err := repo.Tags()
	if err == nil {
		_ = tags.ForEach(func(ref *plumbing.Reference) error {
			h := ref.Hash()
			if to, err := repo.TagObject(h); err == nil {
				h = to.Target
			}
			if h == c.Hash && (r.Tag == "" || ref.Name().Short() == opts.Ref) {
				r.Tag = ref.Name().Short()
			}
			return nil
		})
	}
	return r, nil
}

func isLocal(repo string) bool {
	return strings.HasPrefix(repo, "/") || strings.HasPrefix(repo, "file://") || strings.HasPrefix(repo, ".")
}

// credentials splits the clone URL from its credential: the token, else the URL's own
// user:password (or TOKEN@), which go-git then sends as basic auth, so the URL that lands
// in the checkout's .git/config — a file CI caches — carries none.
func credentials(opts Options) (string, transport.AuthMethod) {
	clean := RedactURL(opts.Repo)
	if opts.Token != "" {
		return clean, &githttp.BasicAuth{Username: "x-access-token", Password: opts.Token}
	}
	u, err := url.Parse(opts.Repo)
	if err != nil || u.User == nil || (u.Scheme != "http" && u.Scheme != "https") {
		return opts.Repo, nil // ssh://git@host keeps its user: it names the account, not a secret
	}
	pw, _ := u.User.Password()
	return clean, &githttp.BasicAuth{Username: u.User.Username(), Password: pw}
}

// RedactURL drops credentials from a URL so it can be logged and stored.
func RedactURL(u string) string {
	if i := strings.Index(u, "://"); i >= 0 {
		rest := u[i+3:]
		if at := strings.Index(rest, "@"); at >= 0 && at < strings.IndexAny(rest+"/", "/") {
			return u[:i+3] + rest[at+1:]
		}
	}
	return u
}

// SnapshotOptions describe a snapshot of a plain directory into a git repository.
type SnapshotOptions struct {
	Src     string    // directory to snapshot
	Dst     string    // git repository to create or update
	Tag     string    // tag to point at the commit
	When    time.Time // author and committer time: fixed, so the commit id is reproducible
	Exclude []string  // top-level names to leave out (state, output)
}

// Snapshot makes Dst a git repository whose tagged commit holds the files of Src. The
// commit id depends only on the content and When, so repeated snapshots of the same
// files give the same commit.
func Snapshot(ctx context.Context, logger *slog.Logger, o SnapshotOptions) (string, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := os.RemoveAll(o.Dst); err != nil {
		return "", err
	}
	repo, err := git.PlainInit(o.Dst, false)
	if err != nil {
		return "", fmt.Errorf("creating snapshot repository %s: %w", o.Dst, err)
	}
	skip := map[string]bool{".git": true}
	for _, e := range o.Exclude {
		skip[e] = true
	}
	err = filepath.WalkDir(o.Src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		rel, _ := filepath.Rel(o.Src, p)
		if rel == "." {
			return nil
		}
		if top := strings.SplitN(filepath.ToSlash(rel), "/", 2)[0]; skip[top] {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		dst := filepath.Join(o.Dst, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, info.Mode().Perm())
	})
	if err != nil {
		return "", fmt.Errorf("snapshotting %s: %w", o.Src, err)
	}
	wt, err := repo.Worktree()
	if err != nil {
		return "", err
	}
	if err := wt.AddWithOptions(&git.AddOptions{All: true}); err != nil {
		return "", fmt.Errorf("snapshotting %s: %w", o.Src, err)
	}
	sig := &object.Signature{Name: "relay", Email: "relay@localhost", When: o.When.UTC()}
	h, err := wt.Commit("snapshot for relay --local", // no folder name: the same files give the same commit anywhere
		&git.CommitOptions{Author: sig, Committer: sig, AllowEmptyCommits: true})
	if err != nil {
		return "", fmt.Errorf("committing snapshot: %w", err)
	}
	if o.Tag != "" && !plumbing.IsHash(o.Tag) {
		if _, err := repo.CreateTag(o.Tag, h, nil); err != nil {
			return "", fmt.Errorf("tagging snapshot %s: %w", o.Tag, err)
		}
	}
	logger.Debug("source snapshot", "dir", o.Dst, "commit", h.String(), "tag", o.Tag)
	return h.String(), nil
}
