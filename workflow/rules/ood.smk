# OOD scores per method on the target model, then the table (higher score = more in-distribution).


rule score_ood:
    input:
        unpack(score_inputs),
    output:
        scores="results/ood/{model}/scores/{method}.h5",
    log:
        "logs/ood/{model}/{method}.log",
    benchmark:
        "results/benchmarks/score_ood/{model}/{method}.tsv"
    params:
        settings=lambda w: ood_method_settings(w.method),
        layer=lambda w: model_config(w.model)["penultimate"],
        fit=score_fit_args,
        evals=score_eval_args,
    shell:
        "peekflow score --method {wildcards.method} --settings {params.settings:q} --layer {params.layer}"
        " {params.fit} {params.evals} --out {output.scores} > {log} 2>&1"


rule make_ood_table:
    input:
        scores=expand(
            "results/ood/{model}/scores/{method}.h5",
            model=target_model(),
            method=config["ood"]["methods"],
        ),
    output:
        csv="results/ood_table.csv",
        md="results/ood_table.md",
    log:
        "logs/ood/table.log",
    benchmark:
        "results/benchmarks/make_ood_table.tsv"
    params:
        scores=lambda w, input: " ".join(
            f"--scores {m}={p}" for m, p in zip(config["ood"]["methods"], input.scores)
        ),
        id_test=config["ood"]["id_test"],
        ood_sets=" ".join(config["ood"]["ood_sets"]),
    shell:
        "peekflow table {params.scores} --id {params.id_test} --ood {params.ood_sets}"
        " --out-csv {output.csv} --out-md {output.md} > {log} 2>&1"
