# kdflow: knowledge distillation of BERT-family models as a workflow of cached stages.
# This file only wires the pieces together; see rules/*.smk and config.yaml.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/transfer.smk"
include: "rules/teacher.smk"
include: "rules/distill.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"
include: "rules/export.smk"
include: "rules/search.smk"


rule all:
    default_target: True
    input:
        PLAN.default_targets,
