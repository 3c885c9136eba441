# The metrics report of each task: the teacher and every student in one table (Markdown, CSV, HTML),
# each distilled student beside its no-KD baseline with the gain's interval and a verdict, a plot
# of accuracy against speed-up and the training curves. The
# outputs are flagged for `snakemake --report report.html`. The script names each student after the
# `model` field of its eval JSON (the student's name in config.yaml).
import json

import kdlib.config


report: "../report/workflow.rst"


# {distilled student: its `algorithm: none` baseline of the same architecture}, as JSON: a param,
# so changing the pairing reruns the report.
REPORT_BASELINES = json.dumps(kdlib.config.baselines(config["students"]), sort_keys=True)


rule report:
    input:
        teacher="results/{task}/teacher_eval.json",
        students=expand("results/{{task}}/{run}_eval.json", run=RUNS),
        predictions=expand("results/{{task}}/{model}_predictions.npz", model=["teacher", *RUNS]),
        logs=PLAN.report_logs,  # the teacher's too where it was fine-tuned here
        members=expand("results/{{task}}/teacher_{member}_eval.json", member=MEMBERS),  # teacher.ensemble
        member_predictions=expand("results/{{task}}/teacher_{member}_predictions.npz", member=MEMBERS),
        speed="results/{task}/speed.json",
        records=PLAN.bert_records_of,
    output:
        md=report(
            "results/{task}/report.md",
            caption="../report/table.rst",
            category="kdflow",
            subcategory="{task}",
            labels={"task": "{task}", "result": "table (Markdown)"},
        ),
        csv=report(
            "results/{task}/report.csv",
            caption="../report/table.rst",
            category="kdflow",
            subcategory="{task}",
            labels={"task": "{task}", "result": "table (CSV)"},
        ),
        html=report(
            "results/{task}/report.html",
            caption="../report/table.rst",
            category="kdflow",
            subcategory="{task}",
            labels={"task": "{task}", "result": "table and plot (HTML)"},
        ),
        png=report(
            "results/{task}/accuracy_vs_speedup.png",
            caption="../report/plot.rst",
            category="kdflow",
            subcategory="{task}",
            labels={"task": "{task}", "result": "accuracy against speed-up"},
        ),
        curves=report(
            "results/{task}/training_curves.png",
            caption="../report/curves.rst",
            category="kdflow",
            subcategory="{task}",
            labels={"task": "{task}", "result": "training curves"},
        ),
    params:
        python=DATA_PYTHON,
        baselines=REPORT_BASELINES,
        records=lambda wildcards, input: str(Path(input.records).parent),
    log:
        "logs/{task}/report.log",
    threads: 1
    shell:
        logged("{params.python} -m workflow_scripts.report --task {wildcards.task} --records {params.records}"
               " --teacher {input.teacher}"
               " --students {input.students:q} --predictions {input.predictions:q} --logs {input.logs:q}"
               " --members {input.members:q} --member-predictions {input.member_predictions:q}"
               " --speed {input.speed} --baselines {params.baselines:q}"
               " --md {output.md} --csv {output.csv} --html {output.html} --png {output.png}"
               " --curves {output.curves}")
