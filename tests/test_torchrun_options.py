"""Under torchrun, torchrun's own parser reads the whole command line first and refuses any option that is an
ambiguous prefix of one of its own (``--n`` of ``--nnodes``/``--nproc-per-node``): every option of the command
line must pass it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.distributed.run import get_args_parser
from typer.main import get_command

from attrobust.cli import app

CLI = get_command(app)
# kept for plain runs (`attrobust evaluate ... --n 8`); torchrun refuses it, the help says to use --num-samples
TORCHRUN_UNSAFE = {"--n"}


def _commands(group: Any = CLI, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """``(path, command)`` of every command of the CLI, sub-commands included."""
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


def _torchrun(*script_args: str) -> list[str]:
    """The arguments torchrun hands to ``-m attrobust`` after parsing the launcher's command line with its own
    parser (what ``torchrun --nproc-per-node 2 -m attrobust ...`` does before starting anything)."""
    args = get_args_parser().parse_args(["--nproc-per-node", "2", "-m", "attrobust", *script_args])
    assert args.module and args.training_script == "attrobust"
    return list(args.training_script_args)


def test_evaluate_takes_the_sample_count_under_torchrun() -> None:
    forwarded = _torchrun("evaluate", "runs/x/model.pt", "--num-samples", "8", "--k", "100", "-q")
    assert forwarded[0] == "evaluate"
    params = CLI.commands["evaluate"].make_context("evaluate", forwarded[1:]).params
    assert params["n"] == 8 and params["k"] == 100 and params["quiet"]


def test_the_old_sample_flag_still_works_outside_torchrun() -> None:
    for command in ("evaluate", "audit"):
        given = ["x.pt"] if command == "evaluate" else ["--model", "m:f", "--data", "mnist"]
        assert CLI.commands[command].make_context(command, [*given, "--n", "8"]).params["n"] == 8


def test_torchrun_lets_every_option_of_every_command_through() -> None:
    checked = 0
    for path, command in _commands():
        for param in command.params:
            for opt in [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])]:
                if not opt.startswith("-") or opt in TORCHRUN_UNSAFE:
                    continue
                assert _torchrun(*path, opt, "1")[len(path)] == opt, (path, opt)
                checked += 1
    assert checked > 50  # every command's options were seen
