"""Published figures of a suite (configs/eval/published/<suite>.yaml), to print beside our results.

A file names its source, what its "±" means (spread: std over seeds; range, max - min over seeds,
the JanusDNA paper's error bars; none, single values), the model variants it reports (key ->
label, size) and per task the metric and the figures (model key -> mean, spread or null):

    schema: janus-published-v1
    suite: nt
    source: JanusDNA README.md:19-40 (...)
    spread: range
    models: {janusdna: {label: JanusDNA w/o midattn, params_m: 1.988}}
    tasks:
      H3: {metric: mcc, readme_name: H3, results: {janusdna: {mean: 0.824, spread: 0.012}}}

Unknown keys, wrong types, a result for an undeclared model, a mean outside [0, 1], or a spread
that disagrees with the file's kind are ConfigErrors naming the file and the key.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from janus_pretrain.config_schema import ConfigError, build_section, safe_load_yaml

PUBLISHED_SCHEMA = "janus-published-v1"
SPREAD_KINDS = ("std", "range", "none")  # sample std over seeds; max - min over seeds; single values


def figure_text(mean: float, spread: float | None, kind: str) -> str:
    """One published figure as results.md prints it: 0.835 ± 0.009 (std), 0.835 (range 0.009), 0.835."""
    if spread is None:
        return f"{mean:.3f}"
    return f"{mean:.3f} (range {spread:.3f})" if kind == "range" else f"{mean:.3f} ± {spread:.3f}"


@dataclass
class ModelEntry:
    label: str = ""  # the variant as the source names it
    params_m: float = 0.0  # its size in millions of parameters, as the source gives it


@dataclass
class Figure:
    mean: float = 0.0
    spread: Optional[float] = None  # of the file's kind (PublishedFile.spread); null where the source gives one value


@dataclass
class TaskEntry:
    metric: str = ""  # metric of the figures (a task_metrics name, or f1_binary)
    readme_name: str = ""  # the task's name in the source table, where it differs
    results: dict[str, Figure] = field(default_factory=dict)  # model key -> figure


@dataclass
class PublishedFile:
    schema: str = ""
    suite: str = ""
    source: str = ""  # where the figures come from (file:lines, table, commit)
    spread: str = ""  # what every figure's spread is: one of SPREAD_KINDS
    models: dict[str, ModelEntry] = field(default_factory=dict)
    tasks: dict[str, TaskEntry] = field(default_factory=dict)


@dataclass(frozen=True)
class PublishedFigure:
    suite: str
    task: str
    metric: str
    model: str  # model key
    label: str  # model label
    mean: float
    spread: float | None
    spread_kind: str  # SPREAD_KINDS
    source: str

    def text(self) -> str:
        return figure_text(self.mean, self.spread, self.spread_kind)


@dataclass(frozen=True)
class Published:
    path: Path
    file: PublishedFile

    def figures(self, task: str) -> list[PublishedFigure]:
        """Every published figure of `task` (empty when the source has none)."""
        entry = self.file.tasks.get(task)
        if entry is None:
            return []
        return [PublishedFigure(self.file.suite, task, entry.metric, key, self.file.models[key].label, fig.mean,
                                fig.spread, self.file.spread, self.file.source) for key, fig in entry.results.items()]

    def figure(self, task: str, model: str) -> PublishedFigure | None:
        return next((f for f in self.figures(task) if f.model == model), None)


def load_published(path: str | Path) -> Published:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: published-figures file not found")
    raw = safe_load_yaml(path.read_text())
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with keys schema, suite, source, models, tasks")
    published = build_section(PublishedFile, raw, "", str(path))
    if published.schema != PUBLISHED_SCHEMA:
        raise ConfigError(f"{path}: 'schema' is {published.schema!r}, expected {PUBLISHED_SCHEMA!r}")
    for key in ("suite", "source"):
        if not getattr(published, key):
            raise ConfigError(f"{path}: '{key}' is empty")
    if published.spread not in SPREAD_KINDS:
        raise ConfigError(f"{path}: 'spread' is {published.spread!r}, expected one of {', '.join(SPREAD_KINDS)} "
                          "(what the figures' ± is: std over seeds, max - min over seeds, or single values)")
    for name, entry in published.tasks.items():
        if not entry.metric:
            raise ConfigError(f"{path}: 'tasks.{name}.metric' is empty")
        for model, fig in entry.results.items():
            where = f"{path}: 'tasks.{name}.results.{model}'"
            if model not in published.models:
                raise ConfigError(f"{where}: model {model!r} is not under models ({sorted(published.models)})")
            if not 0.0 <= fig.mean <= 1.0 or (fig.spread is not None and not 0.0 <= fig.spread <= 1.0):
                raise ConfigError(f"{where}: mean {fig.mean} / spread {fig.spread} outside [0, 1]")
            if (fig.spread is None) != (published.spread == "none"):
                raise ConfigError(f"{where}: spread {fig.spread} but the file's 'spread' is {published.spread!r}"
                                  " (null exactly when it is none)")
    return Published(path, published)
