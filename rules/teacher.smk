# Teacher stages: fine-tune the pretrained BERT on a task, or import the user's fine-tuned classifier
# (teacher.finetuned); rules/evaluate.smk evaluates either.
import json


rule finetune_teacher:
    input:
        records=PLAN.bert_records_of,
        weights=TEACHER_DIR / "model.safetensors",
    output:
        weights=TEACHER_WEIGHTS,
        config="results/{task}/teacher/config.json",
        log_csv="results/{task}/teacher/train_log.csv",
        summary="results/{task}/teacher/train_summary.json",
    params:
        python=launcher,  # interpreter, or N-process launcher (`processes`)
        runtime=RUNTIME,
        pretrained=PLAN.folder_of_weights,
        records=PLAN.bert_dir_of,
        settings=PLAN.teacher_settings,  # what changes the teacher: tracked, so a change reruns it
        spec=PLAN.teacher_spec,  # the same plus how the job runs (save_seconds): untracked
        selection=config["selection"],  # the split that picks the checkpoint: a change reruns it
        compile=COMPILE,
        eval_batch_size=config["eval_batch_size"],
    wildcard_constraints:
        task=PLAN.finetuned_here_re,
    log:
        "logs/{task}/finetune_teacher.log",
    benchmark:
        "benchmarks/{task}/finetune_teacher.tsv"
    threads: JOB_THREADS
    resources:
        gpu=config["processes"],
        mem_mb=8000,
    shell:
        logged("{params.python} -m workflow_scripts.finetune_teacher --task {wildcards.task}"
               " --records {params.records} --pretrained {params.pretrained:q}"
               " --out results/{wildcards.task}/teacher --work work/{wildcards.task}/teacher"
               " --spec {params.spec:q} --selection {params.selection} --compile {params.compile}"
               " --eval-batch-size {params.eval_batch_size}"
               " {params.runtime}"
               " --threads {threads}")


rule import_teacher:
    input:
        finetuned=PLAN.finetuned_inputs,  # its config and weights: a change imports it again
        records=PLAN.bert_records_of,  # made with its tokenizer; validation checks it was fine-tuned
    output:
        weights=TEACHER_WEIGHTS,
        config="results/{task}/teacher/config.json",
    params:
        python=PLAN.teacher_python,  # a transformers teacher: the torch runtime
        runtime=PLAN.teacher_runtime,
        folder=PLAN.finetuned_folder_of,
        label_map=json.dumps(config["teacher"]["label_map"], sort_keys=True),
        records=PLAN.bert_dir_of,
        eval_batch_size=config["eval_batch_size"],
    wildcard_constraints:
        task=PLAN.imported_re,
    log:
        "logs/{task}/import_teacher.log",
    benchmark:
        "benchmarks/{task}/import_teacher.tsv"
    threads: JOB_THREADS
    resources:
        gpu=1,
    shell:
        logged("{params.python} -m workflow_scripts.import_teacher --task {wildcards.task}"
               " --finetuned {params.folder:q} --records {params.records} --label-map {params.label_map:q}"
               " --out results/{wildcards.task}/teacher --eval-batch-size {params.eval_batch_size}"
               " {params.runtime}"
               " --threads {threads}")


rule import_member:
    input:
        unpack(PLAN.member_source_inputs),  # teacher.ensemble: teacher k >= 1, its folder and records
    output:
        weights="results/{task}/teacher_{member}/model.safetensors",
        config="results/{task}/teacher_{member}/config.json",
    params:
        python=PLAN.member_python,
        runtime=PLAN.member_runtime,
        folder=PLAN.member_source_of,
        label_map=json.dumps(config["teacher"]["label_map"], sort_keys=True),
        records=PLAN.member_records_of,
        eval_batch_size=config["eval_batch_size"],
    wildcard_constraints:
        member=r"[1-9]\d*",
    log:
        "logs/{task}/import_teacher_{member}.log",
    threads: JOB_THREADS
    resources:
        gpu=1,
    shell:
        logged("{params.python} -m workflow_scripts.import_teacher --task {wildcards.task}"
               " --finetuned {params.folder:q} --records {params.records} --label-map {params.label_map:q}"
               " --out results/{wildcards.task}/teacher_{wildcards.member} --eval-batch-size {params.eval_batch_size}"
               " {params.runtime}"
               " --threads {threads}")
