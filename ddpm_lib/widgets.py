"""Interactive explorers for the notebooks, and the plumbing they share.

An explorer is a row of controls above a picture of labelled panels and a
one-line caption; every change of a control redraws the picture. The pieces
any explorer needs live in functions here (``panels_png``, ``show``) and in the
base class ``PanelExplorer``, so that each notebook's explorer only says what
to draw; ``SamplingExplorer`` adds what the explorers of sampling runs share.

Compatibility contract
----------------------
The explorers work with ipywidgets 7.7 (Google Colab) and 8.x (JupyterLab),
and degrade to a still picture where no widget frontend exists. Everything
goes through ``show``, which publishes one raw MIME bundle holding

- ``application/vnd.jupyter.widget-view+json``: the live widget, exactly the
  view ipywidgets itself publishes (7.x from ``Widget._ipython_display_``,
  8.x from ``Widget._repr_mimebundle_``), so frontends with widgets render it;
- ``image/png``: the current picture, which viewers without a kernel
  (GitHub, nbviewer) show instead;
- ``text/plain``: a fixed sentence. ``pytest --nbval`` compares only this
  one of the three, so a stored notebook stays reproducible.

ipywidgets 7 also runs a widget's ``on_displayed`` callbacks when it is
displayed; ``show`` does the same there. ipywidgets 8 has no such callbacks.

Callbacks never print: inside a notebook their output would become part of
the cell's stored output and break the comparison.
"""

from __future__ import annotations

import base64
import html
import io
from collections import OrderedDict
from collections.abc import Sequence
from typing import NamedTuple

import IPython.display
import ipywidgets
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from . import sampling
from .constants import DEFAULT_GUIDANCE
from .metrics import classify
from .plots import grid_array, to_uint8
from .sampling import DEFAULT_SAMPLER, SAMPLER_REGISTRY, SamplerName, SamplerSettings, Trajectory, get_sampler
from .schedule import SCHEDULE_REGISTRY, NoiseSchedule

WIDGET_VIEW_MIMETYPE = "application/vnd.jupyter.widget-view+json"

PANEL_SCALE = 6  # a 28-pixel digit becomes 168 screen pixels
PANEL_GAP = 10  # white pixels between neighbouring panels
TITLE_HEIGHT = 22  # pixels above the panels for their titles


def panels_png(images: torch.Tensor, titles: Sequence[str], scale: int = PANEL_SCALE) -> bytes:
    """Images (N, 1, H, W) in [-1, 1] side by side, each under its title, as PNG bytes.

    All panels share one grey scale, -1 black and +1 white, with values beyond
    clipped (as in ``plots.to_uint8``), so that pictures of noise and of
    digits can be compared by eye.
    """
    if len(images) != len(titles):
        raise ValueError(f"got {len(images)} images but {len(titles)} titles")
    panels = [_enlarge(Image.fromarray(pixels), scale) for pixels in to_uint8(images)]
    side, height = panels[0].width, max(panel.height for panel in panels)
    canvas = Image.new("L", (len(panels) * (side + PANEL_GAP) - PANEL_GAP, TITLE_HEIGHT + height), color=255)
    draw = ImageDraw.Draw(canvas)
    font = _title_font()
    for i, (panel, title) in enumerate(zip(panels, titles, strict=True)):
        left = i * (side + PANEL_GAP)
        canvas.paste(panel, (left, TITLE_HEIGHT))
        # Centred by measuring the text: Pillow's anchor option needs a TrueType font, which not every install has.
        x0, y0, x1, y1 = draw.textbbox((0, 0), title, font=font)
        draw.text((left + (side - (x1 - x0)) / 2 - x0, (TITLE_HEIGHT - (y1 - y0)) / 2 - y0), title, fill=0, font=font)
    return _encode_png(canvas)


def show(widget: ipywidgets.Widget, fallback_png: bytes, label: str) -> None:
    """Display ``widget`` live where widgets work, and ``fallback_png`` where they do not.

    ``label`` names the widget in the plain-text form, the only part that
    ``pytest --nbval`` compares; keep it free of anything that varies.
    """
    IPython.display.display(
        {
            WIDGET_VIEW_MIMETYPE: {"version_major": 2, "version_minor": 0, "model_id": widget.model_id},
            "image/png": base64.b64encode(fallback_png).decode("ascii"),
            "text/plain": f"[interactive: {label} — run the notebook in Jupyter to use the controls]",
        },
        raw=True,
    )
    # ipywidgets 7 runs the on_displayed callbacks after publishing the view; 8 removed them.
    handle_displayed = getattr(widget, "_handle_displayed", None)
    if handle_displayed is not None:
        handle_displayed()


class PanelExplorer:
    """Controls on top, a picture of labelled panels below them, and a caption under it.

    A subclass sets up whatever ``panels`` and ``caption_html`` read, then
    passes its controls to ``__init__``, which draws the first picture; the
    picture and the caption are redrawn whenever a control's value changes.
    ``buttons`` join the controls in their row; what a click does is up to the
    subclass. ``panel_scale`` is how many screen pixels each image pixel gets.

    ``widget`` is the whole explorer, ``image`` the picture (an ``ipywidgets.Image``)
    and ``caption`` the text under it.
    """

    panel_scale: int = PANEL_SCALE

    def __init__(self, controls: Sequence[ipywidgets.ValueWidget], label: str, buttons: Sequence[ipywidgets.Button] = ()):
        self.label = label
        # Kept at its own size: a box would otherwise stretch it to the full width, blurring pixels and titles.
        self.image = ipywidgets.Image(format="png", layout=ipywidgets.Layout(align_self="flex-start"))
        self.caption = ipywidgets.HTML()
        self.widget = ipywidgets.VBox([ipywidgets.HBox([*controls, *buttons]), self.image, self.caption])
        for control in controls:
            control.observe(self.redraw, names="value")
        self.redraw()

    def panels(self) -> tuple[torch.Tensor, list[str]]:
        """The images to show now, (N, 1, H, W) in [-1, 1], and a title for each."""
        raise NotImplementedError

    def caption_html(self) -> str:
        """The caption for the current state of the controls, as HTML."""
        raise NotImplementedError

    def render(self) -> bytes:
        """The picture for the current state of the controls, as PNG bytes."""
        images, titles = self.panels()
        return panels_png(images, titles, self.panel_scale)

    def display(self) -> None:
        """Show the explorer in the notebook (a still picture where widgets cannot run)."""
        show(self.widget, self.image.value, self.label)

    def redraw(self, _change: dict | None = None) -> None:
        """Bring picture and caption up to date; controls call it on every change, and a
        subclass may call it after changing its state some other way (a button, say)."""
        self.image.value = self.render()
        self.caption.value = self.caption_html()


class ForwardNoisingExplorer(PanelExplorer):
    """Pick a digit, a schedule and a timestep; see x_0, the noise eps, and x_t.

    x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps comes from
    ``NoiseSchedule.q_sample``. Each digit has its own noise, drawn once from
    ``seed``, so moving ``t`` shows the same noise taking over the same digit.

    The slider ``t`` holds the code index 0 .. T-1; everything shown to the
    reader uses the paper's t = index + 1 (see ``ddpm_lib.schedule``).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None, timesteps: int = 1000, seed: int = 0):
        self.images = images.detach().float().cpu()
        self.noise = torch.randn(self.images.shape, generator=torch.Generator().manual_seed(seed))
        self.schedules = {kind: NoiseSchedule(kind, timesteps) for kind in SCHEDULE_REGISTRY}

        # The slider's own readout would show the code index; the caption shows the paper's t instead.
        self.t = ipywidgets.IntSlider(value=timesteps // 4 - 1, min=0, max=timesteps - 1, description="t", readout=False)
        self.schedule = ipywidgets.Dropdown(options=list(self.schedules), value=next(iter(self.schedules)), description="schedule")
        names = [f"#{i}" if labels is None else f"#{i}: a {int(labels[i])}" for i in range(len(self.images))]
        self.digit = ipywidgets.Dropdown(options=[(name, i) for i, name in enumerate(names)], value=0, description="digit")
        super().__init__([self.t, self.schedule, self.digit], label="forward noising explorer")

    def x_t(self) -> torch.Tensor:
        """The chosen digit noised to the chosen t, shape (1, 1, H, W)."""
        digit = self.digit.value
        x0, noise = self.images[digit : digit + 1], self.noise[digit : digit + 1]
        return self.schedules[self.schedule.value].q_sample(x0, torch.tensor([self.t.value]), noise)

    def panels(self) -> tuple[torch.Tensor, list[str]]:
        digit = self.digit.value
        images = torch.cat([self.images[digit : digit + 1], self.noise[digit : digit + 1], self.x_t()])
        return images, ["x_0 (digit)", "eps (noise)", f"x_t at t = {self.t.value + 1}"]

    def caption_html(self) -> str:
        schedule, t = self.schedules[self.schedule.value], self.t.value
        return (
            f"<b>t = {t + 1}</b> of {schedule.timesteps}, {schedule.label} schedule: "
            f"ᾱ<sub>t</sub> = {schedule.alpha_bars[t].item():.4g}, SNR = {schedule.snr[t].item():.4g}, "
            f"so x<sub>t</sub> = {schedule.sqrt_alpha_bars[t].item():.3f}&thinsp;x<sub>0</sub> "
            f"+ {schedule.sqrt_one_minus_alpha_bars[t].item():.3f}&thinsp;ε"
        )


COMPACT = {"style": {"description_width": "initial"}}  # labels sized to their text, so a row of controls fits


def grid_panel(images: torch.Tensor, nrow: int | None = None) -> torch.Tensor:
    """Digits (N, 1, H, W) tiled as in the notebooks' grids (``plots.grid_array``), as one panel (1, H', W') in [-1, 1]."""
    # grid_array gives uint8; panels_png expects [-1, 1].
    return torch.from_numpy(grid_array(images, nrow)).float().div(127.5).sub(1).unsqueeze(0)


class SamplerControls:
    """The controls both sampling explorers share: sampler, steps, seed, and a Sample button.

    The sampler menu offers every sampler in ``sampling.SAMPLER_REGISTRY``.
    ``steps`` is greyed out while the chosen sampler ignores it (DDPM always
    takes all T steps).
    """

    STEP_CHOICES = (10, 20, 50, 100)

    def __init__(self, schedule: NoiseSchedule, sampler: SamplerName, steps: int, seed: int, tooltip: str):
        step_choices = [choice for choice in self.STEP_CHOICES if choice <= schedule.timesteps]
        uses_steps = get_sampler(sampler).uses_steps
        if steps not in step_choices:
            raise ValueError(f"steps must be one of {step_choices}, got {steps!r}")
        self.timesteps = schedule.timesteps
        self.sampler = ipywidgets.Dropdown(
            options=list(SAMPLER_REGISTRY), value=sampler, description="sampler", layout=ipywidgets.Layout(width="140px"), **COMPACT
        )
        self.steps = ipywidgets.Dropdown(
            options=step_choices, value=steps, description="steps", disabled=not uses_steps,
            layout=ipywidgets.Layout(width="120px"), **COMPACT,
        )  # fmt: skip
        self.seed = ipywidgets.IntText(value=seed, description="seed", layout=ipywidgets.Layout(width="120px"), **COMPACT)
        self.button = ipywidgets.Button(description="Sample", tooltip=tooltip, button_style="primary")
        self.sampler.observe(self._offer_steps_only_where_used, names="value")

    def requested_steps(self) -> int:
        """Steps of the run the controls ask for: whatever ``steps`` says, or T for a sampler that ignores it."""
        return get_sampler(self.sampler.value).steps_visited(self.steps.value, self.timesteps)

    def _offer_steps_only_where_used(self, change: dict) -> None:
        self.steps.disabled = not get_sampler(change["new"]).uses_steps


def describe_run(sampler: SamplerName, steps: int) -> str:
    """A run whose number of steps is already known (T for DDPM) in words, e.g. "DDIM, 50 steps"."""
    return get_sampler(sampler).describe(steps, timesteps=steps)


class SamplingExplorer(PanelExplorer):
    """A ``PanelExplorer`` over sampling runs, behind the ``SamplerControls`` and a Sample button.

    The controls take effect when **Sample** is pressed, not at once: a run is
    slow (DDPM makes T network calls, one to two minutes for 16 digits on a
    CPU), and a reader may want to change more than one of them first. Until
    then the caption says that the picture and the controls disagree. If a run
    fails, the caption says why and the picture stays; a callback that raised
    or printed would land in the cell's stored output instead.

    The ``RUNS_KEPT`` most recent runs are kept by their settings, so going back
    to earlier settings is instant.

    A subclass says what decides a run (``requested``: settings whose ``str``
    names the run), how to draw one (``draw``) and how to show the requested
    run (``show_run``: fetch what it needs through ``run_for``, then put it
    where ``panels`` and ``caption_html`` read it). ``leading`` controls come
    before the sampler's in the row.
    """

    RUNS_KEPT: int

    def __init__(self, controls: SamplerControls, leading: Sequence[ipywidgets.ValueWidget], label: str):
        self.controls = controls
        self.sampler, self.steps, self.seed, self.sample_button = controls.sampler, controls.steps, controls.seed, controls.button
        self.runs: OrderedDict[tuple, object] = OrderedDict()  # by settings, least recently used first
        self.shown = self.requested()
        self.show_run(self.shown)
        super().__init__([*leading, self.sampler, self.steps, self.seed], label, buttons=[self.sample_button])
        self.sample_button.on_click(self.show_requested)

    def requested(self) -> tuple:
        """The settings of the run the controls ask for."""
        raise NotImplementedError

    def draw(self, settings: tuple) -> object:
        """Draw the run with ``settings`` (slow)."""
        raise NotImplementedError

    def show_run(self, settings: tuple) -> None:
        """Make the run with ``settings`` the one ``panels`` and ``caption_html`` read; leave everything as it was if drawing fails."""
        raise NotImplementedError

    def run_for(self, settings: tuple) -> object:
        """The run with ``settings``: kept from before, or drawn now and kept."""
        run = self.runs[settings] if settings in self.runs else self.draw(settings)
        self.keep(settings, run)
        return run

    def keep(self, settings: tuple, run: object) -> None:
        """Keep ``run`` as the most recent, forgetting the oldest beyond ``RUNS_KEPT``."""
        self.runs[settings] = run
        self.runs.move_to_end(settings)
        while len(self.runs) > self.RUNS_KEPT:
            self.runs.popitem(last=False)

    def show_requested(self, _button: ipywidgets.Button | None = None) -> None:
        """Show the run the controls ask for, drawing it first unless it is kept (the Sample button)."""
        settings = self.requested()
        if settings not in self.runs:
            self.caption.value = f"Sampling {settings} …"
        try:
            self.show_run(settings)
        except Exception as error:  # raised in a callback, it would land in the cell's output; the caption is the place
            self.caption.value = f"<b>Sampling {settings} failed</b>: {html.escape(f'{type(error).__name__}: {error}')}"
            return
        self.shown = settings
        self.redraw()

    def waiting_for_sample(self) -> str:
        """The end of the caption while the controls ask for another run than the one shown, else nothing."""
        requested = self.requested()
        return "" if requested == self.shown else f". The controls ask for {requested}: press <b>Sample</b> to see it."


class SamplingSettings(NamedTuple):
    """What decides a sampling run: the sampler, its number of steps (T for DDPM) and the seed."""

    sampler: SamplerName
    steps: int
    seed: int

    def __str__(self) -> str:
        return f"{describe_run(self.sampler, self.steps)}, seed {self.seed}"


class ReverseSamplingExplorer(SamplingExplorer):
    """Scrub through a sampling run: x_t and the network's guesses of x_0 and of the noise, at every step.

    A run is drawn once, its ``Trajectory`` made from the steps ``sampling.sample_steps``
    yields; it holds all three pictures for every visited step, so moving
    ``t`` only redraws from it. ``sampler``, ``steps`` and ``seed`` take effect
    when **Sample** is pressed (see ``SamplingExplorer``); ``remember`` adds a
    run drawn elsewhere to the kept ones.

    The slider ``t`` holds the row of the trajectory: the first visited step
    (the paper's t = T, pure noise) on the left, the last (t = 1) on the right.
    The caption shows the paper's t of the row.
    """

    RUNS_KEPT = 4  # one DDPM run of 16 digits holds 3 x 1000 x 16 images, about 150 MB
    panel_scale = 2  # each panel is a whole grid of digits, not a single one

    def __init__(
        self, model: nn.Module, schedule: NoiseSchedule, n: int = 16, sampler: SamplerName = DEFAULT_SAMPLER, steps: int = 50, seed: int = 0
    ):
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        self.model, self.schedule, self.n = model, schedule, n
        # The slider's own readout would show the row; the caption shows the paper's t instead. Its range follows the run shown.
        self.step = ipywidgets.IntSlider(
            value=0, min=0, max=0, description="t", readout=False, layout=ipywidgets.Layout(width="300px"), **COMPACT
        )
        controls = SamplerControls(schedule, sampler, steps, seed, tooltip="draw a run with these settings")
        super().__init__(controls, [self.step], label="reverse sampling explorer")

    def requested(self) -> SamplingSettings:
        """The run the controls ask for; DDPM always visits all T steps, whatever ``steps`` says."""
        return SamplingSettings(self.sampler.value, self.controls.requested_steps(), self.seed.value)

    def draw(self, settings: SamplingSettings) -> Trajectory:
        steps = sampling.sample_steps(
            self.model, self.schedule, self.n, settings.sampler, SamplerSettings(steps=settings.steps), seed=settings.seed
        )
        return Trajectory.from_steps(steps)

    def show_run(self, settings: SamplingSettings) -> None:
        """Show the run with ``settings`` at its last step."""
        self.trajectory = self.run_for(settings)
        last = len(self.trajectory.timesteps) - 1
        # Range and value change together: one at a time, the old range could clamp the new value.
        with self.step.hold_trait_notifications():
            self.step.max = last
            self.step.value = last

    def remember(self, trajectory: Trajectory, sampler: SamplerName, seed: int) -> None:
        """Keep a run drawn elsewhere, so that choosing its settings and pressing Sample shows it at once.

        The number of steps is read off the trajectory. It must come from this
        explorer's model and schedule with ``n`` samples; only ``n`` can be checked.
        """
        get_sampler(sampler)  # refuses an unknown name
        if trajectory.x_t.shape[1] != self.n:
            raise ValueError(f"the trajectory holds {trajectory.x_t.shape[1]} samples, but this explorer shows n = {self.n}")
        self.keep(SamplingSettings(sampler, len(trajectory.timesteps), seed), trajectory)

    def panels(self) -> tuple[torch.Tensor, list[str]]:
        row = self.step.value
        pictures = (self.trajectory.x_t, self.trajectory.x0_pred, self.trajectory.noise_pred)
        t = self.trajectory.timesteps[row] + 1
        return torch.stack([grid_panel(picture[row]) for picture in pictures]), [f"x_t at t = {t}", "predicted x_0", "predicted noise"]

    def caption_html(self) -> str:
        row, rows = self.step.value, len(self.trajectory.timesteps)
        return (
            f"<b>t = {self.trajectory.timesteps[row] + 1}</b>, step {row + 1} of {rows} of the run {self.shown}" + self.waiting_for_sample()
        )


class GuidanceSettings(NamedTuple):
    """What decides a guided run: the digit asked for (ALL_DIGITS: rows of 0-9), w, the sampler, its steps, the seed."""

    digit: int
    guidance: float
    sampler: SamplerName
    steps: int
    seed: int

    def __str__(self) -> str:
        digits = "rows of 0-9" if self.digit == GuidanceExplorer.ALL_DIGITS else f"{self.digit}s"
        return f"{digits}, w = {self.guidance:g}, {describe_run(self.sampler, self.steps)}, seed {self.seed}"


class GuidanceExplorer(SamplingExplorer):
    """Ask a class-conditional model for a digit: choose it, the guidance weight w and the sampler, press Sample.

    Beside the grid drawn with the chosen w is the same request at w = 0 (the
    label ignored, same noise), so the effect of guidance is seen against no
    guidance. With a ``classifier`` the caption says how many of the digits it
    reads as the one asked for. The controls take effect on **Sample** (see
    ``SamplingExplorer``).
    """

    ALL_DIGITS = -1
    GUIDANCE_MAX = 8.0
    RUNS_KEPT = 16  # only final images are kept: 16 runs of 20 digits are a few MB
    panel_scale = 2

    def __init__(
        self,
        model: nn.Module,
        schedule: NoiseSchedule,
        n: int = 20,
        digit: int = ALL_DIGITS,
        guidance: float = DEFAULT_GUIDANCE,
        sampler: SamplerName = DEFAULT_SAMPLER,
        steps: int = 20,
        seed: int = 0,
        classifier: nn.Module | None = None,
    ):
        checks = [
            ("model", getattr(model, "conditional", False), "a class-conditional model (trained with --conditional)"),
            ("n", n >= 1, "at least 1"),
            ("digit", digit == self.ALL_DIGITS or 0 <= digit <= 9, "0..9 or GuidanceExplorer.ALL_DIGITS"),
            ("guidance", 0 <= guidance <= self.GUIDANCE_MAX, f"between 0 and {self.GUIDANCE_MAX:g}"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"{name} must be {expected}")
        self.model, self.schedule, self.n, self.classifier = model, schedule, n, classifier
        self.digit = ipywidgets.Dropdown(
            options=[("0-9", self.ALL_DIGITS)] + [(str(k), k) for k in range(10)], value=digit, description="digit",
            layout=ipywidgets.Layout(width="120px"), **COMPACT,
        )  # fmt: skip
        self.guidance = ipywidgets.FloatSlider(
            value=guidance, min=0, max=self.GUIDANCE_MAX, step=0.5, description="w", layout=ipywidgets.Layout(width="260px"), **COMPACT
        )
        controls = SamplerControls(schedule, sampler, steps, seed, tooltip="draw digits with these settings")
        super().__init__(controls, [self.digit, self.guidance], label="guidance explorer")

    def requested(self) -> GuidanceSettings:
        return GuidanceSettings(
            self.digit.value, float(self.guidance.value), self.sampler.value, self.controls.requested_steps(), self.seed.value
        )

    def labels(self, digit: int) -> torch.Tensor:
        return sampling.balanced_labels(self.n) if digit == self.ALL_DIGITS else torch.full((self.n,), digit)

    def draw(self, settings: GuidanceSettings) -> torch.Tensor:
        guidance = sampling.Guidance(self.labels(settings.digit), settings.guidance)
        return sampling.sample(
            self.model, self.schedule, self.n, settings.sampler, settings.steps, seed=settings.seed, guidance=guidance
        ).images.cpu()

    def show_run(self, settings: GuidanceSettings) -> None:
        """Show the digits drawn with ``settings`` and their w = 0 twin (kept apart, so other w share it)."""
        images, unguided = self.run_for(settings), self.run_for(settings._replace(guidance=0.0))
        self.images, self.unguided = images, unguided

    def panels(self) -> tuple[torch.Tensor, list[str]]:
        nrow = 10 if self.shown.digit == self.ALL_DIGITS else None
        grids = torch.stack([grid_panel(images, nrow) for images in (self.images, self.unguided)])
        return grids, [f"w = {self.shown.guidance:g}", "w = 0 (label ignored)"]

    def caption_html(self) -> str:
        caption = f"<b>{self.shown}</b>"
        if self.classifier is not None:
            asked = self.labels(self.shown.digit)
            hits = [int((classify(self.classifier, images)[1].argmax(1) == asked).sum()) for images in (self.images, self.unguided)]
            caption += f": the classifier reads {hits[0]} of {self.n} as the digit asked for ({hits[1]} at w = 0)"
        return caption + self.waiting_for_sample()


def _enlarge(picture: Image.Image, scale: int) -> Image.Image:
    # Nearest neighbour keeps each pixel a sharp square, which is what a 28 x 28 digit really is.
    return picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)


def _encode_png(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def _title_font() -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=14)
    except TypeError:  # Pillow before 10.1 has only its small fixed-size font
        return ImageFont.load_default()
