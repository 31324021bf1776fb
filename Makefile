# Two commands do everything on a fresh machine (see README):
#   make demo   - set up, generate the sample book, run the nightly batch, then serve the API
#   make test   - set up, lint, type-check and run the test suite
VENV    ?= .venv
PYTHON  ?= python3
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
JARS    := jars/lib/.fetched
# The driver JVM's class archive (jobs/classcache.py): belongs to this JDK and these jars.
CDS     := jars/lib/postloan.jsa
# The GraphQL-over-HTTP conformance audit (graphql-http, Node) that the API tests run.
AUDIT   := api/audit/node_modules/.package-lock.json

.PHONY: setup demo test lint bench bundle image image-check clean

setup: $(STAMP) $(JARS) $(CDS) $(AUDIT)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

$(JARS): jars/pom.xml
	mvn --batch-mode --quiet -f jars/pom.xml dependency:copy-dependencies \
	    -DincludeScope=runtime -DincludeGroupIds=io.delta -DoutputDirectory=lib
	touch $@

# Learnt from a small night (about a minute and a half); after a JDK upgrade, delete it and rerun.
$(CDS): $(STAMP) $(JARS)
	$(BIN)/python -m jobs.classcache --out $@

$(AUDIT): api/audit/package-lock.json
	cd api/audit && npm ci --no-audit --no-fund --silent

demo: setup
	$(BIN)/postloan demo

lint: setup
	$(BIN)/ruff check jobs api schemas tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

bench: setup
	$(BIN)/python bench/bench_nightly.py --loans 100000

# The code for spark-submit --py-files (docs/cluster.md).
bundle: $(STAMP)
	$(BIN)/postloan bundle --out dist/postloan-jobs.zip

# The image (docs/operations.md, "Docker"). ENGINE="podman" works the same; IMAGE_FLAGS carries
# the build's own flags, such as the base images' --build-arg PYTHON_IMAGE=... MAVEN_IMAGE=...
ENGINE ?= docker
IMAGE  ?= postloan
image:
	$(ENGINE) build $(IMAGE_FLAGS) -t $(IMAGE) .

# Both entrypoints of the built image on a small book: a night, then the API over HTTP.
image-check:
	ENGINE="$(ENGINE)" IMAGE="$(IMAGE)" RUN_FLAGS="$(RUN_FLAGS)" deploy/image/smoke.sh

clean:
	rm -rf $(VENV) jars/lib api/audit/node_modules demo dist
