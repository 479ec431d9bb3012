# Entry point, so `snakemake --cores 2 results/summary.csv` works from the project root. The workflow itself lives in
# workflow/ (the Snakemake catalog layout): workflow/Snakefile is its table of contents.
include: "workflow/Snakefile"


# Snakemake takes its default target only from this file, never from an included one.
rule default:
    default_target: True
    input:
        rules.all.input,
