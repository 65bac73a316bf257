.PHONY: test unit lint run images up down bench

test:            ## everything: lint, types, unit, integration (and docker when an engine runs)
	scripts/test.sh

unit:            ## handlers and store only, no broker
	scripts/test.sh tests/unit

run:             ## the service against conf/edge.yaml
	.venv/bin/mqtt-metamanager run -c conf/edge.yaml

images:          ## air-gapped base images from Debian packages, and .env pointing at them
	scripts/airgap-images.sh

up:
	docker compose up -d --wait

down:
	docker compose down

bench:
	.venv/bin/mqtt-metamanager bench
