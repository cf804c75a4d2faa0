"""ddpm_lib: denoising diffusion (DDPM) on MNIST, the library behind the notebooks.

schedule   the noise schedule and its closed forms            (no learning)
unet       SimpleUNet, the denoising network (eps or v out),    (the network)
           optionally told the digit y
objective  the loss: target (eps or v) and weighting           (what is learned)
config     TrainConfig, every training setting in one place
trainer    Algorithm 1, EMA, mixed precision, a CUDA-graph step (learning)
checkpoint building, saving and loading models
sampling   DDPM, DDIM and DPM-Solver++ (2M) as steps of one    (generation)
           loop, classifier-free guidance
data       MNIST, fetched and verified                         (input)
metrics    a digit classifier and classifier-FID               (judging)
evaluation the model cards' figures and notebook 04's curves
exercises  the notebooks' exercises: check(name, function) in one line
device, runfolder, params, pretrained, plots, widgets, cli, bench   (around them)

ARCHITECTURE.md gives the modules in dependency order.
"""

from pathlib import Path

__version__ = "0.1.0"

REPO_ROOT = Path(__file__).resolve().parent.parent
