# From the imported manifest to training data: 16 kHz audio, normalised text, speaker folds, speed-perturbed copies,
# and per fold a word n-gram LM of its training transcripts.


rule resample:
    input:
        manifest="data/interim/corpus.csv",
        code=code("resample"),
    output:
        directory("data/interim/resampled"),
    params:
        stage_params("resample"),
    log:
        "logs/resample.log",
    threads: threads("resample")
    resources:
        mem_mb=mem_mb("resample"),
        runtime=runtime("resample"),
    shell:
        "asrflow resample --in {input.manifest} --out {output} --threads {threads} --log {log}"


rule normalize:
    input:
        resampled="data/interim/resampled",
        code=code("normalize"),
    output:
        manifest="data/processed/utterances.csv",
        rejects="data/processed/normalize_rejects.csv",
    params:
        stage_params("normalize"),
    log:
        "logs/normalize.log",
    threads: threads("normalize")
    resources:
        mem_mb=mem_mb("normalize"),
        runtime=runtime("normalize"),
    shell:
        "asrflow normalize --in {input.resampled}/manifest.csv --out {output.manifest} --rejects {output.rejects}"
        " --log {log}"


rule split:
    input:
        manifest="data/processed/utterances.csv",
        code=code("split"),
    output:
        directory("data/processed/folds"),
    params:
        stage_params("split"),
    log:
        "logs/split.log",
    threads: threads("split")
    resources:
        mem_mb=mem_mb("split"),
        runtime=runtime("split"),
    shell:
        "asrflow split --in {input.manifest} --out {output} --log {log}"


rule augment:
    input:
        manifest="data/processed/utterances.csv",
        code=code("augment"),
    output:
        directory("data/processed/speed"),
    params:
        stage_params("augment"),
    log:
        "logs/augment.log",
    threads: threads("augment")
    resources:
        mem_mb=mem_mb("augment"),
        runtime=runtime("augment"),
    shell:
        "asrflow augment --in {input.manifest} --out {output} --threads {threads} --log {log}"


rule lm:
    input:
        folds="data/processed/folds",
        code=code("lm"),
    output:
        directory("data/processed/lm/fold{fold}"),
    params:
        stage_params("lm"),
    log:
        "logs/lm/fold{fold}.log",
    threads: threads("lm")
    resources:
        mem_mb=mem_mb("lm"),
        runtime=runtime("lm"),
    shell:
        "asrflow lm --train {input.folds}/fold{wildcards.fold}/train.csv --out {output} --log {log}"
