# peekflow: what a vision network knows, without its training data. See README.md.
from pathlib import Path

from snakemake.logging import logger
from snakemake.utils import min_version

from peekflow.workflow import config_checks, config_schema, preflight, replicas, targets

min_version("8.10")

SCHEMA = "workflow/schemas/config.schema.yaml"


# The embedded default, unless config files are given: `--configfile mine.yaml` replaces it (several files combine
# in order); a section left out of them is a stage skipped.
if not workflow.overwrite_configfiles:

    configfile: Path(workflow.basedir) / "config" / "config.yaml"


# every problem of the config in one message, each with its config path: the schema's (the one that the registered
# methods and the settings classes generate; SCHEMA: its committed copy, peekflow.workflow.config_schema), names that
# point nowhere, then, once in the main process, the inputs and the model shapes (peekflow.workflow.preflight)
schema = config_schema.workflow_schema(Path(workflow.basedir) / SCHEMA)
config_checks.check(config_checks.all_problems(config, schema, inputs=workflow.is_main_process))
config_checks.fill_defaults(config, schema)
replicas.expand(config)  # a model with train.seeds or a list of checkpoints -> one model per replica
if workflow.is_main_process:  # e.g. the crop of a timm model's default preprocessing
    for note in preflight.input_notes(config):
        logger.info(f"note: {note}")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/ood.smk"
include: "workflow/rules/ood_banks.smk"
include: "workflow/rules/ood_plots.smk"
include: "workflow/rules/prototypes.smk"
include: "workflow/rules/probing.smk"
include: "workflow/rules/labels.smk"
include: "workflow/rules/neurons.smk"
include: "workflow/rules/emergence.smk"
include: "workflow/rules/semantics.smk"
include: "workflow/rules/summaries.smk"


rule all:
    default_target: True
    input:
        targets.all_outputs(config),
