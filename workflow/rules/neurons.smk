# Neurons of a model's layer: the top-N images of each channel (from a feature store's spatial maxima, or by relevance:
# neurons.ranking) and the top-k
# patches inside them (receptive field of the arg-max unit, or the original's sliding window). The report shows a
# layer's overview.png; the per-channel grids are browsed in the neuron atlas (rule build_atlas), not the report.


rule rank_top_images:
    input:
        store=lambda w: feature_store(w.model, neuron_dataset()),
        checkpoint=lambda w: model_checkpoint(w.model) if ranks_by_relevance() else [],
    output:
        topn="results/neurons/{model}/{layer}/topn.h5",
    log:
        "logs/neurons/{model}/{layer}/topn.log",
    benchmark:
        "results/benchmarks/rank_top_images/{model}/{layer}.tsv"
    threads: config.get("neurons", {}).get("threads", 1) if ranks_by_relevance() else 1
    resources:
        **job_resources("rank_top_images"),
    params:
        n=lambda w: config["neurons"]["topn"],
        ranking=ranking_args,
    shell:
        "peekflow topn --store {input.store:q} --layer {wildcards.layer:q} --n {params.n} {params.ranking}"
        " --out {output.topn} > {log} 2>&1"


rule extract_patches:
    input:
        topn="results/neurons/{model}/{layer}/topn.h5",
        checkpoint=lambda w: model_checkpoint(w.model),
    output:
        patches=report(
            directory("results/neurons/{model}/{layer}/patches"),
            patterns=["{figure,overview}.png"],
            caption="../report/patches.rst",
            category="4. Neuron patches",
            subcategory="{model}: {layer}",
            labels=patch_figure_labels,
        ),
    log:
        "logs/neurons/{model}/{layer}/patches.log",
    benchmark:
        "results/benchmarks/extract_patches/{model}/{layer}.tsv"
    wildcard_constraints:
        layer=sharded_pattern("neurons", ["patches"], sharded=False, pattern="[^/]+"),
    threads: config.get("neurons", {}).get("threads", 1)
    resources:
        **job_resources("extract_patches"),
    params:
        device=config["device"],
        model=lambda w: model_spec(w.model),
        settings=lambda w: stage_settings("neurons.patches"),
    shell:
        "peekflow patches --model {params.model:q} --checkpoint {input.checkpoint:q} --topn {input.topn:q} --device {params.device}"
        " --settings {params.settings:q} --threads {threads} --out {output.patches} > {log} 2>&1"


# neurons.shards.patches: one job per contiguous range of a layer's channel batches (patches.channel_batch); a killed
# shard leaves <file>.partial/ (not an output, so Snakemake keeps it) and its rerun continues after its finished
# batches.
rule extract_patch_shard:
    input:
        topn="results/neurons/{model}/{layer}/topn.h5",
        checkpoint=lambda w: model_checkpoint(w.model),
    output:
        patches=temp("results/neurons/{model}/{layer}/patch_shards/shard_{shard}_of_{shards}.h5"),
    log:
        "logs/neurons/{model}/{layer}/patch_shards/shard_{shard}_of_{shards}.log",
    benchmark:
        "results/benchmarks/extract_patch_shard/{model}/{layer}/shard_{shard}_of_{shards}.tsv"
    wildcard_constraints:
        layer=sharded_pattern("neurons", ["patches"], sharded=True, pattern="[^/]+"),
        shard=r"\d+",
        shards=r"\d+",
    threads: config.get("neurons", {}).get("threads", 1)
    resources:
        **job_resources("extract_patch_shard"),
    params:
        device=config["device"],
        model=lambda w: model_spec(w.model),
        settings=lambda w: stage_settings("neurons.patches"),
    shell:
        "peekflow patches --model {params.model:q} --checkpoint {input.checkpoint:q} --topn {input.topn:q} --device {params.device}"
        " --settings {params.settings:q} --threads {threads} --shard {wildcards.shard}/{wildcards.shards}"
        " --out {output.patches} > {log} 2>&1"


rule merge_patch_shards:
    input:
        shards=lambda w: shard_files(f"results/neurons/{w.model}/{w.layer}/patch_shards", shards("neurons", "patches")),
    output:
        patches=report(
            directory("results/neurons/{model}/{layer}/patches"),
            patterns=["{figure,overview}.png"],
            caption="../report/patches.rst",
            category="4. Neuron patches",
            subcategory="{model}: {layer}",
            labels=patch_figure_labels,
        ),
    log:
        "logs/neurons/{model}/{layer}/patches.log",
    benchmark:
        "results/benchmarks/merge_patch_shards/{model}/{layer}.tsv"
    wildcard_constraints:
        layer=sharded_pattern("neurons", ["patches"], sharded=True, pattern="[^/]+"),
    resources:
        **job_resources("merge_patch_shards"),
    shell:
        "peekflow merge-patches --shards {input.shards} --out {output.patches} > {log} 2>&1"


# The neuron atlas: a static site of every neuron layer of a model (top-N images with the patch boxes, patches, DORA's
# LOF score and neighbours, INVERT's formula), opened from results/atlas/<model>/index.html without a server.
rule build_atlas:
    input:
        atlas_files,
    output:
        atlas=directory("results/atlas/{model}"),
    log:
        "logs/atlas/{model}.log",
    benchmark:
        "results/benchmarks/build_atlas/{model}.tsv"
    resources:
        **job_resources("build_atlas"),
    params:
        layers=lambda w: as_json(atlas_layers(w.model)),
    shell:
        "peekflow atlas --model {wildcards.model:q} --layers {params.layers:q} --out {output.atlas} > {log} 2>&1"


# VITAL (neurons.vital): per channel of the configured layers, a feature visualisation whose relevance-weighted
# feature distributions are matched to its top patches', beside the plain channel visualisation; the probe model's
# features measure how close each sits to the patches.
rule run_vital:
    input:
        patches="results/neurons/{model}/{layer}/patches",
        topn="results/neurons/{model}/{layer}/topn.h5",
        checkpoint=lambda w: model_checkpoint(w.model),
        probe=lambda w: model_checkpoint(config["probe_model"]) if config.get("probe_model") else [],
    output:
        vital="results/neurons/{model}/{layer}/vital.h5",
        grid=report(
            "results/neurons/{model}/{layer}/vital.png",
            caption="../report/vital.rst",
            category="4. Neuron patches",
            subcategory="{model}: {layer}",
            labels={"figure": "VITAL (plain | VITAL | patches)"},
        ),
    log:
        "logs/neurons/{model}/{layer}/vital.log",
    benchmark:
        "results/benchmarks/run_vital/{model}/{layer}.tsv"
    threads: config.get("neurons", {}).get("threads", 1)
    resources:
        **job_resources("run_vital"),
    params:
        device=config["device"],
        model=lambda w: model_spec(w.model),
        settings=lambda w: stage_settings("neurons.vital"),
        probe=probe_args,
    shell:
        "peekflow vital --model {params.model:q} --checkpoint {input.checkpoint:q} --patches {input.patches:q}"
        " --topn {input.topn:q} --settings {params.settings:q} {params.probe} --device {params.device}"
        " --threads {threads} --out {output.vital} --grid {output.grid} > {log} 2>&1"
