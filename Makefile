PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test lint bench demo demos install clean browser floors

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[all,test]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP) browser
	$(PY) -m pytest tests

# Headless Chromium and its driver for the browser tests (tests/test_browser.py), from the
# system's packages: installed when missing and run as root; otherwise those tests skip.
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	else echo "chromium/chromedriver missing and not root: the browser tests will skip"; fi

lint: $(STAMP)
	$(VENV)/bin/ruff check groundroll tests benchmarks training demos

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

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
	rm -rf $(VENV) .pytest_cache build *.egg-info
