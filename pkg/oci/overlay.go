package oci

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Kinds of registry write an overlay records.
const (
	WriteBlob     = "blob"     // an uploaded blob
	WriteMount    = "mount"    // a blob mounted from another repository of the registry
	WriteManifest = "manifest" // a manifest put by digest
	WriteReferrer = "referrer" // a manifest put by digest whose subject is another manifest
	WriteTag      = "tag"      // a manifest put by tag
	WriteDelete   = "delete"
)

// Write is one write request a real run would send to a registry.
type Write struct {
	Registry     string `json:"registry"`
	Repository   string `json:"repository"`
	Kind         string `json:"kind"`
	Digest       string `json:"digest"`
	Size         int64  `json:"size"`
	MediaType    string `json:"mediaType,omitempty"`
	ArtifactType string `json:"artifactType,omitempty"`
	Tag          string `json:"tag,omitempty"`
	Subject      string `json:"subject,omitempty"`
	From         string `json:"from,omitempty"` // the repository a mount reads from
}

// Overlay is the registry side of --dry-run: reads go to the real registries, writes are
// kept (blobs in Dir, manifests and tags in memory) and answered as a registry would, so
// relay's own copy, sign and attach code runs unchanged and later reads see what it wrote.
// It records each write request the real run would send; none reaches next.
type Overlay struct {
	next http.RoundTripper
	dir  string

	mu        sync.Mutex
	blobs     map[string]map[string]int64 // host/repo -> digest -> size (the bytes are in dir)
	manifests map[string]map[string]overlayManifest
	tags      map[string]map[string]string // host/repo -> tag -> digest
	uploads   map[string]string            // upload id -> host/repo
	present   map[string]map[string]int64  // host/repo -> blobs the real registry already holds
	refAPI    map[string]bool              // host -> serves the referrers API
	known     map[string]bool              // host/repo the real registry served a manifest of
	writes    []Write
}

type overlayManifest struct {
	raw          []byte
	mediaType    string
	subject      string
	artifactType string
	annotations  map[string]string
}

// NewOverlay keeps written blobs under dir, which the caller owns and removes.
func NewOverlay(next http.RoundTripper, dir string) (*Overlay, error) {
	for _, d := range []string{"blobs", "uploads"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, fmt.Errorf("dry-run overlay: %w", err)
		}
	}
	return &Overlay{next: next, dir: dir, blobs: map[string]map[string]int64{}, manifests: map[string]map[string]overlayManifest{},
		tags: map[string]map[string]string{}, uploads: map[string]string{}, present: map[string]map[string]int64{}, refAPI: map[string]bool{}, known: map[string]bool{}}, nil
}

// Writes returns the recorded writes in the order they were made.
func (o *Overlay) Writes() []Write {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.writes)
}

// Skipped lists, per host/repo, the blobs a write found already in the real registry.
func (o *Overlay) Skipped() map[string]map[string]int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := map[string]map[string]int64{}
	for repo, m := range o.present {
		for d, n := range m {
			if _, written := o.blobs[repo][d]; written {
				continue
			}
			if out[repo] == nil {
				out[repo] = map[string]int64{}
			}
			out[repo][d] = n
		}
	}
	return out
}

// regPath is a parsed /v2/ path: the repository and what of it is addressed.
type regPath struct {
	repo, kind, ref string // kind: uploads, upload, blob, manifest, referrers, tags
}

func parseRegPath(p string) (regPath, bool) {
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		return regPath{}, false
	}
	for _, k := range []struct{ sep, kind string }{{"/blobs/uploads/", "upload"}, {"/blobs/", "blob"}, {"/manifests/", "manifest"}, {"/referrers/", "referrers"}} {
		if i := strings.LastIndex(rest, k.sep); i > 0 {
			rp := regPath{repo: rest[:i], kind: k.kind, ref: rest[i+len(k.sep):]}
			if rp.kind == "upload" && rp.ref == "" {
				rp.kind = "uploads"
			}
			return rp, true
		}
	}
	if repo, ok := strings.CutSuffix(rest, "/tags/list"); ok && repo != "" {
		return regPath{repo: repo, kind: "tags"}, true
	}
	return regPath{}, false
}

// RoundTrip implements http.RoundTripper.
func (o *Overlay) RoundTrip(req *http.Request) (*http.Response, error) {
	p, ok := parseRegPath(req.URL.Path)
	if !ok {
		return o.next.RoundTrip(req) // /v2/ pings and token services: reads
	}
	key := req.URL.Host + "/" + p.repo
	switch req.Method {
	case http.MethodGet, http.MethodHead:
		return o.read(req, p, key)
	case http.MethodPost:
		if p.kind == "uploads" {
			return o.startUpload(req, p, key)
		}
	case http.MethodPatch:
		if p.kind == "upload" {
			return o.patch(req, p, key)
		}
	case http.MethodPut:
		switch p.kind {
		case "upload":
			return o.commit(req, p, key)
		case "manifest":
			return o.putManifest(req, p, key)
		}
	case http.MethodDelete:
		o.record(Write{Registry: req.URL.Host, Repository: p.repo, Kind: WriteDelete, Digest: p.ref})
		return respond(req, http.StatusAccepted, nil, nil), nil
	}
	return respond(req, http.StatusMethodNotAllowed, nil, errorBody("UNSUPPORTED", fmt.Sprintf("the dry-run overlay does not model %s %s", req.Method, req.URL.Path))), nil
}

func (o *Overlay) record(w Write) {
	o.mu.Lock()
	o.writes = append(o.writes, w)
	o.mu.Unlock()
}

func (o *Overlay) read(req *http.Request, p regPath, key string) (*http.Response, error) {
	switch p.kind {
	case "blob":
		o.mu.Lock()
		size, ok := o.blobs[key][p.ref]
		o.mu.Unlock()
		if ok {
			return o.serveBlob(req, p.ref, size)
		}
		resp, err := o.next.RoundTrip(req)
		// A HEAD is a writer's presence check (a GET is a read of a source).
		if err == nil && resp.StatusCode == http.StatusOK && req.Method == http.MethodHead {
			o.mu.Lock()
			if o.present[key] == nil {
				o.present[key] = map[string]int64{}
			}
			o.present[key][p.ref] = resp.ContentLength
			o.mu.Unlock()
		}
		return resp, err
	case "upload":
		o.mu.Lock()
		_, ok := o.uploads[p.ref]
		o.mu.Unlock()
		if !ok {
			return respond(req, http.StatusNotFound, nil, errorBody("BLOB_UPLOAD_UNKNOWN", "upload unknown")), nil
		}
		st, err := os.Stat(o.uploadPath(p.ref))
		if err != nil {
			return nil, err
		}
		h := http.Header{"Location": {req.URL.Path}, "Range": {fmt.Sprintf("0-%d", max(st.Size()-1, 0))}}
		return respond(req, http.StatusNoContent, h, nil), nil
	case "manifest":
		o.mu.Lock()
		d := p.ref
		if t, ok := o.tags[key][p.ref]; ok {
			d = t
		}
		m, ok := o.manifests[key][d]
		o.mu.Unlock()
		if !ok {
			resp, err := o.next.RoundTrip(req)
			if err == nil && resp.StatusCode == http.StatusOK {
				o.mu.Lock()
				o.known[key] = true
				o.mu.Unlock()
			}
			return resp, err
		}
		h := http.Header{"Content-Type": {m.mediaType}, "Docker-Content-Digest": {d}, "Content-Length": {strconv.Itoa(len(m.raw))}}
		return respond(req, http.StatusOK, h, m.raw), nil
	case "referrers":
		return o.referrers(req, p, key)
	case "tags":
		return o.tagList(req, key)
	}
	return o.next.RoundTrip(req)
}

func (o *Overlay) serveBlob(req *http.Request, digest string, size int64) (*http.Response, error) {
	if req.Method == http.MethodHead {
		h := http.Header{"Content-Type": {"application/octet-stream"}, "Docker-Content-Digest": {digest}, "Content-Length": {strconv.FormatInt(size, 10)}}
		return respond(req, http.StatusOK, h, nil), nil
	}
	b, err := os.ReadFile(o.blobPath(digest))
	if err != nil {
		return nil, fmt.Errorf("dry-run overlay: %w", err)
	}
	h := http.Header{"Content-Type": {"application/octet-stream"}, "Docker-Content-Digest": {digest}}
	status := http.StatusOK
	if r := req.Header.Get("Range"); r != "" {
		var from, to int64
		if n, _ := fmt.Sscanf(r, "bytes=%d-%d", &from, &to); n >= 1 && from < size {
			if n == 1 || to >= size {
				to = size - 1
			}
			b = b[from : to+1]
			h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", from, to, size))
			status = http.StatusPartialContent
		}
	}
	h.Set("Content-Length", strconv.Itoa(len(b)))
	return respond(req, status, h, b), nil
}

func (o *Overlay) startUpload(req *http.Request, p regPath, key string) (*http.Response, error) {
	drain(req)
	q := req.URL.Query()
	if d, from := q.Get("mount"), q.Get("from"); d != "" && from != "" {
		if size, ok := o.mountable(req, from, d); ok {
			o.mu.Lock()
			o.addBlobLocked(key, d, size)
			o.mu.Unlock()
			o.record(Write{Registry: req.URL.Host, Repository: p.repo, Kind: WriteMount, Digest: d, Size: size, From: from})
			h := http.Header{"Location": {"/v2/" + p.repo + "/blobs/" + d}, "Docker-Content-Digest": {d}}
			return respond(req, http.StatusCreated, h, nil), nil
		}
	}
	id := newUploadID()
	if err := os.WriteFile(o.uploadPath(id), nil, 0o600); err != nil {
		return nil, fmt.Errorf("dry-run overlay: %w", err)
	}
	o.mu.Lock()
	o.uploads[id] = key
	o.mu.Unlock()
	if d := q.Get("digest"); d != "" { // a monolithic POST
		return o.commit(req, regPath{repo: p.repo, kind: "upload", ref: id}, key)
	}
	h := http.Header{"Location": {"/v2/" + p.repo + "/blobs/uploads/" + id}, "Range": {"0-0"}, "Docker-Upload-Uuid": {id}}
	return respond(req, http.StatusAccepted, h, nil), nil
}

// mountable says whether the registry could mount digest from the repository from: the
// overlay holds it there, or the real registry does.
func (o *Overlay) mountable(req *http.Request, from, digest string) (int64, bool) {
	o.mu.Lock()
	size, ok := o.blobs[req.URL.Host+"/"+from][digest]
	o.mu.Unlock()
	if ok {
		return size, true
	}
	head, err := http.NewRequestWithContext(req.Context(), http.MethodHead, (&url.URL{Scheme: req.URL.Scheme, Host: req.URL.Host, Path: "/v2/" + from + "/blobs/" + digest}).String(), nil)
	if err != nil {
		return 0, false
	}
	head.Header = req.Header.Clone() // the token the client got for this upload covers pulling from
	resp, err := o.next.RoundTrip(head)
	if err != nil {
		return 0, false
	}
	resp.Body.Close()
	return resp.ContentLength, resp.StatusCode == http.StatusOK
}

func (o *Overlay) patch(req *http.Request, p regPath, key string) (*http.Response, error) {
	if err := o.appendUpload(req, p.ref); err != nil {
		return respond(req, http.StatusNotFound, nil, errorBody("BLOB_UPLOAD_UNKNOWN", err.Error())), nil
	}
	st, err := os.Stat(o.uploadPath(p.ref))
	if err != nil {
		return nil, err
	}
	h := http.Header{"Location": {"/v2/" + p.repo + "/blobs/uploads/" + p.ref}, "Range": {fmt.Sprintf("0-%d", max(st.Size()-1, 0))}, "Docker-Upload-Uuid": {p.ref}}
	return respond(req, http.StatusAccepted, h, nil), nil
}

func (o *Overlay) appendUpload(req *http.Request, id string) error {
	o.mu.Lock()
	_, ok := o.uploads[id]
	o.mu.Unlock()
	if !ok {
		drain(req)
		return fmt.Errorf("upload %s unknown", id)
	}
	if req.Body == nil {
		return nil
	}
	defer req.Body.Close()
	f, err := os.OpenFile(o.uploadPath(id), os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, req.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (o *Overlay) commit(req *http.Request, p regPath, key string) (*http.Response, error) {
	if err := o.appendUpload(req, p.ref); err != nil {
		return respond(req, http.StatusNotFound, nil, errorBody("BLOB_UPLOAD_UNKNOWN", err.Error())), nil
	}
	want := req.URL.Query().Get("digest")
	f, err := os.Open(o.uploadPath(p.ref))
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	size, err := io.Copy(h, f)
	f.Close()
	if err != nil {
		return nil, err
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != want {
		return respond(req, http.StatusBadRequest, nil, errorBody("DIGEST_INVALID", fmt.Sprintf("the upload's digest is %s, not %s", got, want))), nil
	}
	if err := os.Rename(o.uploadPath(p.ref), o.blobPath(want)); err != nil {
		return nil, fmt.Errorf("dry-run overlay: %w", err)
	}
	o.mu.Lock()
	delete(o.uploads, p.ref)
	o.addBlobLocked(key, want, size)
	o.mu.Unlock()
	o.record(Write{Registry: req.URL.Host, Repository: p.repo, Kind: WriteBlob, Digest: want, Size: size})
	hd := http.Header{"Location": {"/v2/" + p.repo + "/blobs/" + want}, "Docker-Content-Digest": {want}}
	return respond(req, http.StatusCreated, hd, nil), nil
}

func (o *Overlay) addBlobLocked(key, digest string, size int64) {
	if o.blobs[key] == nil {
		o.blobs[key] = map[string]int64{}
	}
	o.blobs[key][digest] = size
}

func (o *Overlay) putManifest(req *http.Request, p regPath, key string) (*http.Response, error) {
	raw, err := io.ReadAll(io.LimitReader(req.Body, maxManifestSize+1))
	req.Body.Close()
	if err != nil {
		return nil, err
	}
	if len(raw) > maxManifestSize {
		return respond(req, http.StatusRequestEntityTooLarge, nil, errorBody("MANIFEST_INVALID", "manifest too large")), nil
	}
	sum := sha256.Sum256(raw)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	if strings.Contains(p.ref, ":") && p.ref != digest {
		return respond(req, http.StatusBadRequest, nil, errorBody("DIGEST_INVALID", fmt.Sprintf("the manifest's digest is %s, not %s", digest, p.ref))), nil
	}
	var parsed struct {
		MediaType    string            `json:"mediaType"`
		ArtifactType string            `json:"artifactType"`
		Config       *v1.Descriptor    `json:"config"`
		Subject      *v1.Descriptor    `json:"subject"`
		Annotations  map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal(raw, &parsed); err != nil {
		return respond(req, http.StatusBadRequest, nil, errorBody("MANIFEST_INVALID", err.Error())), nil
	}
	m := overlayManifest{raw: raw, mediaType: req.Header.Get("Content-Type"), artifactType: parsed.ArtifactType, annotations: parsed.Annotations}
	if m.mediaType == "" {
		m.mediaType = parsed.MediaType
	}
	if m.artifactType == "" && parsed.Config != nil && parsed.Config.MediaType != types.OCIConfigJSON {
		m.artifactType = string(parsed.Config.MediaType)
	}
	w := Write{Registry: req.URL.Host, Repository: p.repo, Kind: WriteManifest, Digest: digest, Size: int64(len(raw)), MediaType: m.mediaType, ArtifactType: m.artifactType}
	if parsed.Subject != nil {
		m.subject = parsed.Subject.Digest.String()
		w.Subject = m.subject
		if p.ref == digest {
			w.Kind = WriteReferrer
		}
	}
	if p.ref != digest {
		w.Kind, w.Tag = WriteTag, p.ref
	}
	h := http.Header{"Location": {"/v2/" + p.repo + "/manifests/" + digest}, "Docker-Content-Digest": {digest}}
	if m.subject != "" && o.servesReferrers(req, p.repo) {
		h.Set("OCI-Subject", m.subject) // else the client keeps the referrers tag itself, as it must
	}
	o.mu.Lock()
	if o.manifests[key] == nil {
		o.manifests[key] = map[string]overlayManifest{}
	}
	o.manifests[key][digest] = m
	if w.Kind == WriteTag {
		if o.tags[key] == nil {
			o.tags[key] = map[string]string{}
		}
		o.tags[key][p.ref] = digest
	}
	o.writes = append(o.writes, w)
	o.mu.Unlock()
	return respond(req, http.StatusCreated, h, nil), nil
}

// servesReferrers says whether the real registry has the referrers API: what an answer
// to the client's own probe said, else a probe of the subject's repository, or of one the
// registry is known to hold (a repository the run only wrote to does not exist there yet),
// with the credentials of the request at hand.
func (o *Overlay) servesReferrers(req *http.Request, repo string) bool {
	o.mu.Lock()
	v, ok := o.refAPI[req.URL.Host]
	repos := []string{repo}
	for k := range o.known {
		if h, r, _ := strings.Cut(k, "/"); h == req.URL.Host && r != repo {
			repos = append(repos, r)
		}
	}
	sort.Strings(repos[1:])
	o.mu.Unlock()
	if ok {
		return v
	}
	for _, r := range repos {
		u := &url.URL{Scheme: req.URL.Scheme, Host: req.URL.Host, Path: "/v2/" + r + "/referrers/sha256:" + strings.Repeat("0", 64)}
		probe, err := http.NewRequestWithContext(req.Context(), http.MethodGet, u.String(), nil)
		if err != nil {
			return false
		}
		probe.Header = req.Header.Clone()
		probe.Header.Del("Content-Type")
		probe.Header.Set("Accept", string(types.OCIImageIndex))
		resp, err := o.next.RoundTrip(probe)
		if err != nil {
			return false // unknown: the client keeps the referrers tag itself, which every registry takes
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusNotFound {
			continue // no such repository, or no API: another repository tells
		}
		return o.noteReferrers(req.URL.Host, resp)
	}
	return false
}

// noteReferrers remembers what a real answer to a referrers request says of the registry.
func (o *Overlay) noteReferrers(host string, resp *http.Response) bool {
	v := resp.StatusCode == http.StatusOK && strings.HasPrefix(resp.Header.Get("Content-Type"), string(types.OCIImageIndex))
	if v || resp.StatusCode != http.StatusNotFound {
		o.mu.Lock()
		o.refAPI[host] = v
		o.mu.Unlock()
	}
	return v
}

// referrers answers the referrers API: the real registry's list with the overlay's
// referrers of the same subject added. A registry without the API stays without it.
func (o *Overlay) referrers(req *http.Request, p regPath, key string) (*http.Response, error) {
	filter := req.URL.Query().Get("artifactType")
	o.mu.Lock()
	var mine []v1.Descriptor
	for d, m := range o.manifests[key] {
		if m.subject != p.ref || (filter != "" && m.artifactType != filter) {
			continue
		}
		h, _ := v1.NewHash(d)
		mine = append(mine, v1.Descriptor{MediaType: types.MediaType(m.mediaType), Digest: h, Size: int64(len(m.raw)), ArtifactType: m.artifactType, Annotations: m.annotations})
	}
	_, held := o.manifests[key]
	o.mu.Unlock()
	resp, err := o.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusNotFound && held && o.servesReferrers(req, p.repo) {
		// A repository only this run made: the registry would list its referrers.
		resp.Body.Close()
		resp = respond(req, http.StatusOK, http.Header{"Content-Type": {string(types.OCIImageIndex)}}, []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`))
	} else {
		o.noteReferrers(req.URL.Host, resp)
	}
	if len(mine) == 0 || resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), string(types.OCIImageIndex)) {
		return resp, nil
	}
	defer resp.Body.Close()
	var idx v1.IndexManifest
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxManifestSize)).Decode(&idx); err != nil {
		return nil, fmt.Errorf("dry-run overlay: reading referrers of %s: %w", p.ref, err)
	}
	for _, d := range mine {
		if !slices.ContainsFunc(idx.Manifests, func(x v1.Descriptor) bool { return x.Digest == d.Digest }) {
			idx.Manifests = append(idx.Manifests, d)
		}
	}
	sort.SliceStable(idx.Manifests, func(i, j int) bool { return idx.Manifests[i].Digest.String() < idx.Manifests[j].Digest.String() })
	b, _ := json.Marshal(idx)
	return respond(req, http.StatusOK, http.Header{"Content-Type": {string(types.OCIImageIndex)}, "Content-Length": {strconv.Itoa(len(b))}}, b), nil
}

func (o *Overlay) tagList(req *http.Request, key string) (*http.Response, error) {
	o.mu.Lock()
	var mine []string
	for t := range o.tags[key] {
		mine = append(mine, t)
	}
	o.mu.Unlock()
	resp, err := o.next.RoundTrip(req)
	if err != nil || len(mine) == 0 || (resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNotFound) {
		return resp, err
	}
	var list struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	if resp.StatusCode == http.StatusOK {
		err = json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&list)
	}
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("dry-run overlay: reading tags: %w", err)
	}
	for _, t := range mine {
		if !slices.Contains(list.Tags, t) {
			list.Tags = append(list.Tags, t)
		}
	}
	sort.Strings(list.Tags)
	b, _ := json.Marshal(list)
	return respond(req, http.StatusOK, http.Header{"Content-Type": {"application/json"}}, b), nil
}

func (o *Overlay) blobPath(digest string) string {
	return filepath.Join(o.dir, "blobs", strings.ReplaceAll(digest, ":", "-"))
}

func (o *Overlay) uploadPath(id string) string { return filepath.Join(o.dir, "uploads", id) }

func newUploadID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func drain(req *http.Request) {
	if req.Body != nil {
		io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
}

func errorBody(code, msg string) []byte {
	b, _ := json.Marshal(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
	return b
}

func respond(req *http.Request, status int, h http.Header, body []byte) *http.Response {
	if h == nil {
		h = http.Header{}
	}
	if body != nil && h.Get("Content-Type") == "" {
		h.Set("Content-Type", "application/json")
	}
	if req.Method == http.MethodHead {
		n, _ := strconv.ParseInt(h.Get("Content-Length"), 10, 64)
		return &http.Response{StatusCode: status, Status: fmt.Sprintf("%d %s", status, http.StatusText(status)), Header: h, Body: http.NoBody, ContentLength: n, Request: req, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
	}
	return &http.Response{StatusCode: status, Status: fmt.Sprintf("%d %s", status, http.StatusText(status)), Header: h, Body: io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)), Request: req, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
}
