# Neurons of a model's layer: the top-N images of each channel (from a feature store's spatial maxima) and the top-k
# patches inside them (receptive field of the arg-max unit, or the original's sliding window).


rule rank_top_images:
    input:
        store=lambda w: feature_store(w.model, neuron_dataset()),
    output:
        topn="results/neurons/{model}/{layer}/topn.h5",
    log:
        "logs/neurons/{model}/{layer}/topn.log",
    benchmark:
        "results/benchmarks/rank_top_images/{model}/{layer}.tsv"
    resources:
        **job_resources("rank_top_images"),
    params:
        n=lambda w: config["neurons"]["topn"],
    shell:
        "peekflow topn --store {input.store:q} --layer {wildcards.layer:q} --n {params.n}"
        " --out {output.topn} > {log} 2>&1"


rule extract_patches:
    input:
        topn="results/neurons/{model}/{layer}/topn.h5",
        checkpoint=lambda w: model_checkpoint(w.model),
    output:
        patches=report(
            directory("results/neurons/{model}/{layer}/patches"),
            patterns=["{figure}.png"],
            caption="../report/patches.rst",
            category="4. Neuron patches",
            subcategory="{model}: {layer}",
            labels=patch_figure_labels,
        ),
    log:
        "logs/neurons/{model}/{layer}/patches.log",
    benchmark:
        "results/benchmarks/extract_patches/{model}/{layer}.tsv"
    threads: config.get("neurons", {}).get("threads", 1)
    resources:
        **job_resources("extract_patches"),
    params:
        device=config["device"],
        model=lambda w: model_spec(w.model),
        settings=lambda w: patch_settings(),
    shell:
        "peekflow patches --model {params.model:q} --checkpoint {input.checkpoint:q} --topn {input.topn:q} --device {params.device}"
        " --settings {params.settings:q} --threads {threads} --out {output.patches} > {log} 2>&1"
