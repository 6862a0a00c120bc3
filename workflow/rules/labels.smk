# Neuron labels of a model's layer: DORA outlier neurons (from synthetic activation-maximisation signals; the layer's
# signal file keeps every neuron's s-AMS for the atlas) and INVERT concept formulas (from the feature store's
# activations and the data set's attributes.csv).


rule find_outlier_neurons:
    input:
        checkpoint=lambda w: model_checkpoint(w.model),
    output:
        csv="results/neurons/{model}/{layer}/dora.csv",
        figure=report(
            "results/neurons/{model}/{layer}/dora.png",
            caption="../report/dora.rst",
            category="5. Neuron labels",
            subcategory="{model}: {layer}",
            labels={"method": "DORA outlier neurons"},
        ),
        signals="results/neurons/{model}/{layer}/dora_signals.h5",
    log:
        "logs/neurons/{model}/{layer}/dora.log",
    benchmark:
        "results/benchmarks/find_outlier_neurons/{model}/{layer}.tsv"
    wildcard_constraints:
        layer=dora_layer_pattern(sharded=False),
    threads: config.get("labels", {}).get("threads", 1)
    resources:
        **job_resources("find_outlier_neurons"),
    params:
        device=config["device"],
        model=lambda w: model_spec(w.model),
        settings=lambda w: stage_settings("labels.dora"),
    shell:
        "peekflow dora --model {params.model:q} --checkpoint {input.checkpoint:q} --layer {wildcards.layer:q} --device {params.device}"
        " --settings {params.settings:q} --threads {threads} --out {output.csv} --figure {output.figure}"
        " --signals {output.signals} > {log} 2>&1"


# labels.shards.dora: one job per contiguous range of the render batches of a layer's s-AMS; a killed shard leaves
# <file>.partial/ (not an output, so Snakemake keeps it) and its rerun continues after its finished batches.
rule synthesize_dora_signal_shard:
    input:
        checkpoint=lambda w: model_checkpoint(w.model),
    output:
        signals=temp("results/neurons/{model}/{layer}/dora/shard_{shard}_of_{shards}.h5"),
    log:
        "logs/neurons/{model}/{layer}/dora/shard_{shard}_of_{shards}.log",
    benchmark:
        "results/benchmarks/synthesize_dora_signal_shard/{model}/{layer}/shard_{shard}_of_{shards}.tsv"
    wildcard_constraints:
        layer=dora_layer_pattern(sharded=True),
        shard=r"\d+",
        shards=r"\d+",
    threads: config.get("labels", {}).get("threads", 1)
    resources:
        **job_resources("synthesize_dora_signal_shard"),
    params:
        device=config["device"],
        model=lambda w: model_spec(w.model),
        settings=lambda w: stage_settings("labels.dora"),
    shell:
        "peekflow dora --model {params.model:q} --checkpoint {input.checkpoint:q} --layer {wildcards.layer:q} --device {params.device}"
        " --settings {params.settings:q} --threads {threads} --shard {wildcards.shard}/{wildcards.shards}"
        " --out {output.signals} > {log} 2>&1"


rule merge_dora_signal_shards:
    input:
        shards=lambda w: shard_files(f"results/neurons/{w.model}/{w.layer}/dora", shards("labels", "dora")),
    output:
        csv="results/neurons/{model}/{layer}/dora.csv",
        figure=report(
            "results/neurons/{model}/{layer}/dora.png",
            caption="../report/dora.rst",
            category="5. Neuron labels",
            subcategory="{model}: {layer}",
            labels={"method": "DORA outlier neurons"},
        ),
        signals="results/neurons/{model}/{layer}/dora_signals.h5",
    log:
        "logs/neurons/{model}/{layer}/dora.log",
    benchmark:
        "results/benchmarks/merge_dora_signal_shards/{model}/{layer}.tsv"
    wildcard_constraints:
        layer=dora_layer_pattern(sharded=True),
    resources:
        **job_resources("merge_dora_signal_shards"),
    shell:
        "peekflow merge-dora --shards {input.shards} --out {output.csv} --figure {output.figure}"
        " --signals {output.signals} > {log} 2>&1"


rule label_neurons:
    input:
        store=invert_store,
        attributes=lambda w: invert_attributes(),
    output:
        csv="results/neurons/{model}/{layer}/invert.csv",
        figure=report(
            "results/neurons/{model}/{layer}/invert.png",
            caption="../report/invert.rst",
            category="5. Neuron labels",
            subcategory="{model}: {layer}",
            labels={"method": "INVERT concept labels"},
        ),
    log:
        "logs/neurons/{model}/{layer}/invert.log",
    benchmark:
        "results/benchmarks/label_neurons/{model}/{layer}.tsv"
    resources:
        **job_resources("label_neurons"),
    params:
        settings=lambda w: stage_settings("labels.invert"),
    shell:
        "peekflow invert --store {input.store:q} --attributes {input.attributes:q} --layer {wildcards.layer:q}"
        " --settings {params.settings:q} --out {output.csv} --figure {output.figure} > {log} 2>&1"
