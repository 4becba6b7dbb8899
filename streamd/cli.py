"""The `streamd` command line. Each command is a thin shell over a module's function.

Errors that a user can fix (bad config, unreadable file, unreachable server) are printed as one
line without a traceback and give a non-zero exit status.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from streamd.config import Config, ConfigError, load_config
from streamd.errors import StreamdError

app = typer.Typer(
    name="streamd",
    help="Real-time music recognition for broadcast monitoring.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
services_app = typer.Typer(help="Start, stop and inspect the local Kafka + Redis stack.", no_args_is_help=True)
catalog_app = typer.Typer(help="List, show and delete catalogs in Redis.", no_args_is_help=True)
app.add_typer(services_app, name="services")
app.add_typer(catalog_app, name="catalog")

err_console = Console(stderr=True)
_state: dict[str, Any] = {"config_path": None}

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config file (default: ./config.yaml or $STREAMD_CONFIG).")
]


@app.callback()
def _main(config: ConfigOption = None) -> None:
    _state["config_path"] = config


def get_config(**overrides: Any) -> Config:
    """The config for this invocation: file + STREAMD_* env + the command's flags (dotted keys)."""
    return load_config(_state["config_path"], {k.replace("__", "."): v for k, v in overrides.items()})


def main() -> None:
    """Console entry point: run the app, turning user-facing errors into one-line messages."""
    try:
        app(standalone_mode=False)
    except (ConfigError, StreamdError) as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors and the like
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(130)
        raise


def _todo(what: str) -> None:
    raise StreamdError(f"{what} is not built yet")


# --- Commands. Each helper module owns the body of its command(s). ---------------------------


@services_app.command("up")
def services_up() -> None:
    """Start local Kafka (KRaft) and Redis on 127.0.0.1, waiting until both answer."""
    _todo("services up")


@services_app.command("down")
def services_down() -> None:
    """Stop the local Kafka and Redis started by `services up`."""
    _todo("services down")


@services_app.command("status")
def services_status() -> None:
    """Say what runs where."""
    _todo("services status")


@app.command()
def ingest() -> None:
    """Decode a file or HTTP/Icecast URL and produce protocol chunks to Kafka."""
    _todo("ingest")


@app.command()
def run() -> None:
    """Run the recognition daemon: Kafka audio in, play events out."""
    _todo("run")


@app.command()
def index() -> None:
    """Index audio files into a catalog in Redis."""
    _todo("index")


@app.command()
def recognize() -> None:
    """Recognize catalog tracks in a file or radio URL, without Kafka."""
    _todo("recognize")


@app.command()
def train() -> None:
    """Train the hash model."""
    _todo("train")


@app.command("eval")
def eval_() -> None:
    """Evaluate the hash model: top-1 for 3/5/10/29 s queries, clean and degraded; mAP."""
    _todo("eval")


@app.command()
def bench() -> None:
    """Run a benchmark from bench/."""
    _todo("bench")


@app.command()
def demo() -> None:
    """Index a demo catalog, stream a simulated broadcast and print live recognitions."""
    _todo("demo")


@app.command()
def simulate() -> None:
    """Write simulated station recordings plus ground truth."""
    _todo("simulate")


@app.command()
def score() -> None:
    """Score play events against ground truth."""
    _todo("score")


@catalog_app.command("list")
def catalog_list() -> None:
    """List catalogs."""
    _todo("catalog list")


@catalog_app.command("show")
def catalog_show() -> None:
    """Show one catalog."""
    _todo("catalog show")


@catalog_app.command("delete")
def catalog_delete() -> None:
    """Delete one catalog."""
    _todo("catalog delete")
