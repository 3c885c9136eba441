# Evaluation stages: the dev metrics and predictions of the teacher and of every student run, and
# the speed of all of them, measured side by side in one process.


# One teacher: its evaluation. teacher.ensemble: each teacher's (teacher_<k>_eval.json), and the
# ensemble's, the mean of their probabilities, as teacher_eval.json.
if not ENSEMBLE:

    rule evaluate_teacher:
        input:
            weights="results/{task}/teacher/model.safetensors",
            records=bert_records_of,
        output:
            json="results/{task}/teacher_eval.json",
            predictions="results/{task}/teacher_predictions.npz",
        params:
            python=teacher_python,  # a transformers teacher: the torch runtime
            backend=teacher_backend,
            device=config["device"],
            precision=PRECISION,
            records=bert_dir_of,
            eval_batch_size=config["eval_batch_size"],
        log:
            "logs/{task}/evaluate_teacher.log",
        benchmark:
            "benchmarks/{task}/evaluate_teacher.tsv"
        threads: JOB_THREADS
        resources:
            gpu=1,
        shell:
            "{params.python} -m workflow_scripts.evaluate_model --task {wildcards.task} --name teacher"
            " --model results/{wildcards.task}/teacher --records {params.records} --out {output.json}"
            " --predictions {output.predictions} --eval-batch-size {params.eval_batch_size}"
            " --backend {params.backend} --device {params.device} --precision {params.precision}"
            " --threads {threads} > {log} 2>&1 || {{ tail -n 1 {log} >&2; exit 1; }}; tail -n 1 {log}"

else:

    rule evaluate_member:
        input:
            unpack(member_inputs),
        output:
            json="results/{task}/teacher_{member}_eval.json",
            predictions="results/{task}/teacher_{member}_predictions.npz",
        params:
            python=member_python,  # a transformers teacher: the torch runtime
            backend=member_backend,
            device=config["device"],
            precision=PRECISION,
            folder=lambda wildcards: member_folder(wildcards.task, wildcards.member),
            records=lambda wildcards: member_records_dir(wildcards.task, wildcards.member),
            eval_batch_size=config["eval_batch_size"],
        log:
            "logs/{task}/evaluate_teacher_{member}.log",
        benchmark:
            "benchmarks/{task}/evaluate_teacher_{member}.tsv"
        threads: JOB_THREADS
        resources:
            gpu=1,
        shell:
            "{params.python} -m workflow_scripts.evaluate_model --task {wildcards.task}"
            " --name teacher_{wildcards.member} --model {params.folder} --records {params.records}"
            " --out {output.json} --predictions {output.predictions} --eval-batch-size {params.eval_batch_size}"
            " --backend {params.backend} --device {params.device} --precision {params.precision}"
            " --threads {threads} > {log} 2>&1 || {{ tail -n 1 {log} >&2; exit 1; }}; tail -n 1 {log}"

    rule evaluate_ensemble:
        input:
            members=expand("results/{{task}}/teacher_{member}_eval.json", member=MEMBERS),
            predictions=expand("results/{{task}}/teacher_{member}_predictions.npz", member=MEMBERS),
            records=bert_records_of,
        output:
            json="results/{task}/teacher_eval.json",
            predictions="results/{task}/teacher_predictions.npz",
        params:
            python=DATA_PYTHON,
            records=bert_dir_of,
        log:
            "logs/{task}/evaluate_ensemble.log",
        threads: 1
        shell:
            "{params.python} -m workflow_scripts.evaluate_ensemble --task {wildcards.task}"
            " --records {params.records} --members {input.members} --member-predictions {input.predictions}"
            " --out {output.json} --predictions {output.predictions}"
            " > {log} 2>&1 || {{ tail -n 1 {log} >&2; exit 1; }}; tail -n 1 {log}"


rule evaluate_student:
    input:
        weights="results/{task}/{student}/model.safetensors",
        reference="results/{task}/teacher_eval.json",
        records=eval_records_of,
    output:
        json="results/{task}/{student}_eval.json",
        predictions="results/{task}/{student}_predictions.npz",
    params:
        python=TRAIN_PYTHON,
        backend=BACKEND,
        device=config["device"],
        precision=PRECISION,
        records=eval_records_dir,
        eval_batch_size=config["eval_batch_size"],
    log:
        "logs/{task}/evaluate_{student}.log",
    benchmark:
        "benchmarks/{task}/evaluate_{student}.tsv"
    threads: JOB_THREADS
    resources:
        gpu=1,
    shell:
        "{params.python} -m workflow_scripts.evaluate_model --task {wildcards.task}"
        " --name {wildcards.student} --model results/{wildcards.task}/{wildcards.student}"
        " --records {params.records} --reference {input.reference} --out {output.json}"
        " --predictions {output.predictions} --eval-batch-size {params.eval_batch_size}"
        " --backend {params.backend} --device {params.device} --precision {params.precision}"
        " --threads {threads} > {log} 2>&1 || {{ tail -n 1 {log} >&2; exit 1; }}; tail -n 1 {log}"


rule measure_speed:
    input:
        teachers=lambda wildcards: [f"{folder}/model.safetensors" for folder in speed_models(wildcards)],
        records=speed_record_files,
    output:
        "results/{task}/speed.json",
    params:
        python=teacher_python,  # a transformers teacher: the torch runtime
        backend=teacher_backend,
        device=config["device"],
        precision=PRECISION,
        models=speed_models,
        ensemble=speed_ensemble,  # teacher.ensemble: the first models are its teachers
        records=speed_records,
        rounds=config["speed"]["rounds"],
        latency_examples=config["speed"]["latency_examples"],
        throughput_examples=config["speed"]["throughput_examples"],
        eval_batch_size=config["eval_batch_size"],
    log:
        "logs/{task}/measure_speed.log",
    benchmark:
        "benchmarks/{task}/measure_speed.tsv"
    threads: COMPUTE_THREADS
    resources:
        gpu=1,
    shell:
        "{params.python} -m workflow_scripts.measure_speed --task {wildcards.task}"
        " --models {params.models} --records {params.records} {params.ensemble} --rounds {params.rounds}"
        " --latency-examples {params.latency_examples}"
        " --throughput-examples {params.throughput_examples} --out {output}"
        " --eval-batch-size {params.eval_batch_size} --backend {params.backend}"
        " --device {params.device} --precision {params.precision}"
        " --threads {threads} > {log} 2>&1 || {{ tail -n 1 {log} >&2; exit 1; }}; tail -n 1 {log}"
