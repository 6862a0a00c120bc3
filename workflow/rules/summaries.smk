# Mean, std and n over the replicas of each target model (training seeds or several checkpoints;
# peekflow.workflow.replicas): the OOD table's metrics, prototype quality and probing accuracy.


rule summarise_ood:
    input:
        table="results/ood_table.csv",
    output:
        csv="results/ood_summary.csv",
        md="results/ood_summary.md",
    log:
        "logs/summaries/ood.log",
    benchmark:
        "results/benchmarks/summarise_ood.tsv"
    resources:
        **job_resources("summarise_ood"),
    shell:
        "peekflow summarise --table {input.table} --out-csv {output.csv} --out-md {output.md} > {log} 2>&1"


rule summarise_prototypes:
    input:
        reports=summary_reports("prototypes"),
    output:
        csv="results/prototypes_summary.csv",
        md="results/prototypes_summary.md",
    log:
        "logs/summaries/prototypes.log",
    benchmark:
        "results/benchmarks/summarise_prototypes.tsv"
    resources:
        **job_resources("summarise_prototypes"),
    params:
        reports=lambda w, input: named_reports("prototypes", input.reports),
        summarised="target_accuracy probe_accuracy",
    shell:
        "peekflow summarise --reports {params.reports} --keys {params.summarised}"
        " --out-csv {output.csv} --out-md {output.md} > {log} 2>&1"


rule summarise_probing:
    input:
        reports=summary_reports("probing"),
    output:
        csv="results/probing_summary.csv",
        md="results/probing_summary.md",
    log:
        "logs/summaries/probing.log",
    benchmark:
        "results/benchmarks/summarise_probing.tsv"
    resources:
        **job_resources("summarise_probing"),
    params:
        reports=lambda w, input: named_reports("probing", input.reports),
        summarised="accuracy hungarian_accuracy",
    shell:
        "peekflow summarise --reports {params.reports} --keys {params.summarised}"
        " --out-csv {output.csv} --out-md {output.md} > {log} 2>&1"
