package oci

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ecr"
	"github.com/google/go-containerregistry/pkg/authn"
)

// ecrHost matches private ECR registries: <account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn].
var ecrHost = regexp.MustCompile(`^(\d{12})\.dkr\.ecr(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$`)

// ECROptions configure ECRKeychain.
type ECROptions struct {
	// Endpoint overrides the ECR API endpoint; tests point it at a loopback server. The SDK
	// also honours AWS_ENDPOINT_URL_ECR (VPC endpoints) on its own.
	Endpoint string
	// LoadConfig loads the AWS configuration for a region. The default is the SDK's
	// default chain: environment, shared files, web identity (EKS), container credentials
	// (ECS, Fargate, CodeBuild) and the instance metadata service.
	LoadConfig func(ctx context.Context, region string) (aws.Config, error)
	// HTTP carries the default LoadConfig's requests (relay's chain: then the SDK's own
	// retryer is off, the chain being the one retry layer); nil: the SDK's client.
	HTTP *http.Client
	Now  func() time.Time
}

// ECRKeychain gives private ECR registries credentials from ecr:GetAuthorizationToken,
// signed with the workload's AWS identity. Tokens are cached per registry until shortly
// before they expire (ECR issues them for 12 hours). Other hosts get Anonymous, without
// any AWS call.
func ECRKeychain(o ECROptions) authn.Keychain {
	if o.LoadConfig == nil {
		o.LoadConfig = func(ctx context.Context, region string) (aws.Config, error) {
			if o.HTTP != nil {
				return config.LoadDefaultConfig(ctx, config.WithRegion(region), config.WithHTTPClient(o.HTTP),
					config.WithRetryer(func() aws.Retryer { return aws.NopRetryer{} }))
			}
			return config.LoadDefaultConfig(ctx, config.WithRegion(region),
				config.WithHTTPClient(awshttp.NewBuildableClient().WithTimeout(30*time.Second)))
		}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &ecrKeychain{o: o, tokens: map[string]cached{}}
}

// IsECR reports whether host is a private ECR registry.
func IsECR(host string) bool { return ecrHost.MatchString(host) }

type ecrKeychain struct {
	o      ECROptions
	mu     sync.Mutex
	tokens map[string]cached
}

func (k *ecrKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	return k.ResolveContext(context.Background(), r)
}

func (k *ecrKeychain) ResolveContext(ctx context.Context, r authn.Resource) (authn.Authenticator, error) {
	host := r.RegistryStr()
	m := ecrHost.FindStringSubmatch(host)
	if m == nil {
		return authn.Anonymous, nil
	}
	region := m[2]
	k.mu.Lock()
	defer k.mu.Unlock()
	if c, ok := k.tokens[host]; ok && k.o.Now().Before(c.expires) {
		return basicFromECR(c.value)
	}
	cfg, err := k.o.LoadConfig(ctx, region)
	if err != nil {
		return nil, fmt.Errorf("ECR %s: loading the AWS configuration: %w", host, err)
	}
	client := ecr.NewFromConfig(cfg, func(eo *ecr.Options) {
		if k.o.Endpoint != "" {
			eo.BaseEndpoint = aws.String(k.o.Endpoint)
		}
	})
	out, err := client.GetAuthorizationToken(ctx, &ecr.GetAuthorizationTokenInput{})
	if err != nil {
		return nil, fmt.Errorf("ECR %s: ecr:GetAuthorizationToken in %s (the workload's AWS identity needs that permission): %w", host, region, err)
	}
	if len(out.AuthorizationData) == 0 || out.AuthorizationData[0].AuthorizationToken == nil {
		return nil, fmt.Errorf("ECR %s: GetAuthorizationToken returned no token", host)
	}
	d := out.AuthorizationData[0]
	exp := k.o.Now().Add(time.Hour)
	if d.ExpiresAt != nil {
		exp = d.ExpiresAt.Add(-15 * time.Minute)
	}
	a, err := basicFromECR(*d.AuthorizationToken)
	if err != nil {
		return nil, fmt.Errorf("ECR %s: %w", host, err)
	}
	k.tokens[host] = cached{value: *d.AuthorizationToken, expires: exp}
	return a, nil
}

// basicFromECR decodes ECR's token: base64 of "AWS:<password>".
func basicFromECR(tok string) (authn.Authenticator, error) {
	raw, err := base64.StdEncoding.DecodeString(tok)
	if err != nil {
		return nil, fmt.Errorf("the authorization token is not base64: %w", err)
	}
	user, pass, ok := strings.Cut(string(raw), ":")
	if !ok {
		return nil, fmt.Errorf("the authorization token is not user:password")
	}
	return &authn.Basic{Username: user, Password: pass}, nil
}
