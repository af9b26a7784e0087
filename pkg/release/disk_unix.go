//go:build unix

package release

import "syscall"

// freeBytes is the space an unprivileged writer may use on path's file system.
func freeBytes(path string) (uint64, error) {
	var fs syscall.Statfs_t
	if err := syscall.Statfs(path, &fs); err != nil {
		return 0, err
	}
	return fs.Bavail * uint64(fs.Bsize), nil
}

func writable(dir string) error { return syscall.Access(dir, 2 /* W_OK */) }
