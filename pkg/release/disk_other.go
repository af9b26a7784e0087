//go:build !unix

package release

import (
	"errors"
	"os"
)

var errNoStatfs = errors.New("free space is not known on this OS")

func freeBytes(string) (uint64, error) { return 0, errNoStatfs }

// writable tries what a release does: create a file in dir.
func writable(dir string) error {
	f, err := os.CreateTemp(dir, ".relay-probe-*")
	if err != nil {
		return err
	}
	f.Close()
	return os.Remove(f.Name())
}
