PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test lint bench coverage demo demos install clean browser constraints mutate docs wheel-check floors

$(PY):
	$(PYTHON) -m venv $(VENV)

# What `make test` and CI install: every version pinned by constraints.txt, so an upstream
# release cannot change a build that changed nothing. `make constraints` refreshes it.
CONSTRAINTS := constraints.txt
EXTRAS := all,test,docs

$(STAMP): pyproject.toml $(CONSTRAINTS) | $(PY)
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

# Resolve every dependency afresh (newest releases within pyproject's bounds) in a scratch
# environment and pin the result (every extra, so make docs and make mutate are pinned too);
# review the diff and run `make test` before committing it.
RESOLVE := .venv-resolve
RESOLVE_EXTRAS := all,test,docs,mutate
constraints:
	rm -rf $(RESOLVE)
	$(PYTHON) -m venv $(RESOLVE)
	$(RESOLVE)/bin/python -m pip install --quiet -e ".[$(RESOLVE_EXTRAS)]" build
	{ echo "# Pinned by 'make constraints' on $$(date -u +%Y-%m-%d) (Python $$($(RESOLVE)/bin/python -c 'import platform; print(platform.python_version())')): what make test and CI install."; \
	  $(RESOLVE)/bin/python -m pip freeze --exclude-editable --exclude groundroll; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)
	rm -rf $(RESOLVE)

# -rs lists every skip with its reason; the JUnit reports are what .ci/run's skip check
# (.ci/skip_report.py against .ci/expected_skips) reads.
# Two pytest processes, one after the other: the tests that run whole pipelines (bulk runs
# and Ray, the notebooks and the documentation's examples, the browser and the app,
# calibration and audits) in a process of their own, so that neither holds the other's
# models and libraries and each stays well within 4 GB resident. Both always run; make
# test fails if either does.
TEST_REPORT := .test-report.xml
PIPELINE_REPORT := .test-report-pipelines.xml
PIPELINE_TESTS := tests/test_app.py tests/test_audit.py tests/test_browser.py \
	tests/test_calibrate.py tests/test_distributed.py tests/test_distributed_ray.py \
	tests/test_distributed_safety.py tests/test_docs_examples.py tests/test_notebooks.py \
	tests/test_output_safety.py

test: $(STAMP) browser
	@status=0; \
	$(PY) -m pytest tests -rs --junitxml=$(TEST_REPORT) \
		$(addprefix --ignore=,$(PIPELINE_TESTS)) || status=$$?; \
	$(PY) -m pytest $(PIPELINE_TESTS) -rs --junitxml=$(PIPELINE_REPORT) || status=$$?; \
	exit $$status

# Headless Chromium and its driver for the browser tests (tests/test_browser.py), from the
# system's packages: installed when missing and run as root. Otherwise those tests skip,
# except in CI (CI=true), where a missing browser fails here and in the tests.
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	elif [ "$${CI:-}" = true ]; then \
		echo "chromium/chromedriver missing and not root: CI needs them for tests/test_browser.py" >&2; exit 1; \
	else echo "chromium/chromedriver missing and not root: the browser tests will skip"; fi

# Mutation testing of the core modules ([tool.mutmut] in pyproject.toml says which, and
# which test files each mutant runs): one worker, about 10 minutes on 2 cores. Prints the
# score; `$(VENV)/bin/mutmut results` lists the survivors, `mutmut show NAME` one diff.
mutate: $(STAMP)
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e ".[mutate]"
	rm -rf mutants
	OMP_NUM_THREADS=1 PYTHONPATH=tests $(VENV)/bin/mutmut run --max-children 1
	$(VENV)/bin/mutmut export-cicd-stats
	$(PY) -c "import json; s = json.load(open('mutants/mutmut-cicd-stats.json')); \
		k = s['killed'] + s['timeout'] + s['segfault']; \
		print(f\"mutation score: {k}/{s['total']} killed ({100 * k / s['total']:.1f}%),\" \
		      f\" {s['survived']} survived, {s['no_tests']} without a test\")"

# ruff, then the layer contracts (.importlinter; README.md, "Layout").
lint: $(STAMP)
	$(VENV)/bin/ruff check groundroll tests benchmarks training demos
	$(VENV)/bin/lint-imports

# The documentation site, built offline and strictly into site/ (the tutorials run on the
# bundled models; executed copies are cached in .cache/docs-notebooks).
docs: $(STAMP)
	OMP_NUM_THREADS=1 NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

# Quick configurations of every benchmark (a few minutes on 2 cores); writes only under
# benchmarks/results/.
bench: $(STAMP)
	$(PY) benchmarks/run_all.py

# The capture-coverage sweep (15-25 minutes): benchmarks/results/coverage.json and the
# README's coverage table; then the caption sweep (5-10 minutes):
# benchmarks/results/caption_coverage.json and its table in docs/how-to/captions.md.
coverage: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) benchmarks/coverage.py
	OMP_NUM_THREADS=1 $(PY) benchmarks/caption_coverage.py

DEMO_OUT := demo-out
DEMO_SCENE := groundroll/data/examples/shapes_scene.png

# The main job: text-prompted masks for the example scene with the bundled model.
demo: $(STAMP)
	$(VENV)/bin/groundroll segment $(DEMO_SCENE) \
		-p "red circle" -p "blue star" -p "yellow triangle" \
		--out $(DEMO_OUT) --force
	@echo "label map: $(DEMO_OUT)/shapes_scene_labels.png"
	@echo "masks:     $(DEMO_OUT)/shapes_scene_<k>_<prompt>.png"
	@echo "overlay:   $(DEMO_OUT)/shapes_scene_overlay.png"
	@echo "summary:   $(DEMO_OUT)/shapes_scene.json"

# Every demo script (the photo demo needs real open_clip weights on disk).
demos: $(STAMP)
	$(PY) demos/segment_shapes.py --out $(DEMO_OUT)/segment_shapes --force
	$(PY) demos/coca_words.py --out $(DEMO_OUT)/coca_words.png --force
	$(PY) demos/align_toy.py --out-dir $(DEMO_OUT)/align_toy --force
	-$(PY) demos/segment_photo.py --out $(DEMO_OUT)/segment_photo --force

# A stranger's check: the wheel and sdist built, the wheel installed into a fresh venv
# outside the repository, the examples and the sdist's tests run from there.
wheel-check: $(STAMP)
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) build
	PYTHON=$(abspath $(PY)) bash .ci/wheel_check.sh

# The declared floors, tested: a separate venv with every dependency at the lowest version
# pyproject.toml allows (requirements/floors.txt), then the core tests: rollout, capture on
# the bundled models, segment and align default calls, loading, the missing-extra errors.
# FLOORS_PIP_ARGS passes options to pip (an index, --find-links for a local wheel).
FLOORS_VENV := .venv-floors
FLOORS_PY := $(FLOORS_VENV)/bin/python
FLOORS_STAMP := $(FLOORS_VENV)/.installed
FLOORS_PIP_ARGS ?=
FLOORS_TESTS := tests/test_rollout.py tests/test_trace.py tests/test_flow.py \
	tests/test_adapters.py tests/test_zoo.py tests/test_zoo_openclip.py \
	tests/test_segment_bundled.py tests/test_align_api.py tests/test_extras.py

$(FLOORS_STAMP): requirements/floors.txt pyproject.toml
	rm -rf $(FLOORS_VENV)
	$(PYTHON) -m venv $(FLOORS_VENV)
	# A current pip: older ones miss the normalised extra names ("open_clip" -> "open-clip").
	$(FLOORS_PY) -m pip install --quiet --upgrade pip
	$(FLOORS_PY) -m pip install --quiet $(FLOORS_PIP_ARGS) -c requirements/floors.txt \
		-e ".[open_clip,hf,test]"
	$(FLOORS_PY) -m pip check
	touch $(FLOORS_STAMP)

floors: $(FLOORS_STAMP)
	$(FLOORS_PY) requirements/check_floors.py requirements/floors.txt
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(FLOORS_PY) -m pytest -p no:cacheprovider \
		$(FLOORS_TESTS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info site .cache/docs-notebooks
