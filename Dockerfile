# The one image Wingman ships: the operator (`wingman operator`), the gateway
# (`wingman gateway`, the entrypoint of every gateway Job) and `wingman verify-privileges`
# (helm test). The chart pins it (operator.image, gateway.image); pin it by digest in
# production. tests/unit/image/test_dockerfile.py checks this file against the chart and the
# package; the same entrypoints run in the integration and e2e tests.

# kubectl, built from the same pinned Kubernetes release the tests run against
# (.ci/tools/kube/go.mod), so the gateway's kubectl matches what was tested.
FROM golang:1.24-bookworm AS kubectl
WORKDIR /src
COPY .ci/tools/kube/ ./
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/kubectl k8s.io/kubernetes/cmd/kubectl

# The Python package and its locked dependencies, in a virtualenv.
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/wingman
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN /opt/wingman/bin/pip install .

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="wingman" \
      org.opencontainers.image.description="Wingman operator and execution gateway" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/wingman /opt/wingman
COPY --from=kubectl /out/kubectl /usr/local/bin/kubectl
ENV PATH=/opt/wingman/bin:/usr/local/bin:/usr/bin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    WINGMAN_LOG_FORMAT=json
# No shell is needed at run time: commands run as argv. Non-root, matching the chart's
# runAsUser (65532); the root filesystem is mounted read-only by the chart.
USER 65532:65532
WORKDIR /tmp
CMD ["wingman", "--help"]
