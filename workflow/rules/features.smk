# Feature stores: logits and pooled activations of a model's configured layers over one data set -- by one job, or
# (extract.shards) by one job per shard, merged into the same store.


rule extract_features:
    input:
        checkpoint=lambda w: model_checkpoint(w.model),
        images=lambda w: dataset_input(w.dataset),
    output:
        store=feature_store("{model}", "{dataset}"),
    log:
        "logs/features/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/extract_features/{model}/{dataset}.tsv"
    wildcard_constraints:
        dataset=sharded_pattern("extract", config["datasets"], sharded=False),
    threads: config["extract"]["threads"]
    resources:
        **job_resources("extract_features"),
    params:
        device=config["device"],
        model=lambda w: model_spec(w.model),
        settings=lambda w: extract_settings(w.model),
        images=lambda w: dataset_images(w.dataset),
    shell:
        "peekflow extract --model {params.model:q} --checkpoint {input.checkpoint:q} --device {params.device}"
        " --images {params.images:q} --dataset-name {wildcards.dataset} --settings {params.settings:q}"
        " --threads {threads} --out {output.store} > {log} 2>&1"


# A killed shard job leaves <store>.partial/ (not an output, so Snakemake keeps it); its rerun continues from there.
rule extract_feature_shard:
    input:
        checkpoint=lambda w: model_checkpoint(w.model),
        images=lambda w: dataset_input(w.dataset),
    output:
        store=temp("results/features/{model}/{dataset}/shard_{shard}_of_{shards}.h5"),
    log:
        "logs/features/{model}/{dataset}/shard_{shard}_of_{shards}.log",
    benchmark:
        "results/benchmarks/extract_feature_shard/{model}/{dataset}/shard_{shard}_of_{shards}.tsv"
    wildcard_constraints:
        dataset=sharded_pattern("extract", config["datasets"], sharded=True),
        shard=r"\d+",
        shards=r"\d+",
    threads: config["extract"]["threads"]
    resources:
        **job_resources("extract_feature_shard"),
    params:
        device=config["device"],
        model=lambda w: model_spec(w.model),
        settings=lambda w: extract_settings(w.model),
        images=lambda w: dataset_images(w.dataset),
    shell:
        "peekflow extract --model {params.model:q} --checkpoint {input.checkpoint:q} --device {params.device}"
        " --images {params.images:q} --dataset-name {wildcards.dataset} --settings {params.settings:q}"
        " --shard {wildcards.shard}/{wildcards.shards} --threads {threads} --out {output.store} > {log} 2>&1"


rule merge_feature_shards:
    input:
        shards=lambda w: shard_files(f"results/features/{w.model}/{w.dataset}", shards("extract", w.dataset)),
    output:
        store=feature_store("{model}", "{dataset}"),
    log:
        "logs/features/{model}/{dataset}.log",
    benchmark:
        "results/benchmarks/merge_feature_shards/{model}/{dataset}.tsv"
    wildcard_constraints:
        dataset=sharded_pattern("extract", config["datasets"], sharded=True),
    resources:
        **job_resources("merge_feature_shards"),
    shell:
        "peekflow merge-features --shards {input.shards} --out {output.store} > {log} 2>&1"
