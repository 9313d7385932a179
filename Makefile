# Aliases for the scripts; the scripts need nothing but bash.
.PHONY: setup demo test bench
setup: ; bash scripts/setup.sh
demo: ; bash scripts/demo.sh
test: ; bash scripts/test.sh
bench: ; bash scripts/setup.sh && .venv/bin/python bench/batch_profiles.py
