# A random search over one method's training settings, declared in params.yaml `search`:
#   snakemake --cores 2 results/search.csv
# Only asked-for targets run it (not the default one). Snakemake only: with DVC, queue experiments instead (docs).
# Trial n trains and evaluates every fold like the grid does, with its drawn settings (`--set`, see common.smk:
# trial_settings), under data/search/trial<n>/ and results/search/trial<n>/: the train and evaluate stages over one
# more axis, `trial`.

train_stage = asrflow_stages.stage("train")


rule search_train:
    input:
        **inputs(train_stage),
        code=code(train_stage),
    output:
        model=directory("data/search/trial{trial}/checkpoints/{method}/fold{fold}"),
        curve="results/search/trial{trial}/curves/{method}-fold{fold}.csv",
    log:
        "logs/search/trial{trial}/train/{method}-fold{fold}.log",
    conda:
        CONDA_ENV
    threads: threads(train_stage)
    resources:
        **gpus(train_stage),
        mem_mb=mem_mb(train_stage),
        runtime=train_stage.runtime,
    params:
        stage_params(train_stage),
        command=command(train_stage),
        trial=trial_settings,
    shell:
        "{params.command} {params.trial} --threads {threads} --log {log}"


evaluate_stage = asrflow_stages.stage("evaluate")


use rule evaluate as search_evaluate with:
    input:
        **{
            **inputs(evaluate_stage),
            "model": "data/search/trial{trial}/checkpoints/{method}/fold{fold}",
        },
        code=code(evaluate_stage),
    output:
        metrics=directory("results/search/trial{trial}/metrics/{method}/fold{fold}"),
        model=directory("data/search/trial{trial}/models/{method}/fold{fold}"),
    log:
        "logs/search/trial{trial}/evaluate/{method}-fold{fold}.log",


search_stage = asrflow_stages.stage("search")


rule search:
    input:
        metrics=search_metrics(),
        code=code(search_stage),
    output:
        **outputs(search_stage),
    log:
        search_stage.log_path,
    conda:
        CONDA_ENV
    threads: threads(search_stage)
    resources:
        mem_mb=mem_mb(search_stage),
        runtime=search_stage.runtime,
    params:
        stage_params(search_stage),
        command=command(search_stage),
    shell:
        SHELL
