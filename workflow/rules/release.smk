# After cross-validation: the chosen method refitted on every speaker, as a Hugging Face folder with its model card.


rule release:
    input:
        summary="results/summary.csv",
        folds_table="results/folds.csv",
        utterances="data/processed/utterances.csv",
        speed="data/processed/speed",
        base="data/models/base",
        code=code("release"),
    output:
        directory("results/release"),
    params:
        stage_params("release"),
    log:
        "logs/release.log",
    threads: threads("release")
    resources:
        mem_mb=mem_mb("release"),
        runtime=runtime("release"),
        **gpus("release"),
    shell:
        "asrflow release --summary {input.summary} --folds-table {input.folds_table} --utterances {input.utterances}"
        " --speed {input.speed} --base {input.base} --out {output} --threads {threads} --log {log}"
