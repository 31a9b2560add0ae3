"""Where logged scalars go besides metrics.jsonl (logging.backends), on rank 0 only.

Every backend takes DeepSpeed's monitor events, [(name, value, step)], and keeps one consistent
history over restarts: `open(step)` runs once the step the run continues from is known (0 for a
fresh start), and makes the steps after it disappear or be replaced, as in metrics.jsonl:

- tensorboard: a SummaryWriter in logging.dir with purge_step = step + 1 (TensorBoard then hides
  the events a killed run had written after the checkpoint);
- csv: DeepSpeed's own csv monitor (deepspeed.monitor.csv_monitor): <run dir>/csv/<metric>.csv, one
  file per metric ("/" written as "_"), rows "step,value" under a "step,<last name part>" header;
  open() drops the rows after `step` first and tells the monitor which headers exist already;
- wandb: a Weights & Biases run whose id is kept in <run dir>/wandb_run_id; a resumed run continues
  it (resume="allow"; W&B keeps a run's steps increasing, so the steps <= the last one it saw are
  not logged twice); a fresh start begins a new run. Offline with WANDB_MODE=offline; files under
  $WANDB_DIR if set, else the run directory.

Why not DeepSpeed's MonitorMaster as a whole: its TensorBoard monitor opens its SummaryWriter
without purge_step (a resumed run would show the killed run's steps twice), and its wandb monitor
calls wandb.init without run id, resume, name or directory (a resumed run would start a new W&B
run, named at random). Its csv monitor lacks only the truncation on resume, added here.
"""
from __future__ import annotations

import csv
import importlib.util
import io
import os
from pathlib import Path

from janus_pretrain.atomic_io import atomic_write_text
from janus_pretrain.config import ConfigError, LoggingConfig

CSV_DIR = "csv"  # <run dir>/csv: the csv backend's files
WANDB_RUN_ID_FILE = "wandb_run_id"  # <run dir>/wandb_run_id: the W&B run that a resumed run continues

Event = tuple[str, float, int]  # DeepSpeed's monitor event: (name, value, step)


def check_available(config: LoggingConfig, where: str) -> None:
    """Before any heavy work: every chosen backend's package can be imported."""
    if "wandb" in config.backends and importlib.util.find_spec("wandb") is None:
        raise ConfigError(f"{where}: logging.backends includes wandb but the wandb package is not installed; "
                          f"pip install 'janus-pretrain[wandb]', or remove wandb from logging.backends")


class TensorBoardBackend:
    def __init__(self, log_dir: str):
        self.log_dir, self.writer = log_dir, None

    def open(self, step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(self.log_dir, purge_step=step + 1 if step > 0 else None)

    def write_events(self, events: list[Event]) -> None:
        for event in events:
            self.writer.add_scalar(*event)

    def location(self) -> str:
        return f"tensorboard --logdir {self.log_dir}"

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


def truncate_csv_files(directory: Path, step: int) -> list[str]:
    """Keep the rows of steps <= `step` in every <metric>.csv of `directory` (files left without
    rows are removed); returns the names (without .csv) of the files kept."""
    kept = []
    for path in sorted(directory.glob("*.csv")):
        with open(path, newline="") as handle:
            header, *rows = list(csv.reader(handle)) or [[]]
        rows = [row for row in rows if row and int(row[0]) <= step]
        if not rows:
            path.unlink()
            continue
        text = io.StringIO()
        csv.writer(text).writerows([header, *rows])  # the dialect DeepSpeed's csv monitor writes
        atomic_write_text(path, text.getvalue())
        kept.append(path.stem)
    return kept


class CsvBackend:
    def __init__(self, run_dir: Path):
        self.run_dir, self.monitor = run_dir, None

    @property
    def directory(self) -> Path:
        return self.run_dir / CSV_DIR

    def open(self, step: int) -> None:
        from deepspeed.monitor.config import CSVConfig
        from deepspeed.monitor.csv_monitor import csvMonitor

        kept = truncate_csv_files(self.directory, step)
        self.monitor = csvMonitor(CSVConfig(enabled=True, output_path=str(self.run_dir), job_name=CSV_DIR))
        self.monitor.filenames.extend(kept)  # it writes a header row only for files not listed there

    def write_events(self, events: list[Event]) -> None:
        self.monitor.write_events(events)

    def location(self) -> str:
        return str(self.directory)

    def close(self) -> None:
        pass  # the monitor opens and closes its file for every row


class WandbBackend:
    def __init__(self, config: LoggingConfig, run_dir: Path, run_config: dict):
        self.config, self.run_dir, self.run_config = config, run_dir, run_config
        self.run = None

    def open(self, step: int) -> None:
        import wandb

        id_file = self.run_dir / WANDB_RUN_ID_FILE
        run_id = id_file.read_text().strip() if step > 0 and id_file.is_file() else None  # None: wandb picks one
        self.run = wandb.init(project=self.config.wandb_project, entity=self.config.wandb_entity or None,
                              name=self.config.wandb_name or self.run_dir.name, id=run_id, resume="allow",
                              dir=None if os.environ.get("WANDB_DIR") else str(self.run_dir))
        self.run.config.update(self.run_config, allow_val_change=True)  # a resumed run may change settings
        atomic_write_text(id_file, self.run.id + "\n")
        local = Path(self.run.dir).parent
        self._location = f"{local} (offline; upload with: wandb sync {local})" if self.run.offline else self.run.url

    def write_events(self, events: list[Event]) -> None:
        by_step: dict[int, dict[str, float]] = {}
        for name, value, step in events:
            by_step.setdefault(step, {})[name] = value
        for step, values in sorted(by_step.items()):
            self.run.log(values, step=step)

    def location(self) -> str:
        return self._location

    def close(self) -> None:
        self.run.finish()


def make_backends(config: LoggingConfig, run_dir: Path, run_config: dict) -> dict[str, object]:
    """The chosen backends by name, not opened yet (see the module docstring)."""
    made = {"tensorboard": lambda: TensorBoardBackend(config.dir), "csv": lambda: CsvBackend(run_dir),
            "wandb": lambda: WandbBackend(config, run_dir, run_config)}
    return {name: made[name]() for name in config.backends}
