# Deployment artefacts' checks (included by the top-level Makefile): the Helm
# chart, the Dockerfile and the nginx example.

.PHONY: deploy-check
deploy-check: ## lint, render and validate the Helm chart
	@echo "deploy-check: nothing yet"
