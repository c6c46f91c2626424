# `snakemake preflight --configfile config/paper.yaml`: check this site before a run (data sources, published
# weights, GPUs, disk; under the SLURM executor also the profile's partitions) and print the run's cost plan, as
# `coar preflight` does (coar.paper.preflight). Nothing is downloaded and nothing of the run is built.


rule preflight:
    """Check the site for every figure the preset configures and print the cost plan (also to the log). Fails,
    naming what to run or change, when a check fails. A local rule: on a cluster it runs on the login node,
    where the GPU check is deferred to the GPU partition of workflow/profiles/slurm."""
    localrule: True
    log:
        "logs/preflight.log",
    params:
        configfiles=lambda w: [str(p) for p in workflow.configfiles] or ["config/config.yaml"],
        slurm=lambda w: getattr(workflow.executor_plugin, "name", None) == "slurm",
    run:
        from coar.paper.preflight import workflow_preflight

        workflow_preflight(params.configfiles, log[0], slurm=params.slurm)
