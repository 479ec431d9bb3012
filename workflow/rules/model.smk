# Models: the base (pre-trained demo model or a local checkpoint), then per fold × method fine-tuning and evaluation.


rule pretrain:
    input:
        source="data/raw/demo-source",
        code=code("pretrain"),
    output:
        directory("data/models/base"),
    params:
        stage_params("pretrain"),
    log:
        "logs/pretrain.log",
    threads: threads("pretrain")
    resources:
        mem_mb=mem_mb("pretrain"),
        runtime=runtime("pretrain"),
        **gpus("pretrain"),
    shell:
        "asrflow pretrain --source {input.source} --out {output} --threads {threads} --log {log}"


rule plan:
    input:
        base="data/models/base",
        code=code("plan"),
    output:
        "data/models/plan/{method}.json",
    params:
        method_params("plan"),
    log:
        "logs/plan/{method}.log",
    threads: threads("plan")
    resources:
        mem_mb=mem_mb("plan"),
        runtime=runtime("plan"),
        **gpus("plan"),
    shell:
        "asrflow plan --method {wildcards.method} --base {input.base} --out {output} --threads {threads} --log {log}"


rule train:
    input:
        folds="data/processed/folds",
        speed="data/processed/speed",
        base="data/models/base",
        code=code("train"),
    output:
        model=directory("data/checkpoints/{method}/fold{fold}"),
        curve="results/curves/{method}-fold{fold}.csv",
    params:
        method_params("train"),
    log:
        "logs/train/{method}-fold{fold}.log",
    threads: threads("train")
    resources:
        mem_mb=mem_mb("train"),
        runtime=runtime("train"),
        **gpus("train"),
    shell:
        "asrflow train --fold {wildcards.fold} --method {wildcards.method} --folds {input.folds}"
        " --speed {input.speed} --base {input.base} --out {output.model} --curve {output.curve}"
        " --threads {threads} --log {log}"


rule evaluate:
    input:
        folds="data/processed/folds",
        model="data/checkpoints/{method}/fold{fold}",
        lm="data/processed/lm/fold{fold}",
        code=code("evaluate"),
    output:
        metrics=directory("results/metrics/{method}/fold{fold}"),
        model=directory("results/models/{method}/fold{fold}"),
    params:
        stage_params("evaluate"),
    log:
        "logs/evaluate/{method}-fold{fold}.log",
    threads: threads("evaluate")
    resources:
        mem_mb=mem_mb("evaluate"),
        runtime=runtime("evaluate"),
        **gpus("evaluate"),
    shell:
        "asrflow evaluate --fold {wildcards.fold} --method {wildcards.method} --folds {input.folds}"
        " --model {input.model} --out {output.metrics} --publish {output.model} --lm {input.lm}"
        " --threads {threads} --log {log}"
