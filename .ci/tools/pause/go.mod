// The pod sandbox's process for the real node (wingman.dev.kubelet): what the pause image
// (registry.k8s.io/pause) runs, as a small static command, since public registries are out
// of reach here. Built by .ci/provision-tools.sh; no dependencies.
module wingman.dev/tools/pause

go 1.24.0
