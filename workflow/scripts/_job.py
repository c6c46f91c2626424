"""What every workflow script does first: log to the job's log file, throttle progress bars, run torch
with the job's declared threads (no oversubscription), pick the device, load the setup's model."""
import os
import sys


def start(sm, torch: bool = True, online: bool = False) -> str:
    """Redirect output to the log, set threads; returns the device: "cpu", or "cuda:k" for a rule with gpu > 0
    where CUDA is available, k the GPU this job claimed (coar.gpus.claim: one no other job holds, kept until the
    job ends; it becomes torch's current device too, so a bare "cuda" in the job means the same GPU).

    online=False (every job but the local rules that fetch: `dataset`, `weights`): huggingface_hub and
    transformers run offline (HF_HUB_OFFLINE), as on a compute node without network access: what a job loads
    was fetched before it started, and what was not fails at once naming the rule that fetches it (coar.paper.hub)
    instead of waiting on the network.

    torch=False: the script needs torch only on a GPU (tables, figures, checks, the CPU regression), so it is
    not imported unless the rule asks for a GPU on a machine that may have one: such a job's imports take
    0.7 s instead of 2.3 s (measured), and the default run has 199 of them. tests/test_workflow.py checks
    that such scripts' imports leave torch out. On a machine without a GPU, outside SLURM, every job runs in a
    child forked from a warm server that imported torch, torchvision, captum, pandas, matplotlib and coar once
    (coar.paper.jobserver; COAR_JOB_SERVER=0 turns it off): the same script, the same results, 0.5-4 s less."""
    # on a CPU machine, run in the warm process that has torch, pandas, matplotlib and coar imported
    from coar.paper import jobserver

    forked = jobserver.in_child()
    script = getattr(sys.modules["__main__"], "__file__", None)  # Snakemake's preamble sets the script's path
    if not forked and script and not cuda_possible():
        jobserver.hand_off(sm, script)  # returns only if the job should run here
    sys.stderr = sys.stdout = open(sm.log[0], "w", buffering=1)
    if forked:
        print(f"forked from the warm job server (process {os.getppid()}: torch and coar imported before the job; "
              "COAR_JOB_SERVER=0 turns it off)")
    if not online:
        os.environ["HF_HUB_OFFLINE"] = os.environ["TRANSFORMERS_OFFLINE"] = "1"
        from coar.paper.hub import require, required_by

        for name in required_by(getattr(sm, "input", ())):  # published weights / tokenizers this job loads: in the cache?
            require(name)
    os.environ.setdefault("TQDM_MININTERVAL", "15")  # a progress line every 15 s in the log, not every step
    if not torch and not (sm.resources.get("gpu", 0) and cuda_possible()):
        return "cpu"
    import torch as _torch

    _torch.set_num_threads(sm.threads)
    if not (_torch.cuda.is_available() and sm.resources.get("gpu", 0)):
        return "cpu"
    from coar import gpus

    k = gpus.claim(_torch.cuda.device_count())
    _torch.cuda.set_device(k)
    return f"cuda:{k}"


def cuda_possible() -> bool:
    """False when the machine has no GPU device file: see coar.paper.jobserver.gpu_possible."""
    from coar.paper.jobserver import gpu_possible

    return gpu_possible()


def model_and_components(checkpoint, spec, device):
    from coar.components import component_set
    from coar.paper.training import load_checkpoint

    model, ck = load_checkpoint(checkpoint, device)
    return model, component_set(model, spec["components"] or spec["model"])


def provenance(preset, setups) -> str:
    """Footer naming the preset, and for every setup its model, data, masks and examples."""
    import coar

    parts = []
    for name, v in setups.items():
        ablation = f", {v['ablation']} ablation (gamma {v['gamma']:g})" if v.get("ablation") == "scale" else ""
        parts.append(f"{name}: {v['model']} on {v['dataset']}, {v['masks']:,} masks at alpha {v['alpha_train']:g}"
                     f"{ablation}, {v['examples'].get('n') or 'all'} {v['examples']['split']} examples")
    warning = ("REHEARSAL on miniature fake data with random weights, not results | "
               if "rehearsal" in str(preset) else "")  # workflow/rehearsal/preset.py names its preset so
    return f"{warning}preset: {preset} | " + " | ".join(parts) + f" | coar {coar.__version__}"
