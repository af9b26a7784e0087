package steps

import "github.com/relaydev/relay/pkg/source"

func sourceResult(tag, commit string) *source.Result { return &source.Result{Tag: tag, Commit: commit} }
