"""ddpm_lib: denoising diffusion (DDPM) on MNIST, the library behind the notebooks.

Its modules by layer, lowest first; a module imports only from its own layer and those below
(ARCHITECTURE.md says what each owns and where to add a sampler, a schedule, a widget, a command or a notebook).

machine                 constants  numbers and names several layers share
                        device     which device and precision, the CPU threads of a run
                        runfolder  run folders written whole, one writer at a time
math                    schedule   the noise schedules and their closed forms
                        unet       SimpleUNet, the network (eps or v out), optionally told the digit y
                        objective  the loss: target (eps or v) and weighting
                        mixture2d  notebook 04's 2-D Gaussian mixture with closed-form scores
data and weights        data       MNIST, fetched and verified
                        pretrained the shipped weights, checked against their manifest
                        checkpoint building, saving and loading models
                        config     TrainConfig, every training setting in one place
generation and judging  sampling   DDPM, DDIM and DPM-Solver++ (2M) as steps of one loop, classifier-free guidance
                        metrics    a digit classifier and classifier-FID
                        evaluation the model cards' figures and notebook 04's curves
                        plots      every picture and animation
training                trainer    Algorithm 1, EMA, mixed precision, a CUDA-graph step
teaching and tools      params     notebook parameters, checked; the course's notebooks
                        exercises  the notebooks' exercises: check(name, function) in one line
                        widgets    the notebooks' explorers
                        bench      speed on this machine
                        cli        the command line (python -m ddpm_lib, through __main__)
"""

from pathlib import Path

__version__ = "0.1.0"

REPO_ROOT = Path(__file__).resolve().parent.parent
