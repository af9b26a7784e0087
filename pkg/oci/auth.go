package oci

import (
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/google"
)

// Keychain is where relay finds registry credentials, first match wins:
//  1. tokens from the environment: GITHUB_TOKEN (or GH_TOKEN) for ghcr.io, with GITHUB_ACTOR
//     as the user; DOCKERHUB_USERNAME and DOCKERHUB_TOKEN for Docker Hub;
//  2. docker's config.json ($DOCKER_CONFIG) and the credential helpers it names;
//  3. Google Artifact Registry and GCR through application default credentials or the
//     metadata server (go-containerregistry's maintained google keychain).
func Keychain(getenv func(string) string) authn.Keychain {
	return authn.NewMultiKeychain(envKeychain{getenv}, authn.DefaultKeychain, google.Keychain)
}

type envKeychain struct{ getenv func(string) string }

func (k envKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	switch r.RegistryStr() {
	case "ghcr.io":
		tok := k.getenv("GITHUB_TOKEN")
		if tok == "" {
			tok = k.getenv("GH_TOKEN")
		}
		if tok == "" {
			return authn.Anonymous, nil
		}
		user := k.getenv("GITHUB_ACTOR")
		if user == "" {
			user = "relay" // ghcr.io checks the token, not the user name
		}
		return &authn.Basic{Username: user, Password: tok}, nil
	case "index.docker.io":
		u, tok := k.getenv("DOCKERHUB_USERNAME"), k.getenv("DOCKERHUB_TOKEN")
		if u == "" || tok == "" {
			return authn.Anonymous, nil
		}
		return &authn.Basic{Username: u, Password: tok}, nil
	}
	return authn.Anonymous, nil
}
