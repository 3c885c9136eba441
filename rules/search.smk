# Distil to a budget (`snakemake --cores 4 search`, `make search`): the most accurate student that
# meets config.yaml's search.target. Every candidate (kdlib.search.space) is measured untrained
# beside the teacher; those that meet the target train as cached students (rule distill), each
# selected on validation; the pick, the best of them on validation, and its equal-budget baseline
# alone are evaluated on dev, re-measured and shipped. Which candidates train, and which is the
# pick, is known only once the two checkpoints below have run: SEARCH (kdlib.plan.SearchInputs)
# reads their outputs.


checkpoint search_feasibility:
    input:
        unpack(PLAN.feasibility_inputs),
    output:
        "results/{task}/search/feasibility.json",
    params:
        python=PLAN.feasibility_python,  # onnx_int8: the workflow runtime; kdlib: the teacher's
        runtime=PLAN.feasibility_runtime,
        target=PLAN.search_target_json,  # a change of the target or the space measures again
        candidates=PLAN.search_candidates_json,
        teacher_records=PLAN.bert_dir_of,
        rounds=config["speed"]["rounds"],
        latency_examples=config["speed"]["latency_examples"],
        throughput_examples=config["speed"]["throughput_examples"],
        eval_batch_size=config["eval_batch_size"],
    log:
        "logs/{task}/search_feasibility.log",
    benchmark:
        "benchmarks/{task}/search_feasibility.tsv"
    threads: COMPUTE_THREADS
    resources:
        gpu=1,
    shell:
        logged("{params.python} -m workflow_scripts.search_feasibility --task {wildcards.task}"
               " --teacher results/{wildcards.task}/teacher --teacher-records {params.teacher_records}"
               " --target {params.target:q} --candidates {params.candidates:q} --rounds {params.rounds}"
               " --latency-examples {params.latency_examples} --throughput-examples {params.throughput_examples}"
               " --out {output} --eval-batch-size {params.eval_batch_size} {params.runtime} --threads {threads}")


checkpoint search_select:
    input:
        feasibility="results/{task}/search/feasibility.json",
        summaries=SEARCH.feasible_summaries,  # every feasible candidate, trained by rule distill
    output:
        "results/{task}/search/pick.json",
    params:
        python=DATA_PYTHON,
    log:
        "logs/{task}/search_select.log",
    threads: 1
    shell:
        logged("{params.python} -m workflow_scripts.search_select --task {wildcards.task}"
               " --feasibility {input.feasibility} --summaries {input.summaries} --out {output}")


rule search_speed:
    input:
        weights=SEARCH.speed_weights,
        records=SEARCH.speed_record_files,
    output:
        "results/{task}/search/speed.json",
    params:
        python=PLAN.teacher_python,
        runtime=PLAN.teacher_runtime,
        models=SEARCH.speed_models,  # the teacher, the pick, its baseline
        records=SEARCH.speed_records,
        ensemble="",  # the teacher folder alone: an ensemble's first teacher
        rounds=config["speed"]["rounds"],
        latency_examples=config["speed"]["latency_examples"],
        throughput_examples=config["speed"]["throughput_examples"],
        eval_batch_size=config["eval_batch_size"],
    log:
        "logs/{task}/search_speed.log",
    threads: COMPUTE_THREADS
    resources:
        gpu=1,
    shell:
        SPEED_SHELL


rule search_deployment:
    input:
        teacher=TEACHER_WEIGHTS,
        checks=SEARCH.export_checks,
        records=SEARCH.speed_record_files,
    output:
        json="results/{task}/search/deployment.json",
        md="results/{task}/search/deployment.md",
        csv="results/{task}/search/deployment.csv",
    params:
        python=DATA_PYTHON,
        exports=SEARCH.exports,
        records=SEARCH.export_records,
        rounds=config["deploy"]["rounds"],
        latency_examples=config["speed"]["latency_examples"],
        throughput_examples=config["speed"]["throughput_examples"],
    log:
        "logs/{task}/search_deployment.log",
    threads: COMPUTE_THREADS
    shell:
        DEPLOYMENT_SHELL


rule search_report:
    input:
        feasibility="results/{task}/search/feasibility.json",
        evals=SEARCH.evals,  # every run of the pick and of its baseline
        predictions=SEARCH.predictions,
        teacher_eval="results/{task}/teacher_eval.json",
        teacher_predictions="results/{task}/teacher_predictions.npz",
        speed="results/{task}/search/speed.json",
        deployment="results/{task}/search/deployment.json",
        shipped=SEARCH.shipped,
        pick="results/{task}/search/pick.json",
        weights=SEARCH.pick_weights,
        records=PLAN.bert_records_of,
    output:
        md="results/{task}/search.md",
        csv="results/{task}/search.csv",
        json="results/{task}/search.json",
        png="results/{task}/search.png",
    params:
        python=DATA_PYTHON,
        records=PLAN.bert_dir_of,
    log:
        "logs/{task}/search_report.log",
    threads: 1
    shell:
        logged("{params.python} -m workflow_scripts.search_report --task {wildcards.task}"
               " --records {params.records} --feasibility {input.feasibility} --pick {input.pick}"
               " --teacher-eval {input.teacher_eval} --teacher-predictions {input.teacher_predictions}"
               " --evals {input.evals} --predictions {input.predictions} --speed {input.speed}"
               " --deployment {input.deployment} --weights {input.weights}"
               " --out-stem results/{wildcards.task}/search")


rule search:
    input:
        PLAN.search_targets,
