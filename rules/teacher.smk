# Teacher stages: fine-tune the pretrained BERT on a task, then evaluate it.


rule finetune_teacher:
    input:
        records=bert_records_of,
        weights=TEACHER_DIR / "model.safetensors",
    output:
        weights="results/{task}/teacher/model.safetensors",
        config="results/{task}/teacher/config.json",
    params:
        python=TRAIN_PYTHON,
        backend=BACKEND,
        device=config["device"],
        pretrained=str(TEACHER_DIR),
        records=bert_dir_of,
        hparams=teacher_hparams,
    log:
        "logs/{task}/finetune_teacher.log",
    benchmark:
        "benchmarks/{task}/finetune_teacher.tsv"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
    shell:
        "{params.python} -m workflow_scripts.finetune_teacher --task {wildcards.task}"
        " --records {params.records} --pretrained {params.pretrained:q}"
        " --out results/{wildcards.task}/teacher --work work/{wildcards.task}/teacher"
        " --hparams {params.hparams:q} --backend {params.backend} --device {params.device}"
        " --threads {threads} > {log} 2>&1"


rule evaluate_teacher:
    input:
        weights="results/{task}/teacher/model.safetensors",
        records=bert_records_of,
    output:
        "results/{task}/teacher_eval.json",
    params:
        python=TRAIN_PYTHON,
        backend=BACKEND,
        device=config["device"],
        records=bert_dir_of,
        batch_size=config["teacher"]["eval_batch_size"],
    log:
        "logs/{task}/evaluate_teacher.log",
    benchmark:
        "benchmarks/{task}/evaluate_teacher.tsv"
    threads: 2
    resources:
        gpu=1,
    shell:
        "{params.python} -m workflow_scripts.evaluate_model --task {wildcards.task} --name teacher"
        " --model results/{wildcards.task}/teacher --records {params.records} --out {output}"
        " --batch-size {params.batch_size} --backend {params.backend} --device {params.device}"
        " --threads {threads} > {log} 2>&1"
