# Every stage of the table (src/asrflow/stages.py) that both engines run and params.yaml configures (common.smk:
# engine_stages), as one Snakemake rule each: its deps and code as input, its outs as output, the params keys it reads
# as params (so a change re-runs it), one log, and one `asrflow <stage>` command. dvc.yaml is written from the same
# table (`asrflow dvc-yaml`).


for stage in engine_stages():

    rule:
        name:
            stage.name
        input:
            **inputs(stage),
            code=code(stage),
        output:
            **outputs(stage),
        log:
            stage.log_path,
        conda:
            CONDA_ENV
        threads: threads(stage)
        resources:
            **gpus(stage),
            mem_mb=mem_mb(stage),
            runtime=stage.runtime,
        params:
            stage_params(stage),
            **pattern_named_files(stage),
            command=command(stage),
        shell:
            SHELL
