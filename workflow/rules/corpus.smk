# The corpus: the synthetic demo (target language + source languages) and the import into a manifest.


rule demo:
    input:
        code=code("demo"),
    output:
        target=directory("data/raw/demo"),
        source=directory("data/raw/demo-source"),
    params:
        stage_params("demo"),
    log:
        "logs/demo.log",
    threads: threads("demo")
    resources:
        mem_mb=mem_mb("demo"),
        runtime=runtime("demo"),
    shell:
        "asrflow demo --target {output.target} --source {output.source} --log {log}"


rule import:
    input:
        corpus=corpus_folder(),
        code=code("import"),
    output:
        manifest="data/interim/corpus.csv",
        rejects="data/interim/import_rejects.csv",
    params:
        stage_params("import"),
    log:
        "logs/import.log",
    threads: threads("import")
    resources:
        mem_mb=mem_mb("import"),
        runtime=runtime("import"),
    shell:
        "asrflow import --out {output.manifest} --rejects {output.rejects} --log {log}"
