# The two commands a newcomer needs (see README.md):
#   make run    set up, install Wingman on a local control plane with a real node (kubelet +
#               containerd run the image built here; WINGMAN_DEV_NODE=harness: the node
#               harness instead), or on the cluster KUBECONFIG or ~/.kube/config names; run
#               the operator and, locally, a demo request
#   make test   set up and run every test tier (unit, PostgreSQL, integration, container, e2e)
#   make image  build the image (wingman:<version>) with the local Docker (see .ci/image)
#   make docs   regenerate charts/wingman/README.md from values.yaml's comments (helm-docs;
#               a test fails while the README is out of date)
.PHONY: setup run test lint bench image docs

setup:
	bash .ci/setup

run: setup
	.venv/bin/wingman dev run

# Two worker processes (pytest-xdist), each a session of its own (tests/conftest.py);
# WINGMAN_TEST_WORKERS=0 runs everything in one process, as does an existing cluster
# (WINGMAN_E2E_KUBECONFIG), which two workers would share, unless WINGMAN_TEST_WORKERS is set.
test: setup
	.venv/bin/pytest -n $${WINGMAN_TEST_WORKERS:-$$([ -n "$${WINGMAN_E2E_KUBECONFIG:-}" ] && echo 0 || echo 2)} --dist loadfile

lint: setup
	.venv/bin/ruff check operator tests
	.venv/bin/mypy

# Every bench runs, even after one failed or missed a target (exit 2); the target fails at the
# end, naming them. A bench stopped by Ctrl-C (130) stops the loop.
bench: setup
	@failed=""; for b in tests/bench/bench_*.py; do \
		rc=0; .venv/bin/python $$b || rc=$$?; \
		if [ $$rc -eq 130 ]; then exit 130; fi; \
		if [ $$rc -ne 0 ]; then failed="$$failed $$b (exit $$rc)"; fi; \
	done; \
	if [ -n "$$failed" ]; then echo "bench: failed or missed a target:$$failed" >&2; exit 1; fi

image: setup
	bash .ci/image

# The flags are also in tests/unit/chart/test_readme.py, which checks they agree.
HELM_DOCS_FLAGS = --chart-search-root charts --sort-values-order file --skip-version-footer

docs:
	"$$(bash .ci/provision-tools.sh)/helm-docs" $(HELM_DOCS_FLAGS)

e2e-kind: setup
	bash .ci/e2e-kind
