# Shipping the models: each folder's model card (README.md), the predictions of a configured input
# file, the HuggingFace export of every BERT model, the ONNX export of every model with its int8
# copy, and the task's deployment table (onnxruntime fp32 and int8 beside the eager teacher).
# `snakemake --cores 4 deploy` (`make deploy`) builds every export and the table of each task;
# the default target builds the model cards with the report.

rule model_card:
    input:
        config="results/{task}/{model}/config.json",
        eval=PLAN.model_eval,  # an ensemble's first teacher: its own evaluation, teacher_0_eval.json
        teacher_eval="results/{task}/teacher_eval.json",
        speed=PLAN.model_speed,  # a search's pick: the search's speed JSON
    output:
        "results/{task}/{model}/README.md",
    params:
        python=DATA_PYTHON,
        transfer=PLAN.model_transfer,
    log:
        "logs/{task}/model_card_{model}.log",
    threads: 1
    shell:
        logged("{params.python} -m workflow_scripts.model_card --task {wildcards.task}"
               " --model results/{wildcards.task}/{wildcards.model} --eval {input.eval}"
               " --teacher-eval {input.teacher_eval} --speed {input.speed} --transfer '{params.transfer}'"
               " --out {output}")


rule predict:
    input:
        weights=MODEL_WEIGHTS,
        texts=predict_input,
    output:
        "results/{task}/predict/{model}.tsv",
    params:
        python=TRAIN_PYTHON,
        runtime=RUNTIME,
        batch_size=config["predict"]["batch_size"],
    log:
        "logs/{task}/predict_{model}.log",
    threads: COMPUTE_THREADS
    resources:
        gpu=1,
    shell:
        logged("{params.python} -m kdlib.predict results/{wildcards.task}/{wildcards.model} {input.texts:q}"
               " --out {output} --batch-size {params.batch_size} {params.runtime} --threads {threads}")


rule export_hf:
    input:
        weights=MODEL_WEIGHTS,
        config="results/{task}/{model}/config.json",
    output:
        config="results/{task}/export/{model}/hf/config.json",
        weights="results/{task}/export/{model}/hf/model.safetensors",
    wildcard_constraints:
        model="|".join(PLAN.exportable_bert),  # every BERT model folder, search candidates included
    params:
        python=DATA_PYTHON,
    log:
        "logs/{task}/export_hf_{model}.log",
    threads: 1
    shell:
        logged("{params.python} -m workflow_scripts.export_hf --task {wildcards.task}"
               " --model results/{wildcards.task}/{wildcards.model} --out results/{wildcards.task}/export/{wildcards.model}/hf")


rule export_onnx:
    input:
        weights=MODEL_WEIGHTS,
        config="results/{task}/{model}/config.json",
        records=PLAN.model_records_of,
    output:
        fp32="results/{task}/export/{model}/onnx/model.onnx",
        int8="results/{task}/export/{model}/onnx/model.int8.onnx",
        check="results/{task}/export/{model}/onnx/check.json",
    params:
        python=DATA_PYTHON,
        records=PLAN.model_records_dir,
    log:
        "logs/{task}/export_onnx_{model}.log",
    benchmark:
        "benchmarks/{task}/export_onnx_{model}.tsv"
    threads: COMPUTE_THREADS
    resources:
        mem_mb=8000,
    shell:
        logged("{params.python} -m workflow_scripts.export_onnx --task {wildcards.task}"
               " --model results/{wildcards.task}/{wildcards.model} --records {params.records}"
               " --out results/{wildcards.task}/export/{wildcards.model}/onnx --threads {threads}")


rule measure_deployment:
    input:
        teacher=TEACHER_WEIGHTS,
        checks=expand("results/{{task}}/export/{model}/onnx/check.json", model=MODELS),
        records=PLAN.deploy_record_files,
    output:
        json="results/{task}/deployment.json",
        md="results/{task}/deployment.md",
        csv="results/{task}/deployment.csv",
    params:
        python=DATA_PYTHON,
        exports=expand("results/{{task}}/export/{model}/onnx", model=MODELS),
        records=PLAN.deploy_records,     # in the order of MODELS: the teacher, then every student
        rounds=config["deploy"]["rounds"],
        latency_examples=config["speed"]["latency_examples"],
        throughput_examples=config["speed"]["throughput_examples"],
    log:
        "logs/{task}/measure_deployment.log",
    benchmark:
        "benchmarks/{task}/measure_deployment.tsv"
    threads: COMPUTE_THREADS
    shell:
        DEPLOYMENT_SHELL


rule deploy:
    input:
        PLAN.deploy_targets,
