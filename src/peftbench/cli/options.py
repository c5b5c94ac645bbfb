"""What several commands share, under one name everywhere: the spec file (`--config FILE`), run
folders (positional, with the older `--run`/`--runs` kept as hidden aliases), methods (`--method`
and `--methods` are one option), the training knobs of `run` and `sweep` (`--epochs`, `--lr`,
`--batch-size`, `--max-length`, `--seed`), and the one-line note an older spelling prints."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

# Training flags and the spec keys they set, applied as `--set KEY=VALUE` items would be.
TRAINING_FLAGS = {
    "epochs": "train.epochs",
    "lr": "train.lr",
    "batch_size": "train.batch_size",
    "max_length": "data.max_length",
    "seed": "train.seed",
}
_TRAINING_KEY = "peftbench.training_sets"


def deprecated(old: str, new: str) -> None:
    """The one stderr line an older spelling prints; the command then runs as the new one would."""
    click.echo(f"peftbench: note: `{old}` is deprecated; use `{new}`", err=True)


def usage_error(message: str) -> click.UsageError:
    """A usage error of the running command (exit 2, one line naming its --help)."""
    return click.UsageError(message, ctx=click.get_current_context(silent=True))


def config_option(*, required: bool = False, help: str = "YAML spec file.") -> Callable[[F], F]:
    return click.option("--config", "config", metavar="FILE", required=required, help=help)


def methods_option(*, run: bool = False, help: str) -> Callable[[F], F]:
    """`--methods a,b` and `--method a` as one option (repeatable, commas split); `run` lists the
    singular spelling first."""
    names = ("--method", "--methods") if run else ("--methods", "--method")
    return click.option(*names, "method_names", multiple=True, metavar="NAMES", help=help)


def split_names(values: tuple[str, ...] | list[str] | None) -> list[str]:
    """Names given as repeated options and/or comma-separated lists, in order, blanks dropped; given
    values that name nothing (`--methods ,`) are an error, not the default."""
    names = [n.strip() for v in values or () for n in v.split(",") if n.strip()]
    if values and not names:
        from peftbench.errors import SpecError

        raise SpecError("--methods names no method", hint="e.g. --methods full,lora,ia3")
    return names


def _keep_training_flag(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    if value is not None:
        ctx.meta.setdefault(_TRAINING_KEY, []).append(f"{TRAINING_FLAGS[str(param.name)]}={value!r}")


def training_options(f: F) -> F:
    """--epochs, --lr, --batch-size, --max-length and --seed; `training_sets()` gives them back
    as `--set` items."""
    keep = {"expose_value": False, "callback": _keep_training_flag}
    flags = [
        click.option("--epochs", type=click.IntRange(min=1), help="Training epochs (train.epochs).", **keep),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True),
                     help="Learning rate (train.lr; default: the method's own).", **keep),
        click.option("--batch-size", type=click.IntRange(min=1), help="Training batch size (train.batch_size).",
                     **keep),
        click.option("--max-length", type=click.IntRange(min=1), help="Tokens per example (data.max_length).",
                     **keep),
        click.option("--seed", type=int, help="Training seed (train.seed).", **keep),
    ]
    for flag in reversed(flags):
        f = flag(f)
    return f


def training_sets() -> list[str]:
    """The training flags given to the running command, as `--set` items (before the user's own)."""
    return list(click.get_current_context().meta.get(_TRAINING_KEY, []))


def _either_spelling(given: object, old: object, *, twice: str, old_form: str, new_form: str, missing: str) -> object:
    """The value given in the current spelling, or in the old one with a deprecation note; both at once,
    or neither, is a usage error with the message given."""
    if given and old:
        raise usage_error(twice)
    if old:
        deprecated(old_form, new_form)
        return old
    if not given:
        raise usage_error(missing)
    return given


def one_run_folder(given: str | None, old: str | None, command: str) -> str:
    """The run folder of `eval RUN` / `merge RUN`, or of the deprecated `--run RUN`."""
    return str(_either_spelling(
        given, old, old_form=f"{command} --run RUN", new_form=f"{command} RUN",
        twice=f"give the run folder once: `peftbench {command} RUN` (--run is its old spelling)",
        missing=f"missing the run folder: `peftbench {command} RUN`, e.g. runs/<run_id> (see: peftbench ls)"))


def run_folders(given: tuple[str, ...], old: tuple[str, ...], command: str) -> list[str]:
    """The run folders of `generate RUN [RUN...]`, or of the deprecated `--runs a,b`."""
    _either_spelling(
        given, old, old_form=f"{command} --runs a,b", new_form=f"{command} RUN [RUN...]",
        twice=f"give the run folders once: `peftbench {command} RUN [RUN...]` (--runs is their old spelling)",
        missing=f"missing run folders: `peftbench {command} RUN [RUN...]` (see: peftbench ls)")
    return split_names(old) if old else list(given)


def spec_file(config: str | None, positional: str | None, command: str) -> str:
    """The spec file of `sweep --config FILE`, or of the deprecated `sweep FILE`."""
    return str(_either_spelling(
        config, positional, old_form=f"{command} FILE", new_form=f"{command} --config FILE",
        twice=f"give the spec file once: `peftbench {command} --config FILE`",
        missing=f"missing the spec file: `peftbench {command} --config FILE`"))
