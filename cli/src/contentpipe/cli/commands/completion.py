"""`contentpipe completion bash|zsh|fish`: a shell completion script generated from the command tree itself.

shtab writes static scripts from the argparse parser (no Python start-up on every Tab, unlike argcomplete's
callback), covers bash, zsh and fish, and is small and maintained; a new command or flag completes without
touching this file.
"""

from __future__ import annotations

import argparse

import shtab
from contentpipe.cli.errors import EXIT_OK
from contentpipe.cli.parsing import SubParsers, add_command
from contentpipe.cli.session import Session

SHELLS = ("bash", "zsh", "fish")
INSTALL = {
    "bash": 'eval "$(contentpipe completion bash)"              # in ~/.bashrc',
    "zsh": 'contentpipe completion zsh > "${fpath[1]}/_contentpipe"   # then restart zsh',
    "fish": "contentpipe completion fish > ~/.config/fish/completions/contentpipe.fish",
}


def register(sub: SubParsers, root: argparse.ArgumentParser) -> None:
    completion = add_command(
        sub,
        "completion",
        help="print a shell completion script (bash, zsh, fish)",
        handler=completion_command,
        description="Print the completion script for SHELL. Install it once:\n"
        + "\n".join(f"  {line}" for line in INSTALL.values()),
        examples=[f"contentpipe completion {shell}" for shell in SHELLS],
    )
    completion.add_argument("shell", choices=SHELLS)
    completion.set_defaults(root_parser=root)


async def completion_command(session: Session, args: argparse.Namespace) -> int:
    print(shtab.complete(args.root_parser, shell=args.shell), end="")
    return EXIT_OK
