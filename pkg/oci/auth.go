package oci

import (
	"net/http"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/google"
)

// Keychain is where relay finds registry credentials, first match wins:
//  1. tokens from the environment: GITHUB_TOKEN (or GH_TOKEN) for ghcr.io, with GITHUB_ACTOR
//     as the user; DOCKERHUB_USERNAME and DOCKERHUB_TOKEN for Docker Hub;
//  2. docker's config.json ($DOCKER_CONFIG) and the credential helpers it names;
//  3. Google Artifact Registry and GCR through application default credentials or the
//     metadata server (go-containerregistry's maintained google keychain);
//  4. Azure Container Registry through the managed identity, when the workload has one
//     (IDENTITY_ENDPOINT from Container Apps/App Service, or AZURE_CLIENT_ID): asking the
//     metadata endpoint elsewhere would only wait for a timeout;
//  5. private Amazon ECR through ecr:GetAuthorizationToken with the AWS SDK's default
//     credential chain (IRSA web identity, ECS/Fargate/CodeBuild container credentials,
//     instance profile). Only ECR hosts ever reach AWS.
//
// hc (nil: each keychain's own) carries the ACR and ECR token exchanges: relay passes its
// chain, so they get relay's User-Agent, traces and retry layer.
func Keychain(getenv func(string) string, hc *http.Client) authn.Keychain {
	kcs := []authn.Keychain{envKeychain{getenv}, authn.DefaultKeychain, google.Keychain, ECRKeychain(ECROptions{HTTP: hc})}
	if getenv("IDENTITY_ENDPOINT") != "" || getenv("AZURE_CLIENT_ID") != "" {
		var acr *http.Client
		if hc != nil {
			c := *hc
			c.Timeout = 10 * time.Second // IMDS that hangs is not there: fail fast
			acr = &c
		}
		kcs = append(kcs, ACRKeychain(ACROptions{
			IdentityEndpoint: getenv("IDENTITY_ENDPOINT"),
			IdentityHeader:   getenv("IDENTITY_HEADER"),
			ClientID:         getenv("AZURE_CLIENT_ID"),
			HTTP:             acr,
		}))
	}
	return authn.NewMultiKeychain(kcs...)
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
