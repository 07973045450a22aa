#!/usr/bin/env bash
# Build the Kubernetes-ecosystem binaries Wingman's tests and `make run` need, from the Go
# module proxy, pinned by the go.mod/go.sum files under .ci/tools/, and cache them outside the
# repository keyed by those pins, so a second run costs seconds.
#
#   kube/        kube-apiserver, kube-controller-manager, kubectl (k8s.io/kubernetes), stamped
#                with the pinned release's version as upstream's builds are (`kubectl version`
#                says v1.34.4 for client and server; helm's kubeVersion checks see it), and the
#                image ships this very kubectl
#                kubelet, kube-scheduler, kube-proxy (the same module and version stamp) make the
#                local node a real one: wingman.dev.kubelet runs them beside Debian's containerd
#   etcd/        etcd (go.etcd.io/etcd/server/v3)
#   helm/        helm (helm.sh/helm/v3)
#   prometheus/  promtool (github.com/prometheus/prometheus)
#   helm-docs/   helm-docs (github.com/norwoodj/helm-docs): charts/wingman/README.md (make docs)
#   kubeconform/ kubeconform (github.com/yannh/kubeconform): the chart against strict schemas
#   podsecurity/ podsecurity, a small command over the upstream Pod Security evaluator
#                (k8s.io/pod-security-admission); its source is .ci/tools/podsecurity/main.go
#   pause/       pause, the pod sandbox's process (what registry.k8s.io/pause runs), which
#                wingman.dev.kubelet packs as the real node's sandbox image: .ci/tools/pause/main.go
#   healthcheck/ healthcheck, a small command over the engines Argo CD and Flux run custom
#                health checks with (gopher-lua, cel-go): .ci/tools/healthcheck/main.go
#
# Besides the binaries, the pinned Kubernetes module's OpenAPI document (api/openapi-spec/
# swagger.json, from the module cache the kube build filled) is copied to
# $WINGMAN_CACHE/share/kubernetes-openapi.json: the tests make kubeconform's schemas from it.
#
# Output: the tools land in $WINGMAN_CACHE/tools/<set>-<key>/ and are linked from
# $WINGMAN_CACHE/bin/ (WINGMAN_CACHE defaults to ~/.cache/wingman). When KUBEBUILDER_ASSETS
# names a directory with kube-apiserver and etcd (the envtest convention), those are used instead
# of building them. The last line printed is the bin directory.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${WINGMAN_CACHE:-$HOME/.cache/wingman}
bin="$cache/bin"
mkdir -p "$bin" "$cache/tools"

# One provisioning at a time per cache: concurrent test sessions wait for the first build.
exec 9>"$cache/.provision.lock"
flock 9

go_min=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$here"/tools/*/go.mod | sort -V | tail -n1)
if ! command -v go >/dev/null 2>&1; then
  echo "provision-tools: Go is required to build the control-plane tools; install Go >= $go_min (or set KUBEBUILDER_ASSETS)." >&2
  exit 1
fi
gover=$(go env GOVERSION)
# The newest `go` directive under .ci/tools/ is the floor (with GOTOOLCHAIN=local an older Go
# cannot fetch a newer toolchain and would fail deep inside a build).
if [ "$(printf '%s\n%s\n' "go$go_min" "$gover" | sort -V | head -n1)" != "go$go_min" ]; then
  echo "provision-tools: $gover is too old to build the pinned tools; install Go >= $go_min (or set GOTOOLCHAIN=auto so Go fetches it)." >&2
  exit 1
fi

# build SET PACKAGE... : build the packages of .ci/tools/SET into the cache unless present.
# NAME (default SET) names the cache entry; LDFLAGS adds linker flags, TAGS build tags (both
# part of the key).
build() {
  local set=$1; shift
  local name=${NAME:-$set} flags="-s -w ${LDFLAGS:-}" tags=${TAGS:-}
  local key
  key=$(cat "$here/tools/$set/go.mod" "$here/tools/$set/go.sum" | { cat; echo "$gover"; [ -z "${LDFLAGS:-}" ] || echo "$flags"; [ -z "$tags" ] || echo "tags $tags"; } | sha256sum | cut -c1-16)
  local out="$cache/tools/$name-$key"
  if [ ! -f "$out/.complete" ]; then
    local start=$SECONDS
    echo "provision-tools: building $name ($*) into $out ..." >&2
    rm -rf "$out.tmp" && mkdir -p "$out.tmp"
    (cd "$here/tools/$set" && GOFLAGS=-mod=readonly CGO_ENABLED=0 \
      go build -trimpath ${tags:+-tags "$tags"} -ldflags="$flags" -o "$out.tmp/" "$@")
    touch "$out.tmp/.complete"
    rm -rf "$out" && mv "$out.tmp" "$out"
    echo "provision-tools: built $name in $((SECONDS - start))s" >&2
  fi
  local f
  for f in "$out"/*; do ln -sfn "$f" "$bin/$(basename "$f")"; done
}

# The version of the pinned k8s.io/kubernetes stamped in, as upstream's release builds do
# (hack/lib/version.sh), so the binaries report the pinned release instead of v0.0.0-master.
kube_version=$(sed -n 's/^require k8s.io\/kubernetes \(v[0-9.]*\)$/\1/p' "$here/tools/kube/go.mod")
[ -n "$kube_version" ] || { echo "provision-tools: cannot read the k8s.io/kubernetes version from $here/tools/kube/go.mod" >&2; exit 1; }
kube_minor=${kube_version#v1.}; kube_minor=${kube_minor%%.*}
kube_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kube_ldflags+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$kube_minor -X $pkg.gitTreeState=clean"
done
build_kube() { LDFLAGS="$kube_ldflags" build kube "$@"; }

start=$SECONDS
if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/kube-apiserver" ] && [ -x "$KUBEBUILDER_ASSETS/etcd" ]; then
  echo "provision-tools: using kube-apiserver and etcd from KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS" >&2
  for f in kube-apiserver etcd kube-controller-manager; do
    [ -x "$KUBEBUILDER_ASSETS/$f" ] && ln -sfn "$KUBEBUILDER_ASSETS/$f" "$bin/$f"
  done
  if [ -x "$KUBEBUILDER_ASSETS/kube-controller-manager" ]; then
    NAME=kubectl build_kube k8s.io/kubernetes/cmd/kubectl
  else
    NAME=kube-kcm build_kube k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl
  fi
else
  build_kube k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl
  build etcd go.etcd.io/etcd/server/v3
  # The etcd server module's main package builds a binary named after the module ("server");
  # give it its real name.
  for n in server v3; do
    if [ -e "$bin/$n" ]; then ln -sfn "$(readlink "$bin/$n")" "$bin/etcd"; rm -f "$bin/$n"; fi
  done
fi
# The node's components (wingman.dev.kubelet), under their own cache name: the key covers the
# pins, not the package list, so a set's packages never change under an existing name.
NAME=kube-node build_kube k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kube-proxy
build helm helm.sh/helm/v3/cmd/helm
# promtool checks and unit-tests the chart's alert rules; none of the service discoveries
# (the cloud SDKs: 64 of its 199 modules) is used: remove_all_sd leaves them out of the build
TAGS=remove_all_sd build prometheus github.com/prometheus/prometheus/cmd/promtool
build helm-docs github.com/norwoodj/helm-docs/cmd/helm-docs
build kubeconform github.com/yannh/kubeconform/cmd/kubeconform
build podsecurity .
build healthcheck .
build pause .

# The OpenAPI document of the pinned Kubernetes release (what kubeconform validates against).
share="$cache/share"
openapi="$cache/tools/kube-openapi-$kube_version/swagger.json"
if [ ! -f "$openapi" ]; then
  kube_dir=$(cd "$here/tools/kube" && GOFLAGS=-mod=readonly go list -m -f '{{.Dir}}' k8s.io/kubernetes)
  [ -f "$kube_dir/api/openapi-spec/swagger.json" ] || (cd "$here/tools/kube" && GOFLAGS=-mod=readonly go mod download k8s.io/kubernetes)
  mkdir -p "$(dirname "$openapi")"
  cp "$kube_dir/api/openapi-spec/swagger.json" "$openapi.tmp" && mv "$openapi.tmp" "$openapi"
fi
mkdir -p "$share" && ln -sfn "$openapi" "$share/kubernetes-openapi.json"
echo "provision-tools: tools ready in $((SECONDS - start))s" >&2
echo "$bin"
