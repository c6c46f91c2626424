# The config checked before any job runs, and the names the rules call. The logic lives in coar.paper.plan (plain
# Python, unit tested in tests/test_plan.py); this file builds the plan from the config and binds its methods,
# re-raising the plan's ConfigError as Snakemake's WorkflowError with the same message.
import functools
import re

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from coar.paper.data.sources import source_root, sources
from coar.paper.hub import ASSETS
from coar.paper.plan import (ConfigError, Plan, check_duplicate_keys, check_schema, drawing, resolve_parents,
                             suptitle, unknown_figure, unknown_figure_pattern)


def _workflow_errors(fn):
    """fn, raising the plan's ConfigError as a WorkflowError (same message)."""

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            raise WorkflowError(str(exc)) from None

    return call


@_workflow_errors
def _plan():
    """No key given twice in a config file, parents resolved, every schema violation reported at once, the
    schema's defaults filled in, then the checks across keys."""
    for path in workflow.configfiles:
        check_duplicate_keys(path)
    resolve_parents(config)
    check_schema(config, workflow.source_path("../workflow/schemas/config.schema.yaml"))
    validate(config, "../workflow/schemas/config.schema.yaml")  # fills in the schema's defaults
    plan = Plan(config)
    plan.check()
    return plan


PLAN = _plan()
SETUPS = PLAN.setups
ENV = "../environment.yml"

setup_spec = _workflow_errors(PLAN.setup_spec)
fit_spec = _workflow_errors(PLAN.fit_spec)
examples_spec = _workflow_errors(PLAN.examples_spec)
mask_settings = _workflow_errors(PLAN.mask_settings)
sample_sizes = _workflow_errors(PLAN.sample_sizes)
shift_spec = _workflow_errors(PLAN.shift_spec)

examples_file = _workflow_errors(PLAN.examples_file)
model_file = _workflow_errors(PLAN.model_file)
train_receipt = _workflow_errors(PLAN.train_receipt)
test_receipt = _workflow_errors(PLAN.test_receipt)
test_receipts = _workflow_errors(PLAN.test_receipts)
shard_receipts = _workflow_errors(PLAN.shard_receipts)
attribution_file = _workflow_errors(PLAN.attribution_file)
attribution_files = _workflow_errors(PLAN.attribution_files)
evaluation_files = _workflow_errors(PLAN.evaluation_files)
heldout_file = _workflow_errors(PLAN.heldout_file)
shift_files = _workflow_errors(PLAN.shift_files)
forget_outputs = _workflow_errors(PLAN.forget_outputs)

edit_setup = _workflow_errors(PLAN.edit_setup)
edits_of_kind = _workflow_errors(PLAN.edits_of_kind)

buildable_figures = _workflow_errors(PLAN.buildable_figures)
figure_setups = _workflow_errors(PLAN.figure_setups)
figure_specs = _workflow_errors(PLAN.figure_specs)
fig27_setting = _workflow_errors(PLAN.fig27_setting)
fetch_manifests = _workflow_errors(PLAN.fetch_manifests)
attribution_setup = _workflow_errors(PLAN.attribution_setup)
edit_figure = _workflow_errors(PLAN.edit_figure)
figure_edits = _workflow_errors(PLAN.figure_edits)
forget_classes_shown = _workflow_errors(PLAN.forget_classes_shown)
efficiency_setups = _workflow_errors(PLAN.efficiency_setups)
efficiency_alphas = _workflow_errors(PLAN.efficiency_alphas)
efficiency_test_receipts = _workflow_errors(PLAN.efficiency_test_receipts)


@_workflow_errors
def fit_inputs(wildcards):
    return PLAN.fit_inputs(wildcards.setup)


@_workflow_errors
def source_manifest(dataset, corruption=None):
    """The manifest of the data source a job reads. `ancient`: it orders the jobs (the source is obtained once,
    before any reader starts) without making readers stale when it is rewritten."""
    return ancient(PLAN.source_manifest(dataset, corruption))


@_workflow_errors
def setup_source(setup):
    return ancient(PLAN.setup_source(setup))


@_workflow_errors
def model_sources(setup):
    return [ancient(path) for path in PLAN.model_sources(setup)]


@_workflow_errors
def model_inputs(setup):
    """A model job's data sources and the published weights it loads (ordering only, as source_manifest)."""
    return [ancient(path) for path in PLAN.model_sources(setup) + PLAN.weights_manifests(setup, "model")]


@_workflow_errors
def training_priority(wildcards):
    """A model job's priority: above every job that waits on a model (50), and the longest training first (it
    bounds the run: in Fig. 2, B trains about 12 times as long as A), by the log2 of its estimated CPU seconds."""
    import math

    from coar.paper.preflight import training_seconds

    seconds = training_seconds(SETUPS[wildcards.setup])
    return 50 + (0 if seconds is None else min(49, int(math.log2(1.0 + seconds))))


@_workflow_errors
def examples_inputs(setup):
    """An examples job's data source and the tokenizer it encodes text with."""
    return [setup_source(setup)] + [ancient(path) for path in PLAN.weights_manifests(setup, "examples")]


@_workflow_errors
def _unknown_figure(wildcards):
    unknown_figure(wildcards.n)
