# Neuron labels of a model's layer: DORA outlier neurons (from synthetic activation-maximisation signals) and INVERT
# concept formulas (from the feature store's activations and the data set's attributes.csv).


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
    log:
        "logs/neurons/{model}/{layer}/dora.log",
    benchmark:
        "results/benchmarks/find_outlier_neurons/{model}/{layer}.tsv"
    threads: config.get("labels", {}).get("threads", 1)
    resources:
        **job_resources("find_outlier_neurons"),
    params:
        device=config["device"],
        model=lambda w: model_spec(w.model),
        settings=lambda w: dora_settings(),
    shell:
        "peekflow dora --model {params.model:q} --checkpoint {input.checkpoint:q} --layer {wildcards.layer:q} --device {params.device}"
        " --settings {params.settings:q} --threads {threads} --out {output.csv} --figure {output.figure}"
        " > {log} 2>&1"


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
        settings=lambda w: invert_settings(),
    shell:
        "peekflow invert --store {input.store:q} --attributes {input.attributes:q} --layer {wildcards.layer:q}"
        " --settings {params.settings:q} --out {output.csv} --figure {output.figure} > {log} 2>&1"
