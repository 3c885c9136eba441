# Teacher stages: fine-tune the pretrained BERT on a task, then evaluate it.


rule finetune_teacher:
    input:
        records=bert_records_of,
        weights=TEACHER_DIR / "model.safetensors",
    output:
        weights="results/{task}/teacher/model.safetensors",
        config="results/{task}/teacher/config.json",
        vocab="results/{task}/teacher/vocab.txt",
        log_csv="results/{task}/teacher/train_log.csv",
        summary="results/{task}/teacher/train_summary.json",
    params:
        python=launcher,  # interpreter, or N-process launcher (`processes`)
        backend=BACKEND,
        device=config["device"],
        precision=PRECISION,
        pretrained=folder_of_weights,
        records=bert_dir_of,
        settings=teacher_settings,  # what changes the teacher: tracked, so a change reruns it
        hparams=teacher_hparams,  # the same plus how the job runs (save_seconds): untracked
        selection=config["selection"],  # the split that picks the checkpoint: a change reruns it
        compile=COMPILE,
        eval_batch_size=config["eval_batch_size"],
    log:
        "logs/{task}/finetune_teacher.log",
    benchmark:
        "benchmarks/{task}/finetune_teacher.tsv"
    threads: JOB_THREADS
    resources:
        gpu=config["processes"],
        mem_mb=8000,
    shell:
        "{params.python} -m workflow_scripts.finetune_teacher --task {wildcards.task}"
        " --records {params.records} --pretrained {params.pretrained:q}"
        " --out results/{wildcards.task}/teacher --work work/{wildcards.task}/teacher"
        " --hparams {params.hparams:q} --selection {params.selection} --compile {params.compile}"
        " --eval-batch-size {params.eval_batch_size}"
        " --backend {params.backend} --device {params.device} --precision {params.precision}"
        " --threads {threads} > {log} 2>&1 || {{ tail -n 1 {log} >&2; exit 1; }}; tail -n 1 {log}"
