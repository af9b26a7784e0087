package oci

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// AccessError is a registry refusing relay's credentials (401) or their rights (403): the
// registry, the repository, the access that was needed, and how to grant it. No retry
// helps, so the CLI exits 2 for it.
type AccessError struct {
	Registry   string
	Repository string // "" when the request named none
	Push       bool   // the access needed: push (write), else pull (read)
	Status     int
	Detail     string // the registry's own message
}

func (e *AccessError) Error() string {
	verb, access := "read", "pull"
	if e.Push {
		verb, access = "push to", "push"
	}
	what := e.Repository
	if what == "" {
		what = "the registry"
	}
	refusal := "rejected relay's credentials"
	if e.Status == http.StatusForbidden {
		refusal = "denied " + access + " access"
	}
	msg := fmt.Sprintf("%s %s: relay may not %s %s", e.Registry, refusal, verb, what)
	if e.Detail != "" {
		msg += " (the registry says: " + e.Detail + ")"
	}
	return msg + " (fix: " + accessFix(e.Registry, e.Repository, e.Push) + ")"
}

// PermanentInput marks the error as one a retry cannot fix.
func (e *AccessError) PermanentInput() bool { return true }

// accessFix says how to grant the access on the registries relay's users publish to.
func accessFix(host, repo string, push bool) string {
	level := map[bool]string{true: "write", false: "read"}[push]
	switch {
	case host == "ghcr.io":
		if push {
			return "give the job `permissions: packages: write` and relay GITHUB_TOKEN; for a package that already exists, grant this repository Write in the package's settings (Manage Actions access)"
		}
		return "give the job `permissions: packages: read`; a private package must grant this repository access in its settings (Manage Actions access)"
	case strings.HasSuffix(host, ".azurecr.io"):
		role := map[bool]string{true: "AcrPush", false: "AcrPull"}[push]
		return "assign the identity relay signs in with (the managed identity: IDENTITY_ENDPOINT or AZURE_CLIENT_ID) the " + role + " role on the registry"
	case host == "docker.io" || host == "index.docker.io" || host == "registry-1.docker.io":
		return "set DOCKERHUB_USERNAME and DOCKERHUB_TOKEN to an access token with Read" + map[bool]string{true: " & Write", false: ""}[push] + " on " + repo
	case host == "gcr.io" || strings.HasSuffix(host, ".gcr.io") || strings.HasSuffix(host, "-docker.pkg.dev"):
		role := map[bool]string{true: "roles/artifactregistry.writer", false: "roles/artifactregistry.reader"}[push]
		return "grant " + role + " to the account of relay's application default credentials (GOOGLE_APPLICATION_CREDENTIALS, or the metadata server)"
	case strings.Contains(host, ".dkr.ecr.") && strings.HasSuffix(host, ".amazonaws.com"):
		if push {
			return "allow ecr:GetAuthorizationToken, ecr:BatchCheckLayerAvailability, ecr:InitiateLayerUpload, ecr:UploadLayerPart, ecr:CompleteLayerUpload and ecr:PutImage on " + repo + " to relay's AWS credentials"
		}
		return "allow ecr:GetAuthorizationToken, ecr:BatchGetImage and ecr:GetDownloadUrlForLayer on " + repo + " to relay's AWS credentials"
	}
	return "sign in with an account that has " + level + " access to " + orRegistry(repo) + ": docker login " + host + ", or a credential helper in docker's config.json"
}

func orRegistry(repo string) string {
	if repo == "" {
		return "the registry"
	}
	return repo
}

var (
	v2Path  = regexp.MustCompile(`^/v2/(.+?)/(?:manifests|blobs|tags|referrers)(?:/|$)`)
	scopeRe = regexp.MustCompile(`repository:([^:]+):([a-z,*]+)`)
)

// ExplainAccess turns a registry's 401 or 403 anywhere in err into an AccessError; any
// other error is returned as it is.
func ExplainAccess(err error) error {
	var te *transport.Error
	var ae *AccessError
	if err == nil || errors.As(err, &ae) || !errors.As(err, &te) || (te.StatusCode != http.StatusUnauthorized && te.StatusCode != http.StatusForbidden) || te.Request == nil {
		return err
	}
	u := te.Request.URL
	e := &AccessError{Registry: u.Host, Status: te.StatusCode}
	if u.Host == "auth.docker.io" { // Docker Hub's token service
		e.Registry = "docker.io"
	}
	switch te.Request.Method {
	case http.MethodPut, http.MethodPost, http.MethodPatch, http.MethodDelete:
		e.Push = true
	}
	if m := v2Path.FindStringSubmatch(u.Path); m != nil {
		e.Repository = u.Host + "/" + m[1]
	} else if m := scopeRe.FindStringSubmatch(u.RawQuery + " " + u.Query().Get("scope")); m != nil {
		// The token endpoint: its scope says which repository and which access were asked.
		e.Repository, e.Push = e.Registry+"/"+m[1], strings.Contains(m[2], "push")
	}
	for _, d := range te.Errors {
		if d.Message != "" {
			e.Detail = d.Message
			break
		}
	}
	if e.Detail == "" {
		e.Detail = strings.ToLower(http.StatusText(te.StatusCode))
	}
	return e
}
