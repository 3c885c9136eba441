#!/usr/bin/env bash
# `snakemake --lint`, minus its request for a conda environment or container per rule: kdflow's
# stages run in its two venv runtimes instead. Fails on any other finding.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/snakemake --lint json > .lint.json 2>/dev/null || true
.venv/bin/python - <<'PY'
import json, sys
text = open(".lint.json").read()
try:
    report = json.loads(text[text.index("{"):])
except ValueError:
    sys.exit("snakemake --lint failed:\n" + text)
ignored = ("conda", "container", "singularity")
found = []
for section in ("snakefiles", "rules"):
    for item in report.get(section, []):
        for lint in item.get("lints", []):
            if not any(word in lint["title"].lower() for word in ignored):
                found.append(f"{item.get('rule', item.get('snakefile'))}: {lint['title']}")
for line in found:
    print("lint:", line)
print(f"snakemake --lint: {len(found)} finding(s) (conda/container requests ignored)")
sys.exit(1 if found else 0)
PY
rm -f .lint.json
