# Feature stores: logits and pooled activations of a model's configured layers over one data set.


rule extract_features:
    input:
        checkpoint=lambda w: model_checkpoint(w.model),
        images=lambda w: dataset_input(w.dataset),
    output:
        store="results/features/{model}/{dataset}.h5",
    log:
        "logs/features/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/extract_features/{model}/{dataset}.tsv"
    threads: config["extract"]["threads"]
    params:
        model=lambda w: model_spec(w.model),
        settings=lambda w: extract_settings(w.model),
        images=lambda w: dataset_images(w.dataset),
    shell:
        "peekflow extract --model {params.model:q} --checkpoint {input.checkpoint:q}"
        " --images {params.images:q} --dataset-name {wildcards.dataset} --settings {params.settings:q}"
        " --threads {threads} --out {output.store} > {log} 2>&1"
