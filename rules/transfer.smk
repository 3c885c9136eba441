# Transfer sets (config.yaml `transfer:`): text the teacher labels for the students that name one.
# A set becomes a TSV, then a copy of the task's record folders with the set mixed into training
# (bert<L>+<set>/, lstm<L>+<set>/), then the teacher's logits on it; a student with `transfer:`
# reads those instead of the plain records and logits (kdlib.plan, Plan.student_records_dir).


rule transfer_set:
    input:
        unpack(PLAN.transfer_inputs),
    output:
        "data/transfer/{task}/{transfer}.tsv",
    params:
        python=PLAN.transfer_python,  # augment: tinybert: the backend's runtime (it may run a masked LM)
        glue_root=PLAN.tsv_root,
        custom=PLAN.custom_definition,
        validation=PLAN.validation_args,  # the carved validation rows are kept out too
        definition=PLAN.transfer_definition,
        model=PLAN.transfer_model_args,  # augment: tinybert: --pretrained, --backend, ...; else nothing
    log:
        "logs/{task}/transfer_set_{transfer}.log",
    benchmark:
        "benchmarks/{task}/transfer_set_{transfer}.tsv"
    threads: PLAN.transfer_threads
    shell:
        logged("{params.python} -m workflow_scripts.transfer_set --task {wildcards.task} {params.custom}"
               " --glue-root {params.glue_root:q} {params.validation} --name {wildcards.transfer} --definition {params.definition:q}"
               " {params.model} --threads {threads}"
               " --out {output}")


rule ofrecord_transfer:
    input:
        records="data/ofrecord/{task}/{records}/meta.json",
        tsv="data/transfer/{task}/{transfer}.tsv",
    output:
        train="data/ofrecord/{task}/{records}+{transfer}/train.of_record-0",
        meta="data/ofrecord/{task}/{records}+{transfer}/meta.json",
    params:
        python=DATA_PYTHON,
        seed=lambda wildcards: config["transfer"][wildcards.transfer]["seed"],
    log:
        "logs/{task}/ofrecord_{records}+{transfer}.log",
    benchmark:
        "benchmarks/{task}/ofrecord_{records}+{transfer}.tsv"
    threads: 1
    shell:
        logged("{params.python} -m workflow_scripts.ofrecord_transfer --task {wildcards.task}"
               " --records data/ofrecord/{wildcards.task}/{wildcards.records}"
               " --transfer {input.tsv} --name {wildcards.transfer} --seed {params.seed}"
               " --out-dir data/ofrecord/{wildcards.task}/{wildcards.records}+{wildcards.transfer}")


rule cache_transfer_logits:
    input:
        weights=TEACHER_WEIGHTS,
        records=PLAN.transfer_records_of,
        members=PLAN.ensemble_cache_inputs,
    output:
        "results/{task}/teacher_logits+{transfer}.npz",
    params:
        members=PLAN.ensemble_members_arg,
        python=PLAN.teacher_python,  # a transformers teacher: the torch runtime
        runtime=PLAN.teacher_runtime,
        records=PLAN.transfer_records_dir,
        eval_batch_size=config["eval_batch_size"],
    log:
        "logs/{task}/cache_teacher_logits+{transfer}.log",
    benchmark:
        "benchmarks/{task}/cache_teacher_logits+{transfer}.tsv"
    threads: JOB_THREADS
    resources:
        gpu=1,
    shell:
        CACHE_LOGITS_SHELL
