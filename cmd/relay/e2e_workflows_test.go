//go:build integration

package main

import (
	"os"
	"os/exec"
	"testing"

	"github.com/relaydev/relay/internal/testutil"
)

// TestIntegrationActionlint: every workflow in the repository passes actionlint (its
// expressions, contexts, permissions and action inputs), with relay's runner label known.
func TestIntegrationActionlint(t *testing.T) {
	bin := testutil.Tool(t, "actionlint", "go install github.com/rhysd/actionlint/cmd/actionlint@v1.7.12 (scripts/test-tools.sh)")
	args := append([]string{"-config-file", "../../.github/actionlint.yaml"}, workflowFiles(t)...)
	if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
		t.Fatalf("actionlint: %v\n%s", err, out)
	}
	// It does fail: a workflow with an undefined step output.
	bad := t.TempDir() + "/bad.yml"
	os.WriteFile(bad, []byte("on: push\npermissions: {}\njobs:\n  j:\n    runs-on: [self-hosted, relay]\n    steps:\n      - run: echo ${{ steps.nope.outputs.x }}\n"), 0o644)
	if out, err := exec.Command(bin, "-config-file", "../../.github/actionlint.yaml", bad).CombinedOutput(); err == nil {
		t.Fatalf("actionlint passed a broken workflow:\n%s", out)
	}
}
