# kdflow: the README's two commands are `make run` and `make test`.
SNAKEMAKE := .venv/bin/snakemake
# one training job per core on the CPU (rules/common.smk, JOB_THREADS)
CORES ?= $(shell nproc 2>/dev/null || echo 4)

.PHONY: setup setup-cluster run deploy search test lint bench clean-results

setup:  ## create any missing runtime (.venv, .venv-oneflow); a no-op when they are current
	@bash scripts/setup.sh

setup-cluster: setup  ## add the Slurm executor plugin (requirements/cluster.txt) to .venv
	@bash -o pipefail -c '.venv/bin/python -m pip install -q --disable-pip-version-check \
		-r requirements/cluster.txt 2>&1 | { grep -v -e "is ignored: it is neither a file" || true; }'

run: setup  ## run the embedded default: results/tweets/report.md
	$(SNAKEMAKE) --cores $(CORES)

deploy: setup  ## after run: HuggingFace and ONNX (fp32, int8) exports, results/tweets/deployment.md
	$(SNAKEMAKE) --cores $(CORES) deploy

search: setup  ## distil to a budget: config.yaml's search (trains what it needs), results/tweets/search.md
	$(SNAKEMAKE) --cores $(CORES) search

test: setup setup-cluster lint  ## every test, in both runtimes
	@bash scripts/test.sh

lint: setup  ## snakemake --lint
	@bash scripts/lint.sh

bench: setup  ## the figures in BENCHMARKS.md (about 10 minutes; run it on a quiet machine)
	.venv/bin/python bench/bench_data.py --no-reader
	.venv/bin/python bench/bench_reader.py
	.venv/bin/python bench/bench_train.py --steps 8 --rounds 3
	.venv/bin/python bench/bench_ddp.py --steps 10 --rounds 2 --layers 6

clean-results:  ## remove results, logs, benchmarks and resume state (keeps results/README.md)
	find results -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
	rm -rf logs benchmarks work
