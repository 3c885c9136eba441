# Distillation stages: the teacher-logit cache, teacher-layer export, and one generic rule that
# trains any student named in config.yaml with its algorithm's recipe.


rule cache_teacher_logits:
    input:
        weights=TEACHER_WEIGHTS,
        records=PLAN.bert_records_of,
        members=PLAN.ensemble_cache_inputs,  # teacher.ensemble: the other teachers and their records
    output:
        "results/{task}/teacher_logits.npz",
    params:
        members=PLAN.ensemble_members_arg,
        python=PLAN.teacher_python,  # a transformers teacher: the torch runtime
        runtime=PLAN.teacher_runtime,
        records=PLAN.bert_dir_of,
        eval_batch_size=config["eval_batch_size"],
    log:
        "logs/{task}/cache_teacher_logits.log",
    benchmark:
        "benchmarks/{task}/cache_teacher_logits.tsv"
    threads: JOB_THREADS
    resources:
        gpu=1,
    shell:
        CACHE_LOGITS_SHELL


rule export_teacher_layers:
    input:
        unpack(PLAN.init_inputs),
    output:
        weights="results/{task}/init/{student}/model.safetensors",
        config="results/{task}/init/{student}/config.json",
    params:
        python=DATA_PYTHON,
        layers=PLAN.student_init_layers,
        source=PLAN.init_source,  # init: teacher -> the fine-tuned teacher; pretrained -> teacher.pretrained
    log:
        "logs/{task}/export_teacher_layers_{student}.log",
    threads: 1
    shell:
        logged("{params.python} -m workflow_scripts.export_teacher_layers {params.source} --layers {params.layers}"
               " --out results/{wildcards.task}/init/{wildcards.student}")


rule distill:
    input:
        unpack(PLAN.distill_inputs),
    output:
        weights=STUDENT_WEIGHTS,
        config="results/{task}/{student}/config.json",
        log_csv="results/{task}/{student}/train_log.csv",
        summary="results/{task}/{student}/train_summary.json",
    params:
        python=launcher,  # interpreter, or N-process launcher (`processes`)
        runtime=RUNTIME,
        settings=PLAN.student_settings,  # what changes the student: tracked, so a change reruns it
        spec=PLAN.student_spec_json,  # the same plus how the job runs (save_seconds): untracked
        eval_batch_size=config["eval_batch_size"],
        records=PLAN.student_records_dir,
        sources=PLAN.distill_sources,
        match=PLAN.match_steps,  # a baseline: the students whose steps it matches (equal_steps)
        selection=config["selection"],  # the split that picks the checkpoint: a change reruns it
        compile=COMPILE,
    log:
        "logs/{task}/distill_{student}.log",
    benchmark:
        "benchmarks/{task}/distill_{student}.tsv"
    threads: JOB_THREADS
    resources:
        gpu=config["processes"],
        mem_mb=8000,
    shell:
        logged("{params.python} -m workflow_scripts.distill --task {wildcards.task}"
               " --student {wildcards.student} --spec {params.spec:q} --records {params.records}"
               " {params.sources} {params.match} --out results/{wildcards.task}/{wildcards.student}"
               " --work work/{wildcards.task}/{wildcards.student} --selection {params.selection}"
               " --compile {params.compile}"
               " --eval-batch-size {params.eval_batch_size}"
               " {params.runtime} --threads {threads}")
