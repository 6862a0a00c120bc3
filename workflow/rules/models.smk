# Models trained here (those with `train:` in the config); others load a checkpoint from a path.


rule train_model:
    input:
        train=lambda w: dataset_input(model_config(w.model)["train"]["dataset"]),
        val=lambda w: dataset_input(model_config(w.model)["train"]["val_dataset"]),
    output:
        checkpoint="results/models/{model}/model.pt",
        metrics="results/models/{model}/metrics.json",
    log:
        "logs/models/{model}.log",
    benchmark:
        "results/benchmarks/train_model/{model}.tsv"
    threads: lambda w: model_config(w.model)["train"]["threads"]
    resources:
        **job_resources("train_model"),
    params:
        device=config["device"],
        model=lambda w: model_spec(w.model),
        settings=lambda w: as_json(model_config(w.model)["train"]["settings"]),
        train_images=lambda w: dataset_images(model_config(w.model)["train"]["dataset"]),
        val_images=lambda w: dataset_images(model_config(w.model)["train"]["val_dataset"]),
    shell:
        "peekflow train --model {params.model:q} --settings {params.settings:q} --device {params.device}"
        " --train-images {params.train_images:q} --val-images {params.val_images:q} --threads {threads}"
        " --out-checkpoint {output.checkpoint} --out-metrics {output.metrics} > {log} 2>&1"
