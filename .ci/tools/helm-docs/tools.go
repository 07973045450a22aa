//go:build tools

// Package tools pins the command that the provisioning script builds.
package tools

import _ "github.com/norwoodj/helm-docs/cmd/helm-docs"
