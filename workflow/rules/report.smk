# Every fold of every method, aggregated into results/folds.csv and results/summary.{csv,md,png}.


rule report:
    input:
        metrics=all_metrics(),
        code=code("report"),
    output:
        folds="results/folds.csv",
        summary="results/summary.csv",
        markdown="results/summary.md",
        plot="results/summary.png",
        metrics="results/summary.json",
    params:
        stage_params("report"),
    log:
        "logs/report.log",
    threads: threads("report")
    resources:
        mem_mb=mem_mb("report"),
        runtime=runtime("report"),
    shell:
        "asrflow report --metrics results/metrics --out results --log {log}"


# What the corpus holds and what every stage left out: results/data_report.{md,csv}.


rule data_report:
    input:
        manifest="data/processed/utterances.csv",
        folds="data/processed/folds",
        import_rejects="data/interim/import_rejects.csv",
        resampled="data/interim/resampled",
        normalize_rejects="data/processed/normalize_rejects.csv",
        code=code("data_report"),
    output:
        markdown="results/data_report.md",
        table="results/data_report.csv",
    params:
        stage_params("data_report"),
    log:
        "logs/data_report.log",
    threads: threads("data_report")
    resources:
        mem_mb=mem_mb("data_report"),
        runtime=runtime("data_report"),
    shell:
        "asrflow data_report --in {input.manifest} --folds {input.folds} --rejects {input.import_rejects}"
        " {input.resampled}/rejects.csv {input.normalize_rejects} --out results --log {log}"
