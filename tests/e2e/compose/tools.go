//go:build tools

// Package tools only pins, in go.mod/go.sum, the module whose command build.sh builds:
// github.com/docker/compose/v5/cmd (the `docker compose` CLI plugin).
package tools

import (
	_ "github.com/docker/compose/v5/cmd/cmdtrace"
	_ "github.com/docker/compose/v5/cmd/compatibility"
	_ "github.com/docker/compose/v5/cmd/compose"
	_ "github.com/docker/compose/v5/cmd/prompt"
)
