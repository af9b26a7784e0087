package config

import (
	"bytes"
	"fmt"
	"strings"
	"text/template"
)

// TagData is what tag templates (images[].tags) see.
type TagData struct {
	Version     string // the tag, else the short commit
	Tag         string
	Commit      string
	ShortCommit string
}

// NewTagData is the data of a release of commit, at tag (empty for a branch or commit).
func NewTagData(tag, commit string) TagData {
	d := TagData{Tag: tag, Commit: commit}
	if len(commit) >= 12 {
		d.ShortCommit = commit[:12]
	}
	d.Version = d.Tag
	if d.Version == "" {
		d.Version = d.ShortCommit
	}
	return d
}

// RenderTag renders one tag template; a field it does not know, a syntax error or a result
// that is not a valid tag is an error naming the template.
func RenderTag(tpl string, d TagData) (string, error) {
	tag, err := render(tpl, d)
	if err != nil {
		return "", fmt.Errorf("tag template %q: %w", tpl, err)
	}
	if !ValidTag(tag) {
		return "", fmt.Errorf("tag template %q gives %q, which is not a valid tag (up to 128 of [A-Za-z0-9_.-], not starting with . or -)", tpl, tag)
	}
	return tag, nil
}

// sampleTagData is a tag push: a template must render for it (a release of a branch may
// still find {{ .Tag }} empty; the plan shows the tags it gives).
var sampleTagData = NewTagData("v1.2.3", strings.Repeat("0123456789abcdef", 3)[:40])

// checkTagTemplate renders tpl against the sample, so a typo fails at load, not after
// everything was pushed and signed.
func checkTagTemplate(tpl string) error {
	_, err := RenderTag(tpl, sampleTagData)
	return err
}

// TagsFor renders every image's tags for a release of d, by image name. The first that
// does not render (`{{ .Tag }}` for a release of a commit no tag names, say) is a config
// error naming the image and the template: a run checks it right after checkout, before
// anything is built, signed or pushed.
func (c *Config) TagsFor(d TagData) (map[string][]string, error) {
	out := map[string][]string{}
	for _, im := range c.Images {
		for _, tpl := range im.Tags {
			tag, err := RenderTag(tpl, d)
			if err != nil {
				what := "release of tag " + d.Tag
				if d.Tag == "" {
					what = "release of commit " + d.ShortCommit + ", which no tag names"
				}
				return nil, &Error{File: c.File, Msg: fmt.Sprintf("image %s: %v for this %s", im.Name, err, what),
					Fix: "use {{ .Version }} (the tag, else the short commit), or release a tag"}
			}
			out[im.Name] = append(out[im.Name], tag)
		}
	}
	return out, nil
}

// RenderValue renders the template of a value that is not a tag — a build argument
// (images[].docker.build_args), a linker flag — named name in errors: the same fields as
// tags, any text as the result.
func RenderValue(name, tpl string, d TagData) (string, error) {
	if !strings.Contains(tpl, "{{") {
		return tpl, nil
	}
	v, err := render(tpl, d)
	if err != nil {
		return "", fmt.Errorf("%s %q: %w", name, tpl, err)
	}
	return v, nil
}

// render executes tpl on d; a field d lacks is an error, not "<no value>".
func render(tpl string, d TagData) (string, error) {
	tp, err := template.New("").Option("missingkey=error").Parse(tpl)
	if err != nil {
		return "", err
	}
	var b bytes.Buffer
	if err := tp.Execute(&b, d); err != nil {
		return "", err
	}
	return b.String(), nil
}
