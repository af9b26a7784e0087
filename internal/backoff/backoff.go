// Package backoff holds the waiting that relay's retry loops share.
package backoff

import (
	"context"
	"math/rand"
	"time"
)

// Sleep waits d, or less if ctx ends first (then it returns ctx's error).
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Equal is "equal jitter" for retry attempt n (1-based): between half and all of base×2^(n-1),
// capped at base×32, so clients retrying together spread out but always wait a little.
func Equal(r *rand.Rand, base time.Duration, attempt int) time.Duration {
	ceil := base << min(attempt-1, 5)
	return ceil/2 + time.Duration(r.Int63n(int64(ceil/2)+1))
}
