# `make demo` sets everything up and runs the main job; `make test` sets up and runs the whole suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUNNER := runtimes/tfjs_runner
WEBAPP := rvm/web/page
SHARED ?= ../shared
CLIP ?= $(SHARED)/data/clips/person_a.mp4
WEIGHTS ?= $(SHARED)/weights/rvm_mobilenetv3_from_official_onnx.pth
# development paths live here and in the tests, never in the library: real footage to validate exports on, and
# the folder where checkpoints and the official downloads (parity's peer rows) are found
export RVM_VALIDATION_CLIP ?= $(abspath $(CLIP))
export RVM_CHECKPOINT_DIR ?= $(abspath $(SHARED)/weights)

.PHONY: install chromium demo test parity bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip "setuptools<81" wheel
	$(PY) -m pip install -q -e ".[all,ray,test]"
	touch $@

$(RUNNER)/node_modules/.installed: $(RUNNER)/package.json
	cd $(RUNNER) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(WEBAPP)/node_modules/.installed: $(WEBAPP)/package.json $(WEBAPP)/package-lock.json
	cd $(WEBAPP) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(VENV)/.installed $(RUNNER)/node_modules/.installed $(WEBAPP)/node_modules/.installed

# Debian's chromium (the browser tests, tests/test_web.py) and Xvfb (the live preview window's test), each installed
# only where missing; the tests that need them skip without them and say so
chromium:
	@missing=""; command -v chromium >/dev/null || missing="chromium"; command -v Xvfb >/dev/null || missing="$$missing xvfb"; \
	[ -z "$$missing" ] || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; } || \
				echo "$$missing could not be installed: the tests that need it will skip"; \
		else \
			echo "$$missing not installed and cannot be installed here (needs root and apt-get):" \
			     "the tests that need it will skip"; \
		fi; }

demo: install
	$(VENV)/bin/rvm export --format onnx --precision fp16 -o models/exports --overwrite
	mkdir -p out
	$(VENV)/bin/rvm convert --model models/exports/rvm_mobilenetv3_fp16.onnx --input-source $(CLIP) \
		--output-composition out/composition.mp4 --output-alpha out/alpha.mp4 --overwrite

test: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest --durations=25

parity: install
	$(VENV)/bin/rvm parity --checkpoint $(WEIGHTS) --clip $(CLIP)

bench: install
	$(VENV)/bin/rvm bench --checkpoint $(WEIGHTS)

clean:
	rm -rf $(VENV) $(RUNNER)/node_modules $(WEBAPP)/node_modules out
