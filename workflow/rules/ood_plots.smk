# ROC curves and score histograms of each OOD method on the target model (the ID set against every OOD set).


rule plot_ood:
    input:
        scores=score_file("{model}", "{method}"),
    output:
        roc=report(
            "results/ood/{model}/figures/{method}_roc.png",
            caption="../report/ood_roc.rst",
            category="1. OOD detection",
            subcategory="{model}",
            labels={"method": "{method}", "figure": "ROC curves"},
        ),
        hist=report(
            "results/ood/{model}/figures/{method}_hist.png",
            caption="../report/ood_hist.rst",
            category="1. OOD detection",
            subcategory="{model}",
            labels={"method": "{method}", "figure": "score histograms"},
        ),
    log:
        "logs/ood/{model}/figures/{method}.log",
    benchmark:
        "results/benchmarks/plot_ood/{model}/{method}.tsv"
    resources:
        **job_resources("plot_ood"),
    params:
        id_test=config["ood"]["id_test"],
        ood_sets=" ".join(config["ood"]["ood_sets"]),
        bins=config["ood"]["plots"]["bins"],
        dpi=config["ood"]["plots"]["dpi"],
    shell:
        "peekflow plot-ood --scores {input.scores} --id {params.id_test} --ood {params.ood_sets}"
        " --bins {params.bins} --dpi {params.dpi} --out-roc {output.roc} --out-hist {output.hist} > {log} 2>&1"
