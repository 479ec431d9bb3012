# Every stage of the table (src/asrflow/stages.py) that both engines run, as one Snakemake rule each: its deps and
# code as input, its outs as output, the params keys it reads as params (so a change re-runs it), one log, and one
# `asrflow <stage>` command. dvc.yaml is written from the same table (`asrflow dvc-yaml`).


for stage in asrflow_stages.STAGES:
    if stage.dvc:

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
                command=command(stage),
            shell:
                SHELL
