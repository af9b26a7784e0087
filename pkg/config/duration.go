package config

import (
	"encoding/json"
	"time"

	"gopkg.in/yaml.v3"
)

// Duration is a Go duration in relay.yaml ("90s", "2h"), parsed once, when the file is
// read; Validate reports a malformed one with its line, and the wiring uses the value.
type Duration struct {
	raw string
	d   time.Duration
	err error
}

// ParseDuration makes a Duration as relay.yaml would hold s.
func ParseDuration(s string) Duration {
	d := Duration{raw: s}
	if s != "" {
		d.d, d.err = time.ParseDuration(s)
	}
	return d
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	*d = ParseDuration(s)
	return nil
}

// MarshalJSON writes the duration as written.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.raw) }

// MarshalYAML writes the duration as written.
func (d Duration) MarshalYAML() (any, error) { return d.raw, nil }

// String is the duration as written.
func (d Duration) String() string { return d.raw }

// IsSet says whether relay.yaml gives the duration.
func (d Duration) IsSet() bool { return d.raw != "" }

// Value is the parsed duration (0 when unset), or why it does not parse.
func (d Duration) Value() (time.Duration, error) { return d.d, d.err }

// within says whether the duration parses and lies in [min, max].
func (d Duration) within(min, max time.Duration) bool {
	return d.err == nil && d.d >= min && d.d <= max
}
