# hubcredits — credit-based accounting of JupyterHub user servers on Kubernetes.
#
#   make dev    local control plane (kube-apiserver + etcd built from source) + operator
#   make test   every test: unit + integration against the real local API server
#   make image  the operator image (linux/amd64 + linux/arm64, OCI archive in bin/image/), no Docker needed
#   make cluster  a real single-node Kubernetes on this machine (root), with that image loaded
#
SHELL := /usr/bin/env bash
.SHELLFLAGS := -eu -o pipefail -c
ROOT := $(abspath .)
BIN := $(ROOT)/bin
K8S_ASSETS := $(BIN)/k8s
export KUBEBUILDER_ASSETS := $(K8S_ASSETS)
export CGO_ENABLED ?= 0
GO ?= go
CONTROLLER_GEN := $(BIN)/controller-gen
CRD_REF_DOCS := $(BIN)/crd-ref-docs
HELM := $(BIN)/helm
GOLANGCI_LINT := $(BIN)/golangci-lint
ACTIONLINT := $(BIN)/actionlint
OCI_IMAGE := $(BIN)/oci-image
OCI_ROOTFS := $(BIN)/oci-rootfs
TEST_TIMEOUT ?= 30m

.PHONY: all
all: build

##@ Build tools (from the Go module proxy; nothing is downloaded as a binary)

$(HELM): hack/tools/helm/go.mod
	hack/tools/helm/build.sh $(HELM)

$(CONTROLLER_GEN): hack/tools/gen/go.mod
	@mkdir -p $(BIN)
	cd hack/tools/gen && $(GO) build -o $(CONTROLLER_GEN) sigs.k8s.io/controller-tools/cmd/controller-gen

# golangci-lint: about 3.5 CPU-minutes cold (2-3 min on an idle 2-core machine),
# rebuilt only when hack/tools/lint/go.mod changes.
$(GOLANGCI_LINT): hack/tools/lint/go.mod
	@mkdir -p $(BIN)
	cd hack/tools/lint && $(GO) build -o $(GOLANGCI_LINT) github.com/golangci/golangci-lint/v2/cmd/golangci-lint
	@touch $(GOLANGCI_LINT)

$(ACTIONLINT): hack/tools/actionlint/go.mod
	@mkdir -p $(BIN)
	cd hack/tools/actionlint && $(GO) build -o $(ACTIONLINT) github.com/rhysd/actionlint/cmd/actionlint

# The image assembler is this repository's own code: rebuilt when it changes.
$(OCI_IMAGE): hack/tools/image/go.mod hack/tools/image/main.go
	@mkdir -p $(BIN)
	cd hack/tools/image && $(GO) build -o $(OCI_IMAGE) .

$(CRD_REF_DOCS): hack/tools/docs/go.mod
	@mkdir -p $(BIN)
	cd hack/tools/docs && $(GO) build -o $(CRD_REF_DOCS) github.com/elastic/crd-ref-docs

.PHONY: api-docs
api-docs: $(CRD_REF_DOCS) ## Render docs/api.md (the API reference) from the Go types in api/.
	hack/gen-api-docs.sh

.PHONY: controller-gen
controller-gen: $(CONTROLLER_GEN)

.PHONY: k8s-tools
k8s-tools: ## Build kube-apiserver, etcd and kubectl into bin/k8s (11-14 min cold, skipped when present).
	@hack/build-k8s-tools.sh

.PHONY: node-tools
node-tools: ## Build the control plane and the node (kubelet, kube-scheduler, kube-controller-manager, kube-proxy, and kube-router for NetworkPolicies) into bin/k8s (about 13 min more, cold).
	@hack/build-k8s-tools.sh node

##@ Generate

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate deepcopy code.
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./api/...

.PHONY: manifests
manifests: $(CONTROLLER_GEN) $(CRD_REF_DOCS) ## Generate CRDs, RBAC and webhook manifests (and docs/api.md) from markers, and the --help block of docs/configuration.md.
	$(CONTROLLER_GEN) crd paths=./api/... output:crd:artifacts:config=config/crd/bases
	$(CONTROLLER_GEN) rbac:roleName=hubcredits-manager paths=./controllers/... paths=./webhooks/... output:rbac:artifacts:config=config/rbac
	$(CONTROLLER_GEN) webhook paths=./webhooks/... output:webhook:artifacts:config=config/webhook
	@hack/sync-chart.sh
	@hack/gen-api-docs.sh
	@GO=$(GO) $(GO) run ./hack/configdocs

.PHONY: verify
verify: generate manifests ## Fail when generated files are stale, or when the flags and values tables of docs/configuration.md disagree with the manager and values.yaml.
	@GO=$(GO) $(GO) run ./hack/configdocs -check
	@if ! git diff --quiet -- api config charts docs/api.md docs/configuration.md; then \
	  echo "Generated files are stale; run 'make generate manifests' and commit:"; \
	  git --no-pager diff --stat -- api config charts docs/api.md docs/configuration.md; exit 1; fi

.PHONY: fmt
fmt:
	gofmt -l -w $$(git ls-files '*.go')

.PHONY: lint
lint: $(GOLANGCI_LINT) $(ACTIONLINT) ## golangci-lint (.golangci.yml) over the root module, hack/tools/helm/chartcheck and hack/tools/image (their own modules); actionlint over .github/workflows; flake8 over the hub glue and the Python tests (Debian's python3-flake8, when installed; make test installs it).
	@rc=0; $(GOLANGCI_LINT) run ./... || rc=1; \
	  (cd hack/tools/helm && $(GOLANGCI_LINT) run --config $(ROOT)/.golangci.yml ./chartcheck/...) || rc=1; \
	  (cd hack/tools/image && $(GOLANGCI_LINT) run --config $(ROOT)/.golangci.yml ./...) || rc=1; \
	  $(ACTIONLINT) -shellcheck= -pyflakes= || rc=1; \
	  if /usr/bin/python3 -m flake8 --version >/dev/null 2>&1; then \
	    /usr/bin/python3 -m flake8 --max-line-length 100 charts/hubcredits/files test/hub test/cluster test/z2jh || rc=1; \
	  else echo "lint: python3-flake8 is not installed; the Python lint is left to make test"; fi; \
	  exit $$rc

.PHONY: lint-fix
lint-fix: $(GOLANGCI_LINT) ## golangci-lint with --fix (formatters, misspell and the other auto-fixable findings).
	$(GOLANGCI_LINT) run --fix ./...
	cd hack/tools/helm && $(GOLANGCI_LINT) run --fix --config $(ROOT)/.golangci.yml ./chartcheck/...
	cd hack/tools/image && $(GOLANGCI_LINT) run --fix --config $(ROOT)/.golangci.yml ./...

.PHONY: vet
vet:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi

##@ Test

.PHONY: host-deps
host-deps: ## Install the Debian packages the tests need (as root; otherwise print the apt-get line and stop).
	@hack/host-deps.sh test

.PHONY: test
test: host-deps node-tools $(HELM) verify vet lint build image test-images $(OCI_ROOTFS) $(BIN)/hubcredits-cluster ## Every test: unit + integration on a real kube-apiserver and etcd (the chart's RBAC among them: test/rbac renders it with bin/helm), the image and the Dockerfile agreeing with it, the hub glue on a real JupyterHub, the story on a real node (test-cluster; root) and next to the real Z2JH chart (test-z2jh; root). Installs the Debian packages it needs first (root).
	$(GO) test -p 1 -timeout $(TEST_TIMEOUT) -count=1 ./...
	cd hack/tools/image && $(GO) test -count=1 ./...
	HELM_TEST_DEV=1 hack/helm-test.sh
	test/hub/run-unit.sh
	test/e2e.sh
	test/cluster/run.sh

.PHONY: test-chart
test-chart: k8s-tools build ## The Helm chart and kustomize tree: lint, schema, RBAC and webhooks against the generated files, applied to a real API server.
	HELM_TEST_DEV=1 hack/helm-test.sh

.PHONY: test-e2e
test-e2e: k8s-tools build ## The operator binary end to end: the demo story and the hub-side glue on a real JupyterHub.
	test/hub/run-unit.sh
	test/e2e.sh

.PHONY: test-reliability
test-reliability: k8s-tools ## The fault suite at its full size (kube-apiserver restarted x20, kill -9 x40 on 100 servers, leader kills, misuse: 120 steps of admin edits, PodGC marks, top-ups and crashes on 100 servers, races, webhook down).
	HUBCREDITS_RELIABILITY_FULL=1 $(GO) test -p 1 -timeout $(TEST_TIMEOUT) -count=1 -v ./test/reliability/

FUZZTIME ?= 30s
.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME each (CI runs them briefly through make test's seed corpus).
	@for pkg in $$(go list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo ">>> $$pkg $$f ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

BENCH_FLAGS ?=
.PHONY: bench
bench: k8s-tools ## Benchmarks on the local control plane (about 45 min at full size, the pool scenario up to 20 of them); writes docs/benchmarks.md. Quick: make bench BENCH_FLAGS="-quick -out=/tmp/bench.md"
	$(GO) run ./test/bench -scenario=all $(BENCH_FLAGS)

.PHONY: test-unit
test-unit: ## Unit tests only (no control plane).
	$(GO) test -short -count=1 ./...

##@ Run

.PHONY: build
build: ## Build the operator (bin/manager), the dev command that runs it on a local control plane (bin/hubcredits-dev) and the kubectl plugin (bin/kubectl-credits).
	$(GO) build -trimpath -o $(BIN)/manager .
	$(GO) build -trimpath -o $(BIN)/hubcredits-dev ./cmd/hubcredits-dev
	$(GO) build -trimpath -o $(BIN)/kubectl-credits ./cmd/kubectl-credits

.PHONY: image
image: $(OCI_IMAGE) ## The operator's OCI image, linux/amd64 + linux/arm64, offline and reproducible: bin/image/hubcredits-<appVersion>.oci.tar (and bin/image/layout).
	hack/build-image.sh $(OCI_IMAGE)

.PHONY: test-image
test-image: image ## Check the image (platforms, user, entrypoint, passwd, CA bundle, labels, reproducible digest) and that the Dockerfile agrees.
	cd hack/tools/image && $(GO) test -count=1 -v ./...

CLUSTER_DIR ?= .cluster
CLUSTER_IMAGES = $(BIN)/image/test/pause.oci.tar $(BIN)/image/test/singleuser-stub.oci.tar $(BIN)/image/hubcredits-$(APP_VERSION).oci.tar
APP_VERSION = $(shell sed -n 's/^appVersion:[[:space:]]*"\{0,1\}\([^"[:space:]]*\)"\{0,1\}.*/\1/p' charts/hubcredits/Chart.yaml)

.PHONY: test-images
test-images: $(OCI_IMAGE) ## The test images of make cluster: pause and the stub single-user server (bin/image/test/).
	hack/build-test-images.sh $(OCI_IMAGE)

$(BIN)/hubcredits-cluster: $(shell find cmd/hubcredits-cluster internal/cluster -name '*.go') go.mod
	$(GO) build -trimpath -o $@ ./cmd/hubcredits-cluster

.PHONY: cluster
cluster: node-tools image test-images $(BIN)/hubcredits-cluster ## A real single-node Kubernetes on this machine (root; Debian's containerd), the operator image loaded; writes .cluster/kubeconfig. Ctrl-C stops it and puts the host back.
	$(BIN)/hubcredits-cluster up --state-dir $(CLUSTER_DIR) $(addprefix --image ,$(CLUSTER_IMAGES))

.PHONY: test-cluster
test-cluster: node-tools $(HELM) image test-images $(OCI_ROOTFS) $(BIN)/hubcredits-cluster ## The story on a real node (root): the chart installed as docs/install.md says, JupyterHub 5.5 + KubeSpawner 7.1 spawning real pods, charges, a stop through the Hub API, denials, the leader deleted mid-billing, a lost node; then, on the same node, the real Z2JH chart (test/z2jh); the host left as found.
	test/cluster/run.sh

.PHONY: test-z2jh
test-z2jh: node-tools $(HELM) image test-images $(OCI_ROOTFS) $(BIN)/hubcredits-cluster ## Next to the real Zero to JupyterHub 4.4.0 chart on a real node (root; ../shared/third_party): Z2JH's hub and proxy as pods, hubcredits installed as docs/install.md says (first the previous chart and image, then its Upgrade section; needs the git history), the story through the proxy as a browser, then its Uninstall and a hub that restarts without hubcredits.
	test/z2jh/run.sh

.PHONY: cluster-down
cluster-down: $(BIN)/hubcredits-cluster ## Tear down a cluster left by a killed make cluster (or --detach) and check the host is as it was.
	$(BIN)/hubcredits-cluster down --state-dir $(CLUSTER_DIR)

$(OCI_ROOTFS): hack/tools/image/go.mod hack/tools/image/rootfs/main.go
	cd hack/tools/image && $(GO) build -o $(OCI_ROOTFS) ./rootfs

.PHONY: z2jh-images
z2jh-images: $(OCI_ROOTFS) ## Zero to JupyterHub's hub and proxy images built here from Debian 12 and ../shared/third_party (root; hack/images/README.md): bin/image/test/z2jh-{hub,proxy}.oci.tar. About 3.5 min cold, 2 s when nothing changed.
	hack/images/build-z2jh-images.sh $(OCI_ROOTFS)

.PHONY: dev
dev: k8s-tools build ## Local control plane + CRDs + webhook + operator; writes .dev/kubeconfig. Ctrl-C stops it all.
	$(BIN)/hubcredits-dev --state-dir .dev

.PHONY: run
run: build ## Run bin/manager against the current kubeconfig: no webhook certificates or configurations, no leader election (for a real cluster, install the chart; locally, make dev).
	$(BIN)/manager

.PHONY: clean
clean:
	rm -rf .dev bin/manager bin/hubcredits-dev bin/image

.PHONY: demo
demo: ## The story on the control plane of a running `make dev` (exits 0 only if it happened as told).
	KUBECONFIG=$${KUBECONFIG:-.dev/kubeconfig} $(GO) run ./test/demo
