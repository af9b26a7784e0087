package release

import (
	"encoding/json"
	"sort"
	"strings"
)

// LockVersion is the schema version of images.lock.json.
const LockVersion = 1

// Lock is images.lock.json: every published image pinned by digest.
type Lock struct {
	Version int           `json:"version"`
	Release string        `json:"release"`
	Commit  string        `json:"commit"`
	Images  []LockedImage `json:"images"`
}

// LockedImage is one image in one repository.
type LockedImage struct {
	Name       string           `json:"name"`
	Reference  string           `json:"reference"` // repository@digest
	Repository string           `json:"repository"`
	Digest     string           `json:"digest"`
	MediaType  string           `json:"media_type"`
	Tags       []string         `json:"tags,omitempty"`
	Platforms  []LockedPlatform `json:"platforms"`
	Referrers  []LockedReferrer `json:"referrers,omitempty"`
}

// LockedPlatform is one platform manifest.
type LockedPlatform struct {
	Platform string `json:"platform"`
	Digest   string `json:"digest"`
}

// LockedReferrer is a signature or attestation attached to a digest of the image.
type LockedReferrer struct {
	Digest        string `json:"digest"`
	Subject       string `json:"subject"`
	PredicateType string `json:"predicate_type"`
}

// Manifest is release.json: what was released, by whom, where. Its fields are in the order
// of their keys, as the map it replaced marshalled them, so its bytes did not change.
type Manifest struct {
	Assets        []string      `json:"assets"`
	Commit        string        `json:"commit"`
	CorrelationID string        `json:"correlation_id"` // the invocation: the provenance's invocationId
	Images        []LockedImage `json:"images"`
	RelayVersion  string        `json:"relay_version"`
	Repository    string        `json:"repository"`
	Tag           string        `json:"tag"`
	Tags          []string      `json:"tags"`
}

// JSON renders release.json.
func (m *Manifest) JSON() ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// JSON renders the lock file with a stable order.
func (l *Lock) JSON() ([]byte, error) {
	for i := range l.Images {
		r := l.Images[i].Referrers
		sort.Slice(r, func(a, b int) bool {
			if r[a].Subject != r[b].Subject {
				return r[a].Subject < r[b].Subject
			}
			return r[a].Digest < r[b].Digest
		})
	}
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Text renders images.txt: one name@sha256:... per line.
func (l *Lock) Text() []byte {
	var b strings.Builder
	for _, im := range l.Images {
		b.WriteString(im.Reference)
		b.WriteByte('\n')
	}
	return []byte(b.String())
}
