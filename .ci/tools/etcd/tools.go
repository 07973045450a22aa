//go:build tools

// Package tools pins the command that the provisioning script builds.
package tools

import _ "go.etcd.io/etcd/server/v3"
