# Data stages: GLUE download or the built-in corpus, then OFRecord conversion.
#
# Every rule's command is logged(...) (rules/common.smk, LOG_TAIL): the stage's output goes to its log,
# and its last line (its summary, or on failure its `error: ...` line) is shown on the console.
#
# How the download rules fetch (from where, how patiently) does not change what they fetch, so
# those settings are Untracked params (kdlib.plan.Untracked): a change does not redo the download and
# everything after it.


rule download_glue:
    output:
        train="data/download/{glue_dir}/train.tsv",
        dev="data/download/{glue_dir}/dev.tsv",
    params:
        python=DATA_PYTHON,
        task=PLAN.glue_task_name,
        url=Untracked(config["data"]["glue_url"]),
        mrpc_url=Untracked(config["data"]["mrpc_url"]),
        timeout=Untracked(config["data"]["timeout_s"]),
        retries=Untracked(config["data"]["retries"]),
    log:
        "logs/glue/{glue_dir}/download.log",
    threads: 1
    resources:
        downloads=1,
    shell:
        logged("{params.python} -m workflow_scripts.download_glue --task {params.task}"
               " --out-root data/download --hand-root data/glue"
               " --url {params.url:q} --mrpc-url {params.mrpc_url:q} --timeout {params.timeout}"
               " --retries {params.retries}")


rule download_glue_mnli:
    output:
        train="data/download/MNLI/train.tsv",
        dev_matched="data/download/MNLI/dev_matched.tsv",
        dev_mismatched="data/download/MNLI/dev_mismatched.tsv",
    params:
        python=DATA_PYTHON,
        url=Untracked(config["data"]["glue_url"]),
        mrpc_url=Untracked(config["data"]["mrpc_url"]),
        timeout=Untracked(config["data"]["timeout_s"]),
        retries=Untracked(config["data"]["retries"]),
    log:
        "logs/glue/MNLI/download.log",
    threads: 1
    resources:
        downloads=1,
    shell:
        logged("{params.python} -m workflow_scripts.download_glue --task mnli"
               " --out-root data/download --hand-root data/glue"
               " --url {params.url:q} --mrpc-url {params.mrpc_url:q} --timeout {params.timeout}"
               " --retries {params.retries}")


rule prepare_builtin:
    output:
        train="data/glue/{builtin}/train.tsv",
        validation="data/glue/{builtin}/validation.tsv",
        dev="data/glue/{builtin}/dev.tsv",
    params:
        python=DATA_PYTHON,
        dev_fraction=config["data"]["builtin"]["dev_fraction"],
        max_train=config["data"]["builtin"]["max_train"],
        seed=config["data"]["builtin"]["seed"],
        validation=config["data"]["builtin"]["validation"],
    log:
        "logs/{builtin}/prepare_builtin.log",
    threads: 1
    shell:
        logged("{params.python} -m workflow_scripts.prepare_builtin --task {wildcards.builtin}"
               " --out-dir data/glue/{wildcards.builtin}"
               " --dev-fraction {params.dev_fraction} --max-train {params.max_train}"
               " --seed {params.seed} --validation {params.validation}")


rule ofrecord_bert:
    input:
        tsv=PLAN.task_tsvs,
        tokenizer=PLAN.teacher_tokenizer,  # the teacher's tokenizer.json or vocab.txt (a copy is kept)
    output:
        train="data/ofrecord/{task}/bert{seq}/train.of_record-0",
        meta="data/ofrecord/{task}/bert{seq}/meta.json",
    params:
        python=DATA_PYTHON,
        glue_root=PLAN.tsv_root,
        custom=PLAN.custom_definition,
        validation=PLAN.validation_args,  # how a validation split without a file is carved from train
    log:
        "logs/{task}/ofrecord_bert{seq}.log",
    benchmark:
        "benchmarks/{task}/ofrecord_bert{seq}.tsv"
    threads: 2
    shell:
        logged("{params.python} -m workflow_scripts.ofrecord_bert --task {wildcards.task} {params.custom}"
               " --glue-root {params.glue_root:q} {params.validation}"
               " --out-dir data/ofrecord/{wildcards.task}/bert{wildcards.seq}"
               " --tokenizer {input.tokenizer:q} --max-length {wildcards.seq}")


rule ofrecord_tokenized:
    input:
        tsv=PLAN.task_tsvs,
        tokenizer=PLAN.tokenizer_of,  # a student's own tokenizer, or an ensemble teacher's (not the first's)
    output:
        train="data/ofrecord/{task}/bert{seq}-tok_{digest}/train.of_record-0",
        meta="data/ofrecord/{task}/bert{seq}-tok_{digest}/meta.json",
    params:
        python=DATA_PYTHON,
        glue_root=PLAN.tsv_root,
        custom=PLAN.custom_definition,
        validation=PLAN.validation_args,
    log:
        "logs/{task}/ofrecord_bert{seq}-tok_{digest}.log",
    threads: 1
    shell:
        logged("{params.python} -m workflow_scripts.ofrecord_bert --task {wildcards.task} {params.custom}"
               " --glue-root {params.glue_root:q} {params.validation}"
               " --out-dir data/ofrecord/{wildcards.task}/bert{wildcards.seq}-tok_{wildcards.digest}"
               " --tokenizer {input.tokenizer:q} --max-length {wildcards.seq}")


rule ofrecord_lstm:
    input:
        tsv=PLAN.task_tsvs,
    output:
        train="data/ofrecord/{task}/lstm{seq}/train.of_record-0",
        meta="data/ofrecord/{task}/lstm{seq}/meta.json",
        vocab="data/ofrecord/{task}/lstm{seq}/vocab.txt",
    params:
        python=DATA_PYTHON,
        glue_root=PLAN.tsv_root,
        custom=PLAN.custom_definition,
        validation=PLAN.validation_args,
        vocab_size=config["data"]["lstm"]["vocab_size"],
    log:
        "logs/{task}/ofrecord_lstm{seq}.log",
    benchmark:
        "benchmarks/{task}/ofrecord_lstm{seq}.tsv"
    threads: 1
    shell:
        logged("{params.python} -m workflow_scripts.ofrecord_lstm --task {wildcards.task} {params.custom}"
               " --glue-root {params.glue_root:q} {params.validation}"
               " --out-dir data/ofrecord/{wildcards.task}/lstm{wildcards.seq}"
               " --max-length {wildcards.seq} --vocab-size {params.vocab_size}")
