# A random search over one method's training settings, declared in params.yaml `search`:
#   snakemake --cores 2 results/search.csv
# Only asked-for targets run it (not the default one). Snakemake only: with DVC, queue experiments instead (README).
# Trial n trains and evaluates every fold like the grid does, with its drawn settings (`--set`, see
# common.smk: trial_settings), under data/search/trial<n>/ and results/search/trial<n>/.


rule search_train:
    input:
        folds="data/processed/folds",
        speed="data/processed/speed",
        base="data/models/base",
        code=code("train"),
    output:
        model=directory("data/search/trial{trial}/checkpoints/{method}/fold{fold}"),
        curve="results/search/trial{trial}/curves/{method}-fold{fold}.csv",
    params:
        method_params("train"),
        trial=trial_settings,
    log:
        "logs/search/trial{trial}/train/{method}-fold{fold}.log",
    threads: threads("train")
    resources:
        mem_mb=mem_mb("train"),
        runtime=runtime("train"),
        **gpus("train"),
    shell:
        "asrflow train --fold {wildcards.fold} --method {wildcards.method} --folds {input.folds}"
        " --speed {input.speed} --base {input.base} --out {output.model} --curve {output.curve}"
        " {params.trial} --threads {threads} --log {log}"


use rule evaluate as search_evaluate with:
    input:
        folds="data/processed/folds",
        model="data/search/trial{trial}/checkpoints/{method}/fold{fold}",
        lm="data/processed/lm/fold{fold}",
        code=code("evaluate"),
    output:
        metrics=directory("results/search/trial{trial}/metrics/{method}/fold{fold}"),
        model=directory("data/search/trial{trial}/models/{method}/fold{fold}"),
    log:
        "logs/search/trial{trial}/evaluate/{method}-fold{fold}.log",


rule search:
    input:
        metrics=search_metrics(),
        code=code("search"),
    output:
        "results/search.csv",
    params:
        stage_params("search"),
    log:
        "logs/search.log",
    threads: threads("search")
    resources:
        mem_mb=mem_mb("search"),
        runtime=runtime("search"),
    shell:
        "asrflow search --metrics results/search --out {output} --log {log}"
