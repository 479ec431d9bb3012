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
