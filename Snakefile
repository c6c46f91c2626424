# COAR / COAR-EDIT workflow. Front door:  snakemake --cores all figures/fig2.pdf
# Presets: config/config.yaml (offline default), config/test.yaml (CI), config/paper.yaml (paper scale):
#   snakemake --cores all figures/fig2.pdf --configfile config/paper.yaml
# (--configfile takes several files: put targets before it, or write --configfile=config/paper.yaml)
from snakemake.utils import min_version

min_version("9.0")


# A preset given with --configfile replaces the default whole: Snakemake would otherwise deep-merge the
# two, and default-preset values (e.g. n_train) would leak silently into the paper preset.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/masks.smk"
include: "rules/regress.smk"
include: "rules/baselines.smk"
include: "rules/evaluate.smk"
include: "rules/edit.smk"
include: "rules/figures.smk"
include: "rules/efficiency.smk"
include: "rules/preflight.smk"


rule all:
    input:
        buildable_figures(),
    default_target: True
