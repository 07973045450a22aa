//go:build tools

// Package tools pins the command that the provisioning script builds.
package tools

import _ "github.com/yannh/kubeconform/cmd/kubeconform"
