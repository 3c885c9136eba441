# Evaluation stages: task metrics, size and speed of the teacher and of every student.


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
        precision=PRECISION,
        records=bert_dir_of,
        eval_batch_size=config["eval_batch_size"],
    log:
        "logs/{task}/evaluate_teacher.log",
    benchmark:
        "benchmarks/{task}/evaluate_teacher.tsv"
    threads: COMPUTE_THREADS
    resources:
        gpu=1,
    shell:
        "{params.python} -m workflow_scripts.evaluate_model --task {wildcards.task} --name teacher"
        " --model results/{wildcards.task}/teacher --records {params.records} --out {output}"
        " --eval-batch-size {params.eval_batch_size} --backend {params.backend} --device {params.device} --precision {params.precision}"
        " --threads {threads} > {log} 2>&1 || {{ tail -n 1 {log} >&2; exit 1; }}; tail -n 1 {log}"


rule evaluate_student:
    input:
        weights="results/{task}/{student}/model.safetensors",
        reference="results/{task}/teacher_eval.json",
        records=student_records_of,
    output:
        "results/{task}/{student}_eval.json",
    params:
        python=TRAIN_PYTHON,
        backend=BACKEND,
        device=config["device"],
        precision=PRECISION,
        records=student_records_dir,
        eval_batch_size=config["eval_batch_size"],
    log:
        "logs/{task}/evaluate_{student}.log",
    benchmark:
        "benchmarks/{task}/evaluate_{student}.tsv"
    threads: COMPUTE_THREADS
    resources:
        gpu=1,
    shell:
        "{params.python} -m workflow_scripts.evaluate_model --task {wildcards.task}"
        " --name {wildcards.student} --model results/{wildcards.task}/{wildcards.student}"
        " --records {params.records} --reference {input.reference} --out {output}"
        " --eval-batch-size {params.eval_batch_size} --backend {params.backend} --device {params.device} --precision {params.precision}"
        " --threads {threads} > {log} 2>&1 || {{ tail -n 1 {log} >&2; exit 1; }}; tail -n 1 {log}"
