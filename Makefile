# kdflow: the README's two commands are `make run` and `make test`.
SNAKEMAKE := .venv/bin/snakemake
CORES ?= 4

.PHONY: setup run test lint bench clean-results

setup:  ## create any missing runtime (.venv, .venv-oneflow); a no-op when they are current
	@bash scripts/setup.sh

run: setup  ## run the embedded default: results/tweets/report.md
	$(SNAKEMAKE) --cores $(CORES)

test: setup lint  ## every test, in both runtimes
	@bash scripts/test.sh

lint: setup  ## snakemake --lint
	@bash scripts/lint.sh

bench: setup  ## the figures in BENCHMARKS.md
	.venv/bin/python bench/bench_data.py

clean-results:
	rm -rf results logs benchmarks
