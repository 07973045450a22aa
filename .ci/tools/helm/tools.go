//go:build tools

// Package tools pins the command that the provisioning script builds.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
