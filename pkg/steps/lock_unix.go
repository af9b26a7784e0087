//go:build unix

package steps

import (
	"errors"
	"os"
	"syscall"
)

// tryLock takes f's exclusive flock without waiting; busy says another holds it.
func tryLock(f *os.File) (busy bool, err error) {
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	return errors.Is(err, syscall.EWOULDBLOCK), err
}
