# OOD scores per method (per value of a swept setting) on the target model, then the table (higher score = more ID). Each job
# scores one data set, so an added OOD set is scored without rescoring the others; gather_ood_scores joins a method's
# data sets into the score file that the table and the plots read.


rule score_ood:
    input:
        unpack(score_inputs),
    output:
        scores="results/ood/{model}/scores/{method}/{dataset}.h5",
    log:
        "logs/ood/{model}/scores/{method}/{dataset}.log",
    benchmark:
        "results/benchmarks/score_ood/{model}/{method}/{dataset}.tsv"
    threads: config["ood"]["threads"]
    resources:
        **job_resources("score_ood"),
    params:
        method=lambda w: ood_run_method(w.method),
        settings=lambda w: ood_method_settings(w.method),
        layer=lambda w: model_config(w.model)["penultimate"],
        fit=score_fit_args,
        evals=score_eval_args,
    shell:
        "peekflow score --method {params.method} --settings {params.settings:q} --layer {params.layer}"
        " {params.fit} {params.evals} --threads {threads} --out {output.scores} > {log} 2>&1"


rule gather_ood_scores:
    input:
        parts=expand(
            "results/ood/{{model}}/scores/{{method}}/{dataset}.h5",
            dataset=ood_eval_sets(),
        ),
    output:
        scores=score_file("{model}", "{method}"),
    log:
        "logs/ood/{model}/scores/{method}.log",
    benchmark:
        "results/benchmarks/gather_ood_scores/{model}/{method}.tsv"
    resources:
        **job_resources("gather_ood_scores"),
    shell:
        "peekflow gather-scores --parts {input.parts} --out {output.scores} > {log} 2>&1"


rule make_ood_table:
    input:
        scores=[score_file(model, method) for model, method in itertools.product(target_models(), ood_runs())],
    output:
        csv="results/ood_table.csv",
        md="results/ood_table.md",
    log:
        "logs/ood/table.log",
    benchmark:
        "results/benchmarks/make_ood_table.tsv"
    resources:
        **job_resources("make_ood_table"),
    params:
        scores=lambda w, input: " ".join(
            f"--scores {model}/{method}={path}"
            for (model, method), path in zip(itertools.product(target_models(), ood_runs()), input.scores)
        ),
        id_test=config["ood"]["id_test"],
        ood_sets=" ".join(config["ood"]["ood_sets"]),
        groups=ood_group_args(),
        n_bootstrap=config["ood"]["table"]["n_bootstrap"],
        seed=config["ood"]["table"]["seed"],
    shell:
        "peekflow table {params.scores} --id {params.id_test} --ood {params.ood_sets} {params.groups}"
        " --n-bootstrap {params.n_bootstrap} --seed {params.seed}"
        " --out-csv {output.csv} --out-md {output.md} > {log} 2>&1"


rule compare_with_papers:
    input:
        table="results/ood_table.csv",
        scores=[score_file(model, method) for model, method in itertools.product(target_models(), ood_runs())],
    output:
        csv="results/paper_comparison.csv",
        md="results/paper_comparison.md",
    log:
        "logs/ood/paper_comparison.log",
    benchmark:
        "results/benchmarks/compare_with_papers.tsv"
    resources:
        **job_resources("compare_with_papers"),
    params:
        scores=lambda w, input: " ".join(
            f"--scores {model}/{method}={path}"
            for (model, method), path in zip(itertools.product(target_models(), ood_runs()), input.scores)
        ),
        groups=ood_group_args(),
        settings=as_json(config["ood"].get("compare", {})),
    shell:
        "peekflow compare --table {input.table} {params.scores} {params.groups} --settings {params.settings:q}"
        " --out-csv {output.csv} --out-md {output.md} > {log} 2>&1"
