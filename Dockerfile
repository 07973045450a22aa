# The one image Wingman ships: the operator (`wingman operator`), the gateway
# (`wingman gateway`, the command of every gateway Job, and `wingman preview`, of every preview
# Job, both started as `/usr/bin/tini -- wingman <entry>`) and `wingman verify-privileges`
# (helm test). The chart pins it (operator.image, gateway.image); pin it by digest in
# production.
#
# Build it with `make image` (.ci/image), which prepares the build context hermetically on the
# host and then runs `docker build` on it:
#   wheels/           every dependency from requirements.lock (downloaded and checked against
#                     the lock's hashes) and the wingman wheel built from this checkout
#   requirements.lock the pinned, hashed dependency list (`bash .ci/lock` regenerates it)
#   kubectl           built from the pinned Kubernetes module (.ci/tools/kube) with a supported
#                     Go release by .ci/provision-tools.sh, the same kubectl the tests run
#   debs/             Debian bookworm's libjemalloc2 and tini, each checked against its pinned
#                     SHA-256: the operator's allocator (wingman.operator.memory;
#                     WINGMAN_ALLOCATOR) and the init of the gateway and preview containers
# Nothing is fetched from the network during the build: pip installs offline with
# --require-hashes. tests/container/ builds this file and runs the image the way the chart's
# Deployment, the operator's gateway Jobs and the helm test pod run it.

# The base: any Debian-based image with CPython 3.11 (the lock is resolved for it) and a
# /bin/sh. Users get the public Python image; the tests use a Debian base made locally.
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
COPY requirements.lock /build/
COPY wheels/ /build/wheels/
# The dependencies exactly as locked (every file's hash checked), then the package itself
# (built from this checkout, its wheel excludes the development harness wingman.dev).
RUN python3 -m venv /opt/wingman \
 && /opt/wingman/bin/python -m pip install --no-cache-dir --no-index --only-binary=:all: \
      --find-links /build/wheels --require-hashes -r /build/requirements.lock \
 && /opt/wingman/bin/python -m pip install --no-cache-dir --no-index --no-deps /build/wheels/wingman_operator-*.whl \
 && /opt/wingman/bin/python -m pip check \
 && /opt/wingman/bin/python -m pip uninstall --yes pip setuptools

FROM ${BASE}
ARG VERSION=0.0.0-dev
ARG REVISION=unknown
ARG SOURCE=https://github.com/wingman-dev/wingman
# The run-time user 65532 exists in /etc/passwd (kopf and getpass look the user up), and no
# installer is left: pip, setuptools and the wheels ensurepip/venv would install them from are
# removed from the base (the public image and Debian keep them in different places).
RUN groupadd --gid 65532 wingman \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin wingman \
 && rm -rf /usr/local/bin/pip /usr/local/bin/pip3* /usr/bin/pip /usr/bin/pip3* \
      /usr/local/lib/python3*/site-packages/pip /usr/local/lib/python3*/site-packages/pip-* \
      /usr/local/lib/python3*/site-packages/setuptools /usr/local/lib/python3*/site-packages/setuptools-* \
      /usr/local/lib/python3*/site-packages/_distutils_hack /usr/local/lib/python3*/site-packages/distutils-precedence.pth \
      /usr/local/lib/python3*/site-packages/pkg_resources /usr/local/lib/python3*/ensurepip/_bundled \
      /usr/lib/python3/dist-packages/pip /usr/lib/python3/dist-packages/pip-* \
      /usr/lib/python3/dist-packages/setuptools /usr/lib/python3/dist-packages/setuptools-* \
      /usr/lib/python3/dist-packages/pkg_resources /usr/share/python-wheels
# jemalloc for the operator (it preloads it itself; nothing else in the image uses it). Its
# dependencies (libstdc++6, libgcc-s1) are in every Debian base that has apt; tini's (libc6)
# in every Debian base.
# tini (/usr/bin/tini) is PID 1 of the gateway and preview containers (their Jobs' command):
# the kernel drops a signal PID 1 has no handler for, so without it a SIGTERM that arrives
# while Python starts, before the gateway installs its handler, would be lost and the command
# could run on until the SIGKILL. tini forwards it to `wingman`, which then ends at once.
RUN --mount=type=bind,source=debs,target=/build/debs \
    dpkg --install /build/debs/libjemalloc2_*.deb /build/debs/tini_*.deb
COPY --from=build /opt/wingman /opt/wingman
COPY kubectl /usr/local/bin/kubectl
LABEL org.opencontainers.image.title="wingman" \
      org.opencontainers.image.description="Wingman operator, execution gateway and privilege verifier" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/wingman/bin:/usr/local/bin:/usr/bin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    WINGMAN_LOG_FORMAT=json
# Non-root, matching the chart's runAsUser (65532); the chart mounts the root filesystem
# read-only and gives /tmp an emptyDir. Commands run as argv (no shell is invoked).
USER 65532:65532
WORKDIR /tmp
CMD ["wingman", "--help"]
