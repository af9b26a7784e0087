//go:build !integration

package main

import (
	"os"
	"testing"

	"github.com/relaydev/relay/internal/testutil"
)

// TestMain lets this test binary play the Actions runner for the runner command's tests.
func TestMain(m *testing.M) {
	testutil.MaybeFakeRunner()
	os.Exit(m.Run())
}
