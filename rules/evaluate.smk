# Evaluation stages: the dev metrics and predictions of the teacher and of every student run, and
# the speed of all of them, measured side by side in one process.


# One teacher: its evaluation. teacher.ensemble: each teacher's (teacher_<k>_eval.json), and the
# ensemble's, the mean of their probabilities, as teacher_eval.json.
if not ENSEMBLE:

    rule evaluate_teacher:
        input:
            weights=TEACHER_WEIGHTS,
            records=PLAN.bert_records_of,
        output:
            json="results/{task}/teacher_eval.json",
            predictions="results/{task}/teacher_predictions.npz",
        params:
            python=PLAN.teacher_python,  # a transformers teacher: the torch runtime
            runtime=PLAN.teacher_runtime,
            records=PLAN.bert_dir_of,
            eval_batch_size=config["eval_batch_size"],
        log:
            "logs/{task}/evaluate_teacher.log",
        benchmark:
            "benchmarks/{task}/evaluate_teacher.tsv"
        threads: JOB_THREADS
        resources:
            gpu=1,
        shell:
            logged("{params.python} -m workflow_scripts.evaluate_model --task {wildcards.task} --name teacher"
                   " --model results/{wildcards.task}/teacher --records {params.records} --out {output.json}"
                   " --predictions {output.predictions} --eval-batch-size {params.eval_batch_size}"
                   " {params.runtime}"
                   " --threads {threads}")

else:

    rule evaluate_member:
        input:
            unpack(PLAN.member_inputs),
        output:
            json="results/{task}/teacher_{member}_eval.json",
            predictions="results/{task}/teacher_{member}_predictions.npz",
        params:
            python=PLAN.member_python,  # a transformers teacher: the torch runtime
            runtime=PLAN.member_runtime,
            folder=PLAN.member_folder_of,
            records=PLAN.member_records_of,
            eval_batch_size=config["eval_batch_size"],
        log:
            "logs/{task}/evaluate_teacher_{member}.log",
        benchmark:
            "benchmarks/{task}/evaluate_teacher_{member}.tsv"
        threads: JOB_THREADS
        resources:
            gpu=1,
        shell:
            logged("{params.python} -m workflow_scripts.evaluate_model --task {wildcards.task}"
                   " --name teacher_{wildcards.member} --model {params.folder} --records {params.records}"
                   " --out {output.json} --predictions {output.predictions} --eval-batch-size {params.eval_batch_size}"
                   " {params.runtime}"
                   " --threads {threads}")

    rule evaluate_ensemble:
        input:
            members=expand("results/{{task}}/teacher_{member}_eval.json", member=MEMBERS),
            predictions=expand("results/{{task}}/teacher_{member}_predictions.npz", member=MEMBERS),
            records=PLAN.bert_records_of,
        output:
            json="results/{task}/teacher_eval.json",
            predictions="results/{task}/teacher_predictions.npz",
        params:
            python=DATA_PYTHON,
            records=PLAN.bert_dir_of,
        log:
            "logs/{task}/evaluate_ensemble.log",
        threads: 1
        shell:
            logged("{params.python} -m workflow_scripts.evaluate_ensemble --task {wildcards.task}"
                   " --records {params.records} --members {input.members} --member-predictions {input.predictions}"
                   " --out {output.json} --predictions {output.predictions}")


rule evaluate_student:
    input:
        weights=STUDENT_WEIGHTS,
        reference="results/{task}/teacher_eval.json",
        records=PLAN.eval_records_of,
    output:
        json="results/{task}/{student}_eval.json",
        predictions="results/{task}/{student}_predictions.npz",
    params:
        python=TRAIN_PYTHON,
        runtime=RUNTIME,
        records=PLAN.eval_records_dir,
        eval_batch_size=config["eval_batch_size"],
    log:
        "logs/{task}/evaluate_{student}.log",
    benchmark:
        "benchmarks/{task}/evaluate_{student}.tsv"
    threads: JOB_THREADS
    resources:
        gpu=1,
    shell:
        logged("{params.python} -m workflow_scripts.evaluate_model --task {wildcards.task}"
               " --name {wildcards.student} --model results/{wildcards.task}/{wildcards.student}"
               " --records {params.records} --reference {input.reference} --out {output.json}"
               " --predictions {output.predictions} --eval-batch-size {params.eval_batch_size}"
               " {params.runtime}"
               " --threads {threads}")


rule measure_speed:
    input:
        teachers=PLAN.speed_weights,
        records=PLAN.speed_record_files,
    output:
        "results/{task}/speed.json",
    params:
        python=PLAN.teacher_python,  # a transformers teacher: the torch runtime
        runtime=PLAN.teacher_runtime,
        models=PLAN.speed_models,
        ensemble=PLAN.speed_ensemble,  # teacher.ensemble: the first models are its teachers
        records=PLAN.speed_records,
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
        SPEED_SHELL
