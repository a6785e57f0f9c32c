"""`tunesmith <verb>`: the command-line entry point. Verbs live in their own thin modules."""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console

from tunesmith.errors import TunesmithError

app = typer.Typer(help="Fine-tune, align, evaluate and serve causal language models.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
console = Console(stderr=True)


def _register() -> None:
    from tunesmith.cli import config, data, demo, generate, task, train

    train.register(app)
    config.register(app)
    app.add_typer(data.data_app, name="data")
    generate.register(app)
    task.register(app)
    demo.register(app)
    from tunesmith.cli import estimate

    estimate.register(app)
    from tunesmith.cli import eval as eval_cli

    eval_cli.register(app)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: user errors print one clear message and exit 2, never a traceback."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _register()
    try:
        code = app(args=argv, standalone_mode=False)  # non-standalone click returns typer.Exit codes
        if isinstance(code, int) and code != 0:
            sys.exit(code)
    except TunesmithError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except SystemExit:
        raise
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
