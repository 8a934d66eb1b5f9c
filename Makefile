PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test lint bench coverage demo demos install clean browser

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

# Quick configurations of every benchmark (a few minutes on 2 cores); writes only under
# benchmarks/results/.
bench: $(STAMP)
	$(PY) benchmarks/run_all.py

# The capture-coverage sweep (15-25 minutes): benchmarks/results/coverage.json and the
# README's coverage table.
coverage: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) benchmarks/coverage.py

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

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
