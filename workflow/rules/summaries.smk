# Mean, std and n over the replicas of each target model (training seeds or several checkpoints;
# peekflow.workflow.replicas): the OOD table's metrics, prototype quality, probing accuracy and the judgements
# against WordNet (semantics).


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


rule summarise_semantics:
    input:
        reports=summary_reports("semantics"),
    output:
        csv="results/semantics_summary.csv",
        md="results/semantics_summary.md",
    log:
        "logs/summaries/semantics.log",
    benchmark:
        "results/benchmarks/summarise_semantics.tsv"
    resources:
        **job_resources("summarise_semantics"),
    params:
        reports=lambda w, input: named_reports("semantics", input.reports),
        summarised="mantel_r mantel_p",
    shell:
        "peekflow summarise --reports {params.reports} --keys {params.summarised}"
        " --out-csv {output.csv} --out-md {output.md} > {log} 2>&1"


rule summarise_semantic_depths:
    input:
        reports=summary_reports("semantic_depths"),
    output:
        csv="results/semantic_depths_summary.csv",
        md="results/semantic_depths_summary.md",
    log:
        "logs/summaries/semantic_depths.log",
    benchmark:
        "results/benchmarks/summarise_semantic_depths.tsv"
    resources:
        **job_resources("summarise_semantic_depths"),
    params:
        reports=lambda w, input: named_reports("semantic_depths", input.reports),
        summarised="accuracy_by_depth hungarian_accuracy_by_depth chance_accuracy_by_depth",
    shell:
        "peekflow summarise --reports {params.reports} --curve depths=depth --keys {params.summarised}"
        " --out-csv {output.csv} --out-md {output.md} > {log} 2>&1"
